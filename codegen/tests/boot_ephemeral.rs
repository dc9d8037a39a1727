//! Tier 3, throwaway machines (issue 12): the test guest (checks/guest/init) under TCG, started
//! by generated runners. An ephemeral volume is made anew at every start and removed by
//! `bin/microvm-discard` (what the host unit runs after a stop), while a persistent one keeps
//! what the guest wrote; a secret disk copied from a host file at start is readable in the
//! guest by root alone and gone from the host after the stop.

mod common;
#[path = "common/vm.rs"]
mod vm;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use vm::{Vm, boot_env, host_tool, param, spec, tempdir};

/// Runs `bin/microvm-discard` in the VM's directory, as the unit's ExecStopPost= does.
fn discard(vm: &Vm) {
    let output = Command::new(vm.bin("microvm-discard"))
        .current_dir(&vm.dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Boots the `volume` scenario on the disk with `serial`: what the guest saw there.
fn boot_volume(dir: &Path, volumes: &Value, serial: &str) -> Vm {
    let mut s = spec(
        &boot_env(),
        "ephemeral",
        "volume",
        &[param("serial", serial)],
    );
    s["volumes"] = volumes.clone();
    let mut vm = Vm::new(dir, &s);
    vm.run_to_end();
    vm
}

#[test]
fn an_ephemeral_volume_is_empty_at_the_next_start_while_a_persistent_one_keeps_its_file() {
    let tmp = tempdir();
    let dir = tmp.path();
    let volumes = json!([
        { "image": "keep.img", "serial": "keep", "label": "keep", "size": 32, "fsType": "ext4" },
        { "image": "scratch.img", "serial": "scratch", "label": "scratch", "size": 32,
          "fsType": "ext4", "ephemeral": true }
    ]);

    let first = boot_volume(dir, &volumes, "keep");
    first.wait_for("MVTEST:volume:seen=none", Duration::ZERO);
    first.wait_for("MVTEST:volume:wrote=1", Duration::ZERO);
    drop(first);

    let second = boot_volume(dir, &volumes, "scratch");
    second.wait_for("MVTEST:volume:seen=none", Duration::ZERO);
    second.wait_for("MVTEST:volume:wrote=1", Duration::ZERO);
    drop(second);
    // Left behind as a crash would leave it (no discard): the next start removes it itself.
    assert!(dir.join("scratch.img").exists());

    let third = boot_volume(dir, &volumes, "scratch");
    third.wait_for("MVTEST:volume:seen=none", Duration::ZERO);
    third.wait_for("MVTEST:volume:wrote=1", Duration::ZERO);
    assert!(
        third
            .stderr
            .lock()
            .unwrap()
            .contains("creating volume scratch.img"),
        "{}",
        third.transcript()
    );
    // The stop: the ephemeral image goes, the persistent one stays.
    discard(&third);
    assert!(!dir.join("scratch.img").exists());
    assert!(dir.join("keep.img").exists());
    drop(third);

    let fourth = boot_volume(dir, &volumes, "keep");
    fourth.wait_for("MVTEST:volume:seen=1", Duration::ZERO);
    fourth.wait_for("MVTEST:volume:wrote=2", Duration::ZERO);
    assert!(
        !fourth
            .stderr
            .lock()
            .unwrap()
            .contains("creating volume keep.img"),
        "the persistent image was recreated\n{}",
        fourth.transcript()
    );
}

#[test]
fn a_secret_disk_is_readable_by_root_in_the_guest_and_gone_from_the_host_after_stop() {
    let tmp = tempdir();
    let dir = tmp.path();
    let secrets = dir.join("credentials");
    std::fs::create_dir_all(&secrets).unwrap();
    let token = format!("token-{}", std::process::id());
    let token_file = secrets.join("ci-token");
    // As a registration token is written: one line, no newline.
    std::fs::write(&token_file, &token).unwrap();

    let mut s = spec(
        &boot_env(),
        "secret",
        "rawdisk",
        &[param("serial", "ci-token")],
    );
    s["tools"]["cat"] = json!(host_tool("cat"));
    s["volumes"] = json!([{
        "image": "ci-token.img", "serial": "ci-token", "readOnly": true, "autoCreate": false,
        "ephemeral": true, "contentsFile": token_file
    }]);
    let mut vm = Vm::new(dir, &s);
    vm.run_to_end();
    vm.wait_for(&format!("MVTEST:rawdisk:content={token}"), Duration::ZERO);
    // A block device only root may open, attached read-only.
    vm.wait_for("MVTEST:rawdisk:mode=600:0:0", Duration::ZERO);
    vm.wait_for("MVTEST:rawdisk:ro=1", Duration::ZERO);

    let image = dir.join("ci-token.img");
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), 512, "padded to one sector");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "readable by the VM's user alone"
    );
    discard(&vm);
    assert!(!image.exists(), "the secret disk outlived the stop");
    assert!(token_file.exists(), "the source is never removed");
}

#[test]
fn a_missing_secret_stops_the_runner_with_a_message_and_leaves_nothing_behind() {
    let tmp = tempdir();
    let dir = tmp.path();
    let mut s = spec(&boot_env(), "nosecret", "rawdisk", &[]);
    s["tools"]["cat"] = json!(host_tool("cat"));
    s["volumes"] = json!([{
        "image": "ci-token.img", "serial": "ci-token", "readOnly": true, "autoCreate": false,
        "ephemeral": true, "contentsFile": dir.join("not-there")
    }]);
    let runner = vm::generate(dir, &s);
    let output = Command::new(runner.join("bin/microvm-run"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "microvm-run: cannot read {}, the contents of the volume ci-token.img",
            dir.join("not-there").display()
        )),
        "{stderr}"
    );
    assert!(!dir.join("ci-token.img").exists());
    assert!(!dir.join("ci-token.img.microvm-partial").exists());
}
