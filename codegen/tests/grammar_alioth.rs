//! alioth's command line, parsed back with a model of its grammar and checked value by value
//! against the spec.
//!
//! Grammar model after alioth v0.12.0 (google/alioth): the flags of `boot` (alias `run`) from
//! `alioth-cli/src/boot/boot.rs` (`BootArgs`: which flags exist, which repeat, which are
//! switches), the device enums of `alioth-cli/src/boot/config.rs`, the spec structs behind
//! them (`alioth/src/virtio/dev/net/tap.rs`, `virtio/dev/blk.rs`, `virtio/dev/fs/vu.rs`,
//! `virtio/dev/vsock/vhost_vsock.rs`, `mem/mem.rs`, `board/board.rs`: keys, aliases, required
//! keys) and the value syntax of `serde-aco/src/de.rs`: an enum value starts with its variant
//! name, a value runs to the next comma, a key may appear once, unknown keys are errors,
//! booleans are on/off/true/false, integers take k/m/g/t suffixes, and a value starting with
//! `id_` names an `-o` object (the runner defines none). The model is strict where alioth has a
//! fallback (`--blk` re-reads an unparsable value as a bare file name): such a value is wrong.

mod common;

use std::collections::BTreeMap;

use microvm_codegen::runner::Entry;
use microvm_codegen::spec::{InterfaceType, RunnerSpec, System};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Bool,
    Int { max: u64 },
    Str,
    Mac,
    Enum(&'static [&'static str]),
}

/// A struct's keys: (name, aliases, kind, required).
type Fields = &'static [(&'static str, &'static [&'static str], Kind, bool)];

const U16: Kind = Kind::Int {
    max: u16::MAX as u64,
};
const U32: Kind = Kind::Int {
    max: u32::MAX as u64,
};
const U64: Kind = Kind::Int { max: u64::MAX };
const API: Kind = Kind::Enum(&["mio", "iouring", "io_uring"]);

const CPU: Fields = &[
    ("count", &[], U16, false),
    ("topology", &[], Kind::Str, false),
];
const MEMORY: Fields = &[
    ("size", &[], U64, false),
    ("backend", &[], Kind::Enum(&["anon", "memfd"]), false),
    ("shared", &[], Kind::Bool, false),
    ("transparent_hugepage", &["thp"], Kind::Bool, false),
];
const BLK_FILE: Fields = &[
    ("path", &[], Kind::Str, true),
    ("readonly", &[], Kind::Bool, false),
    ("api", &[], API, false),
];
const VU_SOCKET: Fields = &[("socket", &[], Kind::Str, true)];
const NET_TAP: Fields = &[
    ("mac", &[], Kind::Mac, true),
    ("mtu", &[], U16, true),
    ("queue_pairs", &["qp"], U16, false),
    ("tap", &[], Kind::Str, false),
    ("if_name", &["if"], Kind::Str, false),
    ("api", &[], API, false),
];
const FS_VU: Fields = &[
    ("socket", &[], Kind::Str, true),
    ("tag", &[], Kind::Str, false),
    ("dax_window", &[], U64, false),
];
const FS_DIR: Fields = &[
    ("tag", &[], Kind::Str, true),
    ("path", &[], Kind::Str, true),
    ("dax_window", &[], U64, false),
];
const CONSOLE_LOG: Fields = &[
    ("path", &[], Kind::Str, true),
    ("append", &[], Kind::Bool, false),
];
const VSOCK_VHOST: Fields = &[("cid", &[], U32, true), ("dev", &[], Kind::Str, false)];
const VSOCK_UDS: Fields = &[("cid", &[], U32, true), ("path", &[], Kind::Str, true)];

/// What a flag takes.
enum Takes {
    Switch,
    Plain,
    Struct(Fields),
    Enum(&'static [(&'static str, Fields)]),
}

/// (long name, short name, what it takes, repeatable), the `boot` flags of v0.12.0 the runner
/// may emit or a user could reasonably add.
const FLAGS: &[(&str, Option<&str>, Takes, bool)] = &[
    ("--kernel", Some("-k"), Takes::Plain, false),
    ("--pvh", None, Takes::Plain, false),
    (
        "--console",
        None,
        Takes::Enum(&[("stdio", &[]), ("log", CONSOLE_LOG)]),
        false,
    ),
    ("--initramfs", Some("-i"), Takes::Plain, false),
    ("--cmdline", Some("-c"), Takes::Plain, false),
    ("--firmware", Some("-f"), Takes::Plain, false),
    ("--cpu", Some("-p"), Takes::Struct(CPU), false),
    ("--memory", Some("-m"), Takes::Struct(MEMORY), false),
    ("--entropy", None, Takes::Switch, false),
    ("--pvpanic", None, Takes::Switch, false),
    (
        "--blk",
        None,
        Takes::Enum(&[("file", BLK_FILE), ("vu", VU_SOCKET)]),
        true,
    ),
    (
        "--net",
        None,
        Takes::Enum(&[("tap", NET_TAP), ("vu", VU_SOCKET)]),
        true,
    ),
    (
        "--fs",
        None,
        Takes::Enum(&[("vu", FS_VU), ("dir", FS_DIR)]),
        true,
    ),
    (
        "--vsock",
        None,
        Takes::Enum(&[
            ("vhost", VSOCK_VHOST),
            ("uds", VSOCK_UDS),
            ("vu", VU_SOCKET),
        ]),
        false,
    ),
];

/// One parsed flag value: the enum variant (if any) and the keys, by their canonical names.
#[derive(Debug, Clone, Default, PartialEq)]
struct Value {
    variant: Option<String>,
    keys: BTreeMap<String, String>,
    plain: String,
}

fn parse_int(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        Some((i, 't' | 'T')) => (&text[..i], 40),
        _ => (text, 0),
    };
    let n = if let Some(hex) = digits.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else if let Some(oct) = digits.strip_prefix("0o") {
        u64::from_str_radix(oct, 8)
    } else if let Some(bin) = digits.strip_prefix("0b") {
        u64::from_str_radix(bin, 2)
    } else {
        digits.parse()
    }
    .map_err(|_| format!("{text:?} is not an integer"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or(format!("{text:?} overflows"))
}

/// Parses `key=value,…` against a struct's fields, as serde-aco with serde's derive does.
fn parse_struct(text: &str, fields: Fields) -> Result<BTreeMap<String, String>, String> {
    let mut keys = BTreeMap::new();
    if !text.is_empty() {
        for item in text.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or(format!("{item:?} is not key=value"))?;
            let (name, _, kind, _) = fields
                .iter()
                .find(|(name, aliases, _, _)| *name == key || aliases.contains(&key))
                .ok_or(format!("unknown key {key:?}"))?;
            if value.starts_with("id_") {
                return Err(format!("{key}={value} names an object that is not defined"));
            }
            match kind {
                Kind::Bool => {
                    if !["on", "off", "true", "false"].contains(&value) {
                        return Err(format!("{key}={value} is not a boolean"));
                    }
                }
                Kind::Int { max } => {
                    if parse_int(value)? > *max {
                        return Err(format!("{key}={value} is out of range"));
                    }
                }
                Kind::Mac => {
                    let bytes: Vec<_> = value.split(':').collect();
                    if bytes.len() != 6 || bytes.iter().any(|b| u8::from_str_radix(b, 16).is_err())
                    {
                        return Err(format!("{key}={value} is not a MAC address"));
                    }
                }
                Kind::Enum(variants) => {
                    if !variants.contains(&value) {
                        return Err(format!("{key}={value} is not one of {variants:?}"));
                    }
                }
                Kind::Str => {}
            }
            if keys.insert(name.to_string(), value.to_owned()).is_some() {
                return Err(format!("duplicate key {name}"));
            }
        }
    }
    for (name, _, _, required) in fields {
        if *required && !keys.contains_key(*name) {
            return Err(format!("missing key {name}"));
        }
    }
    Ok(keys)
}

fn parse_value(takes: &Takes, text: &str) -> Result<Value, String> {
    Ok(match takes {
        Takes::Switch => unreachable!(),
        Takes::Plain => Value {
            plain: text.to_owned(),
            ..Value::default()
        },
        Takes::Struct(fields) => Value {
            keys: parse_struct(text, fields)?,
            ..Value::default()
        },
        Takes::Enum(variants) => {
            let (variant, rest) = text.split_once(',').unwrap_or((text, ""));
            let (_, fields) = variants
                .iter()
                .find(|(name, _)| *name == variant)
                .ok_or(format!("{variant:?} is not a variant of {variants:?}"))?;
            Value {
                variant: Some(variant.to_owned()),
                keys: parse_struct(rest, fields)?,
                plain: String::new(),
            }
        }
    })
}

/// Parses `alioth boot …` into flag -> values, failing on anything the grammar refuses.
fn parse(argv: &[String]) -> Result<BTreeMap<&'static str, Vec<Value>>, String> {
    let mut words = argv.iter();
    match words.next().map(String::as_str) {
        Some("boot" | "run") => {}
        other => return Err(format!("expected the boot subcommand, got {other:?}")),
    }
    let mut flags: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    while let Some(word) = words.next() {
        let (long, _, takes, repeat) = FLAGS
            .iter()
            .find(|(long, short, _, _)| word == long || Some(word.as_str()) == *short)
            .ok_or(format!("unknown flag {word}"))?;
        let value = match takes {
            Takes::Switch => Value::default(),
            _ => {
                let text = words.next().ok_or(format!("{long} has no value"))?;
                if text.starts_with('-') {
                    return Err(format!("{long} would take the flag {text} as its value"));
                }
                parse_value(takes, text).map_err(|e| format!("{long} {text}: {e}"))?
            }
        };
        let entry = flags.entry(long).or_default();
        if !entry.is_empty() && !repeat {
            return Err(format!("{long} given twice"));
        }
        entry.push(value);
    }
    Ok(flags)
}

fn script<'a>(tree: &'a microvm_codegen::runner::Tree, name: &str) -> &'a str {
    match tree.get(name) {
        Some(Entry::File { contents, .. }) => contents,
        _ => panic!("no {name}"),
    }
}

fn on(value: &str) -> bool {
    match value {
        "on" | "true" => true,
        "off" | "false" => false,
        other => panic!("{other} is not a boolean"),
    }
}

fn build(spec: &RunnerSpec) -> microvm_codegen::runner::Tree {
    let text = serde_json::to_string(spec).unwrap();
    let (spec, findings) = common::check(&microvm_codegen::diagnostic::SpecText::new(
        "mutated.json",
        text,
    ));
    assert!(findings.is_empty(), "{findings:?}");
    common::build(&spec.unwrap())
}

/// The command line as `microvm-run` runs it with a bzImage kernel.
fn alioth_argv(tree: &microvm_codegen::runner::Tree) -> Vec<String> {
    common::substitute(&common::exec_argv(tree), "kernel_flag", "--kernel")
}

#[test]
fn every_feature_command_line_matches_the_grammar_and_the_spec() {
    let (spec, tree) = common::ok_fixture("alioth-every-feature.json");
    let argv = alioth_argv(&tree);
    assert_eq!(argv[0], spec.tools.alioth.clone().unwrap());
    let flags = parse(&argv[1..]).unwrap();
    let one = |flag: &str| flags[flag][0].clone();

    assert_eq!(one("--cpu").keys["count"], spec.vcpu.to_string());
    let memory = one("--memory").keys;
    assert_eq!(parse_int(&memory["size"]).unwrap(), spec.mem << 20);
    assert_eq!(
        memory["backend"], "memfd",
        "vhost-user virtiofs needs memory it can map"
    );
    assert_eq!(one("--kernel").plain, spec.kernel);
    assert_eq!(one("--initramfs").plain, spec.initrd_path);
    let cmdline = one("--cmdline").plain;
    assert!(cmdline.starts_with("console=ttyS0 "), "{cmdline}");
    assert!(
        cmdline.ends_with(&format!(" {}", spec.kernel_params.join(" "))),
        "{cmdline}"
    );
    assert!(flags.contains_key("--entropy"));
    assert!(
        !flags.contains_key("--console"),
        "releases up to 0.12.0 have no --console"
    );

    let blk = &flags["--blk"];
    assert_eq!(blk.len(), 1 + spec.volumes.len());
    assert!(blk.iter().all(|b| b.variant.as_deref() == Some("file")));
    assert_eq!(blk[0].keys["path"], spec.store_disk.clone().unwrap());
    assert!(on(&blk[0].keys["readonly"]));
    for (b, volume) in blk[1..].iter().zip(&spec.volumes) {
        assert_eq!(b.keys["path"], volume.image);
        assert_eq!(on(&b.keys["readonly"]), volume.read_only, "{b:?}");
    }
    assert!(
        spec.volumes.iter().any(|v| v.read_only) && spec.volumes.iter().any(|v| !v.read_only),
        "the fixture has a read-only and a writable volume"
    );

    let fs = &flags["--fs"];
    let shares: Vec<_> = spec.virtiofs_shares().collect();
    assert_eq!(fs.len(), shares.len());
    for (f, share) in fs.iter().zip(shares) {
        assert_eq!(f.variant.as_deref(), Some("vu"));
        assert_eq!(Some(&f.keys["socket"]), share.socket.as_ref());
        assert_eq!(f.keys["tag"], share.tag);
    }

    let run = script(&tree, "bin/microvm-run");
    let nets = &flags["--net"];
    assert_eq!(nets.len(), spec.interfaces.len());
    let mut macvtaps = 0;
    for (net, interface) in nets.iter().zip(&spec.interfaces) {
        assert_eq!(net.variant.as_deref(), Some("tap"));
        assert_eq!(net.keys["mac"], interface.mac);
        assert_eq!(net.keys["mtu"], "1500");
        assert_eq!(net.keys["queue_pairs"], spec.vcpu.to_string());
        match interface.kind {
            InterfaceType::Tap => {
                assert_eq!(net.keys["if_name"], interface.id);
                assert!(!net.keys.contains_key("tap"));
            }
            InterfaceType::Macvtap => {
                // The device path is a run-time variable that microvm-run sets from the
                // interface's ifindex.
                let var = net.keys["tap"]
                    .strip_prefix("${")
                    .and_then(|v| v.strip_suffix('}'))
                    .expect("a run-time variable");
                macvtaps += 1;
                assert!(
                    run.contains(&format!(
                        "{var}=/dev/tap$(< /sys/class/net/{}/ifindex)",
                        interface.id
                    )),
                    "microvm-run does not set {var}"
                );
                assert!(!net.keys.contains_key("if_name"));
            }
            other => panic!("{other:?} interfaces are refused for alioth"),
        }
    }
    assert_eq!(macvtaps, 1, "the fixture has a macvtap interface");
    // alioth opens a tap IFF_MULTI_QUEUE when queue_pairs > 1, which only a multi_queue tap
    // accepts: tap-up must create it so.
    let tap_up = script(&tree, "bin/tap-up");
    for interface in spec.tap_interfaces() {
        let add = tap_up
            .lines()
            .find(|l| l.contains("tuntap add") && l.contains(&format!("name {} ", interface.id)))
            .unwrap();
        assert!(add.contains("multi_queue"), "{add}");
    }

    let vsock = one("--vsock");
    assert_eq!(vsock.variant.as_deref(), Some("vhost"));
    assert_eq!(vsock.keys["cid"], spec.vsock.cid.unwrap().to_string());
    assert!(run.contains("/dev/vhost-vsock"));
    assert!(
        !tree.contains_key("bin/microvm-shutdown") && !tree.contains_key("bin/microvm-balloon"),
        "alioth has no control socket, so no script can shut it down or resize a balloon"
    );
}

#[test]
fn minimal_command_line_matches_the_grammar() {
    let (spec, tree) = common::ok_fixture("alioth-minimal.json");
    let flags = parse(&alioth_argv(&tree)[1..]).unwrap();
    assert_eq!(flags["--cpu"][0].keys["count"], "1");
    assert_eq!(
        parse_int(&flags["--memory"][0].keys["size"]).unwrap(),
        spec.mem << 20
    );
    assert_eq!(flags["--blk"].len(), 1);
    assert!(on(&flags["--blk"][0].keys["readonly"]));
    for absent in ["--net", "--fs", "--vsock"] {
        assert!(!flags.contains_key(absent), "{absent}");
    }
}

#[test]
fn single_vcpu_taps_are_single_queue_on_both_sides() {
    let (mut spec, _) = common::ok_fixture("alioth-every-feature.json");
    spec.vcpu = 1;
    let tree = build(&spec);
    let flags = parse(&alioth_argv(&tree)[1..]).unwrap();
    for net in &flags["--net"] {
        assert!(!net.keys.contains_key("queue_pairs"), "{net:?}");
    }
    assert!(!script(&tree, "bin/tap-up").contains("multi_queue"));
}

#[test]
fn aarch64_guests_get_the_pl011_console() {
    let (mut spec, _) = common::ok_fixture("alioth-minimal.json");
    spec.system = System::Aarch64Linux;
    let tree = build(&spec);
    let flags = parse(&alioth_argv(&tree)[1..]).unwrap();
    assert!(
        flags["--cmdline"][0].plain.starts_with("console=ttyAMA0 "),
        "{:?}",
        flags["--cmdline"][0]
    );
}

#[test]
fn the_model_refuses_what_alioth_refuses() {
    let boot = |args: &[&str]| {
        let mut argv = vec!["boot".to_owned()];
        argv.extend(args.iter().map(|a| a.to_string()));
        parse(&argv)
    };
    // microvm.nix's volume syntax: `readOnly` is an unknown key (alioth then takes the whole
    // value for a file name), and the variant is missing.
    assert!(boot(&["--blk", "file,path=data.img,readOnly=true"]).is_err());
    assert!(boot(&["--blk", "path=data.img,readonly=true"]).is_err());
    assert!(boot(&["--blk", "file,path=data.img,readonly=yes"]).is_err());
    assert!(boot(&["--blk", "file,path=id_data"]).is_err());
    assert!(boot(&["--net", "tap,if_name=vm0,mac=02:00:00:00:00:01"]).is_err());
    assert!(boot(&["--vsock", "vhost,cid=3", "--vsock", "vhost,cid=4"]).is_err());
    assert!(
        boot(&["--num-cpu", "2"]).is_err(),
        "deprecated, not modelled"
    );
    assert!(
        boot(&["--blk", "file,path=a,b"]).is_err(),
        "a comma ends a value"
    );
    assert!(boot(&["--blk", "file,path=data.img,readonly=on"]).is_ok());
}

#[test]
fn values_alioth_cannot_carry_are_refused() {
    let (mut spec, _) = common::ok_fixture("alioth-every-feature.json");
    spec.volumes[0].image = "a,b.img".to_owned();
    spec.shares[1].tag = "id_data".to_owned();
    let text = serde_json::to_string(&spec).unwrap();
    let (_, findings) = common::check(&microvm_codegen::diagnostic::SpecText::new(
        "bad.json", text,
    ));
    let refused: Vec<String> = findings
        .iter()
        .filter(|d| d.code == "microvm::alioth::unrepresentable")
        .map(|d| d.path().unwrap().to_string())
        .collect();
    assert_eq!(
        refused,
        ["$.shares[1].tag", "$.volumes[0].image"],
        "{findings:?}"
    );
}
