//! crosvm's command line, parsed back with a model of its grammar and checked value by value
//! against the spec; and the runner's `microvm-shutdown`/`microvm-balloon`, run against a stub
//! `crosvm` that records what it was asked.
//!
//! Grammar model after crosvm at f1e797a6 (https://crosvm.dev/book/running_crosvm/ and
//! `src/crosvm/cmdline.rs` for the flags; `serde_keyvalue/src/key_values.rs` for the values):
//! `crosvm run [options] KERNEL` parsed by argh, so every option is `--flag value` (or a bare
//! switch), the kernel is the one positional, `Vec` options repeat and `Option` ones may be
//! given once. Option values are `key=value` pairs joined by `,`, the first field's key may be
//! left out, a bare key is `true`, booleans are `true`/`false` only (not on/off), unknown keys
//! are errors (`deny_unknown_fields`), and a string with `,`, quotes or brackets is
//! double-quoted with `\` escapes. `--shared-dir` is the exception: `SOURCE:TAG[:key=value]…`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use microvm_codegen::diagnostic::SpecText;
use microvm_codegen::hypervisor::{self, Part, Step};
use microvm_codegen::runner::{Entry, Tree};
use microvm_codegen::spec::{Hypervisor, InterfaceType, RunnerSpec, ShareProto};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A switch without a value.
    Switch,
    /// A plain value.
    Plain,
    /// `key=value,…` with these keys; the first may be written without its key.
    Kv(&'static [&'static str]),
    /// `SOURCE:TAG[:key=value]…`.
    SharedDir,
}

struct Flag {
    kind: Kind,
    repeatable: bool,
}

/// The `crosvm run` options the runner may emit (and a few a user's extraArgs may add).
fn flag(name: &str) -> Option<Flag> {
    let long = match name {
        "-c" => "--cpus",
        "-m" => "--mem",
        "-i" => "--initrd",
        "-s" => "--socket",
        "-p" => "--params",
        "-b" => "--block",
        other => other,
    };
    let (kind, repeatable) = match long {
        "--cpus" => (
            Kind::Kv(&[
                "num-cores",
                "clusters",
                "core-types",
                "boot-cpu",
                "freq-domains",
                "sve",
                "mte",
            ]),
            false,
        ),
        "--mem" => (Kind::Kv(&["size"]), false),
        "--serial" => (
            Kind::Kv(&[
                "type",
                "hardware",
                "name",
                "path",
                "input",
                "input-unix-stream",
                "num",
                "console",
                "earlycon",
                "stdin",
                "out-timestamp",
                "debugcon-port",
                "pci-address",
                "max-queue-sizes",
            ]),
            true,
        ),
        "--block" => (
            Kind::Kv(&[
                "path",
                "ro",
                "root",
                "sparse",
                "direct",
                "o_direct",
                "lock",
                "block-size",
                "id",
                "multiple-workers",
                "async-executor",
                "packed-queue",
                "bootindex",
                "pci-address",
                "dontcache",
            ]),
            true,
        ),
        "--vhost-user" => (
            Kind::Kv(&["type", "socket", "max-queue-size", "pci-address"]),
            true,
        ),
        // The first field is part of an untagged mode (tap-name, tap-fd or host-ip), never
        // written without its key.
        "--net" => (
            Kind::Kv(&[
                "tap-name",
                "tap-fd",
                "host-ip",
                "netmask",
                "mac",
                "vq-pairs",
                "vhost-net",
                "packed-queue",
                "pci-address",
                "mrg_rxbuf",
            ]),
            true,
        ),
        "--vsock" => (Kind::Kv(&["cid", "device", "max-queue-sizes"]), false),
        "--vfio" => (
            Kind::Kv(&["path", "iommu", "guest-address", "dt-symbol"]),
            true,
        ),
        "--shared-dir" => (Kind::SharedDir, true),
        "--params" => (Kind::Plain, true),
        "--initrd" | "--socket" | "--pivot-root" | "--init-mem" | "--name" => (Kind::Plain, false),
        "--hugepages"
        | "--no-balloon"
        | "--balloon-page-reporting"
        | "--no-smt"
        | "--no-rng"
        | "--disable-sandbox" => (Kind::Switch, false),
        _ => return None,
    };
    Some(Flag { kind, repeatable })
}

/// Keys whose values are booleans.
const BOOLEAN_KEYS: &[&str] = &[
    "ro",
    "root",
    "sparse",
    "direct",
    "o_direct",
    "lock",
    "multiple-workers",
    "packed-queue",
    "dontcache",
    "console",
    "earlycon",
    "stdin",
    "input-unix-stream",
    "out-timestamp",
    "mrg_rxbuf",
];

/// Splits `key=value,…` the way serde_keyvalue reads it: commas inside quotes or brackets do
/// not split, quoted values are unquoted, a bare key is "true", and the first field may come
/// without its key (it gets `first`).
fn parse_kv(text: &str, first: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        // Key, or the first field's value without its key.
        let raw = read_value(&mut chars, text, true);
        let (key, value) = if chars.peek() == Some(&'=') {
            chars.next();
            (raw, Some(read_value(&mut chars, text, false)))
        } else if fields.is_empty() {
            (first.to_owned(), Some(raw))
        } else {
            (raw, None)
        };
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{key:?} is not a key in {text:?}"
        );
        assert!(!key.is_empty(), "empty key in {text:?}");
        fields.push((key, value.unwrap_or_else(|| "true".to_owned())));
        if chars.peek() == Some(&',') {
            chars.next();
            assert!(chars.peek().is_some(), "trailing comma in {text:?}");
        }
    }
    fields
}

/// Reads one value: a double-quoted string, or bare text up to a top-level `,` (and `=` when
/// it may be a key) that holds no quote.
fn read_value(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    text: &str,
    may_be_key: bool,
) -> String {
    if chars.peek() == Some(&'"') {
        let value = read_quoted(chars);
        assert!(
            matches!(chars.peek(), None | Some(&',')),
            "text after a quoted value in {text:?}"
        );
        return value;
    }
    let mut value = String::new();
    let mut depth = 0;
    while let Some(&c) = chars.peek() {
        match c {
            ',' if depth == 0 => break,
            '=' if may_be_key && depth == 0 => break,
            '[' => depth += 1,
            ']' => depth -= 1,
            '"' | '\'' if depth == 0 => panic!("a quote inside a bare value in {text:?}"),
            _ => {}
        }
        value.push(c);
        chars.next();
    }
    value
}

/// Reads a double-quoted string (the iterator is at the opening quote), unescaping `\"` and
/// `\\` and refusing any other escape, as serde_keyvalue does.
fn read_quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    assert_eq!(chars.next(), Some('"'));
    let mut out = String::new();
    loop {
        match chars.next().expect("unterminated quoted string") {
            '"' => return out,
            '\\' => match chars.next() {
                Some(c @ ('"' | '\\')) => out.push(c),
                other => panic!("invalid escape \\{other:?}"),
            },
            c => out.push(c),
        }
    }
}

/// A parsed `crosvm run` command line.
struct Run {
    flags: BTreeMap<String, Vec<String>>,
    positionals: Vec<String>,
    /// Position of the last word that belongs to an option (the flag, or its value), to check
    /// the kernel comes last.
    last_option_word: usize,
}

impl Run {
    fn all(&self, flag: &str) -> Vec<BTreeMap<String, String>> {
        let first = match flag {
            "--block" | "--vfio" => "path",
            "--vhost-user" => "type",
            "--vsock" => "cid",
            "--cpus" => "num-cores",
            "--mem" => "size",
            "--serial" => "type",
            _ => "",
        };
        self.flags
            .get(flag)
            .into_iter()
            .flatten()
            .map(|v| parse_kv(v, first).into_iter().collect())
            .collect()
    }

    fn one(&self, flag: &str) -> BTreeMap<String, String> {
        let all = self.all(flag);
        assert_eq!(all.len(), 1, "{flag} once");
        all.into_iter().next().unwrap()
    }

    fn plain(&self, flag: &str) -> Option<&str> {
        self.flags.get(flag).map(|v| v[0].as_str())
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.contains_key(flag)
    }
}

/// Parses `crosvm run …` (the words after the program), failing on anything the grammar
/// refuses.
fn parse(argv: &[String]) -> Run {
    assert_eq!(argv[0], "run", "the run subcommand comes first");
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut positionals = Vec::new();
    let mut last_option_word = 0;
    let mut words = argv[1..].iter().enumerate();
    while let Some((i, word)) = words.next() {
        if !(word.len() > 1 && word.starts_with('-')) {
            positionals.push(word.clone());
            continue;
        }
        last_option_word = i;
        let spec = flag(word).unwrap_or_else(|| panic!("unknown flag {word}"));
        let long = match word.as_str() {
            "-c" => "--cpus",
            "-m" => "--mem",
            "-i" => "--initrd",
            "-s" => "--socket",
            "-p" => "--params",
            "-b" => "--block",
            other => other,
        }
        .to_owned();
        let value = if spec.kind == Kind::Switch {
            String::new()
        } else {
            let (at, value) = words
                .next()
                .unwrap_or_else(|| panic!("{word} has no value"));
            last_option_word = at;
            assert!(
                !(value.len() > 1 && value.starts_with('-')),
                "argh would read the value {value:?} of {word} as a flag"
            );
            value.clone()
        };
        match spec.kind {
            Kind::Kv(keys) => {
                for (key, v) in parse_kv(&value, keys[0]) {
                    assert!(
                        keys.contains(&key.as_str()),
                        "{word}: unknown key {key:?} in {value}"
                    );
                    if BOOLEAN_KEYS.contains(&key.as_str()) {
                        assert!(
                            v == "true" || v == "false",
                            "{word}: {key}={v} is not true/false"
                        );
                    }
                }
            }
            Kind::SharedDir => {
                let mut fields = value.split(':');
                assert!(fields.next().is_some_and(|s| !s.is_empty()), "no source");
                assert!(fields.next().is_some_and(|t| !t.is_empty()), "no tag");
                for option in fields {
                    let (key, v) = option
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{option} is not key=value"));
                    if key == "type" {
                        assert!(
                            ["fs", "FS", "p9", "P9", "9p", "9P"].contains(&v),
                            "bad type {v}"
                        );
                    }
                }
            }
            Kind::Plain | Kind::Switch => {}
        }
        let entry = flags.entry(long.clone()).or_default();
        assert!(
            entry.is_empty() || spec.repeatable,
            "{long} given twice; argh refuses that"
        );
        entry.push(value);
    }
    Run {
        flags,
        positionals,
        last_option_word,
    }
}

fn crosvm_run(tree: &Tree) -> (String, Run, usize) {
    let argv = common::exec_argv(tree);
    let words = argv.len() - 2;
    (argv[0].clone(), parse(&argv[1..]), words)
}

/// The descriptor microvm-run opens for each macvtap interface, read from the script.
fn opened_fds(tree: &Tree) -> Vec<String> {
    let Some(Entry::File { contents, .. }) = tree.get("bin/microvm-run") else {
        panic!("no microvm-run");
    };
    contents
        .lines()
        .filter_map(|l| l.strip_prefix("exec "))
        .filter_map(|l| l.split_once("<>").map(|(fd, _)| fd.to_owned()))
        .collect()
}

fn script(tree: &Tree, name: &str) -> Option<String> {
    match tree.get(name) {
        Some(Entry::File { contents, .. }) => Some(contents.clone()),
        _ => None,
    }
}

#[test]
fn every_feature_command_line_matches_the_grammar_and_the_spec() {
    let (spec, tree) = common::ok_fixture("crosvm-every-feature.json");
    let (program, run, words) = crosvm_run(&tree);
    assert_eq!(Some(program), spec.tools.crosvm.clone());

    assert_eq!(
        run.positionals,
        vec![spec.kernel.clone()],
        "one positional: the kernel"
    );
    assert_eq!(
        run.last_option_word,
        words - 2,
        "the kernel is the last word"
    );
    assert_eq!(run.plain("--initrd"), Some(spec.initrd_path.as_str()));

    assert_eq!(run.one("--cpus")["num-cores"], spec.vcpu.to_string());
    assert_eq!(run.one("--mem")["size"], spec.mem.to_string());
    assert!(
        !run.has("--hugepages"),
        "THP only: the table refuses hugepageMem for crosvm"
    );
    let serial = run.one("--serial");
    assert_eq!(
        (
            serial["type"].as_str(),
            serial["console"].as_str(),
            serial["stdin"].as_str()
        ),
        ("stdout", "true", "true")
    );
    let params = run.plain("--params").unwrap();
    assert!(params.split(' ').any(|p| p == "console=ttyS0"));
    for param in &spec.kernel_params {
        assert!(params.split(' ').any(|p| p == param), "{param} missing");
    }
    assert!(
        !params.contains("root="),
        "nothing may set root= behind the spec's back"
    );

    // The balloon: crosvm's own, with page reporting and memory outside it at boot.
    assert!(!run.has("--no-balloon"));
    assert!(run.has("--balloon-page-reporting"));
    assert_eq!(
        run.plain("--init-mem"),
        Some((spec.mem - spec.initial_balloon_mem).to_string().as_str())
    );
    assert_eq!(run.plain("--socket"), spec.socket.as_deref());
    assert_eq!(run.plain("--pivot-root"), spec.crosvm.pivot_root.as_deref());

    // Disks: --block only (the deprecated -r/--root injects root=/dev/vda ro).
    for deprecated in ["--root", "--rwroot", "--disk", "--rwdisk", "-r", "-d"] {
        assert!(!run.has(deprecated), "{deprecated} is deprecated");
    }
    let blocks = run.all("--block");
    assert_eq!(blocks.len(), 1 + spec.volumes.len());
    assert_eq!(blocks[0]["path"], spec.store_disk.clone().unwrap());
    assert_eq!(blocks[0]["ro"], "true");
    for (block, volume) in blocks[1..].iter().zip(&spec.volumes) {
        assert!(!block.contains_key("root"));
        assert_eq!(block["path"], volume.image, "quoted paths arrive unquoted");
        assert_eq!(block["ro"], volume.read_only.to_string());
        assert_eq!(
            block.get("direct").map(String::as_str).unwrap_or("false"),
            volume.direct.to_string()
        );
        assert_eq!(block.get("id"), volume.serial.as_ref());
    }
    assert!(
        spec.volumes.iter().any(|v| v.image.contains(',')),
        "the fixture exercises quoting"
    );

    // Shares: virtiofs through vhost-user (the tag comes from virtiofsd), 9p built in.
    let vhost_user = run.all("--vhost-user");
    let fs: Vec<_> = vhost_user.iter().filter(|v| v["type"] == "fs").collect();
    let virtiofs: Vec<_> = spec.virtiofs_shares().collect();
    assert_eq!(fs.len(), virtiofs.len());
    for (f, share) in fs.iter().zip(&virtiofs) {
        assert_eq!(Some(&f["socket"]), share.socket.as_ref());
        let virtiofsd = script(&tree, "bin/virtiofsd-run").unwrap();
        assert!(
            virtiofsd.contains(&format!("--tag={}", share.tag)),
            "crosvm takes the tag from virtiofsd"
        );
    }
    let ninep: Vec<_> = spec
        .shares
        .iter()
        .filter(|s| s.proto == ShareProto::NineP)
        .collect();
    let dirs = &run.flags["--shared-dir"];
    assert_eq!(dirs.len(), ninep.len());
    for (dir, share) in dirs.iter().zip(&ninep) {
        assert_eq!(dir, &format!("{}:{}:type=p9", share.source, share.tag));
    }

    // Network: one --net per interface; taps multi-queue exactly when tap-up makes them so.
    let nets = run.all("--net");
    assert_eq!(nets.len(), spec.interfaces.len());
    let tap_up = script(&tree, "bin/tap-up").unwrap();
    let fds = opened_fds(&tree);
    let mut macvtaps = 0;
    for (net, interface) in nets.iter().zip(&spec.interfaces) {
        assert_eq!(net["mac"], interface.mac);
        match interface.kind {
            InterfaceType::Tap => {
                assert_eq!(net["tap-name"], interface.id);
                assert_eq!(net["vq-pairs"], spec.vcpu.to_string());
                assert!(
                    tap_up.contains(&format!("name {} mode tap", interface.id))
                        && tap_up.contains("multi_queue"),
                    "vq-pairs > 1 needs a multi_queue tap"
                );
            }
            InterfaceType::Macvtap => {
                assert_eq!(net["tap-fd"], fds[macvtaps], "the fd microvm-run opens");
                assert!(
                    !net.contains_key("vq-pairs"),
                    "crosvm opens extra queues through /dev/net/tun, not the macvtap"
                );
                macvtaps += 1;
            }
            other => panic!("{other:?} interfaces are refused for crosvm"),
        }
    }
    assert_eq!(macvtaps, fds.len());

    assert_eq!(
        run.one("--vsock")["cid"],
        spec.vsock.cid.unwrap().to_string()
    );
    let vfio = run.all("--vfio");
    assert_eq!(vfio.len(), spec.devices.len());
    for (v, device) in vfio.iter().zip(&spec.devices) {
        assert_eq!(v["path"], format!("/sys/bus/pci/devices/{}", device.path));
        assert_eq!(v["iommu"], "viommu");
    }

    // Graphics: the vhost-user GPU device, started before crosvm on the spec's socket.
    let gpu_socket = spec.graphics.socket.clone().unwrap();
    let gpu: Vec<_> = vhost_user.iter().filter(|v| v["type"] == "gpu").collect();
    assert_eq!(gpu.len(), 1);
    assert_eq!(gpu[0]["socket"], gpu_socket);
    let launch = hypervisor::backend(Hypervisor::Crosvm).launch(&spec);
    let background: Vec<_> = launch
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Background { argv, socket } => Some((argv, socket)),
            _ => None,
        })
        .collect();
    assert_eq!(background.len(), 1);
    let (argv, socket) = background[0];
    assert_eq!(socket, &gpu_socket);
    let literal: Vec<Option<String>> = argv.iter().map(|w| w.literal()).collect();
    assert_eq!(literal[0], spec.tools.crosvm.clone());
    assert_eq!(literal[1..3], [Some("device".into()), Some("gpu".into())]);
    let at = |flag: &str| {
        literal
            .iter()
            .position(|w| w.as_deref() == Some(flag))
            .unwrap()
            + 1
    };
    assert_eq!(
        literal[at("--socket-path")].as_deref(),
        Some(gpu_socket.as_str()),
        "--socket is the device's deprecated spelling"
    );
    assert_eq!(
        argv[at("--wayland-sock")].0,
        vec![
            Part::Var("XDG_RUNTIME_DIR".into()),
            Part::Lit("/".into()),
            Part::Var("WAYLAND_DISPLAY".into())
        ]
    );
    let params: Value = serde_json::from_str(literal[at("--params")].as_deref().unwrap()).unwrap();
    assert_eq!(params["context-types"], "virgl:virgl2:cross-domain");
    assert_eq!(params["displays"], json!([{ "hidden": true }]));

    for arg in &spec.crosvm.extra_args {
        assert!(run.has(arg), "extraArgs {arg} arrives");
    }
}

#[test]
fn minimal_command_line_matches_the_grammar() {
    let (spec, tree) = common::ok_fixture("crosvm-minimal.json");
    let (_, run, _) = crosvm_run(&tree);
    assert!(
        run.has("--no-balloon"),
        "crosvm adds a balloon unless told not to"
    );
    assert!(!run.has("--balloon-page-reporting") && !run.has("--init-mem"));
    assert_eq!(run.all("--block").len(), 1);
    assert!(!run.has("--net") && !run.has("--vsock") && !run.has("--hugepages"));
    assert_eq!(run.positionals, vec![spec.kernel.clone()]);
    assert!(tree.contains_key("bin/microvm-shutdown"));
    assert!(
        !tree.contains_key("bin/microvm-balloon"),
        "no balloon, no script"
    );
}

fn spec_from(value: &Value) -> (RunnerSpec, Tree) {
    let text = SpecText::new("variant.json", serde_json::to_string_pretty(value).unwrap());
    let (spec, findings) = common::check(&text);
    assert!(findings.is_empty(), "{findings:?}");
    let spec = spec.unwrap();
    let tree = common::build(&spec);
    (spec, tree)
}

fn fixture_json(name: &str) -> Value {
    let text = std::fs::read_to_string(common::fixtures().join("ok").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn aarch64_guests_get_no_power_button_script() {
    // crosvm powerbtn answers ENOTSUP on aarch64: the board has no ACPI PM device.
    let mut value = fixture_json("crosvm-every-feature.json");
    value["system"] = json!("aarch64-linux");
    let (_, tree) = spec_from(&value);
    assert!(!tree.contains_key("bin/microvm-shutdown"));
    assert!(tree.contains_key("bin/microvm-balloon"));
}

#[test]
fn single_vcpu_taps_are_single_queue() {
    let mut value = fixture_json("crosvm-every-feature.json");
    value["vcpu"] = json!(1);
    let (_, tree) = spec_from(&value);
    let (_, run, _) = crosvm_run(&tree);
    assert!(run.all("--net").iter().all(|n| !n.contains_key("vq-pairs")));
    assert!(!script(&tree, "bin/tap-up").unwrap().contains("multi_queue"));
}

#[test]
fn odd_paths_stay_values() {
    let mut value = fixture_json("crosvm-minimal.json");
    value["socket"] = json!("-vm.sock");
    value["volumes"] = json!([
        { "image": "-a,b\"c[d].img", "serial": "x,y", "autoCreate": false }
    ]);
    let (_, tree) = spec_from(&value);
    let (_, run, _) = crosvm_run(&tree);
    assert_eq!(run.plain("--socket"), Some("./-vm.sock"));
    let block = &run.all("--block")[1];
    assert_eq!(block["path"], "-a,b\"c[d].img");
    assert_eq!(block["id"], "x,y");
    let shutdown = script(&tree, "bin/microvm-shutdown").unwrap();
    assert!(shutdown.contains("case $socket in -*) socket=./$socket ;; esac"));
}

// ---- microvm-shutdown and microvm-balloon against a stub crosvm ----

/// Serializes writing executables and starting processes: a child forked while another test
/// still has a new executable open for writing would make its exec fail with ETXTBSY.
static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn write_executable(path: &Path, text: &str) {
    let _guard = FORK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn output(command: &mut Command) -> std::process::Output {
    let child = {
        let _guard = FORK.lock().unwrap_or_else(|e| e.into_inner());
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    child.wait_with_output().unwrap()
}

fn program(name: &str) -> PathBuf {
    let paths = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

/// A stub `crosvm` that appends its arguments to `argv` in its directory and acts as told by
/// STUB_POWERBTN (exit: unlink the socket as crosvm does when it exits; ignore; fail) and
/// STUB_BALLOON (ok: remember the size for balloon_stats; fail).
fn stub_crosvm(dir: &Path) -> PathBuf {
    let stub = dir.join("crosvm");
    let text = format!(
        r#"#!{bash}
set -eu
printf '%s\n' "$*" >>'{dir}/argv'
case $1 in
  powerbtn)
    case ${{STUB_POWERBTN:-exit}} in
      exit) '{rm}' -f -- "$2" ;;
      ignore) ;;
      fail) echo 'failed to connect to socket' >&2; exit 1 ;;
    esac
    ;;
  balloon)
    if [ "${{STUB_BALLOON:-ok}}" = fail ]; then exit 1; fi
    printf '%s' "$2" >'{dir}/balloon'
    ;;
  balloon_stats)
    actual=0
    if [ -e '{dir}/balloon' ]; then actual=$(<'{dir}/balloon'); fi
    printf '{{\n  "BalloonStats": {{\n    "stats": {{}},\n    "balloon_actual": %s\n  }}\n}}\n' "$actual"
    ;;
  *) exit 3 ;;
esac
"#,
        bash = program("bash").display(),
        rm = program("rm").display(),
        dir = dir.display(),
    );
    write_executable(&stub, &text);
    stub
}

struct Scripts {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Scripts {
    /// The every-feature runner with real tools and the stub, its scripts in a fresh working
    /// directory.
    fn new() -> Scripts {
        let dir = tempfile::tempdir().unwrap();
        let stub = stub_crosvm(dir.path());
        let mut value = fixture_json("crosvm-every-feature.json");
        // The scripts under test run bash, crosvm and sleep; the other tools stay fake.
        value["tools"]["bash"] = json!(program("bash"));
        value["tools"]["crosvm"] = json!(stub);
        value["tools"]["sleep"] = json!(program("sleep"));
        let (spec, tree) = spec_from(&value);
        for name in ["bin/microvm-shutdown", "bin/microvm-balloon"] {
            let path = dir.path().join(name.trim_start_matches("bin/"));
            write_executable(&path, &script(&tree, name).unwrap());
        }
        let socket = dir.path().join(spec.socket.unwrap());
        Scripts { dir, socket }
    }

    fn run(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, Vec<String>) {
        let output = output(
            Command::new(self.dir.path().join(name))
                .args(args)
                .envs(env.iter().copied())
                .current_dir(self.dir.path()),
        );
        let argv = std::fs::read_to_string(self.dir.path().join("argv")).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        (
            output.status.code().unwrap_or(-1),
            stderr,
            argv.lines().map(str::to_owned).collect(),
        )
    }
}

const SOCKET: &str = "crosvm-everything.sock";

#[test]
fn shutdown_presses_the_power_button_and_waits_for_the_socket_to_go() {
    let s = Scripts::new();
    let _listener = UnixListener::bind(&s.socket).unwrap();
    let (code, out, argv) = s.run("microvm-shutdown", &[], &[("STUB_POWERBTN", "exit")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(argv, vec![format!("powerbtn {SOCKET}")]);
    assert!(out.contains("powered off"), "{out}");
}

#[test]
fn shutdown_times_out_while_crosvm_keeps_running() {
    let s = Scripts::new();
    let _listener = UnixListener::bind(&s.socket).unwrap();
    let (code, out, argv) = s.run(
        "microvm-shutdown",
        &["--timeout", "1"],
        &[("STUB_POWERBTN", "ignore")],
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(argv, vec![format!("powerbtn {SOCKET}")]);
    assert!(out.contains("still running after 1s"), "{out}");
}

#[test]
fn shutdown_without_a_vm_succeeds_without_asking_crosvm() {
    let s = Scripts::new();
    let (code, out, argv) = s.run("microvm-shutdown", &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(argv.is_empty(), "crosvm was run: {argv:?}");
}

#[test]
fn shutdown_reports_a_refused_power_button() {
    let s = Scripts::new();
    let _listener = UnixListener::bind(&s.socket).unwrap();
    let (code, out, _) = s.run("microvm-shutdown", &[], &[("STUB_POWERBTN", "fail")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did not take the power button"), "{out}");
}

#[test]
fn balloon_sends_the_balloon_size_in_bytes_and_reports_it() {
    let s = Scripts::new();
    let _listener = UnixListener::bind(&s.socket).unwrap();
    let (code, out, argv) = s.run("microvm-balloon", &["256"], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        argv,
        vec![
            format!("balloon {} {SOCKET}", 256 * 1024 * 1024),
            format!("balloon_stats {SOCKET}"),
        ],
        "crosvm balloon takes the balloon size in bytes, not the guest's memory"
    );
    assert!(
        out.contains("balloon 256 MiB; the guest has 768 of 1024 MiB"),
        "{out}"
    );
}

#[test]
fn balloon_fails_when_crosvm_refuses() {
    let s = Scripts::new();
    let _listener = UnixListener::bind(&s.socket).unwrap();
    let (code, out, argv) = s.run("microvm-balloon", &["64"], &[("STUB_BALLOON", "fail")]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(argv, vec![format!("balloon {} {SOCKET}", 64 * 1024 * 1024)]);
}

#[test]
fn balloon_refuses_sizes_it_cannot_set() {
    let s = Scripts::new();
    let _listener = UnixListener::bind(&s.socket).unwrap();
    for bad in ["1024", "-1", "x"] {
        let (code, _, argv) = s.run("microvm-balloon", &[bad], &[]);
        assert_eq!(code, 2, "{bad}");
        assert!(argv.is_empty());
    }
}

#[test]
fn the_kernel_stays_last_after_run_time_arguments() {
    // extraArgsScript's words are appended at run time; crosvm's kernel positional must still
    // close the command line.
    let (spec, tree) = common::ok_fixture("crosvm-every-feature.json");
    let microvm_codegen::runner::Entry::File { contents, .. } = &tree["bin/microvm-run"] else {
        panic!("no microvm-run");
    };
    let tail: Vec<&str> = contents.trim_end().lines().rev().take(2).collect();
    assert_eq!(tail[1].trim(), "\"${extra_args[@]}\" \\");
    assert_eq!(tail[0].trim(), spec.kernel);
}
