//! Tier 4b: the plugin loaded into a real Nix (>= 2.24, with its C API). The Nix is found
//! through `MICROVM_TEST_NIX` (its prefix or its bin directory) or on `PATH`; checks/test.sh
//! finds one, builds the plugin against it (`NIX_C_API`), or leaves these tests out with a
//! `skipped:` line naming what they need.
//!
//! - `microvmRender` of every ok fixture is `microvm-codegen generate`'s tree, byte for byte,
//!   with the same executable bits and symlinks;
//! - `microvmValidate` refuses every err fixture with the codes the generator reports;
//! - hostile arguments are evaluation errors, never a crash of Nix;
//! - the guest module renders the same runner with the plugin as the generator does without.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use microvm_codegen::diagnostic::SpecText;
use microvm_codegen::{load, output, render, runner, validate};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_owned()
}

fn fixtures() -> PathBuf {
    repo_root().join("codegen/tests/fixtures")
}

/// `nix-instantiate --version`'s version, when it is at least 2.24.
fn modern(bin: &Path) -> Option<String> {
    let output = Command::new(bin.join("nix-instantiate"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().last()?.to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next()?, parts.next()?);
    ((major, minor) >= (2, 24)).then_some(version)
}

/// A Nix >= 2.24 and the plugin built against it, in a configuration of their own: nothing of
/// the machine's Nix (its /etc/nix, its store) is touched.
struct Nix {
    bin: PathBuf,
    home: tempfile::TempDir,
}

fn nix() -> Nix {
    assert!(
        microvm_nix_plugin::is_plugin(),
        "skipped: the plugin was built without Nix's C API; build it with NIX_C_API=<prefix of a \
         Nix >= 2.24> or with nix-expr-c on PKG_CONFIG_PATH (checks/test.sh does)"
    );
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("MICROVM_TEST_NIX") {
        let dir = PathBuf::from(dir);
        candidates.push(dir.join("bin"));
        candidates.push(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    let bin = candidates
        .into_iter()
        .find(|dir| dir.join("nix-instantiate").is_file() && modern(dir).is_some())
        .unwrap_or_else(|| {
            panic!(
                "skipped: no Nix >= 2.24 in MICROVM_TEST_NIX (its prefix) or on PATH; build \
                 NixOS/nix >= 2.24 with its C API and set MICROVM_TEST_NIX"
            )
        });
    let home = tempfile::tempdir().expect("a temporary directory");
    let settings = "build-users-group =\nexperimental-features = nix-command flakes\n";
    for (dir, plugin_files) in [
        ("conf", format!("plugin-files = {}\n", plugin().display())),
        ("conf-without-plugin", String::new()),
    ] {
        let conf = home.path().join(dir);
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("nix.conf"), format!("{settings}{plugin_files}")).unwrap();
    }
    Nix { bin, home }
}

/// The plugin library cargo built with this test: next to it in deps/ (a test build does not
/// copy it up to target/<profile>/).
fn plugin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let deps = exe.parent().expect("tests run from target/<profile>/deps");
    [deps, deps.parent().unwrap_or(deps)]
        .iter()
        .map(|dir| dir.join("libmicrovm_nix_plugin.so"))
        .find(|library| library.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libmicrovm_nix_plugin.so was not built next to {}",
                exe.display()
            )
        })
}

impl Nix {
    /// `nix-instantiate --eval --strict --json` with `args`, the plugin loaded.
    fn instantiate(&self, args: &[&str]) -> Output {
        self.instantiate_in("conf", args)
    }

    fn instantiate_in(&self, conf: &str, args: &[&str]) -> Output {
        let root = self.home.path().join("root");
        Command::new(self.bin.join("nix-instantiate"))
            .args(["--eval", "--strict", "--json", "--read-write-mode"])
            .arg("--store")
            .arg(format!("local?root={}", root.display()))
            .args(args)
            .env("NIX_CONF_DIR", self.home.path().join(conf))
            .env("XDG_CACHE_HOME", self.home.path().join("cache"))
            .env("HOME", self.home.path())
            .env("NIX_PATH", "")
            .env_remove("NIX_REMOTE")
            .output()
            .expect("nix-instantiate runs")
    }

    fn eval(&self, expression: &str) -> Result<Value, (Option<i32>, String)> {
        let output = self.instantiate(&["-E", expression]);
        if output.status.success() {
            Ok(serde_json::from_slice(&output.stdout).expect("nix-instantiate printed JSON"))
        } else {
            Err((
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ))
        }
    }
}

/// A Nix string literal.
fn nix_string(text: &str) -> String {
    serde_json::to_string(text).unwrap().replace("${", "\\${")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A directory as the plugin describes a runner: path → entry.
fn read_tree(root: &Path) -> BTreeMap<String, Value> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Value>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap().display().to_string();
                out.insert(
                    relative,
                    serde_json::json!({ "type": "symlink", "target": target }),
                );
            } else if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                let executable = meta.permissions().mode() & 0o111 != 0;
                out.insert(
                    relative,
                    serde_json::json!({ "type": "file", "text": text, "executable": executable }),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What `microvm-codegen generate` writes for `spec` into a new directory.
fn generated(spec: &str) -> BTreeMap<String, Value> {
    let text = SpecText::new("spec.json", spec);
    let spec = load::load(&text).expect("an ok spec loads");
    assert!(
        !validate::validate(&spec).iter().any(|d| d.is_error()),
        "an ok spec validates"
    );
    let tree = runner::build(&spec, &render::Renderer::new()).expect("an ok spec renders");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runner");
    output::write(&out, &tree, false).expect("the runner is written");
    read_tree(&out)
}

#[test]
fn render_is_generates_tree_for_every_ok_fixture() {
    let nix = nix();
    let fixtures = json_files(&fixtures().join("ok"));
    assert!(fixtures.len() >= 10, "ok fixtures: {fixtures:?}");
    let mut expression = String::from("{\n");
    for (index, path) in fixtures.iter().enumerate() {
        expression.push_str(&format!(
            "  f{index} = builtins.microvmRender (builtins.readFile {});\n",
            nix_string(&path.display().to_string())
        ));
    }
    expression.push('}');
    let rendered = nix
        .eval(&expression)
        .unwrap_or_else(|(_, e)| panic!("microvmRender failed:\n{e}"));
    for (index, path) in fixtures.iter().enumerate() {
        let from_nix: BTreeMap<String, Value> =
            serde_json::from_value(rendered[format!("f{index}")].clone()).unwrap();
        let expected = generated(&std::fs::read_to_string(path).unwrap());
        assert_eq!(
            from_nix.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{}: the same paths",
            path.display()
        );
        for (file, entry) in &expected {
            assert_eq!(
                &from_nix[file],
                entry,
                "{}: {file} differs from generate's",
                path.display()
            );
        }
    }
}

/// The error codes the generator reports for a spec (load errors, else validation errors).
fn generator_codes(text: &str) -> BTreeSet<String> {
    let text = SpecText::new("spec.json", text);
    let findings = match load::load(&text) {
        Err(findings) => findings,
        Ok(spec) => validate::validate(&spec),
    };
    findings
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.code)
        .collect()
}

#[test]
fn validate_refuses_every_err_fixture_with_the_generators_codes() {
    let nix = nix();
    let fixtures = json_files(&fixtures().join("err"));
    assert!(fixtures.len() >= 10, "err fixtures: {fixtures:?}");
    for path in fixtures {
        let text = std::fs::read_to_string(&path).unwrap();
        let codes = generator_codes(&text);
        assert!(!codes.is_empty(), "{} is refused", path.display());
        let expression = format!(
            "builtins.microvmValidate (builtins.readFile {})",
            nix_string(&path.display().to_string())
        );
        let (status, stderr) = match nix.eval(&expression) {
            Ok(value) => panic!("{} was accepted: {value}", path.display()),
            Err(error) => error,
        };
        assert_eq!(
            status,
            Some(1),
            "{}: an evaluation error:\n{stderr}",
            path.display()
        );
        assert!(
            stderr.contains("microvmValidate: "),
            "{}: the refusal is the plugin's:\n{stderr}",
            path.display()
        );
        for code in &codes {
            assert!(
                stderr.contains(code.as_str()),
                "{}: {code} is in the refusal:\n{stderr}",
                path.display()
            );
        }
    }
}

#[test]
fn an_attribute_set_is_read_as_its_json() {
    let nix = nix();
    let path = fixtures().join("ok/qemu-every-feature.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let file = nix_string(&path.display().to_string());
    let value = nix
        .eval(&format!(
            "let text = builtins.readFile {file}; attrs = builtins.fromJSON text; in {{ \
               fromText = builtins.microvmRender text; fromAttrs = builtins.microvmRender attrs; \
               validated = builtins.microvmValidate attrs; }}"
        ))
        .unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(value["fromText"], value["fromAttrs"]);
    // The spec as the generator reads it: what it writes as share/microvm/spec.json.
    let spec = load::load(&SpecText::new("spec.json", text)).unwrap();
    assert_eq!(value["validated"], serde_json::to_value(&spec).unwrap());
    // A derivation (a set with outPath) stands for its path, as in builtins.toJSON.
    let with_derivation = nix
        .eval(&format!(
            "let spec = builtins.fromJSON (builtins.readFile {file}); in \
             (builtins.microvmValidate (spec // {{ kernel = {{ type = \"derivation\"; outPath = spec.kernel; name = \"k\"; }}; }})).kernel"
        ))
        .unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(with_derivation, Value::from(spec.kernel.clone()));
}

#[test]
fn hostile_arguments_are_evaluation_errors() {
    let nix = nix();
    let spec = nix_string(
        &fixtures()
            .join("ok/qemu-minimal.json")
            .display()
            .to_string(),
    );
    for (what, expression, expected) in [
        ("an integer", "builtins.microvmValidate 3".to_owned(), "as an attribute set or as JSON text; it is an integer"),
        ("a list", "builtins.microvmRender [ 1 2 ]".to_owned(), "it is a list"),
        ("a function", "builtins.microvmRender (x: x)".to_owned(), "it is a function"),
        (
            "a function inside",
            format!("builtins.microvmValidate ((builtins.fromJSON (builtins.readFile {spec})) // {{ kernel = x: x; }})"),
            "spec.kernel is a function",
        ),
        (
            "a throw inside",
            format!("builtins.microvmValidate ((builtins.fromJSON (builtins.readFile {spec})) // {{ kernel = throw \"boom\"; }})"),
            "boom",
        ),
        ("not a spec", "builtins.microvmValidate { hello = 1; }".to_owned(), "microvmValidate: the argument is not a runner spec"),
        ("not JSON", "builtins.microvmRender \"{ nope\"".to_owned(), "microvmRender: the argument is not a runner spec"),
        (
            "deep nesting",
            "builtins.microvmValidate (builtins.foldl' (acc: _: { a = acc; }) { } (builtins.genList (x: x) 100000))".to_owned(),
            "nests deeper than 128 levels",
        ),
        (
            "deeply nested JSON text",
            "builtins.microvmValidate (builtins.concatStringsSep \"\" (builtins.genList (_: \"[\") 100000))".to_owned(),
            "microvmValidate: the argument is not a runner spec",
        ),
        (
            "a huge string",
            "builtins.microvmValidate { hostName = builtins.concatStringsSep \"\" (builtins.genList (_: \"xxxxxxxxxxxxxxxx\") 300000); }".to_owned(),
            "microvm::spec::too_large",
        ),
        (
            "huge JSON text",
            "builtins.microvmRender (builtins.toJSON { hostName = builtins.concatStringsSep \"\" (builtins.genList (_: \"xxxxxxxxxxxxxxxx\") 300000); })".to_owned(),
            "microvm::spec::too_large",
        ),
        ("no argument's worth", "builtins.microvmRender null".to_owned(), "it is null"),
    ] {
        match nix.eval(&expression) {
            Ok(value) => panic!("{what}: accepted: {value}"),
            Err((status, stderr)) => {
                assert_eq!(status, Some(1), "{what}: an evaluation error, not a crash:\n{stderr}");
                assert!(stderr.contains(expected), "{what}: says {expected:?}:\n{stderr}");
            }
        }
    }
}

/// checks/eval's `attr` (tier 4's expressions, nixpkgs' lib from NIXPKGS_LIB), with or without
/// the plugin.
fn eval_checks(nix: &Nix, attr: &str, with_plugin: bool) -> Result<Value, String> {
    let lib = std::env::var("NIXPKGS_LIB").unwrap_or_else(|_| {
        panic!("skipped: NIXPKGS_LIB unset (checks/test.sh sets it; see tier 4)")
    });
    let eval = repo_root().join("checks/eval");
    let eval = eval.display().to_string();
    let args = ["--argstr", "nixpkgsLib", &lib, &eval, "-A", attr];
    let conf = if with_plugin {
        "conf"
    } else {
        "conf-without-plugin"
    };
    let output = nix.instantiate_in(conf, &args);
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("JSON"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The guest module with the plugin loaded: the same spec as without, its runner's files are
/// what the generator makes of that spec, and its assertions pass through microvmValidate.
#[test]
fn the_guest_module_renders_the_generators_runner_with_the_plugin() {
    let nix = nix();
    let with = eval_checks(&nix, "evaluatorPlugin", true).unwrap_or_else(|e| panic!("{e}"));
    let without = eval_checks(&nix, "evaluatorPlugin", false).unwrap_or_else(|e| panic!("{e}"));
    for hypervisor in ["qemu", "cloud-hypervisor", "firecracker"] {
        let (with, without) = (&with[hypervisor], &without[hypervisor]);
        assert_eq!(with["plugin"], true);
        assert_eq!(without["plugin"], false);
        assert_eq!(
            without["files"],
            Value::Null,
            "{hypervisor}: generated at build time"
        );
        assert_eq!(with["spec"], without["spec"], "{hypervisor}: one spec");
        assert_eq!(with["failedAssertions"], serde_json::json!([]));
        let files: BTreeMap<String, Value> =
            serde_json::from_value(with["files"].clone()).expect("the rendered files");
        let expected = generated(without["spec"].as_str().unwrap());
        assert_eq!(files, expected, "{hypervisor}: the generator's runner");
    }
    // A VM the generator refuses: its report, codes and hints, is the evaluation error.
    let refusal = eval_checks(&nix, "evaluatorPluginRefusal", true).expect_err("refused");
    assert!(
        refusal.contains("microvmValidate: the runner spec of fc (firecracker) is refused"),
        "{refusal}"
    );
    assert!(
        refusal.contains("microvm::capability::share_9p"),
        "{refusal}"
    );
    let without =
        eval_checks(&nix, "evaluatorPluginRefusal", false).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        without.to_string().contains("9p"),
        "without the plugin, the Nix-side check: {without}"
    );
}

/// The plugin's runner derivation, built: its builder script (lib/build-runner.nix) run on the
/// environment Nix would give it (each passAsFile attribute in a file named by `<attr>Path`)
/// writes the generator's runner, file for file, with the same executable bits and symlinks.
#[test]
fn the_plugins_runner_builder_writes_the_generators_runner() {
    let nix = nix();
    let derivation =
        eval_checks(&nix, "evaluatorPluginBuilder", true).unwrap_or_else(|e| panic!("{e}"));
    let env = derivation["env"].as_object().expect("the environment");
    let passed: Vec<&str> = env["passAsFile"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(passed.contains(&"microvmManifest"), "{passed:?}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut builder = Command::new("bash");
    builder
        .args(["-euo", "pipefail", "-c"])
        .arg(derivation["script"].as_str().unwrap())
        .env("out", &out);
    for name in passed {
        let file = dir.path().join(name);
        std::fs::write(&file, env[name].as_str().unwrap()).unwrap();
        // Nix's files are read-only; the runner's modes are the builder's to set.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        builder.env(format!("{name}Path"), &file);
    }
    let status = builder.status().unwrap();
    assert!(status.success(), "the builder failed: {status}");
    let expected = generated(derivation["spec"].as_str().unwrap());
    assert_eq!(read_tree(&out), expected);
}
