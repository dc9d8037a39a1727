//! Tier 2: the generated text passes the tools that judge it. shellcheck runs on every script
//! generated from every accepted fixture.

mod common;

use std::process::Command;

use microvm_codegen::runner::Entry;

#[test]
fn every_generated_script_passes_shellcheck() {
    common::require("shellcheck", "shellcheck");
    let mut checked = 0;
    for entry in std::fs::read_dir(common::fixtures().join("ok")).unwrap() {
        let path = entry.unwrap().path();
        let text = common::fixture_text(&path);
        let (spec, findings) = common::check(&text);
        assert!(findings.is_empty(), "{} is an ok fixture", path.display());
        let tree = common::build(&spec.unwrap());
        let dir = tempfile::tempdir().unwrap();
        for (relative, entry) in &tree {
            let Entry::File {
                contents,
                executable: true,
            } = entry
            else {
                continue;
            };
            let file = dir.path().join(relative.replace('/', "_"));
            std::fs::write(&file, contents).unwrap();
            let output = Command::new("shellcheck")
                .args(["--shell=bash", "--severity=style", "--format=gcc"])
                .arg(&file)
                .output()
                .expect("shellcheck runs");
            assert!(
                output.status.success(),
                "shellcheck rejects {relative} of {}:\n{}",
                path.display(),
                String::from_utf8_lossy(&output.stdout)
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} scripts were checked");
}
