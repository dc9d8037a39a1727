//! stratovirt's command line, parsed back with a model of its grammar and checked value by
//! value against the spec; and `microvm-balloon` run against a QMP stub that records the
//! exact request.
//!
//! Grammar model after stratovirt v2.5.0/master d5b32037 (`docs/config_guidebook.md`;
//! `machine_manager/src/cmdline.rs` for the single-dash top-level flags, `str_slip_to_clap` in
//! `machine_manager/src/config/mod.rs` for the values): a value is `classtype,key=value,…`
//! split at every `,` and every `=` with no escape, each key is a clap `--key` of the device's
//! struct (unknown keys are errors, a key may be given once), device-like flags repeat, the
//! others may be given once. Booleans are on/off through `parse_bool`, except the balloon's,
//! which take true/false only. The `microvm` machine accepts only virtio-mmio `*-device`s and
//! every `-device` needs an `id`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use microvm_codegen::diagnostic::SpecText;
use microvm_codegen::runner::{Entry, Tree};
use microvm_codegen::spec::{InterfaceType, RunnerSpec};
use serde_json::{Value, json};

/// Top-level flags the runner emits: whether each may repeat.
fn top_level(flag: &str) -> Option<bool> {
    Some(match flag {
        "-device" | "-drive" | "-netdev" | "-chardev" | "-object" => true,
        "-name" | "-machine" | "-smp" | "-m" | "-mem-path" | "-kernel" | "-initrd" | "-append"
        | "-serial" | "-qmp" => false,
        _ => return None,
    })
}

/// Keys of each value grammar, by flag and class type ("" for `-drive`, which has none).
fn keys(flag: &str, class: &str) -> Option<&'static [&'static str]> {
    Some(match (flag, class) {
        ("-machine", "microvm") => &[
            "dump-guest-core",
            "mem-share",
            "accel",
            "usb",
            "gic-version",
        ],
        ("-drive", "") => &[
            "id",
            "file",
            "if",
            "unit",
            "format",
            "readonly",
            "direct",
            "aio",
            "discard",
            "detect-zeroes",
            "throttling.iops-total",
            "media",
            "l2-cache-size",
            "refcount-cache-size",
        ],
        ("-device", "virtio-blk-device") => &[
            "id",
            "drive",
            "serial",
            "iothread",
            "queue-size",
            "bootindex",
        ],
        ("-device", "virtio-net-device") => &[
            "id",
            "netdev",
            "mac",
            "iothread",
            "rx-iothread",
            "tx-iothread",
            "mq",
            "queue-size",
        ],
        ("-device", "vhost-user-fs-device") => &["id", "chardev", "tag"],
        ("-device", "vhost-vsock-device") => &["id", "guest-cid", "vhostfd"],
        ("-device", "virtio-balloon-device") => &[
            "id",
            "deflate-on-oom",
            "free-page-reporting",
            "auto-balloon",
            "membuf-percent",
            "monitor-interval",
        ],
        ("-netdev", "tap") => &[
            "id", "ifname", "fd", "fds", "queues", "vhost", "vhostfd", "vhostfds", "path", "macnat",
        ],
        ("-chardev", "socket") => &["id", "path", "server", "nowait"],
        ("-chardev", "stdio") => &["id"],
        ("-chardev", "file") => &["id", "path"],
        _ => return None,
    })
}

const ON_OFF_KEYS: &[&str] = &[
    "readonly",
    "direct",
    "mem-share",
    "dump-guest-core",
    "mq",
    "vhost",
    "macnat",
];
const TRUE_FALSE_KEYS: &[&str] = &["deflate-on-oom", "free-page-reporting", "auto-balloon"];

/// One `classtype,key=value,…` value, as `str_slip_to_clap` reads it.
#[derive(Debug, Clone)]
struct Opt {
    class: String,
    keys: BTreeMap<String, String>,
}

fn parse_opt(flag: &str, value: &str) -> Opt {
    let mut parts = value.split(',');
    let class = if flag == "-drive" {
        String::new()
    } else {
        let class = parts.next().unwrap().to_owned();
        assert!(!class.contains('='), "{flag} {value}: no class type first");
        class
    };
    let allowed = keys(flag, &class).unwrap_or_else(|| panic!("{flag}: unknown type {class:?}"));
    let mut keys = BTreeMap::new();
    for part in parts {
        let pieces: Vec<&str> = part.split('=').collect();
        let (key, v) = match pieces[..] {
            [key, v] => (key, v),
            [key] if matches!(key, "server" | "nowait") => (key, ""),
            _ => panic!("{flag} {value}: {part:?} splits into {pieces:?}"),
        };
        assert!(
            allowed.contains(&key),
            "{flag} {class}: unknown key {key:?}"
        );
        if ON_OFF_KEYS.contains(&key) {
            assert!(
                ["on", "off", "true", "false", "yes", "no"].contains(&v),
                "{key}={v}"
            );
        }
        if TRUE_FALSE_KEYS.contains(&key) {
            assert!(
                ["true", "false"].contains(&v),
                "{key}={v}: clap's bool parser"
            );
        }
        assert!(
            keys.insert(key.to_owned(), v.to_owned()).is_none(),
            "{flag} {value}: {key} given twice (clap refuses it)"
        );
    }
    Opt { class, keys }
}

struct Run {
    flags: BTreeMap<String, Vec<String>>,
}

impl Run {
    fn plain(&self, flag: &str) -> Option<&str> {
        self.flags.get(flag).map(|v| v[0].as_str())
    }

    fn opts(&self, flag: &str) -> Vec<Opt> {
        self.flags
            .get(flag)
            .into_iter()
            .flatten()
            .map(|v| parse_opt(flag, v))
            .collect()
    }

    fn devices(&self, class: &str) -> Vec<Opt> {
        self.opts("-device")
            .into_iter()
            .filter(|d| d.class == class)
            .collect()
    }
}

/// Parses the stratovirt command line (after the program), failing on what it refuses.
fn parse(argv: &[String]) -> Run {
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut words = argv.iter();
    while let Some(flag) = words.next() {
        let repeatable = top_level(flag).unwrap_or_else(|| panic!("unknown flag {flag}"));
        let value = words
            .next()
            .unwrap_or_else(|| panic!("{flag} has no value"));
        assert!(!value.starts_with('-'), "{flag} would swallow {value}");
        let entry = flags.entry(flag.clone()).or_default();
        assert!(entry.is_empty() || repeatable, "{flag} given twice");
        entry.push(value.clone());
    }
    let run = Run { flags };
    // Every value parses; every device has a unique id; references resolve.
    let mut ids = BTreeSet::new();
    for device in run.opts("-device") {
        assert!(
            device.class.ends_with("-device"),
            "the microvm machine has virtio-mmio devices only, not {}",
            device.class
        );
        let id = device.keys.get("id").expect("every -device needs an id");
        assert!(ids.insert(id.clone()), "device id {id} twice");
    }
    let ids_of = |flag: &str| -> BTreeSet<String> {
        run.opts(flag)
            .into_iter()
            .map(|o| o.keys["id"].clone())
            .collect()
    };
    let (drives, netdevs, chardevs) = (ids_of("-drive"), ids_of("-netdev"), ids_of("-chardev"));
    assert!(run.opts("-object").is_empty(), "no objects are defined");
    if let Some(serial) = run.plain("-serial") {
        // `add_serial`: `chardev:<id>` names a -chardev, anything else is a chardev itself.
        match serial.strip_prefix("chardev:") {
            Some(id) => assert!(chardevs.contains(id), "-serial {serial} names no chardev"),
            None => {
                let opt = parse_opt("-chardev", serial);
                assert!(
                    !opt.keys.contains_key("id"),
                    "add_serial sets the id itself"
                );
            }
        }
    }
    for device in run.opts("-device") {
        for (key, known) in [
            ("drive", &drives),
            ("netdev", &netdevs),
            ("chardev", &chardevs),
        ] {
            if let Some(reference) = device.keys.get(key) {
                assert!(
                    known.contains(reference),
                    "{key}={reference} is not defined"
                );
            }
        }
    }
    for drive in run.opts("-drive") {
        let direct = drive.keys.get("direct").expect("direct is on unless said");
        match drive.keys.get("aio").map(String::as_str) {
            Some("native") => assert_eq!(direct, "on", "native AIO needs O_DIRECT"),
            Some("off") => assert_eq!(direct, "off", "O_DIRECT needs an AIO engine"),
            Some("io_uring" | "threads") => {}
            other => panic!("aio {other:?}"),
        }
    }
    for netdev in run.opts("-netdev") {
        let ifname = netdev.keys.contains_key("ifname");
        let fds = netdev.keys.get("fds").or(netdev.keys.get("fd"));
        assert!(ifname != fds.is_some(), "a tap by name or by fds");
        if let Some(fds) = fds {
            for fd in fds.split(':') {
                fd.parse::<u32>()
                    .unwrap_or_else(|_| panic!("fds is a colon-separated list, not {fds:?}"));
            }
        }
    }
    run
}

/// The command line as `microvm-run` runs it without a terminal (as under systemd).
fn stratovirt_run(tree: &Tree) -> (Vec<String>, Run) {
    let (_, piped) = common::console_values(tree, "console");
    let argv = common::substitute(&common::exec_argv(tree), "console", &piped);
    let run = parse(&argv[1..]);
    (argv, run)
}

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
    let (spec, tree) = common::ok_fixture("stratovirt-every-feature.json");
    let (argv, run) = stratovirt_run(&tree);
    assert_eq!(Some(&argv[0]), spec.tools.stratovirt.as_ref());

    assert_eq!(run.plain("-name"), Some(spec.host_name.as_str()));
    let machine = &run.opts("-machine")[0];
    assert_eq!(machine.class, "microvm");
    assert_eq!(
        machine.keys["mem-share"], "on",
        "virtiofs needs shared memory"
    );
    assert_eq!(run.plain("-smp"), Some(spec.vcpu.to_string().as_str()));
    assert_eq!(run.plain("-m"), Some(format!("{}M", spec.mem).as_str()));
    assert_eq!(run.plain("-mem-path"), Some("/dev/hugepages"));
    assert_eq!(run.plain("-kernel"), Some(spec.kernel.as_str()));
    assert_eq!(run.plain("-initrd"), Some(spec.initrd_path.as_str()));
    let append = run.plain("-append").unwrap();
    assert!(append.split(' ').any(|p| p == "console=ttyS0"));
    for param in &spec.kernel_params {
        assert!(append.split(' ').any(|p| p == param), "{param} missing");
    }
    assert_eq!(
        run.plain("-serial"),
        Some("file,path=/proc/self/fd/$console_pipe"),
        "no terminal: a file chardev on a pipe"
    );
    assert_eq!(
        run.plain("-qmp"),
        Some(format!("unix:{},server,nowait", spec.socket.clone().unwrap()).as_str())
    );

    let drives = run.opts("-drive");
    let blks = run.devices("virtio-blk-device");
    assert_eq!(drives.len(), 1 + spec.volumes.len());
    assert_eq!(blks.len(), drives.len());
    assert!(drives.len() <= 4, "four disk slots");
    assert_eq!(drives[0].keys["file"], spec.store_disk.clone().unwrap());
    assert_eq!(drives[0].keys["readonly"], "on");
    for ((drive, blk), volume) in drives[1..].iter().zip(&blks[1..]).zip(&spec.volumes) {
        assert_eq!(drive.keys["file"], volume.image);
        assert_eq!(drive.keys["format"], "raw");
        let on = |b: bool| if b { "on" } else { "off" };
        assert_eq!(drive.keys["readonly"], on(volume.read_only));
        assert_eq!(drive.keys["direct"], on(volume.direct));
        assert_eq!(blk.keys["drive"], drive.keys["id"]);
        assert_eq!(blk.keys.get("serial"), volume.serial.as_ref());
    }

    let chardevs: Vec<_> = run
        .opts("-chardev")
        .into_iter()
        .filter(|c| c.class == "socket")
        .collect();
    let fs = run.devices("vhost-user-fs-device");
    let shares: Vec<_> = spec.virtiofs_shares().collect();
    assert_eq!(fs.len(), shares.len());
    for ((device, chardev), share) in fs.iter().zip(&chardevs).zip(&shares) {
        assert_eq!(device.keys["tag"], share.tag);
        assert_eq!(device.keys["chardev"], chardev.keys["id"]);
        assert_eq!(Some(&chardev.keys["path"]), share.socket.as_ref());
        assert!(
            !chardev.keys.contains_key("server"),
            "virtiofsd is the server"
        );
    }

    let netdevs = run.opts("-netdev");
    let nics = run.devices("virtio-net-device");
    assert_eq!(netdevs.len(), spec.interfaces.len());
    assert!(netdevs.len() <= 2, "two NIC slots");
    let opened = opened_fds(&tree);
    let mut macvtaps = 0;
    for ((netdev, nic), interface) in netdevs.iter().zip(&nics).zip(&spec.interfaces) {
        assert_eq!(nic.keys["netdev"], netdev.keys["id"]);
        assert_eq!(nic.keys["mac"], interface.mac);
        assert!(
            !netdev.keys.contains_key("queues") && !nic.keys.contains_key("mq"),
            "the microvm NIC slots have one queue pair"
        );
        match interface.kind {
            InterfaceType::Tap => assert_eq!(netdev.keys["ifname"], interface.id),
            InterfaceType::Macvtap => {
                assert_eq!(
                    netdev.keys["fds"], opened[macvtaps],
                    "the fd microvm-run opens"
                );
                macvtaps += 1;
            }
            other => panic!("{other:?} is refused for stratovirt"),
        }
    }
    assert_eq!(macvtaps, opened.len());
    assert!(
        !script(&tree, "bin/tap-up").unwrap().contains("multi_queue"),
        "stratovirt refuses a multi_queue tap with one queue pair"
    );

    let vsock = run.devices("vhost-vsock-device");
    assert_eq!(
        vsock[0].keys["guest-cid"],
        spec.vsock.cid.unwrap().to_string()
    );
    let balloon = run.devices("virtio-balloon-device");
    assert_eq!(
        balloon[0].keys["deflate-on-oom"],
        spec.deflate_on_oom.to_string()
    );
    assert!(
        run.devices("virtio-rng-device").is_empty(),
        "stratovirt 2.5 builds virtio-rng only with a feature"
    );

    // x86_64: 11 virtio-mmio interrupts, 6 of them the reserved disk and NIC slots.
    let others = run.opts("-device").len() - blks.len() - nics.len();
    assert!(6 + others <= 11, "{others} transports beyond the slots");

    assert!(
        !tree.contains_key("bin/microvm-shutdown"),
        "the microvm machine has no graceful shutdown"
    );
    assert!(tree.contains_key("bin/microvm-balloon"));
}

#[test]
fn minimal_command_line_matches_the_grammar() {
    let (_, tree) = common::ok_fixture("stratovirt-minimal.json");
    let (_, run) = stratovirt_run(&tree);
    let machine = &run.opts("-machine")[0];
    assert_eq!(machine.class, "microvm");
    assert!(
        !machine.keys.contains_key("mem-share"),
        "memory is shared only for vhost-user"
    );
    let store = &run.opts("-drive")[0];
    assert_eq!(
        store.keys["direct"], "off",
        "said explicitly: it defaults to on"
    );
    assert!(run.plain("-qmp").is_some(), "stratovirt needs a QMP socket");
    assert!(run.plain("-mem-path").is_none());
    assert!(run.opts("-netdev").is_empty() && run.devices("virtio-balloon-device").is_empty());
    assert!(!tree.contains_key("bin/microvm-balloon"));
}

fn fixture_json(name: &str) -> Value {
    let text = std::fs::read_to_string(common::fixtures().join("ok").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn spec_from(value: &Value) -> (RunnerSpec, Tree) {
    let text = SpecText::new("variant.json", serde_json::to_string_pretty(value).unwrap());
    let (spec, findings) = common::check(&text);
    assert!(findings.is_empty(), "{findings:?}");
    let spec = spec.unwrap();
    let tree = common::build(&spec);
    (spec, tree)
}

#[test]
fn aarch64_uses_the_microvm_machine_and_its_pl011_console() {
    let mut value = fixture_json("stratovirt-every-feature.json");
    value["system"] = json!("aarch64-linux");
    let (_, tree) = spec_from(&value);
    let (_, run) = stratovirt_run(&tree);
    assert_eq!(run.opts("-machine")[0].class, "microvm");
    let append = run.plain("-append").unwrap();
    assert!(append.split(' ').any(|p| p == "console=ttyAMA0"));
    assert!(!append.contains("edd="), "an x86 setting");
}

#[test]
fn macvtaps_stay_single_queue_with_more_vcpus() {
    // One fd per queue pair, and the microvm NIC slots have one pair whatever the vCPUs.
    let mut value = fixture_json("stratovirt-every-feature.json");
    value["vcpu"] = json!(4);
    let (_, tree) = spec_from(&value);
    let (_, run) = stratovirt_run(&tree);
    let fds: Vec<_> = run
        .opts("-netdev")
        .into_iter()
        .filter_map(|n| n.keys.get("fds").cloned())
        .collect();
    assert_eq!(fds, vec!["3".to_owned()]);
}

// ---- microvm-balloon against a QMP stub ----

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

/// Serves one QMP connection the way stratovirt does and reports each command it received.
/// `actual` maps the balloon target to what query-balloon reports; None refuses `balloon`.
fn qmp_stub(listener: UnixListener, actual: Option<fn(u64) -> u64>) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        writeln!(
            writer,
            r#"{{"QMP":{{"version":{{"qemu":{{"micro":1,"minor":0,"major":5}},"package":"StratoVirt-2.5.0"}},"capabilities":[]}}}}"#
        )
        .unwrap();
        let mut target = 0;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let command: Value = serde_json::from_str(&line).unwrap();
            let reply = match command["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({ "return": {} }),
                "balloon" => match actual {
                    Some(_) => {
                        target = command["arguments"]["value"].as_u64().unwrap();
                        json!({ "return": {} })
                    }
                    None => json!({ "error": { "class": "DeviceNotActive",
                        "desc": "No balloon device has been activated" } }),
                },
                "query-balloon" => json!({ "return": { "actual": actual.unwrap()(target) } }),
                other => json!({ "error": { "class": "CommandNotFound", "desc": other } }),
            };
            tx.send(command).unwrap();
            writeln!(writer, "{reply}").unwrap();
        }
    });
    rx
}

fn balloon_script(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let mut value = fixture_json("stratovirt-every-feature.json");
    for (tool, path) in [("bash", "bash"), ("socat", "socat")] {
        value["tools"][tool] = json!(program(path));
    }
    let (spec, tree) = spec_from(&value);
    let path = dir.join("microvm-balloon");
    write_executable(&path, &script(&tree, "bin/microvm-balloon").unwrap());
    (path, dir.join(spec.socket.unwrap()))
}

#[test]
fn balloon_asks_qmp_for_the_memory_the_guest_keeps_in_bytes() {
    common::require("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    let (script, socket) = balloon_script(dir.path());
    let commands = qmp_stub(UnixListener::bind(&socket).unwrap(), Some(|target| target));
    let output = output(Command::new(&script).arg("256").current_dir(dir.path()));
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{out}");
    let sent: Vec<Value> = commands.try_iter().collect();
    assert_eq!(sent[0], json!({ "execute": "qmp_capabilities" }));
    assert_eq!(
        sent[1],
        json!({ "execute": "balloon", "arguments": { "value": (1024u64 - 256) * 1024 * 1024 } }),
        "the target is the guest's memory (1024 - 256 MiB), in bytes"
    );
    assert_eq!(sent[2], json!({ "execute": "query-balloon" }));
    assert!(out.contains("the guest has 768 of 1024 MiB"), "{out}");
}

#[test]
fn balloon_fails_when_stratovirt_refuses() {
    common::require("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    let (script, socket) = balloon_script(dir.path());
    let commands = qmp_stub(UnixListener::bind(&socket).unwrap(), None);
    let output = output(Command::new(&script).arg("128").current_dir(dir.path()));
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("stratovirt refused"), "{err}");
    let sent: Vec<Value> = commands.try_iter().collect();
    assert_eq!(sent.len(), 2, "nothing after the refusal: {sent:?}");
}

#[test]
fn balloon_without_a_vm_fails_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let (script, _) = balloon_script(dir.path());
    let output = output(Command::new(&script).arg("128").current_dir(dir.path()));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not running"));
}
