//! Tier 2: the generated text passes the tools that judge it. shellcheck runs on every script
//! generated from every accepted fixture.

mod common;

use std::process::Command;

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
