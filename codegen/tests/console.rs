//! The console of hypervisors that open it themselves (alioth, stratovirt): `microvm-run` gives
//! them stdio on a terminal, else a pipe it copies to stdout, because their stdio console needs
//! a terminal and a service has none. Run with a stand-in hypervisor that writes a line to the
//! console it was given, as the real one would.
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
console=
for arg in "$@"; do
  printf 'arg:%s\n' "$arg" >&2
  case $arg in
    log,path=*) console=${arg#log,path=} ;;
    file,id=*,path=*) console=${arg##*,path=} ;;
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
        "tools": { "bash": "/bin/bash", "cat": "/bin/cat" }
    });
    spec["tools"][hypervisor] = json!(stand_in);
    if hypervisor == "stratovirt" {
        spec["socket"] = json!("console.sock");
    }
    let text = microvm_codegen::diagnostic::SpecText::new("console.json", spec.to_string());
    let (spec, findings) = common::check(&text);
    assert!(findings.is_empty(), "{findings:?}");
    let runner = dir.join("runner");
    microvm_codegen::output::write(&runner, &common::build(&spec.unwrap()), false).unwrap();
    runner.join("bin/microvm-run")
}

/// Runs `microvm-run` as a service does: stdin /dev/null, stdout a pipe.
fn run_without_terminal(run: &Path, dir: &Path) -> (String, Vec<String>) {
    let output = Command::new(run)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let args = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("arg:"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&output.stdout).into_owned(), args)
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
fn without_a_terminal_the_console_is_a_pipe_to_stdout() {
    for hypervisor in ["alioth", "stratovirt"] {
        let dir = tempfile::tempdir().unwrap();
        let run = runner(dir.path(), hypervisor, Path::new("/boot/vmlinuz"));
        let (stdout, args) = run_without_terminal(&run, dir.path());
        let console = match hypervisor {
            "alioth" => value_after(&args, "--console"),
            _ => value_after(&args, "-chardev"),
        };
        assert!(
            console.contains("path=/proc/self/fd/"),
            "{hypervisor}: {console}"
        );
        assert!(
            !args.iter().any(|a| a.contains("stdio")),
            "{hypervisor}: stdio needs a terminal: {args:?}"
        );
        assert_eq!(
            stdout.trim(),
            "guest-console-line",
            "{hypervisor}: the console reaches stdout"
        );
    }
}

#[test]
fn on_a_terminal_the_console_is_stdio() {
    if !common::have("script") {
        panic!("script (util-linux/bsdutils) is needed to give microvm-run a terminal");
    }
    for (hypervisor, flag, value) in [
        ("alioth", "--console", "stdio"),
        ("stratovirt", "-chardev", "stdio,id=console0"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = runner(dir.path(), hypervisor, Path::new("/boot/vmlinuz"));
        let out = run_on_terminal(&run, dir.path());
        let args: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("arg:"))
            .map(str::to_owned)
            .collect();
        assert_eq!(value_after(&args, flag), value, "{hypervisor}: {out}");
        assert!(out.contains("guest-console-line"), "{out}");
    }
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
        let (_, args) = run_without_terminal(&run, vm.path());
        assert_eq!(value_after(&args, flag), kernel.display().to_string());
        assert!(!args.iter().any(|a| a == other), "{args:?}");
    }
}
