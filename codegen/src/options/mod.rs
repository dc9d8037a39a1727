//! The `microvm.*` option declarations of our NixOS modules (`nixos-modules/**`), read with
//! rnix into an option tree: every option's full path (`microvm.volumes.*.image`,
//! `microvm.vms.<name>.config`), its type, default, description, example and where it is
//! declared, plus the options the modules declare removed or renamed. It feeds the options
//! reference (`microvm-codegen options`), the drift test against the runner spec, and `lint`.
//!
//! Nothing is evaluated: a default computed from `config` or `pkgs` is kept as text and marked
//! so; only constants such as an enum's list of values are followed through `let` and
//! `import`.

pub mod doc;
mod eval;
mod read;
pub mod spec;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use read::{declarations_in, read_sources};

/// The committed reference of our options (`microvm-codegen options --format json`), which
/// `lint` checks users' files against.
pub const REFERENCE_JSON: &str = include_str!("../../../doc/options.json");

/// The embedded reference. The `options_reference` tests prove it current and parseable.
pub fn reference() -> &'static OptionTree {
    static TREE: std::sync::OnceLock<OptionTree> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        serde_json::from_str(REFERENCE_JSON).expect("doc/options.json is checked by the tests")
    })
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionTree {
    /// Every declared option, sorted by path.
    pub options: Vec<OptionDecl>,
    /// Options declared removed (`mkRemovedOptionModule`).
    pub removed: Vec<RemovedOption>,
    /// Options declared renamed or replaced (`mkRenamedOptionModule`, `mkAliasOptionModule`,
    /// `mkChangedOptionModule`, `mkMergedOptionModule`).
    pub renamed: Vec<RenamedOption>,
}

/// One `mkOption` (or `mkEnableOption`, `mkPackageOption`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionDecl {
    /// Dotted: `microvm.shares.*.tag`. `*` stands for any list element, `<name>` for any
    /// attribute name.
    pub name: String,
    /// The same path as a list of names.
    pub loc: Vec<String>,
    #[serde(rename = "type")]
    pub ty: OptionType,
    pub default: Option<DefaultValue>,
    pub description: Option<String>,
    pub example: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// The file, as named when it was read (relative to the repository).
    pub file: String,
    pub line: usize,
}

/// A type as far as it can be known without evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum OptionType {
    Bool,
    /// `int`, `ints.*`, `port`.
    Int {
        name: String,
        min: Option<i64>,
        max: Option<i64>,
    },
    Float,
    /// `number`: an integer or a float.
    Number,
    /// `str`, `nonEmptyStr`, `singleLineStr`, `lines`, `strMatching …`, `separatedString …`.
    #[serde(rename_all = "camelCase")]
    Str {
        name: String,
        non_empty: bool,
        single_line: bool,
        /// Several definitions are joined with a separator (`lines`, `commas`, `envVar`,
        /// `separatedString …`), not in conflict.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        joined: bool,
    },
    Path,
    Package,
    /// `values` is `None` when the list is not a constant.
    Enum {
        values: Option<Vec<String>>,
        text: String,
    },
    NullOr {
        of: Box<OptionType>,
    },
    ListOf {
        of: Box<OptionType>,
    },
    /// `attrsOf` and `lazyAttrsOf`.
    AttrsOf {
        of: Box<OptionType>,
    },
    /// A submodule; its options are in the tree under this option's path.
    Submodule {
        freeform: bool,
    },
    /// `deferredModule`: a whole NixOS module (a guest's configuration).
    Module,
    /// `oneOf [ … ]`, `either a b`.
    OneOf {
        of: Vec<OptionType>,
    },
    Attrs,
    FunctionTo {
        of: Box<OptionType>,
    },
    /// Anything else (`raw`, `anything`, `unspecified`, `pkgs`, or an expression that is not
    /// a type constructor we know); its value is never checked.
    Other {
        text: String,
    },
}

impl OptionType {
    /// The type without `nullOr`.
    pub fn non_null(&self) -> &OptionType {
        match self {
            OptionType::NullOr { of } => of.non_null(),
            other => other,
        }
    }

    /// Whether two definitions with different values are joined into one rather than in
    /// conflict (for the types whose values are single definitions: strings, numbers, …).
    pub fn merges(&self) -> bool {
        matches!(self.non_null(), OptionType::Str { joined: true, .. })
    }

    /// Whether values of this type are sets of further options in the tree.
    pub fn has_suboptions(&self) -> bool {
        match self.non_null() {
            OptionType::Submodule { .. } => true,
            OptionType::ListOf { of } | OptionType::AttrsOf { of } => of.has_suboptions(),
            _ => false,
        }
    }

    fn is_compound(&self) -> bool {
        matches!(
            self,
            OptionType::NullOr { .. }
                | OptionType::ListOf { .. }
                | OptionType::AttrsOf { .. }
                | OptionType::OneOf { .. }
                | OptionType::FunctionTo { .. }
                | OptionType::Enum { .. }
        ) || matches!(self, OptionType::Int { name, .. } if name.contains(' '))
            || matches!(self, OptionType::Str { name, .. } if name.contains(' '))
    }

    /// In words, for messages: "a list of strings".
    pub fn describe(&self) -> String {
        match self {
            OptionType::Bool => "a boolean".into(),
            OptionType::Int { min, max, .. } => match (min, max) {
                (Some(1), None) => "a positive integer".into(),
                (Some(0), None) => "an unsigned integer".into(),
                (Some(lo), Some(hi)) => format!("an integer from {lo} to {hi}"),
                _ => "an integer".into(),
            },
            OptionType::Float => "a float".into(),
            OptionType::Number => "a number".into(),
            OptionType::Str {
                non_empty,
                single_line,
                ..
            } => match (non_empty, single_line) {
                (true, _) => "a non-empty string".into(),
                (false, true) => "a single-line string".into(),
                _ => "a string".into(),
            },
            OptionType::Path => "an absolute path".into(),
            OptionType::Package => "a package".into(),
            OptionType::Enum {
                values: Some(values),
                ..
            } => format!(
                "one of {}",
                values
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            OptionType::Enum { .. } => "one of a list of values".into(),
            OptionType::NullOr { of } => format!("null or {}", of.describe()),
            OptionType::ListOf { of } => format!("a list of {}", of.describe_plural()),
            OptionType::AttrsOf { of } => format!("an attribute set of {}", of.describe_plural()),
            OptionType::Submodule { .. } => "an attribute set of options".into(),
            OptionType::Module => "a NixOS module".into(),
            OptionType::OneOf { of } => of
                .iter()
                .map(OptionType::describe)
                .collect::<Vec<_>>()
                .join(" or "),
            OptionType::Attrs => "an attribute set".into(),
            OptionType::FunctionTo { .. } => "a function".into(),
            OptionType::Other { text } => format!("a value of type {text}"),
        }
    }

    /// In words, several of them: "strings".
    fn describe_plural(&self) -> String {
        match self {
            OptionType::Bool => "booleans".into(),
            OptionType::Int { min, max, .. } => match (min, max) {
                (Some(1), None) => "positive integers".into(),
                (Some(0), None) => "unsigned integers".into(),
                (Some(lo), Some(hi)) => format!("integers from {lo} to {hi}"),
                _ => "integers".into(),
            },
            OptionType::Float => "floats".into(),
            OptionType::Number => "numbers".into(),
            OptionType::Str {
                non_empty,
                single_line,
                ..
            } => match (non_empty, single_line) {
                (true, _) => "non-empty strings".into(),
                (false, true) => "single-line strings".into(),
                _ => "strings".into(),
            },
            OptionType::Path => "absolute paths".into(),
            OptionType::Package => "packages".into(),
            OptionType::ListOf { of } => format!("lists of {}", of.describe_plural()),
            OptionType::AttrsOf { of } => format!("attribute sets of {}", of.describe_plural()),
            OptionType::Submodule { .. } => "attribute sets of options".into(),
            OptionType::Module => "NixOS modules".into(),
            OptionType::Attrs => "attribute sets".into(),
            OptionType::FunctionTo { .. } => "functions".into(),
            other => format!("values that are {}", other.describe()),
        }
    }
}

/// Normalised type text: `listOf (submodule)`, `nullOr str`, `enum [ "9p" "virtiofs" ]`.
impl fmt::Display for OptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wrapped = |t: &OptionType| {
            if t.is_compound() {
                format!("({t})")
            } else {
                t.to_string()
            }
        };
        match self {
            OptionType::Bool => f.write_str("bool"),
            OptionType::Int { name, .. } | OptionType::Str { name, .. } => f.write_str(name),
            OptionType::Float => f.write_str("float"),
            OptionType::Number => f.write_str("number"),
            OptionType::Path => f.write_str("path"),
            OptionType::Package => f.write_str("package"),
            OptionType::Enum {
                values: Some(values),
                ..
            } => {
                f.write_str("enum [")?;
                for value in values {
                    write!(f, " {value:?}")?;
                }
                f.write_str(" ]")
            }
            OptionType::Enum { values: None, text } => write!(f, "enum {text}"),
            OptionType::NullOr { of } => write!(f, "nullOr {}", wrapped(of)),
            OptionType::ListOf { of } => write!(f, "listOf {}", wrapped(of)),
            OptionType::AttrsOf { of } => write!(f, "attrsOf {}", wrapped(of)),
            OptionType::Submodule { freeform: false } => f.write_str("submodule"),
            OptionType::Submodule { freeform: true } => f.write_str("submodule (freeform)"),
            OptionType::Module => f.write_str("deferredModule"),
            OptionType::OneOf { of } => {
                f.write_str("oneOf [")?;
                for t in of {
                    write!(f, " {}", wrapped(t))?;
                }
                f.write_str(" ]")
            }
            OptionType::Attrs => f.write_str("attrs"),
            OptionType::FunctionTo { of } => write!(f, "functionTo {}", wrapped(of)),
            OptionType::Other { text } => f.write_str(text),
        }
    }
}

/// An option's default, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "text", rename_all = "camelCase")]
pub enum DefaultValue {
    /// A constant, as Nix text: `512`, `"qemu"`, `[ ]`.
    Literal(String),
    /// Computed at evaluation time; the text is the declaration's `defaultText`.
    Documented(String),
    /// Computed at evaluation time from `config`, `pkgs` or other modules' values, and
    /// undocumented: the text is the expression as written.
    Computed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemovedOption {
    pub name: String,
    pub loc: Vec<String>,
    /// What the module says replaced it.
    pub message: String,
    pub file: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RenameKind {
    /// `mkRenamedOptionModule`: still works, with a warning.
    Renamed,
    /// `mkAliasOptionModule`: another name for the same option.
    Alias,
    /// `mkChangedOptionModule`, `mkMergedOptionModule`: the value is converted.
    Changed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenamedOption {
    pub name: String,
    pub loc: Vec<String>,
    pub to: String,
    pub kind: RenameKind,
    pub file: String,
    pub line: usize,
}

/// A file that could not be read as option declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadProblem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ReadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// One `.nix` file to read declarations from or to lint: its name in reports, where it is (for
/// relative `import`s) and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// Every `.nix` file under the given files and directories, sorted, as [`Source`]s named as
/// found (`nixos-modules/microvm/options.nix` when `nixos-modules` is given).
pub fn sources_under(paths: &[PathBuf]) -> std::io::Result<Vec<Source>> {
    let mut files = Vec::new();
    for path in paths {
        collect_nix_files(path, &mut files)?;
    }
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|path| {
            let text =
                crate::input_file::read_to_string(&path, crate::input_file::NIX).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
                })?;
            Ok(Source {
                name: path.display().to_string(),
                path,
                text,
            })
        })
        .collect()
}

fn collect_nix_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
    })?;
    if metadata.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            if entry.is_dir() || entry.extension().is_some_and(|e| e == "nix") {
                collect_nix_files(&entry, out)?;
            }
        }
    } else {
        out.push(path.to_owned());
    }
    Ok(())
}

/// `microvm-codegen options`: prints the reference of the modules under `paths`. Exit status:
/// 0, 1 when a module file is not valid Nix (the reference would be incomplete), 2 on I/O
/// errors.
pub fn command(paths: &[PathBuf], json: bool) -> std::process::ExitCode {
    use std::process::ExitCode;
    let (tree, problems) = match OptionTree::read(paths) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("microvm-codegen: {e}");
            return ExitCode::from(crate::exit_code::EXIT_USAGE);
        }
    };
    for problem in &problems {
        eprintln!("microvm-codegen: {problem}");
    }
    if !problems.is_empty() {
        return ExitCode::from(crate::exit_code::EXIT_REFUSED);
    }
    if json {
        print!("{}", doc::json(&tree));
    } else {
        print!("{}", doc::markdown(&tree));
    }
    ExitCode::SUCCESS
}

impl OptionTree {
    /// Reads the declarations in every `.nix` file under `paths`.
    pub fn read(paths: &[PathBuf]) -> std::io::Result<(OptionTree, Vec<ReadProblem>)> {
        Ok(read_sources(&sources_under(paths)?))
    }

    pub fn get(&self, name: &str) -> Option<&OptionDecl> {
        self.options.iter().find(|o| o.name == name)
    }

    /// Adds another tree's declarations (a user's own), keeping the order sorted.
    pub fn extend(&mut self, other: OptionTree) {
        self.options.extend(other.options);
        self.removed.extend(other.removed);
        self.renamed.extend(other.renamed);
        self.sort();
    }

    fn sort(&mut self) {
        self.options.sort_by(|a, b| a.loc.cmp(&b.loc));
        self.removed.sort_by(|a, b| a.loc.cmp(&b.loc));
        self.renamed.sort_by(|a, b| a.loc.cmp(&b.loc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_print_normalised_and_in_words() {
        let list = OptionType::ListOf {
            of: Box::new(OptionType::Submodule { freeform: false }),
        };
        assert_eq!(list.to_string(), "listOf submodule");
        assert_eq!(list.describe(), "a list of attribute sets of options");
        let nullable = OptionType::NullOr {
            of: Box::new(OptionType::Enum {
                values: Some(vec!["a".into(), "b".into()]),
                text: String::new(),
            }),
        };
        assert_eq!(nullable.to_string(), r#"nullOr (enum [ "a" "b" ])"#);
        assert_eq!(nullable.describe(), r#"null or one of "a", "b""#);
        let strings = OptionType::AttrsOf {
            of: Box::new(OptionType::Str {
                name: "str".into(),
                non_empty: false,
                single_line: false,
                joined: false,
            }),
        };
        assert_eq!(strings.describe(), "an attribute set of strings");
        assert!(list.has_suboptions());
        assert!(!strings.has_suboptions());
    }
}
