//! `lint` on fixture files: `fixtures/lint/ok` have no errors, `fixtures/lint/err` have at
//! least one; the report of each is snapshotted as a user sees it (no colour, 80 columns).
//! Also: our own flake, template and examples lint clean, and the command's exit codes and
//! JSON output.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use microvm_codegen::lint::{self, Finding};
use microvm_codegen::options::{self, Source};

fn source(path: &Path, name: String) -> Source {
    Source {
        name,
        path: path.to_owned(),
        text: std::fs::read_to_string(path).expect("fixture is readable"),
    }
}

fn lint_fixture(path: &Path) -> (Vec<Finding>, Vec<Source>) {
    let name = path
        .strip_prefix(common::fixtures())
        .unwrap_or(path)
        .display()
        .to_string();
    let files = vec![source(path, name)];
    (lint::lint(&files, options::reference()), files)
}

#[test]
fn ok_fixtures_have_no_errors() {
    insta::glob!("fixtures/lint", "ok/*.nix", |path| {
        let (findings, files) = lint_fixture(path);
        let report = lint::render_plain(&findings, &files, 80);
        assert!(
            !findings.iter().any(Finding::is_error),
            "{} should lint without errors:\n{report}",
            path.display()
        );
        insta::assert_snapshot!(report);
    });
}

#[test]
fn err_fixtures_report_errors() {
    insta::glob!("fixtures/lint", "err/*.nix", |path| {
        let (findings, files) = lint_fixture(path);
        assert!(
            findings.iter().any(Finding::is_error),
            "{} should have an error",
            path.display()
        );
        insta::assert_snapshot!(lint::render_plain(&findings, &files, 80));
    });
}

/// Text that is not Nix is reported once, at the first error, like Nix does. (Not a fixture
/// file: every .nix file of the repository must parse, see nix_parse.rs.)
#[test]
fn syntax_errors_are_reported_once() {
    let files = vec![Source {
        name: "broken.nix".to_owned(),
        path: "broken.nix".into(),
        text: "{ ... }:\n{\n  microvm.vcpu = ;\n  microvm.mem = \"x\";\n}\n".to_owned(),
    }];
    let findings = lint::lint(&files, options::reference());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].code, lint::codes::SYNTAX);
    insta::assert_snapshot!(lint::render_plain(&findings, &files, 80));
}

/// rnix's expectations are said in words: "expected an attribute name", not "expected an
/// identifier or or or cur pos".
#[test]
fn syntax_errors_say_what_was_expected() {
    let files = vec![Source {
        name: "broken.nix".to_owned(),
        path: "broken.nix".into(),
        text: "{ ... }:\n{\n  microvm.vms.web.config.microvm. = \"qemu\";\n}\n".to_owned(),
    }];
    let findings = lint::lint(&files, options::reference());
    assert_eq!(findings.len(), 1, "{findings:?}");
    insta::assert_snapshot!(lint::render_plain(&findings, &files, 80));
}

/// Every kind of finding is shown by some fixture, so a snapshot covers each.
#[test]
fn fixtures_cover_every_kind_of_finding() {
    let mut codes = BTreeSet::new();
    for folder in ["ok", "err"] {
        let dir = common::fixtures().join("lint").join(folder);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("nix"),
                "{} would be skipped by the fixture tests",
                path.display()
            );
            let (findings, _) = lint_fixture(&path);
            codes.extend(findings.into_iter().map(|f| f.code));
        }
    }
    use microvm_codegen::lint::codes::*;
    for code in [
        UNKNOWN_OPTION,
        REMOVED_OPTION,
        RENAMED_OPTION,
        READ_ONLY,
        WRONG_TYPE,
        ENUM_VALUE,
        OUT_OF_RANGE,
        DUPLICATE,
        CONFLICT,
        "microvm::capability::share_9p",
        "microvm::capability::share_virtiofs",
        "microvm::capability::controlSocket",
        "microvm::capability::share_9p_readOnly",
        "microvm::capability::interface_tap_vhost",
        "microvm::capability::cpu",
    ] {
        assert!(codes.contains(code), "no fixture shows {code}: {codes:?}");
    }
}

#[test]
fn our_flake_template_and_examples_lint_clean() {
    let root = common::repo_root();
    let mut files = Vec::new();
    for relative in ["flake.nix", "flake-template/flake.nix"] {
        files.push(source(&root.join(relative), relative.to_owned()));
    }
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "nix") {
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            files.push(source(&path, name));
        }
    }
    assert!(files.len() >= 3, "examples/ has files: {files:?}");
    let findings = lint::lint(&files, options::reference());
    assert!(
        findings.is_empty(),
        "{}",
        lint::render_plain(&findings, &files, 80)
    );
}

fn codegen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("microvm-codegen runs")
}

fn fixture(name: &str) -> String {
    common::fixtures()
        .join("lint")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn exit_codes() {
    assert_eq!(
        codegen(&["lint", &fixture("err/unknown-option.nix")])
            .status
            .code(),
        Some(1),
        "an error"
    );
    let warnings_only = codegen(&["lint", &fixture("ok/own-options.nix")]);
    assert_eq!(warnings_only.status.code(), Some(0), "warnings only");
    assert!(String::from_utf8_lossy(&warnings_only.stdout).contains("extraStuffFromSomewhere"));
    let unused_value = codegen(&["lint", &fixture("ok/security-model-unused-on-virtiofs.nix")]);
    assert_eq!(unused_value.status.code(), Some(0), "warnings only");
    assert!(String::from_utf8_lossy(&unused_value.stdout).contains("not used on virtiofs"));
    assert_eq!(
        codegen(&["lint", &fixture("ok/every-nesting-form-clean.nix")])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        codegen(&["lint", &fixture("ok/no-such-file.nix")])
            .status
            .code(),
        Some(2),
        "I/O error"
    );
    assert_eq!(codegen(&["lint"]).status.code(), Some(2), "usage error");
    // The options can be read from module files instead of the built-in reference.
    let modules = common::repo_root()
        .join("nixos-modules")
        .display()
        .to_string();
    let with_modules = codegen(&[
        "lint",
        "--options",
        &modules,
        &fixture("err/unknown-option.nix"),
    ]);
    assert_eq!(with_modules.status.code(), Some(1));
    assert_eq!(
        with_modules.stdout,
        codegen(&["lint", &fixture("err/unknown-option.nix")]).stdout
    );
    // A directory is every .nix file below it.
    let all = codegen(&["lint", &fixture("err")]);
    assert_eq!(all.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&all.stderr).contains(&format!(
        "in {} files",
        std::fs::read_dir(fixture("err")).unwrap().count()
    )));
}

#[test]
fn json_format_has_the_stable_fields() {
    let output = codegen(&[
        "lint",
        "--format",
        "json",
        &fixture("err/removed-option.nix"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let findings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let finding = &findings[0];
    assert_eq!(finding["code"], "microvm::lint::removed_option");
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["message"], "`microvm.balloonMem` was removed");
    assert!(
        finding["file"]
            .as_str()
            .unwrap()
            .ends_with("removed-option.nix")
    );
    assert_eq!(finding["line"], 5);
    assert_eq!(finding["column"], 5);
    let text = std::fs::read_to_string(fixture("err/removed-option.nix")).unwrap();
    let (start, end) = (
        finding["span"]["start"].as_u64().unwrap() as usize,
        finding["span"]["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[start..end], "balloonMem");
    assert!(
        finding["help"]
            .as_str()
            .unwrap()
            .contains("microvm.balloon")
    );
}

/// The generator never panics on any input; neither does lint, on text that is nearly Nix.
mod never_panics {
    use super::*;
    use proptest::prelude::*;

    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        ";",
        "=",
        ".",
        ":",
        "...",
        ",",
        "?",
        "++",
        "//",
        "@",
        "microvm",
        "vcpu",
        "shares",
        "vms",
        "config",
        "modules",
        "imports",
        "options",
        "rec",
        "let",
        "in",
        "inherit",
        "with",
        "if",
        "then",
        "else",
        "mkIf",
        "lib.mkMerge",
        "lib.mkOverride",
        "mkDefault",
        "hypervisor",
        "proto",
        "tag",
        "\"9p\"",
        "\"firecracker\"",
        "\"x\"",
        "''a''",
        "\"${x}\"",
        "./p",
        "1",
        "-2",
        "2.5",
        "true",
        "null",
        "x",
        "\n",
    ];

    fn lint_text(text: String) {
        let files = vec![Source {
            name: "fuzz.nix".to_owned(),
            path: "fuzz.nix".into(),
            text,
        }];
        let findings = lint::lint(&files, options::reference());
        let _ = lint::render_plain(&findings, &files, 80);
        let _ = lint::json(&findings, &files);
    }

    fn fixture_texts() -> Vec<String> {
        let mut texts = Vec::new();
        for folder in ["ok", "err"] {
            for entry in std::fs::read_dir(common::fixtures().join("lint").join(folder)).unwrap() {
                texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
            }
        }
        texts.sort();
        texts
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn on_token_soup(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..120)) {
            lint_text(tokens.join(" "));
        }

        #[test]
        fn on_fixtures_with_a_token_replaced(
            file in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            len in 0usize..12,
            token in prop::sample::select(TOKENS),
        ) {
            let texts = fixture_texts();
            let text = file.get(&texts);
            let mut start = at.index(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            lint_text(format!("{}{token}{}", &text[..start], &text[end..]));
        }
    }

    #[test]
    fn on_deep_nesting() {
        for depth in [150, 250, 600] {
            let nest = |open: &str, inner: &str, close: &str| {
                format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
            };
            lint_text(format!(
                "{{ microvm.kernelParams = {}; microvm.vcpu = {}; microvm.vms = {}; x = {}; }}",
                nest("[", "1", "]"),
                nest("(lib.mkIf c (lib.mkMerge [ ", "2", " ]))"),
                nest("{ a.config.microvm.vms = ", "{ }", "; }"),
                nest(
                    "let y = ",
                    "{ modules = [ { microvm.mem = \"m\"; } ]; }",
                    "; in y"
                ),
            ));
        }
    }
}

/// With `--format json`, a file that cannot be read is still said on stdout, as a finding with
/// its own code, for editors that read only stdout.
#[test]
fn json_format_reports_unreadable_input_on_stdout() {
    let missing = fixture("ok/no-such-file.nix");
    let output = codegen(&["lint", "--format", "json", &missing]);
    assert_eq!(output.status.code(), Some(2));
    let findings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(findings.as_array().unwrap().len(), 1, "{findings}");
    assert_eq!(findings[0]["code"], lint::codes::UNREADABLE);
    assert_eq!(findings[0]["severity"], "error");
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-file.nix"),
        "{findings}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-file.nix"));
}
