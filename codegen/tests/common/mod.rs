//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use microvm_codegen::diagnostic::{Diagnostic, SpecText};
use microvm_codegen::runner::{Entry, Tree};
use microvm_codegen::spec::RunnerSpec;
use microvm_codegen::{load, render, runner, validate};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_owned()
}

/// The text of a fixture, named relative to the fixtures folder so reports are stable.
pub fn fixture_text(path: &Path) -> SpecText {
    let name = path
        .strip_prefix(fixtures())
        .unwrap_or(path)
        .display()
        .to_string();
    SpecText::new(
        name,
        std::fs::read_to_string(path).expect("fixture is readable"),
    )
}

/// Loads and validates: the spec, or every finding (load errors or validation errors).
pub fn check(text: &SpecText) -> (Option<RunnerSpec>, Vec<Diagnostic>) {
    match load::load(text) {
        Err(findings) => (None, findings),
        Ok(spec) => {
            let findings = validate::validate(&spec);
            (Some(spec), findings)
        }
    }
}

pub fn build(spec: &RunnerSpec) -> Tree {
    runner::build(spec, &render::Renderer::new()).expect("a valid spec renders")
}

/// The whole tree as one text: every path, its mode, and its contents.
pub fn describe(tree: &Tree) -> String {
    let mut out = String::new();
    for (path, entry) in tree {
        match entry {
            Entry::File {
                contents,
                executable,
            } => {
                let mode = if *executable { "executable" } else { "file" };
                out.push_str(&format!("──── {path} ({mode}) ────\n{contents}"));
                if !contents.ends_with('\n') {
                    out.push_str("\n[no newline at end of file]\n");
                }
            }
            Entry::Symlink { target } => out.push_str(&format!("──── {path} -> {target}\n")),
        }
        out.push('\n');
    }
    out
}

/// Whether a program can be run (it is on PATH).
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Fails with a message that says how to get `program`. Tiers that need external programs run
/// from checks/test.sh, which installs them or reports the tier as skipped instead.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is not installed (Debian package {package}); checks/test.sh installs it, or skips this tier and says so"
    );
}
