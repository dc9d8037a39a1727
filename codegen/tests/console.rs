//! The console of hypervisors whose stdio console needs a terminal, which a service has none
//! of: without one, `microvm-run` gives stratovirt a pipe it copies to stdout (a file chardev)
//! and runs alioth, which has no other console, on a pseudo-terminal. Run with a stand-in
//! hypervisor that writes a line to the console it was given, as the real one would.
//!
//! alioth also gets `--pvh` for an ELF kernel and `--kernel` for a bzImage, by the file's magic.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// A stand-in that prints its arguments, one a line, to stderr and writes a console line to the
/// path in `--console log,path=…` / `-chardev file,…,path=…`, or to stdout for stdio.
const STAND_IN: &str = r#"#!/bin/bash
if [ -t 0 ]; then echo stdin:terminal >&2; else echo stdin:not-a-terminal >&2; fi
console=
for arg in "$@"; do
  printf 'arg:%s\n' "$arg" >&2
  case $arg in
    log,path=*) console=${arg#log,path=} ;;
    file,path=*) console=${arg#file,path=} ;;
  esac
done
if [ -n "$console" ]; then
  echo guest-console-line >"$console"
else
  echo guest-console-line
fi
"#;

fn runner(dir: &Path, hypervisor: &str, kernel: &Path) -> std::path::PathBuf {
    let stand_in = dir.join(hypervisor);
    std::fs::write(&stand_in, STAND_IN).unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec: Value = json!({
        "specVersion": 1, "hostName": "console", "hypervisor": hypervisor,
        "mem": 256, "kernel": kernel, "initrdPath": "/boot/initrd",
        "tools": { "bash": "/bin/bash", "cat": "/bin/cat", "script": "/usr/bin/script" }
    });
    spec["tools"][hypervisor] = json!(stand_in);
    if hypervisor == "stratovirt" {
        spec["socket"] = json!("console.sock");
    }
    common::write_runner(dir, &spec)
}

/// Runs `microvm-run` as a service does: stdin /dev/null, stdout and stderr pipes. Returns
/// stdout, and every line of both without carriage returns (a pseudo-terminal adds them).
fn run_without_terminal(run: &Path, dir: &Path) -> (String, Vec<String>) {
    let output = Command::new(run)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    let stderr = String::from_utf8_lossy(&output.stderr).replace('\r', "");
    assert!(output.status.success(), "{stdout}{stderr}");
    let lines = stdout
        .lines()
        .chain(stderr.lines())
        .map(str::to_owned)
        .collect();
    (stdout, lines)
}

fn args(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("arg:"))
        .map(str::to_owned)
        .collect()
}

/// Runs `microvm-run` on a terminal (util-linux `script` gives it a pseudo-terminal).
fn run_on_terminal(run: &Path, dir: &Path) -> String {
    let output = Command::new("script")
        .args(["-qec"])
        .arg(format!("{} 2>&1", run.display()))
        .arg("/dev/null")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).replace('\r', "")
}

fn value_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| {
        panic!("no {flag} in {args:?}");
    });
    &args[i + 1]
}

#[test]
fn without_a_terminal_stratovirts_console_is_a_pipe_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let run = runner(dir.path(), "stratovirt", Path::new("/boot/vmlinuz"));
    let (stdout, lines) = run_without_terminal(&run, dir.path());
    let args = args(&lines);
    let console = value_after(&args, "-serial");
    assert!(console.starts_with("file,path=/proc/self/fd/"), "{console}");
    assert!(!args.iter().any(|a| a.contains("stdio")), "{args:?}");
    assert!(
        lines.contains(&"stdin:not-a-terminal".to_owned()),
        "{lines:?}"
    );
    assert_eq!(
        stdout.trim(),
        "guest-console-line",
        "the console reaches stdout"
    );
}

#[test]
fn without_a_terminal_alioth_runs_on_a_pseudo_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let run = runner(dir.path(), "alioth", Path::new("/boot/vmlinuz"));
    let (stdout, lines) = run_without_terminal(&run, dir.path());
    assert!(lines.contains(&"stdin:terminal".to_owned()), "{lines:?}");
    assert!(
        stdout.lines().any(|l| l == "guest-console-line"),
        "the console reaches stdout: {stdout}"
    );
    assert_eq!(value_after(&args(&lines), "--cpu"), "count=1");
}

#[test]
fn on_a_terminal_stratovirts_console_is_stdio() {
    if !common::have("script") {
        panic!("script (util-linux/bsdutils) is needed to give microvm-run a terminal");
    }
    let dir = tempfile::tempdir().unwrap();
    let run = runner(dir.path(), "stratovirt", Path::new("/boot/vmlinuz"));
    let out = run_on_terminal(&run, dir.path());
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(value_after(&args(&lines), "-serial"), "stdio", "{out}");
    assert!(out.contains("guest-console-line"), "{out}");
}

#[test]
fn alioth_loads_an_elf_kernel_with_pvh_and_a_bzimage_with_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let elf = dir.path().join("vmlinux");
    std::fs::write(&elf, b"\x7fELF\x02\x01\x01\0rest of an ELF image").unwrap();
    let bzimage = dir.path().join("bzImage");
    std::fs::write(&bzimage, b"MZ\0\0 a boot-protocol image").unwrap();
    for (kernel, flag, other) in [(&elf, "--pvh", "--kernel"), (&bzimage, "--kernel", "--pvh")] {
        let vm = tempfile::tempdir().unwrap();
        let run = runner(vm.path(), "alioth", kernel);
        let (_, lines) = run_without_terminal(&run, vm.path());
        let args = args(&lines);
        assert_eq!(value_after(&args, flag), kernel.display().to_string());
        assert!(!args.iter().any(|a| a == other), "{args:?}");
    }
}
