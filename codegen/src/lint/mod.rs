//! `microvm-codegen lint`: finds `microvm.*` settings in users' Nix files, without evaluating
//! them, and reports mistakes at their place in the file: unknown options (with "did you
//! mean"), removed and renamed options, literal values of the wrong type, enum values that do
//! not exist, capability conflicts between literals (firecracker with a 9p share) and
//! duplicate tags and ids.
//!
//! Settings are found in module positions: a file that is a module, the `modules` of
//! `nixosSystem`/`evalModules` (also written `with …; [ … ]`), `imports`, `nixosModules.*`,
//! functions shaped like modules (`{ config, lib, ... }: …`, also with `self`) or returning
//! settings (`mkVm = { name, id }: { microvm = …; }`) and the guests of
//! `microvm.vms.<name>.config` — also of VMs named by `${…}` or built by `mapAttrs`,
//! `genAttrs`, `listToAttrs` and folds, each a VM of its own whose name is not known. Within
//! a module, `microvm.x = …`, `microvm = { … }` (any number of such blocks, `rec` sets,
//! `inherit`), `config.microvm…` and `config = mkIf … { … }` are all settings; `mkIf`,
//! `mkDefault`, `mkForce`, `mkOverride`, `mkMerge`, `mkBefore`/`mkAfter` are looked through. A
//! `let` binding named `microvm`, a flake input and anything outside a module position are not
//! settings.
//!
//! Lint's time grows linearly with its input (`cargo bench --bench lint` doubles each
//! adversarial shape and prints the ratio): the shapes rnix and rowan parse in quadratic time
//! are refused as syntax errors by `nix_syntax` (`MAX_NAME_RUN`, `MAX_CHAIN`), "did you mean"
//! does not compare names of very different lengths, and reports read only the lines around
//! each span.
//!
//! What is not a literal (a variable, a function call) is skipped, never guessed — except
//! `pkgs.x` where an enum's string is required, which is never one; checks that combine
//! settings (capabilities, duplicates) use only plain definitions, not those under `mkIf` or
//! of lowered priority (`mkDefault`). A wrong value that is read only where a sibling has some
//! value (`securityModel`, on 9p shares) is an error only there.

mod known;
pub mod report;
mod scope;
mod walk;

use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

pub use report::{json, render_plain};

pub use crate::diagnostic::Severity;

use crate::nix_syntax;
use crate::options::{self, OptionTree, Source};

/// One finding, as data: a stable code, where, what and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable: `microvm::lint::unknown_option`, `microvm::capability::share_9p`, …
    pub code: String,
    pub severity: Severity,
    pub message: String,
    /// Index into the linted files.
    pub file: usize,
    /// Byte range in that file.
    pub span: Range<usize>,
    /// Short text under the span.
    pub label: Option<String>,
    /// Other places in the same file that explain the finding.
    pub related: Vec<(Range<usize>, String)>,
    pub help: Option<String>,
}

impl Finding {
    pub fn error(
        code: &str,
        message: impl Into<String>,
        file: usize,
        span: Range<usize>,
    ) -> Finding {
        Finding {
            code: code.to_owned(),
            severity: Severity::Error,
            message: message.into(),
            file,
            span,
            label: None,
            related: Vec::new(),
            help: None,
        }
    }

    pub fn warning(
        code: &str,
        message: impl Into<String>,
        file: usize,
        span: Range<usize>,
    ) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(code, message, file, span)
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Finding {
        self.label = Some(label.into());
        self
    }

    /// Another place in the same file that explains the finding.
    pub fn related(mut self, span: Range<usize>, label: impl Into<String>) -> Finding {
        self.related.push((span, label.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Finding {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Stable codes of lint findings (capability conflicts use the generator's
/// `microvm::capability::<feature>` codes).
pub mod codes {
    pub const SYNTAX: &str = "microvm::lint::syntax";
    pub const UNKNOWN_OPTION: &str = "microvm::lint::unknown_option";
    pub const REMOVED_OPTION: &str = "microvm::lint::removed_option";
    pub const RENAMED_OPTION: &str = "microvm::lint::renamed_option";
    pub const READ_ONLY: &str = "microvm::lint::read_only";
    pub const WRONG_TYPE: &str = "microvm::lint::wrong_type";
    pub const ENUM_VALUE: &str = "microvm::lint::enum_value";
    pub const OUT_OF_RANGE: &str = "microvm::lint::out_of_range";
    pub const DUPLICATE: &str = "microvm::lint::duplicate";
    pub const CONFLICT: &str = "microvm::lint::conflicting_definitions";
    /// A file or folder lint was given cannot be read (exit status 2).
    pub const UNREADABLE: &str = "microvm::lint::unreadable";
}

/// Says that lint could not read its input: on stderr, and with `--format json` also as the one
/// finding on stdout, so an editor reading stdout learns why there is nothing else.
fn unreadable(format: Format, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("microvm-codegen: {error}");
    if format == Format::Json {
        let finding = serde_json::json!([{
            "code": codes::UNREADABLE,
            "severity": Severity::Error.name(),
            "message": error.to_string(),
            "file": null,
            "help": "give files or folders of .nix files that exist and can be read",
        }]);
        println!("{finding}");
    }
    ExitCode::from(crate::exit_code::EXIT_USAGE)
}

/// Lints `files` against the options of `reference` plus those the files declare themselves.
pub fn lint(files: &[Source], reference: &OptionTree) -> Vec<Finding> {
    nix_syntax::with_deep_stack(|| lint_here(files, reference))
}

fn lint_here(files: &[Source], reference: &OptionTree) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut parsed = Vec::new();
    let mut tree = reference.clone();
    for (index, file) in files.iter().enumerate() {
        let result = nix_syntax::parse(&file.text);
        // Like Nix, only the first: the others follow from it.
        for error in result.errors.iter().take(1) {
            findings.push(
                Finding::error(
                    codes::SYNTAX,
                    format!("syntax error: {}", error.message),
                    index,
                    error.span.clone(),
                )
                .label("here"),
            );
        }
        if let Some(root) = &result.root {
            let mut own = options::declarations_in(&file.name, &file.path, &file.text, root);
            // A module sets the read-only options it declares itself.
            for option in &mut own.options {
                option.read_only = false;
            }
            tree.extend(own);
        }
        parsed.push(result.root);
    }
    let known = known::Known::new(tree);
    for (index, root) in parsed.iter().enumerate() {
        let Some(root) = root else { continue };
        let mut walker = walk::Walker::new(&known, index);
        walker.file_root(root);
        let (mut file_findings, scopes) = walker.finish();
        file_findings.extend(scope::check(index, &scopes));
        findings.extend(file_findings);
    }
    findings.sort_by(|a, b| {
        (a.file, a.span.start, a.severity, &a.code, &a.message).cmp(&(
            b.file,
            b.span.start,
            b.severity,
            &b.code,
            &b.message,
        ))
    });
    findings.dedup();
    findings
}

/// How `lint` prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Reports with the offending lines, for people.
    Human,
    /// One JSON array of findings, for editors (code, severity, message, file, line, column,
    /// span, help).
    Json,
}

/// `microvm-codegen lint`: exit status 0 without errors (warnings allowed), 1 when an error is
/// reported, 2 for usage and I/O errors.
pub fn command(paths: &[PathBuf], format: Format, option_paths: &[PathBuf]) -> ExitCode {
    use std::io::IsTerminal;

    let reference = if option_paths.is_empty() {
        options::reference().clone()
    } else {
        match OptionTree::read(option_paths) {
            Ok((tree, problems)) => {
                for problem in &problems {
                    eprintln!("microvm-codegen: {problem}");
                }
                tree
            }
            Err(e) => return unreadable(format, &e),
        }
    };
    let files = match options::sources_under(paths) {
        Ok(files) => files,
        Err(e) => return unreadable(format, &e),
    };
    let findings = lint(&files, &reference);
    match format {
        Format::Json => print!("{}", json(&findings, &files)),
        Format::Human => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!("{}", report::render(&findings, &files, 100, colour));
        }
    }
    let errors = findings.iter().filter(|f| f.is_error()).count();
    let warnings = findings.len() - errors;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    eprintln!(
        "microvm-codegen: {errors} error{}, {warnings} warning{} in {} file{}",
        plural(errors),
        plural(warnings),
        files.len(),
        plural(files.len())
    );
    if errors > 0 {
        ExitCode::from(crate::exit_code::EXIT_REFUSED)
    } else {
        ExitCode::SUCCESS
    }
}
