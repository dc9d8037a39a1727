//! `cargo bench`: how long code generation takes for a 24-device spec, and what `microvm-run`
//! adds to starting the hypervisor compared with executing it directly. Figures are medians of
//! many runs and are printed as ratios measured in the same run, because these machines are
//! noisy and absolute times do not compare across them.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::time;

use microvm_codegen::diagnostic::SpecText;
use microvm_codegen::{load, output, render, runner, validate};
use serde_json::json;

fn which(program: &str) -> String {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not found"))
        .display()
        .to_string()
}

/// rng + store disk + 11 volumes + 6 shares + 4 interfaces + balloon = 24 devices. (No vsock:
/// the runner would refuse to start on a host without /dev/vhost-vsock.)
fn spec_with_24_devices(stub: &str) -> serde_json::Value {
    let volumes: Vec<_> = (0..11)
        .map(|i| json!({"image": format!("vol{i}.img"), "mountPoint": format!("/vol{i}"), "autoCreate": false, "serial": format!("vol{i}")}))
        .collect();
    let shares: Vec<_> = (0..6)
        .map(|i| json!({"tag": format!("share{i}"), "source": format!("/srv/share{i}"), "mountPoint": format!("/share{i}")}))
        .collect();
    let interfaces: Vec<_> = (0..4)
        .map(|i| json!({"type": "user", "id": format!("net{i}"), "mac": format!("02:00:00:00:00:{:02x}", i + 1)}))
        .collect();
    json!({
        "specVersion": 1, "hostName": "bench", "hypervisor": "qemu", "cpu": "max",
        "kernel": "/boot/vmlinuz", "initrdPath": "/boot/initrd", "storeDisk": "/store.erofs",
        "balloon": true,
        "volumes": volumes, "shares": shares, "interfaces": interfaces,
        "tools": {"bash": which("bash"), "qemu": stub}
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("hypervisor-stub");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = spec_with_24_devices(&stub.display().to_string());
    let text = serde_json::to_string_pretty(&spec).unwrap();

    let renderer = render::Renderer::new();
    let mut files = 0;
    let codegen = time(300, || {
        let text = SpecText::new("bench.json", text.clone());
        let spec = load::load(&text).expect("bench spec loads");
        assert!(validate::validate(&spec).iter().all(|d| !d.is_error()));
        files = runner::build(&spec, &renderer).unwrap().len();
    });
    let parse_only = time(300, || {
        let _: serde_json::Value = serde_json::from_str(&text).unwrap();
    });
    let renderer_setup = time(100, || {
        let _ = render::Renderer::new();
    });

    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, &text).unwrap();
    let exe = env!("CARGO_BIN_EXE_microvm-codegen");
    let mut n = 0;
    let cli = time(60, || {
        n += 1;
        let out = dir.path().join(format!("out{n}"));
        let status = Command::new(exe)
            .args(["generate", "--spec"])
            .arg(&spec_path)
            .arg("--out")
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    });
    let spawn_true = time(60, || {
        assert!(Command::new("/bin/true").status().unwrap().success());
    });

    let runner_dir = dir.path().join("runner");
    let tree = runner::build(
        &load::load(&SpecText::new("b", text.clone())).unwrap(),
        &renderer,
    )
    .unwrap();
    output::write(&runner_dir, &tree, false).unwrap();
    let microvm_run = runner_dir.join("bin/microvm-run");
    let through_runner = time(200, || {
        assert!(
            Command::new(&microvm_run)
                .current_dir(dir.path())
                .status()
                .unwrap()
                .success()
        );
    });
    let direct = time(200, || {
        assert!(Command::new(&stub).status().unwrap().success());
    });

    println!("codegen, 24-device qemu spec ({files} files):");
    println!("  load + validate + render, in process: {codegen:?} median");
    println!(
        "    = {:.1} x parsing the same JSON with serde_json ({parse_only:?})",
        codegen.as_secs_f64() / parse_only.as_secs_f64()
    );
    println!("    (one-time template engine setup: {renderer_setup:?})");
    println!("  `microvm-codegen generate` as a process: {cli:?} median");
    println!(
        "    = {:.1} x spawning /bin/true ({spawn_true:?})",
        cli.as_secs_f64() / spawn_true.as_secs_f64()
    );
    println!("microvm-run start overhead:");
    println!("  microvm-run -> stub: {through_runner:?} median; stub directly: {direct:?} median");
    println!(
        "    = {:.2} x a direct exec, {:?} added by the runner script",
        through_runner.as_secs_f64() / direct.as_secs_f64(),
        through_runner.saturating_sub(direct)
    );
}
