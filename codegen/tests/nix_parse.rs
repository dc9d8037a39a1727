//! Every .nix file of the repository parses with Debian's Nix 2.8 (`nix-instantiate --parse`), the
//! oldest Nix the project supports. Needs only nix-instantiate, not nixpkgs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            // Build output, caches (nixpkgs' lib lives there) and git's own files.
            if !matches!(name.as_ref(), "target" | ".cache" | ".git") {
                nix_files(&path, found);
            }
        } else if name.ends_with(".nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses_with_nix_instantiate() {
    common::require("nix-instantiate", "nix-bin");
    let root = common::repo_root();
    let mut files = Vec::new();
    nix_files(&root, &mut files);
    files.sort();
    for expected in [
        "flake.nix",
        "flake-template/flake.nix",
        "nixos-modules/microvm/default.nix",
        "nixos-modules/microvm/options.nix",
        "lib/default.nix",
        "checks/default.nix",
        "checks/eval/default.nix",
    ] {
        assert!(
            files.contains(&root.join(expected)),
            "{expected} was not found"
        );
    }
    let state = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for file in &files {
        let output = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .env("NIX_STATE_DIR", state.path())
            .output()
            .unwrap();
        if !output.status.success() {
            failures.push(format!(
                "{}:\n{}",
                file.strip_prefix(&root).unwrap().display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    println!("{} .nix files parse", files.len() - failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
