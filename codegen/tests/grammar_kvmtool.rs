//! kvmtool's command line, read back with a model of `lkvm run`'s grammar and checked value by
//! value against the spec; and microvm-balloon run against an `lkvm` stub that records its
//! arguments.
//!
//! Grammar model after kvmtool (avpatel/kvmtool 5a1233d8, a maintainer-committed mirror of
//! kernel.org will/kvmtool): `builtin-run.c` `BUILD_OPTIONS` for the flags (long options take
//! the next argument as value; `--disk`, `--9p`, `--network` and `--vfio-pci` repeat, a repeated
//! string option silently replaces the first, which the model refuses), `disk/core.c`
//! (`PATH[,ro][,direct]`, at most four), `virtio/9p.c` (`DIR,TAG`, split at the first comma),
//! `virtio/net.c` (`key=value` pairs split at every `,` and `=`; keys mode, tapif, guest_mac,
//! …), `builtin-balloon.c` (`lkvm balloon --name N --inflate|--deflate MiB`); documentation:
//! `Documentation/kvmtool.1`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use microvm_codegen::runner::{Entry, Tree};
use microvm_codegen::spec::{InterfaceType, RunnerSpec};
use serde_json::{Value, json};

const VALUE_FLAGS: &[&str] = &[
    "--name",
    "--cpus",
    "--mem",
    "--disk",
    "--9p",
    "--console",
    "--vsock",
    "--dev",
    "--tty",
    "--sandbox",
    "--hugetlbfs",
    "--virtio-transport",
    "--loglevel",
    "--kernel",
    "--initrd",
    "--params",
    "--firmware",
    "--flash",
    "--network",
    "--vfio-pci",
    "--debug-iodelay",
    "--vidmode",
];
const SWITCHES: &[&str] = &[
    "--balloon",
    "--vnc",
    "--gtk",
    "--sdl",
    "--rng",
    "--nodefaults",
    "--no-dhcp",
    "--debug",
    "--debug-single-step",
    "--debug-ioport",
    "--debug-mmio",
];
const REPEATABLE: &[&str] = &["--disk", "--9p", "--network", "--vfio-pci"];
const NETWORK_KEYS: &[&str] = &[
    "guest_mac",
    "mode",
    "script",
    "downscript",
    "guest_ip",
    "host_ip",
    "trans",
    "tapif",
    "vhost",
    "fd",
    "mq",
];

/// Flag -> values; switches map to an empty list.
fn parse(argv: &[String]) -> BTreeMap<String, Vec<String>> {
    assert_eq!(argv[0], "run", "lkvm's first word is the command");
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut words = argv[1..].iter();
    while let Some(word) = words.next() {
        let entry_exists = flags.contains_key(word);
        let entry = flags.entry(word.clone()).or_default();
        if VALUE_FLAGS.contains(&word.as_str()) {
            let value = words
                .next()
                .unwrap_or_else(|| panic!("{word} has no value"));
            if word == "--network" {
                assert!(
                    !value.starts_with('-'),
                    "lkvm would take the default network for {value}"
                );
            }
            entry.push(value.clone());
        } else {
            assert!(SWITCHES.contains(&word.as_str()), "unknown option {word}");
        }
        assert!(
            !entry_exists || REPEATABLE.contains(&word.as_str()),
            "{word} given twice"
        );
    }
    let disks = flags.get("--disk").map_or(0, Vec::len);
    assert!(disks <= 4, "lkvm dies on a fifth disk");
    flags
}

/// `-n` parameters as strtok splits them.
fn network(value: &str) -> BTreeMap<String, String> {
    let tokens: Vec<&str> = value.split([',', '=']).collect();
    assert_eq!(tokens.len() % 2, 0, "unpaired network parameter in {value}");
    let mut pairs = BTreeMap::new();
    for pair in tokens.chunks(2) {
        assert!(
            NETWORK_KEYS.contains(&pair[0]),
            "unknown network parameter {}",
            pair[0]
        );
        assert!(
            pairs
                .insert(pair[0].to_owned(), pair[1].to_owned())
                .is_none()
        );
    }
    pairs
}

/// `PATH[,ro][,direct]`.
fn disk(value: &str) -> (String, Vec<String>) {
    let mut parts = value.split(',');
    let path = parts.next().unwrap().to_owned();
    let options: Vec<String> = parts.map(str::to_owned).collect();
    for option in &options {
        assert!(
            ["ro", "direct"].contains(&option.as_str()),
            "disk option {option}"
        );
    }
    (path, options)
}

fn file<'a>(tree: &'a Tree, path: &str) -> &'a str {
    match tree.get(path) {
        Some(Entry::File { contents, .. }) => contents,
        _ => panic!("no {path} in the runner"),
    }
}

fn one<'a>(flags: &'a BTreeMap<String, Vec<String>>, flag: &str) -> &'a str {
    &flags[flag][0]
}

fn check_common(spec: &RunnerSpec, tree: &Tree, flags: &BTreeMap<String, Vec<String>>) {
    assert_eq!(one(flags, "--name"), spec.host_name);
    assert!(
        flags.contains_key("--nodefaults"),
        "without it lkvm adds root=/dev/vda rw to the command line"
    );
    assert_eq!(one(flags, "--cpus"), spec.vcpu.to_string());
    assert_eq!(
        one(flags, "--mem"),
        spec.mem.to_string(),
        "a plain number is MiB"
    );
    assert_eq!(one(flags, "--console"), "serial");
    assert_eq!(one(flags, "--kernel"), spec.kernel);
    assert_eq!(one(flags, "--initrd"), spec.initrd_path);
    let params: Vec<&str> = one(flags, "--params").split(' ').collect();
    assert!(params.contains(&"console=ttyS0"));
    assert!(!params.iter().any(|p| p.starts_with("root=")), "{params:?}");
    for param in &spec.kernel_params {
        assert!(params.contains(&param.as_str()), "{param} missing");
    }
    assert!(flags.contains_key("--rng"));
    assert_eq!(flags.contains_key("--balloon"), spec.balloon);

    let disks: Vec<(String, Vec<String>)> = flags["--disk"].iter().map(|d| disk(d)).collect();
    assert_eq!(disks[0].0, spec.store_disk.clone().unwrap());
    assert_eq!(disks[0].1, vec!["ro"]);
    assert_eq!(disks.len(), 1 + spec.volumes.len());
    for ((path, options), volume) in disks[1..].iter().zip(&spec.volumes) {
        assert_eq!(*path, volume.image);
        assert_eq!(options.contains(&"ro".to_owned()), volume.read_only);
        assert_eq!(options.contains(&"direct".to_owned()), volume.direct);
    }

    let run = file(tree, "bin/microvm-run");
    assert!(
        run.contains("\nexport HOME=.\n"),
        "lkvm's socket lives in $HOME/.lkvm"
    );
    assert!(
        !tree.contains_key("bin/microvm-shutdown"),
        "lkvm cannot shut a guest down gracefully"
    );
    assert_eq!(tree.contains_key("bin/microvm-balloon"), spec.balloon);
}

#[test]
fn every_feature_command_line_matches_the_grammar_and_the_spec() {
    let (spec, tree) = common::ok_fixture("kvmtool-every-feature.json");
    let argv = common::exec_argv(&tree);
    assert_eq!(argv[0], spec.tools.lkvm.clone().unwrap());
    let flags = parse(&argv[1..]);
    check_common(&spec, &tree, &flags);
    assert_eq!(one(&flags, "--hugetlbfs"), "/dev/hugepages");

    let shares: Vec<(&str, &str)> = flags["--9p"]
        .iter()
        .map(|s| s.split_once(',').unwrap())
        .collect();
    assert_eq!(
        shares,
        spec.shares
            .iter()
            .map(|s| (s.source.as_str(), s.tag.as_str()))
            .collect::<Vec<_>>()
    );

    let run = file(&tree, "bin/microvm-run");
    let nets: Vec<BTreeMap<String, String>> =
        flags["--network"].iter().map(|n| network(n)).collect();
    assert_eq!(nets.len(), spec.interfaces.len());
    for (net, interface) in nets.iter().zip(&spec.interfaces) {
        assert_eq!(net["guest_mac"], interface.mac);
        assert_eq!(
            net.get("vhost").map(String::as_str),
            interface.tap.vhost.then_some("1"),
            "vhost-net as asked for, on taps and macvtaps alike"
        );
        match interface.kind {
            InterfaceType::User => {
                assert_eq!(net["mode"], "user");
                assert!(!net.contains_key("tapif"));
            }
            InterfaceType::Tap => {
                assert_eq!(net["mode"], "tap");
                assert_eq!(net["tapif"], interface.id);
            }
            InterfaceType::Macvtap => {
                assert_eq!(net["mode"], "tap");
                // The device path is known at run time only: a variable microvm-run sets.
                let var = net["tapif"]
                    .strip_prefix("${")
                    .and_then(|v| v.strip_suffix('}'))
                    .expect("a run-time variable");
                assert!(
                    run.contains(&format!(
                        "\n{var}=/dev/tap$(< /sys/class/net/{}/ifindex)\n",
                        interface.id
                    )),
                    "microvm-run sets {var}"
                );
            }
            InterfaceType::Bridge => panic!("refused for kvmtool"),
        }
    }
    assert_eq!(flags["--vsock"], vec![spec.vsock.cid.unwrap().to_string()]);
    assert_eq!(
        flags["--vfio-pci"],
        spec.devices
            .iter()
            .map(|d| d.path.clone())
            .collect::<Vec<_>>()
    );
    assert!(
        run.contains(" -f -- .lkvm/kvmtool-everything.balloon\n"),
        "microvm-run resets the balloon state"
    );
}

#[test]
fn minimal_command_line_has_no_implicit_network() {
    let (spec, tree) = common::ok_fixture("kvmtool-minimal.json");
    let flags = parse(&common::exec_argv(&tree)[1..]);
    check_common(&spec, &tree, &flags);
    assert_eq!(
        flags["--network"],
        vec!["mode=none"],
        "without any -n lkvm adds a user-mode NIC of its own"
    );
    assert!(!flags.contains_key("--hugetlbfs") && !flags.contains_key("--vsock"));
}

#[test]
fn aarch64_gets_no_x86_parameters() {
    let (spec, _) = common::ok_fixture("kvmtool-minimal.json");
    let mut spec = spec;
    spec.system = microvm_codegen::spec::System::Aarch64Linux;
    assert!(microvm_codegen::validate::validate(&spec).is_empty());
    let tree = common::build(&spec);
    let flags = parse(&common::exec_argv(&tree)[1..]);
    let params = one(&flags, "--params");
    assert!(params.contains("console=ttyS0"));
    assert!(
        !params.contains("i8042") && !params.contains("noacpi"),
        "{params}"
    );
}

// ---- microvm-balloon against an lkvm stub ----

/// The kvmtool-minimal runner with a balloon, real tools and a stub `lkvm` that appends its
/// HOME (resolved) and arguments to `lkvm.log` (after creating `$HOME/.lkvm`, as lkvm does on
/// every start), written to `dir`, which is also the working
/// directory.
fn runner_with_stub(dir: &Path, stub_status: u8) {
    let stub = dir.join("lkvm-stub");
    std::fs::write(
        &stub,
        format!(
            // Like lkvm, it creates $HOME/.lkvm first thing.
            "#!/bin/bash\nmkdir -p \"$HOME/.lkvm\"\nprintf '%s %s\\n' \"$(cd \"$HOME\" && pwd -P)\" \"$*\" >>\"$PWD/lkvm.log\"\nexit {stub_status}\n"
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(common::fixtures().join("ok/kvmtool-minimal.json")).unwrap();
    let mut spec: Value = serde_json::from_str(&text).unwrap();
    spec["balloon"] = json!(true);
    spec["deflateOnOOM"] = json!(false);
    spec["tools"] = json!({
        "bash": "/bin/bash", "rm": "/bin/rm", "lkvm": stub.to_str().unwrap()
    });
    let spec: RunnerSpec = serde_json::from_value(spec).unwrap();
    assert!(microvm_codegen::validate::validate(&spec).is_empty());
    for (path, entry) in &common::build(&spec) {
        if let Entry::File {
            contents,
            executable: true,
        } = entry
        {
            let target = dir.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, contents).unwrap();
        }
    }
    use std::os::unix::fs::PermissionsExt;
    for script in ["lkvm-stub", "bin/microvm-run", "bin/microvm-balloon"] {
        std::fs::set_permissions(dir.join(script), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn run(dir: &Path, script: &str, args: &[&str]) -> Output {
    Command::new(dir.join("bin").join(script))
        .args(args)
        .current_dir(dir)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

/// The stub's log lines since the last call, with the working directory written as `.`.
fn take_log(dir: &Path) -> Vec<String> {
    let log = dir.join("lkvm.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_file(&log).ok();
    let here = dir.canonicalize().unwrap().display().to_string();
    text.lines().map(|l| l.replacen(&here, ".", 1)).collect()
}

#[test]
fn balloon_sends_lkvm_the_difference_to_the_size_it_set_last() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    runner_with_stub(dir, 0);
    let balloon = |size: &str| {
        let output = run(dir, "microvm-balloon", &[size]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        take_log(dir)
    };
    // The working directory is HOME for every lkvm call, so all find the same socket.
    assert_eq!(
        balloon("256"),
        vec![". balloon --name kvmtool-minimal --inflate 256"]
    );
    // Shrinking deflates: microvm.nix's regex never matched a digit, so it could not.
    assert_eq!(
        balloon("100"),
        vec![". balloon --name kvmtool-minimal --deflate 156"]
    );
    assert_eq!(balloon("100"), Vec::<String>::new(), "nothing to change");
    assert_eq!(
        balloon("300"),
        vec![". balloon --name kvmtool-minimal --inflate 200"]
    );
    assert_eq!(
        balloon("0"),
        vec![". balloon --name kvmtool-minimal --deflate 300"]
    );
    let output = run(dir, "microvm-balloon", &["512"]);
    assert_eq!(output.status.code(), Some(2), "512 MiB is all the memory");
    assert!(take_log(dir).is_empty());

    // A new start empties lkvm's balloon, and microvm-run forgets the old size with it.
    balloon("64");
    let output = run(dir, "microvm-run", &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started = take_log(dir);
    assert_eq!(started.len(), 1);
    assert!(
        started[0].starts_with(". run --name kvmtool-minimal --nodefaults "),
        "lkvm runs with the working directory as HOME: {started:?}"
    );
    assert!(started[0].contains(" --balloon "));
    assert_eq!(
        balloon("64"),
        vec![". balloon --name kvmtool-minimal --inflate 64"]
    );
}

#[test]
fn balloon_keeps_its_state_when_lkvm_fails() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    runner_with_stub(dir, 1);
    let output = run(dir, "microvm-balloon", &["128"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("could not reach kvmtool-minimal"));
    take_log(dir);
    // The failed call changed nothing, so the next one asks for the whole size again.
    runner_with_stub(dir, 0);
    let output = run(dir, "microvm-balloon", &["128"]);
    assert!(output.status.success());
    assert_eq!(
        take_log(dir),
        vec![". balloon --name kvmtool-minimal --inflate 128"]
    );
}
