//! qemu's command line, parsed back with a model of its grammar and checked value by value
//! against the every-feature spec.
//!
//! Grammar model after qemu's invocation documentation
//! (https://www.qemu.org/docs/master/system/invocation.html, and `qemu-options.hx`): options are
//! `-flag value` pairs or bare `-flag`s; a value of the QemuOpts form is `[head,]key=value,…`
//! with `,,` standing for a literal comma; `-device`/`-drive`/`-netdev`/`-object`/`-chardev`
//! repeat, most others may not.

mod common;

use std::collections::BTreeMap;

use microvm_codegen::runner::Entry;
use microvm_codegen::spec::{ForwardFrom, InterfaceType, ShareProto};

/// Flags that take no value.
const SWITCHES: &[&str] = &["-nodefaults", "-no-user-config", "-no-reboot"];
/// Flags that may appear more than once.
const REPEATABLE: &[&str] = &[
    "-device", "-drive", "-netdev", "-object", "-chardev", "-fsdev", "-fw_cfg",
];

/// QemuOpts: the head (a value without `=` in first place), then key=value pairs.
fn opts(text: &str) -> (Option<String>, Vec<(String, String)>) {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().unwrap().push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    let mut head = None;
    let mut pairs = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        match part.split_once('=') {
            Some((k, v)) => pairs.push((k.to_owned(), v.to_owned())),
            None if i == 0 => head = Some(part),
            None => panic!("{text}: {part:?} is neither the head nor key=value"),
        }
    }
    (head, pairs)
}

struct Parsed {
    flags: BTreeMap<String, Vec<String>>,
}

impl Parsed {
    fn new(argv: &[String]) -> Parsed {
        let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut words = argv.iter();
        while let Some(flag) = words.next() {
            assert!(flag.starts_with('-'), "{flag} is not an option");
            let value = if SWITCHES.contains(&flag.as_str()) {
                String::new()
            } else {
                words
                    .next()
                    .unwrap_or_else(|| panic!("{flag} has no value"))
                    .clone()
            };
            let entry = flags.entry(flag.clone()).or_default();
            assert!(
                entry.is_empty() || REPEATABLE.contains(&flag.as_str()),
                "{flag} given twice"
            );
            entry.push(value);
        }
        Parsed { flags }
    }

    fn one(&self, flag: &str) -> &str {
        &self.flags[flag][0]
    }

    /// The parsed values of `flag` whose head is `head`.
    fn with_head(&self, flag: &str, head: &str) -> Vec<BTreeMap<String, String>> {
        self.flags
            .get(flag)
            .into_iter()
            .flatten()
            .map(|v| opts(v))
            .filter(|(h, _)| h.as_deref() == Some(head))
            .map(|(_, pairs)| pairs.into_iter().collect())
            .collect()
    }

    /// The parsed value of `flag` with `key=value`.
    fn find(&self, flag: &str, key: &str, value: &str) -> BTreeMap<String, String> {
        self.flags[flag]
            .iter()
            .map(|v| opts(v).1.into_iter().collect::<BTreeMap<_, _>>())
            .find(|m| m.get(key).map(String::as_str) == Some(value))
            .unwrap_or_else(|| panic!("no {flag} with {key}={value}"))
    }
}

#[test]
fn every_feature_command_line_matches_the_grammar_and_the_spec() {
    let (spec, tree) = common::ok_fixture("qemu-every-feature.json");
    let argv = common::exec_argv(&tree);
    assert_eq!(argv[0], spec.tools.qemu.clone().unwrap());
    let p = Parsed::new(&argv[1..]);

    assert_eq!(
        opts(p.one("-name")).1,
        vec![("guest".into(), spec.host_name.clone())]
    );
    let (machine, machine_opts) = opts(p.one("-M"));
    assert_eq!(
        machine.as_deref(),
        Some("q35"),
        "virtio-mem needs a PC chipset"
    );
    let machine_opts: BTreeMap<_, _> = machine_opts.into_iter().collect();
    assert_eq!(machine_opts["accel"], "kvm", "no cpu set: KVM");
    assert_eq!(
        machine_opts["memory-backend"], "mem",
        "virtiofs needs shared memory"
    );
    let (size, memory) = opts(p.one("-m"));
    assert_eq!(size, Some(format!("{}M", spec.mem)));
    assert_eq!(
        memory,
        vec![("maxmem".into(), format!("{}M", spec.mem + spec.hotplug_mem))]
    );
    assert_eq!(p.one("-smp"), spec.vcpu.to_string());
    assert_eq!(p.one("-kernel"), spec.kernel);
    assert_eq!(p.one("-initrd"), spec.initrd_path);
    let cmdline = p.one("-append");
    for param in &spec.kernel_params {
        assert!(cmdline.split(' ').any(|w| w == param), "{param} missing");
    }
    let backend = &p.with_head("-object", "memory-backend-memfd")[0];
    assert_eq!(
        (backend["id"].as_str(), backend["share"].as_str()),
        ("mem", "on")
    );
    assert_eq!(backend["size"], format!("{}M", spec.mem));
    assert_eq!(
        opts(p.one("-smbios")).1,
        vec![
            ("type".into(), "1".into()),
            ("uuid".into(), spec.machine_id.clone().unwrap())
        ]
    );
    assert_eq!(
        opts(p.one("-run-with")).1,
        vec![("user".into(), spec.user.clone().unwrap())]
    );
    assert_eq!(
        p.one("-qmp"),
        format!("unix:{},server=on,wait=off", spec.socket.clone().unwrap())
    );
    assert!(spec.qemu.sandbox);
    assert!(
        !p.flags.contains_key("-sandbox"),
        "a bridge interface's setuid helper cannot run under qemu's seccomp filter"
    );

    // Disks: the store read-only, then every volume with its format, mode and serial.
    let store = p.find("-drive", "id", "store");
    assert_eq!(store["file"], spec.store_disk.clone().unwrap());
    assert_eq!(store["read-only"], "on");
    for (i, volume) in spec.volumes.iter().enumerate() {
        let id = format!("vol{i}");
        let drive = p.find("-drive", "id", &id);
        assert_eq!(drive["file"], volume.image);
        assert_eq!(
            drive["read-only"],
            if volume.read_only { "on" } else { "off" }
        );
        let format = match volume.image_type.name() {
            "vhd" => "vpc",
            other => other,
        };
        assert_eq!(drive["format"], format);
        assert_eq!(
            drive.get("cache").map(String::as_str),
            volume.direct.then_some("none")
        );
        let device = p.find("-device", "drive", &id);
        assert_eq!(device.get("serial"), volume.serial.as_ref());
    }

    // Shares: 9p through -fsdev, virtiofs through a vhost-user chardev.
    for (i, share) in spec.shares.iter().enumerate() {
        let id = format!("fs{i}");
        match share.proto {
            ShareProto::NineP => {
                let fsdev = p.find("-fsdev", "id", &id);
                assert_eq!(fsdev["path"], share.source);
                assert_eq!(fsdev["security_model"], share.security_model.name());
                assert_eq!(
                    fsdev.get("readonly").map(String::as_str),
                    share.read_only.then_some("on")
                );
                assert_eq!(p.find("-device", "fsdev", &id)["mount_tag"], share.tag);
            }
            ShareProto::Virtiofs => {
                assert_eq!(
                    Some(&p.find("-chardev", "id", &id)["path"]),
                    share.socket.as_ref()
                );
                assert_eq!(p.find("-device", "chardev", &id)["tag"], share.tag);
            }
        }
    }

    // Interfaces: each netdev of its kind and its NIC with the MAC.
    let queues = spec.vcpu.to_string();
    for (i, interface) in spec.interfaces.iter().enumerate() {
        // The netdev has an id of its own: an interface id need not be a qemu id.
        let id = format!("net{i}");
        let netdev = p.find("-netdev", "id", &id);
        let nic = p.find("-device", "netdev", &id);
        assert_eq!(nic["mac"], interface.mac);
        match interface.kind {
            InterfaceType::User => {
                let (_, pairs) = opts(
                    p.flags["-netdev"]
                        .iter()
                        .find(|v| v.starts_with("user,"))
                        .unwrap(),
                );
                let hostfwd: Vec<&str> = pairs
                    .iter()
                    .filter(|(k, _)| k == "hostfwd")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let guestfwd: Vec<&str> = pairs
                    .iter()
                    .filter(|(k, _)| k == "guestfwd")
                    .map(|(_, v)| v.as_str())
                    .collect();
                for forward in &spec.forward_ports {
                    let entry = format!(
                        "{}:{}:{}",
                        forward.proto.name(),
                        if forward.from == ForwardFrom::Host {
                            &forward.host.address
                        } else {
                            &forward.guest.address
                        },
                        if forward.from == ForwardFrom::Host {
                            forward.host.port
                        } else {
                            forward.guest.port
                        },
                    );
                    let list = if forward.from == ForwardFrom::Host {
                        &hostfwd
                    } else {
                        &guestfwd
                    };
                    assert!(
                        list.iter().any(|f| f.starts_with(&entry)),
                        "{entry} not forwarded: {list:?}"
                    );
                }
            }
            InterfaceType::Tap => {
                assert_eq!(netdev["ifname"], interface.id);
                assert_eq!(netdev["queues"], queues, "multi-queue with vcpu > 1");
                assert_eq!(
                    netdev.get("vhost").map(String::as_str),
                    interface.tap.vhost.then_some("on")
                );
                assert_eq!(nic["mq"], "on");
            }
            InterfaceType::Macvtap => {
                assert_eq!(
                    netdev["fds"].split(':').count().to_string(),
                    queues,
                    "one fd per queue"
                );
            }
            InterfaceType::Bridge => {
                assert_eq!(Some(&netdev["br"]), interface.bridge.as_ref());
                assert_eq!(
                    Some(netdev["helper"].as_str()),
                    spec.tools.qemu_bridge_helper.as_deref()
                );
            }
        }
    }

    assert_eq!(
        p.find("-device", "guest-cid", &spec.vsock.cid.unwrap().to_string())["guest-cid"],
        "42"
    );
    let balloon = p.find("-device", "id", "balloon0");
    assert_eq!(
        balloon["deflate-on-oom"],
        if spec.deflate_on_oom { "on" } else { "off" }
    );
    let mem = p.find("-device", "memdev", "vmem0");
    assert_eq!(mem["requested-size"], format!("{}M", spec.hotplugged_mem()));
    let hotplug = &p.with_head("-object", "memory-backend-memfd")[1];
    assert_eq!(
        (hotplug["id"].as_str(), hotplug["share"].as_str()),
        ("vmem0", "on"),
        "virtiofsd maps hotplugged memory too"
    );
    assert_eq!(hotplug["size"], format!("{}M", spec.hotplug_mem));
    let vfio = p.find("-device", "host", &spec.devices[0].path);
    assert_eq!(Some(&vfio["id"]), spec.devices[0].qemu.id.as_ref());
    assert_eq!(Some(&vfio["bus"]), spec.devices[0].qemu.bus.as_ref());
    let usb = &p.with_head("-device", "usb-host")[0];
    assert_eq!(usb["vendorid"], "0x1050");
    for (name, file) in &spec.credential_files {
        let fw_cfg = p.find(
            "-fw_cfg",
            "name",
            &format!("opt/io.systemd.credentials/{name}"),
        );
        assert_eq!(&fw_cfg["file"], file);
    }
    assert_eq!(p.one("-display"), "egl-headless");
    assert_eq!(
        &argv[argv.len() - spec.qemu.extra_args.len()..],
        spec.qemu.extra_args.as_slice(),
        "qemu.extraArgs come last, unchanged"
    );
}

#[test]
fn tcg_when_a_cpu_is_set_and_the_microvm_machine_by_default() {
    let (spec, tree) = common::ok_fixture("tcg-cpu.json");
    let p = Parsed::new(&common::exec_argv(&tree)[1..]);
    let (machine, pairs) = opts(p.one("-M"));
    assert_eq!(machine.as_deref(), Some("microvm"));
    let pairs: BTreeMap<_, _> = pairs.into_iter().collect();
    assert_eq!(pairs["accel"], "tcg");
    assert!(
        !pairs.contains_key("pit"),
        "emulated CPUs calibrate against the PIT: keep it"
    );
    assert_eq!(p.one("-cpu"), spec.cpu.unwrap());
    assert!(
        p.flags["-device"]
            .iter()
            .any(|d| d.starts_with("virtio-blk-device")),
        "virtio-mmio on microvm"
    );
}

/// The runner demands /dev/net/tun exactly when a tap interface is declared: a macvtap reaches
/// qemu as an already open /dev/tapN descriptor.
#[test]
fn tun_is_required_by_tap_interfaces_only() {
    let (every, _) = common::ok_fixture("qemu-every-feature.json");
    let kinds: Vec<_> = every.interfaces.iter().map(|i| i.kind).collect();
    assert!(kinds.contains(&InterfaceType::Tap) && kinds.contains(&InterfaceType::Macvtap));
    for (keep, needs_tun) in [
        (InterfaceType::Macvtap, false),
        (InterfaceType::Tap, true),
        (InterfaceType::User, false),
    ] {
        let mut spec = every.clone();
        spec.interfaces.retain(|i| i.kind == keep);
        let tree = common::build(&spec);
        let Some(Entry::File { contents: run, .. }) = tree.get("bin/microvm-run") else {
            panic!("no bin/microvm-run");
        };
        assert_eq!(
            run.contains("/dev/net/tun"),
            needs_tun,
            "{keep:?} interfaces alone"
        );
    }
}

/// forwardPorts go to the first user interface only: qemu binds every hostfwd of every user
/// netdev, so the same forward on a second one would fail to bind the host port.
#[test]
fn forwarded_ports_go_to_the_first_user_interface_only() {
    let (mut spec, _) = common::ok_fixture("qemu-every-feature.json");
    let mut second = spec.interfaces[0].clone();
    assert_eq!(second.kind, InterfaceType::User);
    second.id = "usernet2".to_owned();
    second.mac = "02:00:00:00:00:09".to_owned();
    spec.interfaces.push(second);
    let p = Parsed::new(&common::exec_argv(&common::build(&spec))[1..]);
    let users = p.with_head("-netdev", "user");
    assert_eq!(users.len(), 2);
    let forwards = |netdev: &BTreeMap<String, String>| {
        netdev.contains_key("hostfwd") || netdev.contains_key("guestfwd")
    };
    assert!(forwards(&p.find("-netdev", "id", "net0")));
    let second = format!("net{}", spec.interfaces.len() - 1);
    assert!(
        !forwards(&p.find("-netdev", "id", &second)),
        "the second user interface forwards nothing"
    );
}

/// qemu's ids (`id_wellformed`): a letter first, then letters, digits, `-`, `.` and `_`.
fn is_qemu_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// An interface id only has to be a Linux interface name; the netdev's qemu id is derived
/// from the interface's position instead, so `1vm` or `vm@x` cannot make qemu refuse it.
#[test]
fn netdev_ids_are_qemu_ids_whatever_the_interface_is_called() {
    let (mut spec, _) = common::ok_fixture("qemu-every-feature.json");
    for (interface, id) in spec.interfaces.iter_mut().zip(["1vm", "vm@x", "vm+1", "2"]) {
        id.clone_into(&mut interface.id);
    }
    let p = Parsed::new(&common::exec_argv(&common::build(&spec))[1..]);
    let netdevs = &p.flags["-netdev"];
    assert_eq!(netdevs.len(), spec.interfaces.len());
    for netdev in netdevs {
        let pairs: BTreeMap<_, _> = opts(netdev).1.into_iter().collect();
        assert!(is_qemu_id(&pairs["id"]), "{netdev}: not a qemu id");
        assert_eq!(
            p.find("-device", "netdev", &pairs["id"])["netdev"],
            pairs["id"]
        );
    }
    let tap = p.find("-netdev", "ifname", "vm@x");
    assert_eq!(tap["id"], "net1", "the tap keeps its interface name");
}

/// With huge pages, the virtio-mem region is a hugetlbfs file like the rest of guest memory,
/// but neither reserved nor preallocated as a whole: the device preallocates what it plugs.
#[test]
fn hotplugged_memory_is_backed_like_the_rest_of_guest_memory() {
    let (mut spec, _) = common::ok_fixture("qemu-every-feature.json");
    spec.hugepage_mem = true;
    let p = Parsed::new(&common::exec_argv(&common::build(&spec))[1..]);
    let files = p.with_head("-object", "memory-backend-file");
    assert_eq!(files.len(), 2, "main memory and the virtio-mem region");
    let (main, hotplug) = (&files[0], &files[1]);
    assert_eq!(main["id"], "mem");
    assert_eq!(hotplug["id"], "vmem0");
    for backend in [main, hotplug] {
        assert_eq!(backend["mem-path"], "/dev/hugepages");
        assert_eq!(backend["share"], "on");
    }
    assert_eq!(main.get("prealloc").map(String::as_str), Some("on"));
    assert_eq!(hotplug.get("prealloc"), None, "virtio-mem discards it");
    assert_eq!(hotplug["reserve"], "off");
    assert_eq!(p.find("-device", "memdev", "vmem0")["prealloc"], "on");

    // Without virtiofs or huge pages, plain RAM.
    spec.hugepage_mem = false;
    spec.shares.retain(|s| s.proto != ShareProto::Virtiofs);
    let p = Parsed::new(&common::exec_argv(&common::build(&spec))[1..]);
    assert_eq!(
        p.with_head("-object", "memory-backend-ram")[0]["id"],
        "vmem0"
    );
    assert!(p.with_head("-object", "memory-backend-memfd").is_empty());
    assert!(
        !p.find("-device", "memdev", "vmem0")
            .contains_key("prealloc")
    );
}
