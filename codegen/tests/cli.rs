//! The `microvm-codegen` command as users run it: exit codes, what it refuses to overwrite,
//! what it prints.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn codegen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("microvm-codegen runs")
}

fn fixture(name: &str) -> String {
    common::fixtures().join(name).display().to_string()
}

fn generate(spec: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["generate", "--spec", spec, "--out", out.to_str().unwrap()];
    args.extend(extra);
    codegen(&args)
}

#[test]
fn schema_command_prints_the_committed_schemas() {
    for (of, file) in [
        ("runner-spec", "runner-spec.schema.json"),
        ("host-spec", "host-spec.schema.json"),
        ("microvm-list", "microvm-list.schema.json"),
        ("microvm-status", "microvm-status.schema.json"),
    ] {
        let output = codegen(&["schema", "--of", of]);
        assert!(output.status.success());
        let printed = String::from_utf8(output.stdout).unwrap();
        // Printed as committed: the schema and one newline.
        assert_eq!(printed, format!("{}\n", printed.trim_end()));
        common::committed_schema(file, of, &printed);
    }
    let default = codegen(&["schema"]);
    let committed =
        std::fs::read_to_string(common::repo_root().join("doc/runner-spec.schema.json")).unwrap();
    assert_eq!(String::from_utf8(default.stdout).unwrap(), committed);
}

#[test]
fn validate_exit_codes() {
    assert_eq!(
        codegen(&["validate", "--spec", &fixture("ok/qemu-minimal.json")])
            .status
            .code(),
        Some(0)
    );
    let refused = codegen(&[
        "validate",
        "--spec",
        &fixture("err/duplicate-share-tags.json"),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert!(
        stderr.contains("microvm::validate::duplicate_tag"),
        "{stderr}"
    );
    assert!(stderr.contains("refused: 1 error"), "{stderr}");
    let malformed = codegen(&["validate", "--spec", &fixture("err/malformed-json.json")]);
    assert_eq!(malformed.status.code(), Some(1));
    assert_eq!(
        codegen(&["validate", "--spec", "/nonexistent/spec.json"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(codegen(&["validate"]).status.code(), Some(2));
    assert_eq!(codegen(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn generate_writes_a_runner_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let spec = fixture("ok/qemu-every-feature.json");
    assert!(generate(&spec, &a, &[]).status.success());
    assert!(generate(&spec, &b, &[]).status.success());
    let listing = |root: &Path| {
        let mut files = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.file_type().is_symlink() {
                    files.push((
                        path.strip_prefix(root).unwrap().to_owned(),
                        std::fs::read_link(&path)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                        0,
                    ));
                } else {
                    use std::os::unix::fs::PermissionsExt;
                    files.push((
                        path.strip_prefix(root).unwrap().to_owned(),
                        std::fs::read(&path).unwrap(),
                        meta.permissions().mode() & 0o777,
                    ));
                }
            }
        }
        files.sort();
        files
    };
    let first = listing(&a);
    assert!(
        first
            .iter()
            .any(|(p, _, mode)| p == Path::new("bin/microvm-run") && *mode == 0o755)
    );
    assert!(
        first
            .iter()
            .any(|(p, _, mode)| p == Path::new("share/microvm/spec.json") && *mode == 0o644)
    );
    assert_eq!(first, listing(&b), "same spec, byte-identical output");
}

#[test]
fn generate_never_overwrites_what_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runner");
    let spec = fixture("ok/qemu-minimal.json");
    assert!(generate(&spec, &out, &[]).status.success());

    let again = generate(&spec, &out, &[]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a non-empty --out needs --force"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    assert!(
        generate(&fixture("ok/tap-multiqueue.json"), &out, &["--force"])
            .status
            .success()
    );
    assert!(
        out.join("bin/tap-up").exists(),
        "--force replaced the runner"
    );
    assert!(
        generate(&spec, &out, &["--force"]).status.success(),
        "and back"
    );
    assert!(
        !out.join("bin/tap-up").exists(),
        "a script it wrote before and does not now is gone"
    );

    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("var.img"), "precious").unwrap();
    let refused = generate(&spec, &state, &["--force"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not output of microvm-codegen"));
    assert_eq!(
        std::fs::read_to_string(state.join("var.img")).unwrap(),
        "precious"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(
        generate(&spec, &empty, &[]).status.success(),
        "an empty directory is fine"
    );
}

#[test]
fn refused_spec_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runner");
    let output = generate(&fixture("err/forward-ports-without-user.json"), &out, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out.exists());
}

#[test]
fn help_explains_each_command() {
    let help = String::from_utf8(codegen(&["--help"]).stdout).unwrap();
    for command in ["generate", "validate", "schema"] {
        assert!(help.contains(command), "{help}");
    }
    let generate_help = String::from_utf8(codegen(&["generate", "--help"]).stdout).unwrap();
    assert!(generate_help.contains("--force"));
    assert!(generate_help.contains("state directory"));
    insta::assert_snapshot!(generate_help);
}

#[test]
fn host_refuses_like_generate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("host");
    let refused = codegen(&[
        "host",
        "--spec",
        &fixture("host/err/bad-names.json"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("microvm::host::vm_name"), "{stderr}");
    assert!(stderr.contains("refused: 6 errors"), "{stderr}");
    assert!(!out.exists());
    let not_a_host_spec = codegen(&[
        "host",
        "--spec",
        &fixture("ok/qemu-minimal.json"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(not_a_host_spec.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_a_host_spec.stderr).contains("it is not a host spec"));
    let unreadable = codegen(&[
        "host",
        "--spec",
        "/nonexistent/host.json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(unreadable.status.code(), Some(2));
}

/// Every path under `root`, relative, sorted; directories end in `/`.
fn tree_of(root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                paths.push(format!("{relative}/"));
                stack.push(path);
            } else {
                paths.push(relative);
            }
        }
    }
    paths.sort();
    paths
}

fn host_program(name: &str) -> Option<String> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .map(|path| path.display().to_string())
}

/// A qemu spec whose runner creates a relative volume image in its working directory with
/// this machine's tools, then fails to start its (absent) hypervisor.
fn spec_with_a_volume(dir: &Path) -> Option<String> {
    let mut spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("ok/qemu-minimal.json")).unwrap(),
    )
    .unwrap();
    spec["volumes"] = serde_json::json!([
        { "image": "var.img", "mountPoint": "/var", "size": 16, "fsType": "ext4" }
    ]);
    let tools = spec["tools"].as_object_mut().unwrap();
    for tool in ["bash", "mkdir", "truncate", "ln", "rm", "mkfs.ext4"] {
        tools.insert(tool.to_owned(), host_program(tool)?.into());
    }
    tools.insert("qemu".to_owned(), "/bin/false".into());
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    Some(path.display().to_string())
}

#[test]
fn force_replaces_only_the_files_generate_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let Some(spec) = spec_with_a_volume(dir.path()) else {
        eprintln!("skipped: mkfs.ext4 or another tool the runner needs is not installed");
        return;
    };
    let out = dir.path().join("ff");
    let generated = generate(&spec, &out, &[]);
    assert!(generated.status.success(), "{generated:?}");
    // The runner's directory is the VM's working directory: its volume is made there.
    let run = Command::new(out.join("bin/microvm-run"))
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        out.join("var.img").is_file(),
        "microvm-run made the volume: {run:?}"
    );
    let image = std::fs::read(out.join("var.img")).unwrap();
    std::fs::write(out.join("bin/mytool"), "#!/bin/sh\n").unwrap();
    let before = tree_of(&out);

    let again = generate(&spec, &out, &["--force"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(std::fs::read(out.join("var.img")).unwrap(), image);
    assert_eq!(
        std::fs::read_to_string(out.join("bin/mytool")).unwrap(),
        "#!/bin/sh\n"
    );
    assert_eq!(tree_of(&out), before, "nothing added, nothing lost");

    // Another runner into the same directory: its scripts come, the old ones go, the user's
    // files stay.
    let other = generate(&fixture("ok/tap-multiqueue.json"), &out, &["--force"]);
    assert!(other.status.success(), "{other:?}");
    assert!(out.join("bin/tap-up").is_file());
    assert!(out.join("var.img").is_file() && out.join("bin/mytool").is_file());
}

#[test]
fn force_refuses_when_a_file_it_did_not_write_is_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runner");
    assert!(
        generate(&fixture("ok/qemu-minimal.json"), &out, &[])
            .status
            .success()
    );
    // The user's own tap-up, where the next runner puts its script.
    std::fs::write(out.join("bin/tap-up"), "mine").unwrap();
    let before = tree_of(&out);
    let refused = generate(&fixture("ok/tap-multiqueue.json"), &out, &["--force"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("bin/tap-up"), "names the file: {stderr}");
    assert!(stderr.contains("in the way"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("bin/tap-up")).unwrap(),
        "mine"
    );
    assert_eq!(tree_of(&out), before, "nothing written");
}

#[test]
fn concurrent_force_runs_on_one_out_all_succeed_and_leave_no_debris() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ff");
    let spec = fixture("ok/qemu-every-feature.json");
    assert!(generate(&spec, &out, &[]).status.success());
    std::fs::write(out.join("var.img"), "precious").unwrap();
    let expected = tree_of(&out);
    let runs: Vec<_> = (0..12)
        .map(|i| {
            let spec = if i % 2 == 0 {
                spec.clone()
            } else {
                fixture("ok/qemu-minimal.json")
            };
            Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
                .args(["generate", "--spec", &spec, "--out"])
                .arg(&out)
                .arg("--force")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let output = run.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    assert_eq!(tree_of(dir.path()), {
        let mut only_out = vec!["ff/".to_owned()];
        only_out.extend(tree_of(&out).into_iter().map(|p| format!("ff/{p}")));
        only_out
    });
    assert!(
        !tree_of(&out)
            .iter()
            .any(|p| p.contains("microvm-codegen-new")),
        "{:?}",
        tree_of(&out)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("var.img")).unwrap(),
        "precious"
    );
    // Whichever run came last, its runner is whole.
    assert!(generate(&spec, &out, &["--force"]).status.success());
    assert_eq!(tree_of(&out), expected);
}

#[test]
fn force_with_out_dot_works_from_inside_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runner");
    let spec = fixture("ok/qemu-minimal.json");
    assert!(generate(&spec, &out, &[]).status.success());
    std::fs::write(out.join("var.img"), "precious").unwrap();
    let expected = tree_of(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
        .args(["generate", "--spec", &spec, "--out", ".", "--force"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(tree_of(&out), expected);
    assert_eq!(
        tree_of(dir.path()).len(),
        expected.len() + 1,
        "nothing beside it"
    );
}

#[test]
fn host_force_keeps_files_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("host");
    let host = |extra: &[&str]| {
        let mut args = vec![
            "host".to_owned(),
            "--spec".to_owned(),
            fixture("host/ok/two-vms.json"),
            "--out".to_owned(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        codegen(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = host(&[]);
    assert!(first.status.success(), "{first:?}");
    std::fs::write(out.join("notes"), "mine").unwrap();
    let again = host(&["--force"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(std::fs::read_to_string(out.join("notes")).unwrap(), "mine");
}
