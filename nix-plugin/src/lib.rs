//! The generator as a Nix evaluator plugin: `builtins.microvmValidate` and
//! `builtins.microvmRender`, so a runner's validation happens at evaluation time and its files
//! come from the evaluator.
//!
//! This module is the safe part: a spec (JSON text, or the JSON of an attribute set) in, JSON
//! out, or the refusal's message — the same report and codes as `microvm-codegen validate`.
//! `ffi` is the unsafe boundary over Nix's C API; it exists only when the build found that API
//! (see build.rs).
//!
//! `microvmRender`'s result maps each path of the runner to `{ type = "file"; text;
//! executable; }` or, for a symlink, `{ type = "symlink"; target; }`: exactly the tree
//! `microvm-codegen generate` writes into a new directory, its manifest included.

use serde_json::{Map, Value};

use microvm_codegen::diagnostic::{self, SpecText};
use microvm_codegen::input_file;
use microvm_codegen::render::Renderer;
use microvm_codegen::runner::{self, Entry};
use microvm_codegen::spec::{RunnerSpec, SPEC_VERSION};
use microvm_codegen::{load, output, validate};

#[cfg(nix_c_api)]
mod ffi;

/// Whether this build is a Nix plugin: it found Nix's C API (build.rs).
pub fn is_plugin() -> bool {
    cfg!(nix_c_api)
}

/// How deeply a spec given as an attribute set may nest: as deep as the generator reads JSON.
pub const MAX_DEPTH: usize = 128;

/// The most bytes of spec the primops take, as `microvm-codegen` reads from a file.
pub const MAX_BYTES: u64 = input_file::SPEC.bytes;

/// The primops' argument.
#[derive(Debug, Clone, Copy)]
pub enum Spec<'a> {
    /// JSON text the user gave (`builtins.toJSON spec`, or a file's contents): reports point
    /// into it as written.
    Text(&'a str),
    /// An attribute set, as JSON: reports point into it pretty-printed, one field a line.
    Attrs(&'a Value),
}

/// A primop's refusal: the message of the evaluation error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The width reports are wrapped at in an evaluation error.
const REPORT_WIDTH: usize = 100;

/// Loads and validates a spec as `microvm-codegen validate` does: every problem at once.
fn checked(primop: &str, spec: Spec) -> Result<RunnerSpec, Refusal> {
    let (name, text) = match spec {
        Spec::Text(text) => ("the spec (JSON text)", text.to_owned()),
        Spec::Attrs(value) => (
            "the spec",
            serde_json::to_string_pretty(value).map_err(|e| {
                Refusal(format!("{primop}: the spec cannot be written as JSON: {e}"))
            })?,
        ),
    };
    if text.len() as u64 > MAX_BYTES {
        let limit = input_file::SPEC;
        return Err(Refusal(format!(
            "{primop}: {}: the spec is more than {} MiB, more than {} can be; {}",
            limit.code,
            MAX_BYTES >> 20,
            limit.what,
            limit.hint
        )));
    }
    let text = SpecText::new(name, text);
    let spec: RunnerSpec = load::load_versioned(&text, SPEC_VERSION).map_err(|findings| {
        Refusal(format!(
            "{primop}: the argument is not a runner spec:\n{}",
            diagnostic::render_plain(&findings, &text, REPORT_WIDTH)
        ))
    })?;
    let findings = validate::validate(&spec);
    let errors = findings.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        return Err(Refusal(format!(
            "{primop}: the runner spec of {} ({}) is refused: {errors} error{}\n{}",
            spec.host_name,
            spec.hypervisor,
            if errors == 1 { "" } else { "s" },
            diagnostic::render_plain(&findings, &text, REPORT_WIDTH)
        )));
    }
    Ok(spec)
}

/// `builtins.microvmValidate`: the spec as the generator reads it (defaults filled in), or
/// the refusal.
pub fn validate(spec: Spec) -> Result<Value, Refusal> {
    let spec = checked("microvmValidate", spec)?;
    serde_json::to_value(&spec).map_err(|e| {
        Refusal(format!(
            "microvmValidate: internal error (please report it): {e}"
        ))
    })
}

/// `builtins.microvmRender`: the runner's files, or the refusal.
pub fn render(spec: Spec) -> Result<Value, Refusal> {
    let spec = checked("microvmRender", spec)?;
    let tree = runner::build(&spec, &Renderer::new()).map_err(|e| {
        Refusal(format!(
            "microvmRender: internal error (please report it): {e}"
        ))
    })?;
    let mut files = Map::new();
    for (path, entry) in output::with_manifest(&tree) {
        let mut fields = Map::new();
        match entry {
            Entry::File {
                contents,
                executable,
            } => {
                fields.insert("type".to_owned(), Value::from("file"));
                fields.insert("text".to_owned(), Value::from(contents));
                fields.insert("executable".to_owned(), Value::from(executable));
            }
            Entry::Symlink { target } => {
                fields.insert("type".to_owned(), Value::from("symlink"));
                fields.insert("target".to_owned(), Value::from(target));
            }
        }
        files.insert(path, Value::Object(fields));
    }
    Ok(Value::Object(files))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    fn fixture(name: &str) -> String {
        let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../codegen/tests/fixtures")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn render_gives_every_file_of_the_runner_and_its_manifest() {
        let text = fixture("ok/qemu-every-feature.json");
        let rendered = render(Spec::Text(&text)).unwrap();
        let spec = load::load(&SpecText::new("spec.json", text.as_str())).unwrap();
        let tree = runner::build(&spec, &Renderer::new()).unwrap();
        let paths: BTreeSet<&str> = rendered
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected: BTreeSet<&str> = tree.keys().map(String::as_str).collect();
        expected.insert(output::MANIFEST);
        assert_eq!(paths, expected);
        let manifest = rendered[output::MANIFEST]["text"].as_str().unwrap();
        assert_eq!(manifest.lines().count(), expected.len(), "{manifest}");
        let run = &rendered["bin/microvm-run"];
        assert_eq!(run["type"], "file");
        assert_eq!(run["executable"], true);
        assert!(run["text"].as_str().unwrap().starts_with("#!"));
        let symlinks: Vec<_> = tree
            .iter()
            .filter_map(|(path, entry)| match entry {
                Entry::Symlink { target } => Some((path, target)),
                Entry::File { .. } => None,
            })
            .collect();
        assert!(
            !symlinks.is_empty(),
            "the every-feature fixture has a symlink"
        );
        for (path, target) in symlinks {
            assert_eq!(
                rendered[path.as_str()],
                serde_json::json!({ "type": "symlink", "target": target })
            );
        }
    }

    #[test]
    fn a_refusal_carries_every_error_and_its_code() {
        let text = fixture("err/duplicate-share-tags.json");
        let spec = load::load(&SpecText::new("spec.json", text.as_str())).unwrap();
        let codes: BTreeSet<String> = validate::validate(&spec)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| d.code)
            .collect();
        assert!(!codes.is_empty());
        let Refusal(message) = validate(Spec::Text(&text)).unwrap_err();
        assert!(
            message.starts_with("microvmValidate: the runner spec of "),
            "{message}"
        );
        for code in &codes {
            assert!(message.contains(code.as_str()), "{code}: {message}");
        }
    }

    #[test]
    fn an_attribute_set_is_reported_one_field_a_line() {
        let text = fixture("err/duplicate-share-tags.json");
        let value: Value = serde_json::from_str(&text).unwrap();
        let Refusal(message) = render(Spec::Attrs(&value)).unwrap_err();
        assert!(message.starts_with("microvmRender: "), "{message}");
        // Pretty-printed, the offending field is on a line of its own, not on line 1.
        assert!(message.contains("[the spec:"), "{message}");
        assert!(!message.contains("[the spec:1:"), "{message}");
    }

    #[test]
    fn text_beyond_the_limit_is_refused_with_its_code() {
        let text = " ".repeat(MAX_BYTES as usize + 1);
        let Refusal(message) = validate(Spec::Text(&text)).unwrap_err();
        assert!(message.contains(input_file::SPEC.code), "{message}");
    }
}
