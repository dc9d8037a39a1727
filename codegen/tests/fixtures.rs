//! Tier 1: every fixture spec, accepted (`ok/`, the whole generated tree snapshotted) and
//! refused (`err/`, the report snapshotted as a user sees it: no colour, 80 columns).

mod common;

use microvm_codegen::diagnostic;

#[test]
fn ok_fixtures_generate_their_snapshotted_tree() {
    insta::glob!("fixtures/ok", "*.json", |path| {
        let text = common::fixture_text(path);
        let (spec, findings) = common::check(&text);
        assert!(
            findings.is_empty(),
            "{} should be accepted without findings:\n{}",
            path.display(),
            diagnostic::render_plain(&findings, &text, 80)
        );
        let spec = spec.expect("accepted specs load");
        let tree = common::build(&spec);
        assert_eq!(tree, common::build(&spec), "rendering is deterministic");
        insta::assert_snapshot!(common::describe(&tree));
    });
}

#[test]
fn err_fixtures_are_refused_with_their_snapshotted_report() {
    insta::glob!("fixtures/err", "**/*.json", |path| {
        let text = common::fixture_text(path);
        let (_, findings) = common::check(&text);
        assert!(
            findings.iter().any(|d| d.is_error()),
            "{} should be refused",
            path.display()
        );
        insta::assert_snapshot!(diagnostic::render_plain(&findings, &text, 80));
    });
}

#[test]
fn every_fixture_folder_entry_is_a_json_spec() {
    for folder in ["ok", "err", "err/capabilities"] {
        for entry in std::fs::read_dir(common::fixtures().join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                continue;
            }
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("json"),
                "{} would be skipped by the fixture tests",
                path.display()
            );
        }
    }
}
