//! `microvm-run` checks for the host devices the hypervisor will open before starting it:
//! qemu aborts (SIGABRT, no message) on `vhost=on` without /dev/vhost-net, so the runner says
//! what is missing and which option asked for it instead.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[test]
fn a_missing_vhost_net_is_reported_before_qemu_starts() {
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("qemu");
    std::fs::write(&stub, "#!/bin/sh\necho qemu-started\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = serde_json::json!({
        "specVersion": 1, "hostName": "vhost", "hypervisor": "qemu", "cpu": "max",
        "kernel": "/boot/vmlinuz", "initrdPath": "/boot/initrd",
        "interfaces": [{ "type": "tap", "id": "vm-vhost", "mac": "02:00:00:00:00:01", "tap": { "vhost": true } }],
        "tools": { "bash": "/bin/bash", "qemu": stub, "ip": "/sbin/ip" }
    });
    let text = microvm_codegen::diagnostic::SpecText::new("vhost.json", spec.to_string());
    let (spec, findings) = common::check(&text);
    assert!(findings.is_empty(), "{findings:?}");
    let runner = dir.path().join("runner");
    microvm_codegen::output::write(&runner, &common::build(&spec.unwrap()), false).unwrap();

    let output = Command::new(runner.join("bin/microvm-run"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let usable = |p: &str| {
        Path::new(p).exists()
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .is_ok()
    };
    if !usable("/dev/net/tun") {
        assert_eq!(output.status.code(), Some(1));
        assert!(stderr.contains("/dev/net/tun"), "{stderr}");
    } else if !usable("/dev/vhost-net") {
        assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stderr.contains("/dev/vhost-net")
                && stderr.contains("microvm.interfaces[0].tap.vhost")
                && stderr.contains("set tap.vhost = false"),
            "{stderr}"
        );
        assert!(!stdout.contains("qemu-started"), "qemu must not start");
    } else {
        assert!(
            output.status.success() && stdout.contains("qemu-started"),
            "{stderr}"
        );
    }
}
