//! From spec text to a typed [`RunnerSpec`]: JSON syntax, the spec version, NUL bytes, and every
//! structural error (unknown fields, wrong types, bad enum values) as diagnostics with places.

use serde_json::Value;

use crate::diagnostic::{Diagnostic, Location, SpecText};
use crate::json_path::JsonPath;
use crate::spec::{RunnerSpec, SPEC_VERSION};
use crate::suggest;

/// Parses and type-checks a spec. Structural errors stop at the first one serde meets; the
/// semantic checks in [`crate::validate`] report everything at once.
pub fn load(text: &SpecText) -> Result<RunnerSpec, Vec<Diagnostic>> {
    load_versioned(text, SPEC_VERSION)
}

/// Like [`load`], for any spec document with a `specVersion` (the host spec too).
pub fn load_versioned<T: serde::de::DeserializeOwned>(
    text: &SpecText,
    version: u32,
) -> Result<T, Vec<Diagnostic>> {
    let value = parse_json(text)?;
    let mut findings = Vec::new();
    check_version(&value, version, &mut findings);
    find_nul_bytes(&value, &JsonPath::root(), &mut findings);
    find_duplicate_keys(text, &mut findings);
    if !findings.is_empty() {
        return Err(findings);
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|error| {
        let path = JsonPath::from(error.path());
        vec![structural(&error.inner().to_string(), path)]
    })
}

fn parse_json(text: &SpecText) -> Result<Value, Vec<Diagnostic>> {
    serde_json::from_str(text.text()).map_err(|error| {
        let offset = offset_of(text.text(), error.line(), error.column());
        let message = strip_position(&error.to_string());
        if message == "recursion limit exceeded" {
            // No excerpt: the line is as long as the nesting is deep.
            return vec![
                Diagnostic::error(
                    "microvm::spec::too_deep",
                    format!(
                        "the spec nests deeper than {} levels (line {}, column {})",
                        crate::json_spans::MAX_DEPTH,
                        error.line(),
                        error.column()
                    ),
                )
                .help("a runner spec nests a few levels deep; this is not a spec the Nix side wrote"),
            ];
        }
        vec![
            Diagnostic::error(
                "microvm::spec::syntax",
                format!("the spec is not valid JSON: {message}"),
            )
            .at_offset(offset)
            .label(message)
            .help("the spec is one JSON object; check for a missing comma, quote or brace before this point"),
        ]
    })
}

/// serde_json reports 1-based lines and columns, both counted in bytes; column 0 means "before
/// the first byte". The offset is kept inside the text and on a character boundary.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (index, content) in text.split_inclusive('\n').enumerate() {
        if index + 1 == line {
            let mut at = (offset + column.saturating_sub(1)).min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return at;
        }
        offset += content.len();
    }
    text.len()
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

fn check_version(value: &Value, expected: u32, findings: &mut Vec<Diagnostic>) {
    let Some(object) = value.as_object() else {
        findings.push(
            Diagnostic::error(
                "microvm::spec::not_an_object",
                "the spec must be a JSON object",
            )
            .at(JsonPath::root())
            .help("a runner spec is an object such as {\"specVersion\": 1, \"hostName\": …}"),
        );
        return;
    };
    if let Some(version) = object.get("specVersion")
        && version.as_u64() != Some(u64::from(expected))
    {
        findings.push(
            Diagnostic::error(
                "microvm::spec::version",
                format!("spec version {version} is not supported"),
            )
            .at(JsonPath::root().key("specVersion"))
            .label(format!("this generator reads version {expected}"))
            .help("build the spec and the generator from the same microvm flake revision"),
        );
    }
}

/// Shell quoting cannot carry a NUL byte, and no path or name may contain one.
fn find_nul_bytes(value: &Value, path: &JsonPath, findings: &mut Vec<Diagnostic>) {
    match value {
        Value::String(s) if s.contains('\0') => findings.push(
            Diagnostic::error("microvm::spec::nul_byte", "a string contains a NUL byte")
                .at(path.clone())
                .help("remove the \\u0000 escape: no path, name or argument can contain NUL"),
        ),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                find_nul_bytes(item, &path.index(index), findings);
            }
        }
        Value::Object(members) => {
            for (key, member) in members {
                if key.contains('\0') {
                    findings.push(
                        Diagnostic::error("microvm::spec::nul_byte", "a key contains a NUL byte")
                            .at_key(path.key(key)),
                    );
                }
                find_nul_bytes(member, &path.key(key), findings);
            }
        }
        _ => {}
    }
}

/// JSON parsers keep the last of two members with the same key and drop the first without a
/// word: a hand-edited spec would run with a value other than the one its author reads first.
fn find_duplicate_keys(text: &SpecText, findings: &mut Vec<Diagnostic>) {
    for duplicate in text.duplicate_keys() {
        let key = duplicate.path.last_key().unwrap_or_default().to_owned();
        let object = duplicate.path.parent().unwrap_or_default();
        let place = if object.0.is_empty() {
            "the spec".to_owned()
        } else {
            object.to_string()
        };
        findings.push(
            Diagnostic::error(
                "microvm::spec::duplicate_key",
                format!("`{key}` is set twice in {place}"),
            )
            .at_key(duplicate.path)
            .label("set again here")
            .also(Location::Bytes(duplicate.first), "first set here")
            .help("remove one of them: only the last would count, and the first would be ignored without a word"),
        );
    }
}

/// Names between backticks after "expected", as serde_derive writes its messages.
fn expected_names(message: &str) -> Vec<&str> {
    let Some(index) = message.find("expected") else {
        return Vec::new();
    };
    message[index..].split('`').skip(1).step_by(2).collect()
}

fn first_backticked(message: &str) -> Option<&str> {
    message.split('`').nth(1)
}

fn structural(message: &str, path: JsonPath) -> Diagnostic {
    if message.starts_with("unknown field") {
        let field = first_backticked(message).unwrap_or_default().to_owned();
        let expected = expected_names(message);
        let object = path.parent().unwrap_or_default();
        let place = if object.0.is_empty() {
            "the spec".to_owned()
        } else {
            object.to_string()
        };
        Diagnostic::error(
            "microvm::spec::unknown_field",
            format!("unknown field `{field}` in {place}"),
        )
        .at_key(path)
        .label("not a known field")
        .help(suggest::help_for(&field, &expected, "field"))
    } else if message.starts_with("unknown variant") {
        let variant = first_backticked(message).unwrap_or_default().to_owned();
        let expected = expected_names(message);
        Diagnostic::error(
            "microvm::spec::unknown_value",
            format!("`{variant}` is not a valid value here"),
        )
        .at(path)
        .label("not a known value")
        .help(suggest::help_for(&variant, &expected, "value"))
    } else if message.starts_with("missing field") {
        let field = first_backticked(message).unwrap_or_default().to_owned();
        Diagnostic::error(
            "microvm::spec::missing_field",
            format!("missing field `{field}`"),
        )
        .at(path)
        .label(format!("`{field}` is required here"))
        .help("see `microvm-codegen schema` for the required fields")
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        Diagnostic::error("microvm::spec::invalid_type", plain_types(message))
            .at(path)
            .label("wrong type")
            .help("see `microvm-codegen schema` for the expected type of each field")
    } else {
        Diagnostic::error("microvm::spec::invalid", message.to_owned()).at(path)
    }
}

/// serde names Rust types ("expected u64"); users know JSON.
fn plain_types(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, plain) in [
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list"),
        ("expected struct ", "expected an object: "),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_lines_and_columns() {
        let text = "{\n  \"a\": x\n}";
        assert_eq!(offset_of(text, 2, 8), 9);
        assert_eq!(&text[9..10], "x");
        assert_eq!(offset_of(text, 9, 1), text.len());
        assert_eq!(offset_of("é", 1, 2), 0, "inside a character");
        assert_eq!(offset_of("ab", 1, 99), 2, "past the end of the text");
    }

    /// serde_json counts columns in bytes: a line with non-ASCII text before the error still
    /// points at the error.
    #[test]
    fn syntax_errors_point_at_the_error_after_non_ascii_text() {
        let text = SpecText::new("spec.json", r#"{"hostName": "ééééééééé", x}"#);
        let errors = load(&text).unwrap_err();
        let (start, _) = text.span_of(&errors[0].location).unwrap();
        assert_eq!(&text.text()[start..], "x}");
        assert_eq!(
            crate::diagnostic::Lines::new(text.text()).line_col(start),
            (1, 27)
        );
    }

    #[test]
    fn reads_serde_expectations() {
        let message = "unknown field `memm`, expected one of `mem`, `vcpu`";
        assert_eq!(expected_names(message), vec!["mem", "vcpu"]);
        assert_eq!(
            expected_names("unknown variant `x`, expected `a` or `b`"),
            vec!["a", "b"]
        );
    }
}
