//! The generator's own package, `lib/microvm-codegen.nix`, which every runner needs, evaluated
//! with nixpkgs' lib and only `rustPlatform` stubbed: its `lib.fileset` source must hold what
//! the crate compiles from, and nothing else. `lib.fileset` needs `builtins.readFileType` (Nix
//! 2.14), which Debian's Nix 2.8 lacks, so this runs under the Nix that `MICROVM_TEST_NIX` (its
//! bin directory) names; checks/test.sh finds one or skips this test and says which Nix it
//! needs.

mod common;
#[path = "common/nix.rs"]
mod nix;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn modern_nix_instantiate() -> PathBuf {
    let dir = std::env::var_os("MICROVM_TEST_NIX").unwrap_or_else(|| {
        panic!(
            "MICROVM_TEST_NIX is unset: name the bin directory of a Nix >= 2.14 (builtins.readFileType); \
             checks/test.sh finds one or skips this test"
        )
    });
    let program = PathBuf::from(dir).join("nix-instantiate");
    assert!(program.is_file(), "{} is missing", program.display());
    program
}

const EXPRESSION: &str = r#"
{ nixpkgsLib, package }:
let
  lib = import nixpkgsLib;
  # Only rustPlatform is stubbed: buildRustPackage hands back what it was given.
  args = import package {
    inherit lib;
    rustPlatform.buildRustPackage = args: args;
  };
  listing = dir: lib.mapAttrs (name: type: if type == "directory" then listing "${dir}/${name}" else type) (builtins.readDir dir);
in
{
  inherit (args) pname version cargoTestFlags;
  mainProgram = args.meta.mainProgram;
  lockFile = toString args.cargoLock.lockFile;
  src = listing args.src;
}
"#;

/// `expression` (a function of `nixpkgsLib` and `package`) evaluated with `package` set to our
/// file `lib/<file>`, under the Nix >= 2.14 the test is given.
fn evaluate_package(expression: &str, file: &str) -> Value {
    let program = modern_nix_instantiate();
    let lib = nix::nixpkgs_lib();
    let tmp = tempfile::tempdir().unwrap();
    let expression_file = tmp.path().join("package.nix");
    std::fs::write(&expression_file, expression).unwrap();
    let conf = tmp.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("nix.conf"), "build-users-group =\n").unwrap();
    // The source is copied into a store of the test's own: nothing touches /nix.
    let store = format!("local?root={}", tmp.path().join("root").display());
    let output = Command::new(&program)
        // --read-write-mode: --eval alone computes store paths without adding them, and the
        // test reads the source back.
        .args([
            "--eval",
            "--strict",
            "--json",
            "--read-write-mode",
            "--store",
            &store,
        ])
        .arg(&expression_file)
        .arg("--arg")
        .arg("nixpkgsLib")
        .arg(&lib)
        .arg("--arg")
        .arg("package")
        .arg(common::repo_root().join("lib").join(file))
        .env("NIX_CONF_DIR", &conf)
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("NIX_PATH", "")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_generators_package_evaluates_with_the_sources_it_compiles_from() {
    let value = evaluate_package(EXPRESSION, "microvm-codegen.nix");

    let cargo_toml =
        std::fs::read_to_string(common::repo_root().join("codegen/Cargo.toml")).unwrap();
    let version = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(value["pname"], "microvm-codegen");
    assert_eq!(value["version"], version);
    assert_eq!(value["mainProgram"], "microvm-codegen");
    assert_eq!(
        value["cargoTestFlags"],
        serde_json::json!(["-p", "microvm-codegen", "--lib"])
    );
    assert!(
        value["lockFile"].as_str().unwrap().ends_with("/Cargo.lock"),
        "{}",
        value["lockFile"]
    );

    let names =
        |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let src = &value["src"];
    assert_eq!(
        names(src),
        [
            "Cargo.lock",
            "Cargo.toml",
            "codegen",
            "doc",
            "lib",
            "nix-plugin",
            "templates"
        ]
        .map(String::from)
        .into(),
        "the source holds the workspace, its crates and what the generator embeds"
    );
    assert_eq!(names(&src["lib"]), ["capabilities.json".to_owned()].into());
    assert_eq!(names(&src["doc"]), ["options.json".to_owned()].into());
    for embedded in ["src", "tests", "Cargo.toml"] {
        assert!(
            src["codegen"].get(embedded).is_some(),
            "codegen/{embedded} is missing"
        );
    }
    assert_eq!(
        names(&src["templates"]),
        std::fs::read_dir(common::repo_root().join("templates"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        "every template directory"
    );
}

/// The plugin's package, `lib/nix-plugin.nix`, with `rustPlatform` stubbed and a Nix whose `dev`
/// output stands for its C API: it builds only the plugin crate, against that Nix's `dev`, from
/// the same workspace source as the generator.
const PLUGIN_EXPRESSION: &str = r#"
{ nixpkgsLib, package }:
let
  lib = import nixpkgsLib;
  args = import package {
    inherit lib;
    rustPlatform.buildRustPackage = args: args;
    pkg-config = "pkg-config";
    nix = {
      outPath = "/stand-in/nix";
      dev = "/stand-in/nix-dev";
    };
  };
  listing = dir: lib.mapAttrs (name: type: if type == "directory" then listing "${dir}/${name}" else type) (builtins.readDir dir);
in
{
  inherit (args) pname version cargoBuildFlags cargoTestFlags nativeBuildInputs;
  buildInputs = map toString args.buildInputs;
  pluginFile = args.passthru.pluginFile;
  src = builtins.attrNames (listing args.src);
}
"#;

#[test]
fn the_plugins_package_builds_the_plugin_crate_against_nix() {
    let value = evaluate_package(PLUGIN_EXPRESSION, "nix-plugin.nix");
    assert_eq!(value["pname"], "microvm-nix-plugin");
    assert_eq!(
        value["cargoBuildFlags"],
        serde_json::json!(["-p", "microvm-nix-plugin"])
    );
    assert_eq!(
        value["buildInputs"],
        serde_json::json!(["/stand-in/nix-dev"])
    );
    assert_eq!(
        value["nativeBuildInputs"],
        serde_json::json!(["pkg-config"])
    );
    assert_eq!(value["pluginFile"], "lib/libmicrovm_nix_plugin.so");
    let generator = evaluate_package(EXPRESSION, "microvm-codegen.nix");
    let generator_src: Vec<&String> = generator["src"].as_object().unwrap().keys().collect();
    let plugin_src: Vec<&str> = value["src"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        plugin_src,
        generator_src.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "one workspace source"
    );
}

/// The stand-in nixpkgs flake: nixpkgs' lib, and the stand-ins of checks/eval as its packages
/// and NixOS (with real drvPaths, which `nix flake check` reads from the store).
const STAND_IN_NIXPKGS: &str = r#"
{
  outputs =
    { self }:
    let
      lib = import ./lib;
      standIns = import ./stand-ins.nix {
        inherit lib;
        realDrvPaths = true;
      };
    in
    {
      lib = lib // {
        nixosSystem =
          { modules, ... }:
          lib.evalModules {
            modules = [
              standIns.nixosModule
              { _module.args.pkgs = standIns.pkgsFor "x86_64-linux"; }
            ]
            ++ modules;
          };
      };
      legacyPackages = lib.genAttrs [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
      ] standIns.pkgsFor;
    };
}
"#;

/// Our flake under a current Nix: `nix flake show` lists its outputs and `nix flake check
/// --no-build` accepts them, with nixpkgs replaced by the stand-in flake (`--override-input`).
#[test]
fn the_flake_shows_and_checks_with_a_stand_in_nixpkgs() {
    let program = modern_nix_instantiate();
    let nix = program.with_file_name("nix");
    let lib = nix::nixpkgs_lib();
    let tmp = tempfile::tempdir().unwrap();
    let nixpkgs = tmp.path().join("nixpkgs");
    std::fs::create_dir_all(&nixpkgs).unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&lib)
        .arg(nixpkgs.join("lib"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::copy(
        common::repo_root().join("checks/eval/stand-ins.nix"),
        nixpkgs.join("stand-ins.nix"),
    )
    .unwrap();
    std::fs::write(nixpkgs.join("flake.nix"), STAND_IN_NIXPKGS).unwrap();
    let conf = tmp.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        "build-users-group =\nexperimental-features = nix-command flakes\n",
    )
    .unwrap();
    let store = format!("local?root={}", tmp.path().join("root").display());
    let run = |args: &[&str]| {
        let output = Command::new(&nix)
            .args(["--store", &store])
            .args(args)
            .args(["--no-write-lock-file", "--override-input", "nixpkgs"])
            .arg(format!("path:{}", nixpkgs.display()))
            .arg(common::repo_root())
            .env("NIX_CONF_DIR", &conf)
            .env("XDG_CACHE_HOME", tmp.path().join("cache"))
            .env("HOME", tmp.path())
            .env("NIX_PATH", "")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "nix {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let shown: Value = serde_json::from_slice(&run(&["flake", "show", "--json"]).stdout).unwrap();
    let linux = &shown["packages"]["x86_64-linux"];
    for package in [
        "microvm-codegen",
        "microvm-nix-plugin",
        "default",
        "qemu-example",
    ] {
        assert_eq!(
            linux[package]["type"], "derivation",
            "packages.x86_64-linux.{package}: {shown}"
        );
    }
    assert!(
        shown["nixosConfigurations"]["qemu-example"].is_object(),
        "{shown}"
    );
    assert_eq!(shown["templates"]["default"]["type"], "template", "{shown}");
    run(&["flake", "check", "--no-build"]);
}
