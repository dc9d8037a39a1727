//! Tier 2: the generated text passes the tools that judge it. shellcheck runs on every script
//! generated from every accepted fixture.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use microvm_codegen::host::{self, HostSpec};
use microvm_codegen::runner::Entry;

#[test]
fn every_generated_script_passes_shellcheck() {
    common::require("shellcheck", "shellcheck");
    let mut checked = 0;
    for entry in std::fs::read_dir(common::fixtures().join("ok")).unwrap() {
        let path = entry.unwrap().path();
        let text = common::fixture_text(&path);
        let (spec, findings) = common::check(&text);
        assert!(findings.is_empty(), "{} is an ok fixture", path.display());
        let tree = common::build(&spec.unwrap());
        let dir = tempfile::tempdir().unwrap();
        for (relative, entry) in &tree {
            let Entry::File {
                contents,
                executable: true,
            } = entry
            else {
                continue;
            };
            let file = dir.path().join(relative.replace('/', "_"));
            std::fs::write(&file, contents).unwrap();
            let output = Command::new("shellcheck")
                .args(["--shell=bash", "--severity=style", "--format=gcc"])
                .arg(&file)
                .output()
                .expect("shellcheck runs");
            assert!(
                output.status.success(),
                "shellcheck rejects {relative} of {}:\n{}",
                path.display(),
                String::from_utf8_lossy(&output.stdout)
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} scripts were checked");
}

/// The host package of a spec whose one VM has every helper script, with that VM's runner
/// installed in a temporary state directory, as systemd would find it.
fn host_with_installed_runner(dir: &std::path::Path) -> std::path::PathBuf {
    let state = dir.join("state");
    let (spec, _) = common::ok_fixture("qemu-every-feature.json");
    let mut spec = spec;
    spec.tools.bash = Some("/bin/bash".to_owned());
    let tree = common::build(&spec);
    microvm_codegen::output::write(&state.join("vm1/current"), &tree, false).unwrap();
    let host_spec = serde_json::json!({
        "specVersion": 1,
        "stateDir": state,
        "user": "root",
        "group": "root",
        "startupTimeout": 150,
        "shutdownTimeout": 60,
        "autostart": ["vm1"],
        "vms": { "vm1": { "runner": state.join("vm1/current"), "restartIfChanged": true } },
        "tools": { "bash": "/bin/bash", "ln": "/bin/ln", "rm": "/bin/rm", "mkdir": "/bin/mkdir",
                   "chown": "/bin/chown", "readlink": "/bin/readlink", "microvm": env!("CARGO_BIN_EXE_microvm") }
    });
    common::generate_host(&host_spec, dir)
}

#[test]
fn every_generated_unit_passes_systemd_analyze_verify() {
    common::require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let package = host_with_installed_runner(dir.path());
    let units = package.join("lib/systemd/system");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".d") {
            continue;
        }
        names.push(name.replace("@.service", "@vm1.service"));
    }
    assert!(names.len() >= 8, "{names:?}");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&names)
        .current_dir(&units)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {names:?}:\n{stderr}"
    );
    for script in std::fs::read_dir(package.join("libexec/microvm")).unwrap() {
        let script = script.unwrap().path();
        let output = Command::new("shellcheck")
            .args(["--shell=bash", "--format=gcc"])
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// Validation takes no state directory or writable path that systemd refuses or ignores in the
/// units made from it: the units of every accepted spelling pass `systemd-analyze verify`
/// without a word about normalisation. (systemd refuses a `WorkingDirectory=` with `..`, so
/// none of a VM's units starts, and ignores such a `ReadWritePaths=`.) Each spelling names the
/// same real directory, so normalisation is all that differs.
#[test]
fn systemd_takes_every_path_that_validation_takes() {
    common::require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let bin = dir.path().join("state/vm1/current/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    for script in [
        "microvm-run",
        "virtiofsd-run",
        "tap-up",
        "macvtap-up",
        "pci-setup",
    ] {
        std::fs::write(bin.join(script), "#!/bin/bash\n").unwrap();
        std::fs::set_permissions(bin.join(script), PermissionsExt::from_mode(0o755)).unwrap();
    }
    let spellings = |of: &str| {
        [
            format!("{root}/{of}"),
            format!("{root}/{of}/"),
            format!("{root}/x/../{of}"),
            format!("{root}/{of}/x/.."),
            format!("{root}/./{of}"),
            format!("{root}//{of}"),
        ]
    };
    let good_state = format!("{root}/state");
    let candidates = spellings("state")
        .map(|state_dir| (state_dir, format!("{root}/x")))
        .into_iter()
        .chain(spellings("x").map(|writable| (good_state.clone(), writable)));
    let mut complained = 0;
    for (i, (state_dir, writable)) in candidates.enumerate() {
        let spec: HostSpec = serde_json::from_value(serde_json::json!({
            "specVersion": 1, "stateDir": state_dir, "user": "root", "group": "root",
            "startupTimeout": 150, "shutdownTimeout": 60,
            "vms": { "vm1": { "runner": format!("{good_state}/vm1/current"), "writablePaths": [writable] } },
            "tools": { "bash": "/bin/bash", "ln": "/bin/ln", "rm": "/bin/rm", "mkdir": "/bin/mkdir",
                       "chown": "/bin/chown", "readlink": "/bin/readlink", "microvm": env!("CARGO_BIN_EXE_microvm") }
        }))
        .unwrap();
        let refused = !host::validate::validate(&spec).is_empty();
        // The units as they would be without validation.
        let package = dir.path().join(format!("package-{i}"));
        let tree = host::units::build(
            &spec,
            package.to_str().unwrap(),
            &microvm_codegen::render::Renderer::new(),
        )
        .unwrap();
        for (relative, entry) in &tree {
            let Entry::File {
                contents,
                executable,
            } = entry
            else {
                continue;
            };
            let path = package.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
            if *executable {
                std::fs::set_permissions(&path, PermissionsExt::from_mode(0o755)).unwrap();
            }
        }
        let units = package.join("lib/systemd/system");
        let output = Command::new("systemd-analyze")
            .args([
                "verify",
                "microvm@vm1.service",
                "microvm-set-booted@vm1.service",
                "microvm-virtiofsd@vm1.service",
                "microvm-reconcile.service",
            ])
            .current_dir(&units)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("not normalized") {
            complained += 1;
            assert!(
                refused,
                "stateDir {state_dir:?}, writablePaths [{writable:?}] are accepted, but systemd says:\n{stderr}"
            );
        } else if !refused {
            assert!(
                output.status.success() && stderr.trim().is_empty(),
                "stateDir {state_dir:?}, writablePaths [{writable:?}]:\n{stderr}"
            );
        }
    }
    assert!(
        complained >= 4,
        "systemd found only {complained} spellings not normalised"
    );
}

/// The guest's script for `microvm up` (nixos-modules/microvm/up-announcements.sh) is POSIX sh:
/// the NixOS unit runs it with bash, the busybox test guest with busybox sh.
#[test]
fn the_guest_up_script_passes_shellcheck_as_posix_sh() {
    common::require("shellcheck", "shellcheck");
    let script = common::repo_root().join("nixos-modules/microvm/up-announcements.sh");
    let output = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style", "--format=gcc"])
        .arg(&script)
        .output()
        .expect("shellcheck runs");
    assert!(
        output.status.success(),
        "shellcheck rejects {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout)
    );
}
