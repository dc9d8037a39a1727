//! cloud-hypervisor's command line, parsed back with a model of its grammar and checked value
//! by value against the spec.
//!
//! Grammar model after cloud-hypervisor v53 (`cloud-hypervisor/src/main.rs` for the flags,
//! `vmm/src/config.rs` `*::SYNTAX` and `option_parser/src/lib.rs` for the values; docs:
//! https://github.com/cloud-hypervisor/cloud-hypervisor/tree/main/docs). Every flag takes one
//! value of `key=value` pairs joined by `,` (brackets group lists); unknown keys are errors;
//! booleans are on/off/true/false; device flags may repeat, the others may not.
//!
//! `--gpu` is not upstream's: it is spectrum-os's cloud-hypervisor (the patch "virtio-devices:
//! add a GPU device", `GpuConfig::SYNTAX` `socket=<socket_path>,id=<device_id>,
//! pci_segment=<segment_id>`, an appending `gpu` argument), which graphics need.

mod common;

use std::collections::BTreeMap;

use common::split_kv;
use microvm_codegen::hypervisor::{self, Step};
use microvm_codegen::runner::Entry;
use microvm_codegen::spec::Hypervisor;

/// Allowed keys per flag (the subset of cloud-hypervisor's SYNTAX the runner may emit).
fn keys(flag: &str) -> Option<&'static [&'static str]> {
    Some(match flag {
        "--cpus" => &[
            "boot",
            "max",
            "topology",
            "kvm_hyperv",
            "max_phys_bits",
            "affinity",
            "features",
            "nested",
        ],
        "--memory" => &[
            "size",
            "file",
            "mergeable",
            "shared",
            "hugepages",
            "hugepage_size",
            "hotplug_method",
            "hotplug_size",
            "hotplugged_size",
            "prefault",
            "thp",
        ],
        "--disk" => &[
            "path",
            "readonly",
            "direct",
            "iommu",
            "num_queues",
            "queue_size",
            "vhost_user",
            "socket",
            "id",
            "serial",
            "image_type",
            "pci_segment",
        ],
        "--fs" => &[
            "tag",
            "socket",
            "num_queues",
            "queue_size",
            "id",
            "pci_segment",
        ],
        "--net" => &[
            "tap",
            "ip",
            "mask",
            "mac",
            "host_mac",
            "mtu",
            "fd",
            "iommu",
            "num_queues",
            "queue_size",
            "id",
            "vhost_user",
            "socket",
            "vhost_mode",
        ],
        "--vsock" => &["cid", "socket", "iommu", "id", "pci_segment"],
        "--balloon" => &["size", "deflate_on_oom", "free_page_reporting", "id"],
        "--device" => &["path", "iommu", "id", "pci_segment"],
        "--api-socket" => &["path", "fd"],
        "--platform" => &[
            "num_pci_segments",
            "iommu_segments",
            "serial_number",
            "uuid",
            "oem_strings",
        ],
        "--rng" => &["src", "iommu"],
        "--gpu" => &["socket", "id", "pci_segment"],
        "--serial" | "--console" | "--kernel" | "--initramfs" | "--cmdline" | "--seccomp" => &[],
        _ => return None,
    })
}

const REPEATABLE: &[&str] = &["--disk", "--fs", "--net", "--device", "--gpu"];
const BOOLEAN_KEYS: &[&str] = &[
    "readonly",
    "direct",
    "iommu",
    "mergeable",
    "shared",
    "hugepages",
    "deflate_on_oom",
    "free_page_reporting",
    "vhost_user",
    "kvm_hyperv",
    "nested",
    "prefault",
    "thp",
];

/// Parses the argv into flag -> list of values, failing on anything the grammar refuses.
fn parse(argv: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut words = argv.iter();
    while let Some(flag) = words.next() {
        let allowed = keys(flag).unwrap_or_else(|| panic!("unknown flag {flag}"));
        let value = words
            .next()
            .unwrap_or_else(|| panic!("{flag} has no value"))
            .clone();
        assert!(!value.starts_with("--"), "{flag} would swallow {value}");
        if !allowed.is_empty() {
            for (key, v) in split_kv(&value) {
                assert!(
                    allowed.contains(&key.as_str()),
                    "{flag}: unknown key {key:?} in {value}"
                );
                if BOOLEAN_KEYS.contains(&key.as_str()) {
                    assert!(
                        ["on", "off", "true", "false"].contains(&v.as_str()),
                        "{flag}: {key}={v} is not a boolean"
                    );
                }
            }
        }
        let entry = flags.entry(flag.clone()).or_default();
        assert!(
            entry.is_empty() || REPEATABLE.contains(&flag.as_str()),
            "{flag} given twice"
        );
        entry.push(value);
    }
    flags
}

fn kv_map(value: &str) -> BTreeMap<String, String> {
    split_kv(value).into_iter().collect()
}

#[test]
fn every_feature_command_line_matches_the_grammar_and_the_spec() {
    let (spec, tree) = common::ok_fixture("cloud-hypervisor-every-feature.json");
    let argv = common::exec_argv(&tree);
    assert_eq!(argv[0], spec.tools.cloud_hypervisor.clone().unwrap());
    let flags = parse(&argv[1..]);
    let one = |flag: &str| kv_map(&flags[flag][0]);

    assert_eq!(one("--cpus")["boot"], spec.vcpu.to_string());
    let memory = one("--memory");
    assert_eq!(memory["size"], format!("{}M", spec.mem));
    assert_eq!(memory["shared"], "on", "virtiofs needs shared memory");
    assert!(
        !memory.contains_key("mergeable"),
        "shared and mergeable exclude each other"
    );
    assert_eq!(memory["hugepages"], "on");
    let Some(Entry::File { contents: run, .. }) = tree.get("bin/microvm-run") else {
        panic!("no bin/microvm-run");
    };
    assert!(
        !run.contains("/dev/hugepages"),
        "cloud-hypervisor backs huge pages with a memfd, so the runner must not demand the mount"
    );
    assert_eq!(memory["hotplug_method"], "virtio-mem");
    assert_eq!(memory["hotplug_size"], format!("{}M", spec.hotplug_mem));
    assert_eq!(
        memory["hotplugged_size"],
        format!("{}M", spec.hotplugged_mem())
    );
    assert_eq!(flags["--kernel"], vec![spec.kernel.clone()]);
    assert_eq!(flags["--initramfs"], vec![spec.initrd_path.clone()]);
    let cmdline = &flags["--cmdline"][0];
    for param in &spec.kernel_params {
        assert!(
            cmdline.split(' ').any(|p| p == param),
            "{param} missing from {cmdline}"
        );
    }
    assert_eq!(one("--api-socket")["path"], spec.socket.clone().unwrap());

    let disks: Vec<_> = flags["--disk"].iter().map(|d| kv_map(d)).collect();
    assert_eq!(disks.len(), 1 + spec.volumes.len());
    assert_eq!(disks[0]["path"], spec.store_disk.clone().unwrap());
    assert_eq!(disks[0]["readonly"], "on");
    assert_eq!(
        disks[0]["image_type"], "raw",
        "the store disk is a raw image"
    );
    for (disk, volume) in disks[1..].iter().zip(&spec.volumes) {
        assert_eq!(disk["path"], volume.image);
        assert_eq!(
            disk["readonly"],
            if volume.read_only { "on" } else { "off" }
        );
        assert_eq!(disk["direct"], if volume.direct { "on" } else { "off" });
        assert_eq!(disk["image_type"], volume.image_type.name());
        assert_eq!(disk.get("serial"), volume.serial.as_ref());
        let queues: u32 = disk["num_queues"].parse().unwrap();
        assert!(queues <= spec.vcpu, "disk queues may not exceed vCPUs");
    }

    let fs: Vec<_> = flags["--fs"].iter().map(|f| kv_map(f)).collect();
    let shares: Vec<_> = spec.virtiofs_shares().collect();
    assert_eq!(fs.len(), shares.len());
    for (f, share) in fs.iter().zip(shares) {
        assert_eq!(f["tag"], share.tag);
        assert_eq!(Some(&f["socket"]), share.socket.as_ref());
    }

    let nets: Vec<_> = flags["--net"].iter().map(|n| kv_map(n)).collect();
    assert_eq!(nets.len(), spec.interfaces.len());
    for (net, interface) in nets.iter().zip(&spec.interfaces) {
        assert_eq!(net["mac"], interface.mac);
        let queues: u32 = net["num_queues"].parse().unwrap();
        assert_eq!(queues, 2 * spec.vcpu, "one queue pair per vCPU");
        match interface.kind.name() {
            "tap" => assert_eq!(net["tap"], interface.id),
            "macvtap" => {
                let fds = net["fd"].trim_matches(['[', ']']).split(',').count() as u32;
                assert_eq!(queues, 2 * fds, "num_queues must be twice the fds");
            }
            other => panic!("{other} interfaces are refused for cloud-hypervisor"),
        }
    }

    let vsock = one("--vsock");
    assert_eq!(vsock["cid"], spec.vsock.cid.unwrap().to_string());
    assert_eq!(vsock["socket"], "notify.vsock");
    let balloon = one("--balloon");
    assert_eq!(balloon["size"], format!("{}M", spec.initial_balloon_mem));
    assert_eq!(
        balloon["deflate_on_oom"],
        if spec.deflate_on_oom { "on" } else { "off" }
    );
    assert_eq!(
        flags["--device"],
        spec.devices
            .iter()
            .map(|d| format!("path=/sys/bus/pci/devices/{}/", d.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        flags["--platform"][0],
        format!(
            "oem_strings=[{}]",
            spec.cloud_hypervisor.platform_oem_strings.join(",")
        )
    );
    assert_eq!(
        flags["--gpu"],
        vec![format!("socket={}", spec.graphics.socket.clone().unwrap())]
    );
    assert_eq!(
        flags["--rng"],
        vec!["src=/dev/hwrng".to_owned()],
        "extraArgs arrive last, unchanged"
    );
}

/// Graphics as microvm.nix runs them on cloud-hypervisor: crosvm's GPU device started first (the
/// very steps the crosvm runner takes), and `--gpu` (spectrum-os's) on its socket, with the
/// shared guest memory every vhost-user device needs. Before all that, `microvm-run` asks this
/// cloud-hypervisor's `--help` for `--gpu` (see prechecks.rs for the check run).
#[test]
fn graphics_command_line_matches_the_grammar_and_starts_the_gpu_device_first() {
    let (spec, tree) = common::ok_fixture("cloud-hypervisor-graphics.json");
    let flags = parse(&common::exec_argv(&tree)[1..]);
    let socket = spec.graphics.socket.clone().unwrap();
    assert_eq!(flags["--gpu"], vec![format!("socket={socket}")]);
    let memory = kv_map(&flags["--memory"][0]);
    assert_eq!(
        memory["shared"], "on",
        "cloud-hypervisor refuses a vhost-user device without shared memory"
    );
    assert!(!memory.contains_key("mergeable"));
    assert!(
        !flags.contains_key("--fs"),
        "no virtiofs: graphics alone share memory"
    );

    let steps = hypervisor::launch(&spec).steps;
    let Some(Step::RequireHelpFlag {
        program,
        flag,
        message,
    }) = steps.first()
    else {
        panic!("the check comes before anything starts: {steps:?}");
    };
    assert_eq!(Some(program), spec.tools.cloud_hypervisor.as_ref());
    assert_eq!(flag, "--gpu");
    assert!(
        message.contains("microvm.cloud-hypervisor.package") && message.contains("spectrum-os"),
        "{message}"
    );

    // The GPU device's steps are crosvm's own, in the same order.
    let gpu_steps = |steps: Vec<Step>| -> Vec<Step> {
        steps
            .into_iter()
            .filter(|s| match s {
                Step::Remove { path } => *path == socket,
                Step::RequireVar { .. } | Step::Background { .. } => true,
                _ => false,
            })
            .collect()
    };
    let mut on_crosvm = spec.clone();
    on_crosvm.hypervisor = Hypervisor::Crosvm;
    let crosvm_steps = gpu_steps(hypervisor::launch(&on_crosvm).steps);
    assert_eq!(gpu_steps(steps), crosvm_steps);
    let Some(Step::Background {
        argv,
        socket: waited,
    }) = crosvm_steps.last()
    else {
        panic!("no background device in {crosvm_steps:?}");
    };
    assert_eq!(waited, &socket);
    assert_eq!(argv[0].literal(), spec.tools.crosvm.clone());
    assert_eq!(argv[1].literal().as_deref(), Some("device"));
    assert_eq!(argv[2].literal().as_deref(), Some("gpu"));

    let Some(Entry::File { contents: run, .. }) = tree.get("bin/microvm-run") else {
        panic!("no bin/microvm-run");
    };
    let check = run.find("--help").expect("the --gpu check");
    let device = run.find(" device gpu ").expect("the GPU device");
    let exec = run.rfind("\nexec ").unwrap();
    assert!(check < device && device < exec, "{run}");
}

#[test]
fn minimal_command_line_matches_the_grammar() {
    let (spec, tree) = common::ok_fixture("cloud-hypervisor-minimal.json");
    let flags = parse(&common::exec_argv(&tree)[1..]);
    let memory = kv_map(&flags["--memory"][0]);
    assert_eq!(memory["size"], format!("{}M", spec.mem));
    assert_eq!(memory["mergeable"], "on");
    assert_eq!(flags["--disk"].len(), 1);
    assert!(!flags.contains_key("--net") && !flags.contains_key("--balloon"));
    assert!(!flags.contains_key("--gpu"));
    assert!(
        !hypervisor::launch(&spec)
            .steps
            .iter()
            .any(|s| matches!(s, Step::RequireHelpFlag { .. })),
        "only graphics ask the binary for a flag"
    );
}

/// cloud-hypervisor v54 warns that detecting a disk's image type is deprecated and will be
/// removed (issue 14, 3e): every disk says its type, the store disk included.
#[test]
fn every_disk_names_its_image_type() {
    for fixture in [
        "cloud-hypervisor-minimal.json",
        "cloud-hypervisor-every-feature.json",
    ] {
        let (_, tree) = common::ok_fixture(fixture);
        let flags = parse(&common::exec_argv(&tree)[1..]);
        for disk in &flags["--disk"] {
            let image_type = kv_map(disk).get("image_type").cloned();
            assert!(
                image_type
                    .as_deref()
                    .is_some_and(|t| ["raw", "qcow2", "vhd", "vhdx"].contains(&t)),
                "{fixture}: --disk {disk} has no image_type cloud-hypervisor knows"
            );
        }
    }
}

#[test]
fn reference_quirks_stay_fixed() {
    // microvm.nix always passed `--platform`, empty or not.
    let (_, tree) = common::ok_fixture("cloud-hypervisor-minimal.json");
    let flags = parse(&common::exec_argv(&tree)[1..]);
    assert!(!flags.contains_key("--platform"));

    // A user `--serial` replaced microvm.nix's default but also dropped the kernel's console
    // parameter, whatever the serial went to. Here the user's flag replaces only ours.
    let (mut spec, _) = common::ok_fixture("cloud-hypervisor-minimal.json");
    spec.cloud_hypervisor.extra_args = vec!["--serial".into(), "file=serial.log".into()];
    let flags = parse(&common::exec_argv(&common::build(&spec))[1..]);
    assert_eq!(
        flags["--serial"],
        vec!["file=serial.log".to_owned()],
        "only the user's"
    );
    assert!(flags["--cmdline"][0].starts_with("console=ttyS0 "));

    // With memory hotplug, microvm.nix set `size` to the hotplug size; it is the boot memory.
    let (spec, tree) = common::ok_fixture("cloud-hypervisor-every-feature.json");
    let flags = parse(&common::exec_argv(&tree)[1..]);
    assert_eq!(
        kv_map(&flags["--memory"][0])["size"],
        format!("{}M", spec.mem)
    );
}
