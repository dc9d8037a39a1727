//! Running Debian's Nix (2.8) on this repository's Nix files, for the Nix tests (tier 4):
//! `nix-instantiate --eval --strict --json` on checks/eval with nixpkgs' lib from `NIXPKGS_LIB`.
//! Included with `#[path = "common/nix.rs"] mod nix;` next to `mod common;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::common;

/// nixpkgs' lib (the directory with its default.nix). Without it the tier cannot run: say so in
/// the one line checks/test.sh also prints, and fail, so the test never counts as passed.
pub fn nixpkgs_lib() -> PathBuf {
    common::require("nix-instantiate", "nix-bin");
    match std::env::var_os("NIXPKGS_LIB") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("default.nix").is_file(),
                "NIXPKGS_LIB={} has no default.nix: point it at the lib directory of a nixpkgs (or nixpkgs.lib) checkout",
                dir.display()
            );
            dir
        }
        _ => {
            println!("skipped: NIXPKGS_LIB unset");
            panic!(
                "skipped: NIXPKGS_LIB unset. The Nix evaluation tests need nixpkgs' lib: set NIXPKGS_LIB \
                 to the lib directory of a nixpkgs or nix-community/nixpkgs.lib checkout \
                 (checks/test.sh unpacks the revision pinned in checks/nixpkgs-lib.rev, or leaves this tier out and says so)"
            )
        }
    }
}

/// The evaluation tests' entry point.
pub fn eval_dir() -> PathBuf {
    common::repo_root().join("checks/eval")
}

/// Evaluates attribute `attr` of checks/eval with extra `--argstr` arguments: the value, or
/// Nix's error output.
pub fn eval_with(attr: &str, args: &[(&str, &str)]) -> Result<Value, String> {
    let lib = nixpkgs_lib();
    let mut command = Command::new("nix-instantiate");
    command
        .args(["--eval", "--strict", "--json"])
        .arg(eval_dir())
        .arg("--argstr")
        .arg("nixpkgsLib")
        .arg(&lib)
        .args(["-A", attr]);
    for (name, value) in args {
        command.args(["--argstr", name, value]);
    }
    // Nix 2.8 wants a writable state directory even for pure evaluation; keep it out of /nix.
    let state = tempfile::tempdir().expect("a temporary directory");
    let output = command
        .env("NIX_STATE_DIR", state.path())
        .env("NIX_PATH", "")
        .output()
        .expect("nix-instantiate runs");
    if output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("nix-instantiate printed no JSON ({e}):\n{text}")))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Evaluates `attr`, which must succeed.
pub fn eval(attr: &str) -> Value {
    eval_with(attr, &[]).unwrap_or_else(|e| panic!("evaluating {attr} failed:\n{e}"))
}
