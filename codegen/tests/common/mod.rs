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

/// Every file under `dir`, at any depth, whose name ends in `.{extension}`, sorted.
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, extension, out);
            } else if path.extension().is_some_and(|e| e == extension) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, extension, &mut files);
    files.sort();
    files
}

/// The committed JSON Schema doc/`file`, parsed, after checking it is `generated` (the schema
/// the code makes now, as `microvm-codegen schema --of <of>` prints it) plus one newline.
pub fn committed_schema(file: &str, of: &str, generated: &str) -> serde_json::Value {
    let path = repo_root().join("doc").join(file);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed,
        format!("{}\n", generated.trim_end()),
        "doc/{file} is stale: run `cargo run -p microvm-codegen --bin microvm-codegen -- schema --of {of} > doc/{file}`"
    );
    serde_json::from_str(&committed).expect("a committed schema is JSON")
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

/// The hypervisor command line `bin/microvm-run` execs, read back from the generated script:
/// the program and its arguments, without `exec -a NAME` and the run-time `extra_args` (wherever
/// they go: before a trailing positional argument, for crosvm).
pub fn exec_argv(tree: &Tree) -> Vec<String> {
    let Some(Entry::File { contents, .. }) = tree.get("bin/microvm-run") else {
        panic!("no bin/microvm-run");
    };
    let mut command = String::new();
    let mut in_exec = false;
    for line in contents.lines() {
        if line.starts_with("exec ") && !line.starts_with("exec {") && !line.contains("<>") {
            in_exec = true;
        }
        if in_exec {
            match line.strip_suffix('\\') {
                Some(head) => command.push_str(head),
                None => {
                    command.push_str(line);
                    break;
                }
            }
        }
    }
    let mut words = shlex::split(&command).expect("the exec line is valid shell");
    assert_eq!(words.remove(0), "exec");
    if words[0] == "-a" {
        words.drain(..2);
    }
    let runtime = words
        .iter()
        .position(|w| w == "${extra_args[@]}")
        .expect("microvm-run passes the run-time arguments");
    words.remove(runtime);
    words
}

/// `argv` with the run-time variable `var` (a `${var}` in a word) replaced by `value`, as
/// `microvm-run` sets it.
pub fn substitute(argv: &[String], var: &str, value: &str) -> Vec<String> {
    let pattern = format!("${{{var}}}");
    argv.iter().map(|w| w.replace(&pattern, value)).collect()
}

/// The values `microvm-run`'s console step gives `var`: (on a terminal, without one), with
/// the pipe's descriptor as `$console_pipe`.
pub fn console_values(tree: &Tree, var: &str) -> (String, String) {
    let Some(Entry::File { contents, .. }) = tree.get("bin/microvm-run") else {
        panic!("no bin/microvm-run");
    };
    let assigned: Vec<String> = contents
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(&format!("{var}=")))
        .map(|v| shlex::split(v).expect("valid shell").concat())
        .collect();
    assert_eq!(
        assigned.len(),
        2,
        "{var} is set on a terminal and without one"
    );
    (assigned[0].clone(), assigned[1].clone())
}

/// Validates `spec` (which must be accepted) and writes its runner to `dir/runner`, as
/// `microvm-codegen generate` would: the path of its `bin/microvm-run`.
pub fn write_runner(dir: &Path, spec: &serde_json::Value) -> PathBuf {
    let text = SpecText::new("test-spec.json", spec.to_string());
    let (spec, findings) = check(&text);
    assert!(findings.is_empty(), "{findings:?}");
    let runner = dir.join("runner");
    microvm_codegen::output::write(&runner, &build(&spec.unwrap()), false).unwrap();
    runner.join("bin/microvm-run")
}

/// Loads an accepted fixture and builds its tree.
pub fn ok_fixture(name: &str) -> (RunnerSpec, Tree) {
    let text = fixture_text(&fixtures().join("ok").join(name));
    let (spec, findings) = check(&text);
    assert!(findings.is_empty(), "{name}: {findings:?}");
    let spec = spec.unwrap();
    let tree = build(&spec);
    (spec, tree)
}

/// `key=value` pairs split at top-level commas (not inside `[...]`), as several hypervisors'
/// option parsers do. Keys without `=` map to "".
pub fn split_kv(text: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p, String::new()),
        })
        .collect()
}

/// Writes a host spec into `dir` and runs `microvm-codegen host` on it, as the host module's
/// derivation does: the package (`dir/host`), or a panic with the report.
pub fn generate_host(spec: &serde_json::Value, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let spec_path = dir.join("host-spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let package = dir.join("host");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
        .args(["host", "--spec"])
        .arg(&spec_path)
        .arg("--out")
        .arg(&package)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "microvm-codegen host refused the spec:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    package
}
