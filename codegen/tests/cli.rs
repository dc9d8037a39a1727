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

    std::fs::write(out.join("bin/stale-extra"), "old").unwrap();
    assert!(
        generate(&fixture("ok/tap-multiqueue.json"), &out, &["--force"])
            .status
            .success()
    );
    assert!(
        out.join("bin/tap-up").exists(),
        "--force replaced the runner"
    );
    assert!(!out.join("bin/stale-extra").exists(), "…as a whole");

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
