//! cloud-hypervisor: `cloud-hypervisor` with `--kernel`/`--initramfs`/`--cmdline`, one repeated
//! flag per device (accepted since v52), the REST API socket as control socket, and `curl`
//! against it for the power button and the balloon.
//!
//! Grammar: cloud-hypervisor's `vmm/src/config.rs` (`*::SYNTAX`) and `docs/*.md`; values are
//! `key=value` pairs joined by `,` with no escape for commas.
//!
//! Every `--disk` names its `image_type` (the store disk `raw`, a volume its `imageType`; the
//! values of `ImageType::from_str` in `block/src/lib.rs`): v54 warns that detecting the type
//! from the file is deprecated and will be removed.
//!
//! Graphics: `--gpu socket=<path>` (keys `socket`, `id`, `pci_segment`; repeatable) comes from
//! spectrum-os's cloud-hypervisor (its patch "virtio-devices: add a GPU device": `GpuConfig` in
//! `vmm/src/config.rs`, the `gpu` argument in `cloud-hypervisor/src/main.rs`), which microvm.nix
//! runs as `cloud-hypervisor-graphics`; upstream cloud-hypervisor has no `--gpu` and no GPU
//! device. It is a vhost-user frontend for crosvm's GPU device (`gpu.rs`), which the runner
//! starts first, as for crosvm; like every vhost-user device it needs shared guest memory
//! (`VhostUserRequiresSharedMemory`). Only the binary knows whether it is such a build, so
//! `microvm-run` asks its `--help` for `--gpu` before starting anything, and otherwise says which
//! build graphics needs.

use super::{
    Backend, Launch, MacvtapFdNumbers, OwnFlag, Requirement, Step, VSOCK_MUX_SOCKET, Word, kv,
    on_off, refuse_chars,
};
use crate::diagnostic::Diagnostic;
use crate::path;
use crate::spec::{DeviceBus, Hypervisor, InterfaceType, RunnerSpec, ShareProto, Tool};
use crate::templates;

pub struct CloudHypervisor;

/// Flags this backend sets itself; the same flag in `cloud-hypervisor.extraArgs` would be a
/// duplicate cloud-hypervisor refuses (or a second device), so it is refused here first.
fn own_flags(spec: &RunnerSpec) -> Vec<OwnFlag> {
    let mut own = vec![
        OwnFlag::new("--cpus", "microvm.vcpu"),
        OwnFlag::new("--memory", "microvm.mem"),
        OwnFlag::new("--kernel", "microvm.kernel"),
        OwnFlag::new("--initramfs", "microvm.initrdPath"),
        OwnFlag::new("--cmdline", "microvm.kernelParams"),
        OwnFlag::new("--api-socket", "microvm.socket"),
    ];
    if spec.vsock.cid.is_some() {
        // cloud-hypervisor has one vsock device.
        own.push(OwnFlag::new("--vsock", "microvm.vsock.cid"));
    }
    if !spec.cloud_hypervisor.platform_oem_strings.is_empty() {
        own.push(OwnFlag::new(
            "--platform",
            "microvm.cloud-hypervisor.platformOEMStrings",
        ));
    }
    own
}

fn multi_queue(spec: &RunnerSpec) -> bool {
    spec.vcpu > 1
}

fn user_sets(spec: &RunnerSpec, flag: &str) -> bool {
    super::sets_flag(&spec.cloud_hypervisor.extra_args, flag)
}

fn cmdline(spec: &RunnerSpec) -> String {
    let console = super::uart_console(spec.system);
    super::kernel_cmdline(spec, &[console, "reboot=t", "panic=-1"])
}

/// Characters cloud-hypervisor's option parser treats as syntax.
const SYNTAX: &[char] = &[',', '"', '[', ']', '='];

impl Backend for CloudHypervisor {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let hv = Hypervisor::CloudHypervisor;
        let mut findings = Vec::new();
        super::refuse_own_flags(
            &mut findings,
            hv,
            &spec.cloud_hypervisor.extra_args,
            &own_flags(spec),
        );
        for (i, oem) in spec
            .cloud_hypervisor
            .platform_oem_strings
            .iter()
            .enumerate()
        {
            refuse_chars(
                &mut findings,
                hv,
                oem,
                path!["cloud-hypervisor", "platformOEMStrings", i],
                "--platform oem_strings=[…]",
                &[',', '"', '[', ']'],
            );
        }
        super::check_disks(&mut findings, spec, "--disk", "--disk", SYNTAX);
        for (i, share) in spec.shares.iter().enumerate() {
            if share.proto == ShareProto::Virtiofs {
                refuse_chars(
                    &mut findings,
                    hv,
                    &share.tag,
                    path!["shares", i, "tag"],
                    "--fs",
                    SYNTAX,
                );
            }
        }
        for (i, interface) in spec.interfaces.iter().enumerate() {
            refuse_chars(
                &mut findings,
                hv,
                &interface.id,
                path!["interfaces", i, "id"],
                "--net",
                SYNTAX,
            );
        }
        // (Validation keeps the socket's name within characters `--gpu` carries.)
        findings.extend(super::gpu::check_socket(hv, spec));
        findings
    }

    fn tools(&self, spec: &RunnerSpec) -> Vec<(Tool, String)> {
        let mut tools = vec![(
            Tool::CloudHypervisor,
            "hypervisor = \"cloud-hypervisor\" runs it".to_owned(),
        )];
        if spec.graphics.enable {
            tools.push((
                Tool::Crosvm,
                "graphics.enable runs crosvm's GPU device".to_owned(),
            ));
        }
        if spec.socket.is_some() {
            tools.push((
                Tool::Curl,
                "microvm-shutdown talks to the API socket with it".to_owned(),
            ));
            tools.push((
                Tool::Sleep,
                "microvm-shutdown waits for the VM with it".to_owned(),
            ));
        }
        tools
    }

    fn launch(&self, spec: &RunnerSpec) -> Launch {
        let mut args: Vec<Word> = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(Word::from(flag));
            args.push(Word::from(value));
        };
        let mut requirements = Vec::new();
        let mut steps = Vec::new();
        let graphics = spec
            .graphics
            .socket
            .as_ref()
            .filter(|_| spec.graphics.enable);
        if graphics.is_some() {
            // Before anything starts: see the module comment.
            steps.push(Step::RequireHelpFlag {
                program: spec
                    .tools
                    .get(Tool::CloudHypervisor)
                    .unwrap_or_default()
                    .to_owned(),
                flag: "--gpu".to_owned(),
                message: "microvm-run: this cloud-hypervisor has no GPU device: its --help lists no --gpu (upstream cloud-hypervisor has none). microvm.graphics needs a cloud-hypervisor build with --gpu: set microvm.cloud-hypervisor.package to one, such as spectrum-os's (microvm.nix's cloud-hypervisor-graphics), or set graphics.enable = false.".to_owned(),
            });
        }

        push("--cpus", format!("boot={}", spec.vcpu));
        let shared = spec.virtiofs_shares().next().is_some() || graphics.is_some();
        let mut memory = vec![("size", format!("{}M", spec.mem))];
        if shared {
            // vhost-user devices (virtiofsd, the GPU device) map guest memory; it cannot also
            // be mergeable.
            memory.push(("shared", "on".to_owned()));
        } else {
            memory.push(("mergeable", "on".to_owned()));
        }
        if spec.hugepage_mem {
            // A hugetlb memfd: no hugetlbfs mount is needed, only reserved pages.
            memory.push(("hugepages", "on".to_owned()));
        }
        if spec.hotplug_mem > 0 {
            memory.push(("hotplug_method", "virtio-mem".to_owned()));
            memory.push(("hotplug_size", format!("{}M", spec.hotplug_mem)));
            memory.push(("hotplugged_size", format!("{}M", spec.hotplugged_mem())));
        }
        push("--memory", kv("", memory));
        push("--kernel", spec.kernel.clone());
        push("--initramfs", spec.initrd_path.clone());
        push("--cmdline", cmdline(spec));
        push("--seccomp", "true".to_owned());
        if !user_sets(spec, "--serial") {
            push("--serial", "tty".to_owned());
        }
        if !user_sets(spec, "--console") {
            push("--console", "null".to_owned());
        }
        if !spec.cloud_hypervisor.platform_oem_strings.is_empty() {
            push(
                "--platform",
                format!(
                    "oem_strings=[{}]",
                    spec.cloud_hypervisor.platform_oem_strings.join(",")
                ),
            );
        }
        if let Some(socket) = &spec.socket {
            // Older releases trip over a socket left by a crash; v53+ would remove it itself.
            steps.push(Step::Remove {
                path: socket.clone(),
            });
            push("--api-socket", format!("path={socket}"));
        }
        if let Some(socket) = graphics {
            steps.extend(super::gpu::device_steps(spec, socket));
        }

        let disk_queues = |pairs: &mut Vec<(&str, String)>| {
            if spec.vcpu > 1 {
                pairs.push(("num_queues", spec.vcpu.to_string()));
            }
        };
        if let Some(store) = &spec.store_disk {
            // Always a raw erofs or squashfs image. Said, not left to auto-detection, which
            // v54 warns is deprecated and will be removed.
            let mut pairs = vec![
                ("path", store.clone()),
                ("readonly", "on".to_owned()),
                ("image_type", "raw".to_owned()),
            ];
            disk_queues(&mut pairs);
            push("--disk", kv("", pairs));
        }
        for volume in &spec.volumes {
            let mut pairs = vec![
                ("path", volume.image.clone()),
                ("readonly", on_off(volume.read_only)),
                ("direct", on_off(volume.direct)),
                ("image_type", volume.image_type.name().to_owned()),
            ];
            if let Some(serial) = &volume.serial {
                pairs.push(("serial", serial.clone()));
            }
            disk_queues(&mut pairs);
            push("--disk", kv("", pairs));
        }
        for share in spec.virtiofs_shares() {
            push(
                "--fs",
                kv(
                    "",
                    [
                        ("tag", share.tag.clone()),
                        ("socket", share.socket.clone().unwrap_or_default()),
                    ],
                ),
            );
        }

        if let Some(socket) = graphics {
            push("--gpu", kv("", [("socket", socket.clone())]));
        }

        let mut macvtap_fds = MacvtapFdNumbers::default();
        let queues = if multi_queue(spec) { spec.vcpu } else { 1 };
        for interface in &spec.interfaces {
            let mut pairs = Vec::new();
            match interface.kind {
                InterfaceType::Tap => pairs.push(("tap", interface.id.clone())),
                InterfaceType::Macvtap => {
                    let fds: Vec<String> = macvtap_fds
                        .open(&interface.id, queues)
                        .iter()
                        .map(u32::to_string)
                        .collect();
                    pairs.push(("fd", format!("[{}]", fds.join(","))));
                }
                // Refused by the capability table.
                InterfaceType::User | InterfaceType::Bridge => continue,
            }
            pairs.push(("mac", interface.mac.clone()));
            if multi_queue(spec) {
                // Queues, not pairs: one receive and one transmit queue per vCPU.
                pairs.push(("num_queues", queues.saturating_mul(2).to_string()));
            }
            push("--net", kv("", pairs));
        }
        if spec.interfaces.iter().any(|i| i.kind == InterfaceType::Tap) {
            requirements.push(Requirement::tun());
        }

        if let Some(cid) = spec.vsock.cid {
            steps.push(Step::Remove {
                path: VSOCK_MUX_SOCKET.to_owned(),
            });
            push(
                "--vsock",
                kv(
                    "",
                    [
                        ("cid", cid.to_string()),
                        ("socket", VSOCK_MUX_SOCKET.to_owned()),
                    ],
                ),
            );
        }
        if spec.balloon {
            push(
                "--balloon",
                kv(
                    "",
                    [
                        ("size", format!("{}M", spec.initial_balloon_mem)),
                        ("deflate_on_oom", on_off(spec.deflate_on_oom)),
                        ("free_page_reporting", "on".to_owned()),
                    ],
                ),
            );
        }
        for device in spec.devices.iter().filter(|d| d.bus == DeviceBus::Pci) {
            push(
                "--device",
                format!("path=/sys/bus/pci/devices/{}/", device.path),
            );
        }
        for arg in &spec.cloud_hypervisor.extra_args {
            args.push(Word::from(arg.clone()));
        }

        Launch {
            after_extra_args: Vec::new(),
            program: Tool::CloudHypervisor,
            args,
            requirements,
            macvtap_fds: macvtap_fds.opened(),
            steps,
        }
    }

    fn tap_multi_queue(&self, spec: &RunnerSpec) -> bool {
        multi_queue(spec)
    }

    fn shutdown_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        spec.socket
            .as_ref()
            .map(|_| templates::CLOUD_HYPERVISOR_SHUTDOWN)
    }

    fn balloon_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        (spec.socket.is_some() && spec.balloon).then_some(templates::CLOUD_HYPERVISOR_BALLOON)
    }

    fn vsock_mux_socket(&self) -> Option<&'static str> {
        // The vsock device is cloud-hypervisor's hybrid vsock, on this socket.
        Some(VSOCK_MUX_SOCKET)
    }
}
