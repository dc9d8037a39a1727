//! Tiers 3 and 4 together: Nix option values reach a running guest. The guest module evaluates a
//! qemu VM with the stand-ins (checks/eval), its package paths pointing at this machine's
//! programs and its kernel, initrd and store disk at the boot tests' files; the spec that
//! evaluation produces goes to `microvm-codegen generate` unchanged, and the runner boots the
//! boot tests' guest under TCG (microvm.cpu), which reports through `MVTEST:` markers.

mod common;
#[path = "common/nix.rs"]
mod nix;
#[path = "common/vm.rs"]
mod vm;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use vm::{BootEnv, VM_TIMEOUT, Vm, boot_env, host_tool, param, shut_down, tempdir};

/// `<dir>/bin/<program>` for every program the spec may name, linked to this machine's: the
/// stand-in packages all live at `dir`.
fn tool_prefix(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for program in [
        "bash",
        "qemu-system-x86_64",
        "socat",
        "mkdir",
        "ln",
        "rm",
        "truncate",
        "chown",
        "sleep",
        "nproc",
        "chattr",
        "mkfs.ext4",
    ] {
        std::os::unix::fs::symlink(host_tool(program), bin.join(program)).unwrap();
    }
}

/// The spec Nix evaluates for the e2e VM (checks/eval/default.nix, attribute e2eSpec).
fn evaluated_spec(env: &BootEnv, prefix: &Path, store_disk: &Path, scenario: &[String]) -> Value {
    let mut params = vec![
        "loglevel=4".to_owned(),
        format!("tsc_early_khz={}", env.tsc_khz),
    ];
    params.extend(scenario.iter().cloned());
    let params = serde_json::to_string(&params).unwrap();
    let spec = nix::eval_with(
        "e2eSpec",
        &[
            ("prefix", &prefix.display().to_string()),
            ("e2eKernel", &env.kernel),
            ("e2eInitrd", &env.initrd),
            ("e2eParams", &params),
            ("e2eStoreDisk", &store_disk.display().to_string()),
        ],
    )
    .unwrap_or_else(|e| panic!("the e2e VM does not evaluate:\n{e}"));
    // What the options said is what the spec says.
    assert_eq!(spec["hypervisor"], json!("qemu"));
    assert_eq!(spec["cpu"], json!("max"));
    assert_eq!(spec["mem"], json!(256));
    assert_eq!(spec["kernel"], json!(env.kernel));
    assert_eq!(spec["initrdPath"], json!(env.initrd));
    assert_eq!(spec["storeDisk"], json!(store_disk));
    assert_eq!(spec["socket"], json!("e2e.sock"));
    assert_eq!(
        spec["tools"]["qemu"],
        json!(prefix.join("bin/qemu-system-x86_64"))
    );
    let kernel_params: Vec<&str> = spec["kernelParams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for wanted in scenario {
        assert!(
            kernel_params.contains(&wanted.as_str()),
            "{kernel_params:?}"
        );
    }
    spec
}

/// An erofs image holding a file `marker` with `token`.
fn store_image(dir: &Path, token: &str) -> std::path::PathBuf {
    let content = dir.join("store-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("marker"), format!("{token}\n")).unwrap();
    let image = dir.join("store.erofs");
    let status = Command::new(host_tool("mkfs.erofs"))
        .arg("--quiet")
        .arg(&image)
        .arg(&content)
        .status()
        .unwrap();
    assert!(status.success(), "mkfs.erofs failed");
    image
}

#[test]
fn nix_evaluated_qemu_vm_boots_with_its_store_disk() {
    let env = boot_env();
    nix::nixpkgs_lib();
    let tmp = tempdir();
    let prefix = tmp.path().join("prefix");
    tool_prefix(&prefix);
    let token = format!("nix-e2e-{}", std::process::id());
    let image = store_image(tmp.path(), &token);
    let spec = evaluated_spec(
        &env,
        &prefix,
        &image,
        &["mvtest=store".to_owned(), param("fs", "erofs")],
    );
    let mut vm = Vm::new(&tmp.path().join("vm"), &spec);
    vm.run_to_end();
    vm.wait_for("MVTEST:init", Duration::ZERO);
    vm.wait_for(&format!("MVTEST:store:marker={token}"), Duration::ZERO);
    vm.wait_for("MVTEST:store:ro=1", Duration::ZERO);
}

#[test]
fn nix_evaluated_qemu_vm_shuts_down_through_its_default_socket() {
    let env = boot_env();
    nix::nixpkgs_lib();
    let tmp = tempdir();
    let prefix = tmp.path().join("prefix");
    tool_prefix(&prefix);
    let image = store_image(tmp.path(), "unused");
    let spec = evaluated_spec(&env, &prefix, &image, &["mvtest=shutdown".to_owned()]);
    let mut vm = Vm::new(&tmp.path().join("vm"), &spec);
    vm.start(None);
    vm.wait_for("MVTEST:shutdown:ready", VM_TIMEOUT);
    assert!(
        tmp.path().join("vm/e2e.sock").exists(),
        "qemu's control socket is not where microvm.socket says"
    );
    shut_down(&mut vm);
}
