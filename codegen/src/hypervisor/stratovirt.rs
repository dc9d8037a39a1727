//! stratovirt: the `microvm` machine (x86_64 and aarch64), qemu-style single-dash flags with
//! virtio-mmio `-device`s, the QMP socket for `microvm-balloon`.
//!
//! Grammar: stratovirt's `machine_manager/src/cmdline.rs` (top-level flags) and the clap
//! structs each `-drive`/`-device`/`-netdev`/`-chardev`/`-object`/`-machine` value is turned
//! into by `str_slip_to_clap` (`machine_manager/src/config/{drive,network,machine_config}.rs`,
//! `virtio/src/device/{block,balloon,rng}.rs`, `virtio/src/vhost/{user/fs,kernel/vsock}.rs`);
//! docs: `docs/config_guidebook.md`, `docs/qmp.md`. A value is split at every `,` and `=` with
//! no escape, so values holding either are refused; unknown keys and repeated single keys
//! are clap errors; most booleans are on/off, the balloon's are true/false.
//!
//! Choices, from stratovirt's source:
//! - The `microvm` machine on both architectures (microvm.nix used `virt` on aarch64, where
//!   the mmio devices it emitted are refused). It has four block slots and two NIC slots
//!   (`MMIO_REPLACEABLE_BLK_NR`/`_NET_NR` in `machine/src/micro_common/mod.rs`), reserved at
//!   start, and on x86_64 eleven interrupt lines (5–15) for all virtio-mmio transports, so the
//!   slots leave five for rng, virtiofs, vsock and balloon. These limits are checked here.
//! - NICs are single-queue: the slots are created with three virtqueues before the spec's
//!   NIC fills one, so a multi-queue NIC cannot work; taps are created single-queue to match
//!   (stratovirt refuses a multi_queue tap with one queue pair, `check_mq`). A macvtap is
//!   passed as `fds=` (colon-separated list); `queues=` is not emitted at all.
//! - `-machine microvm,mem-share=on` whenever there is a virtiofs share: without shared
//!   memory stratovirt refuses vhost-user-fs (`add_virtio_fs`), which microvm.nix missed.
//! - `direct=` is always written: stratovirt defaults it to on. The store disk is read through
//!   the page cache (`direct=off`, shared by every VM using the image); `aio` follows `direct`
//!   as `DriveConfig::check` demands (native for O_DIRECT, off otherwise).
//! - stratovirt refuses to start without a QMP socket (`check_api_channel`), so `socket` is
//!   required.
//! - The serial console is `-serial stdio` only when stdin is a terminal: stdio puts stdin
//!   into raw mode and refuses to start otherwise (`set_termi_raw_mode` in `util/src/lib.rs`),
//!   as under systemd. Without a terminal it is `-serial file,path=` a pipe that `microvm-run`
//!   copies to stdout (`add_serial` in `machine_manager/src/config/chardev.rs` makes a chardev
//!   of any value but `chardev:<id>`, in 2.4 and 2.5 alike; `ChardevType::File` opens the path
//!   read-write, which a pipe allows and the journal's socket does not). Running stratovirt under expect's `unbuffer` instead, as
//!   microvm.nix does, closes the descriptors of macvtap interfaces on the way.
//! - No virtio-rng: stratovirt 2.5 builds it only with the `virtio_rng` feature (2.4, which
//!   nixpkgs packages, always has it), and a runner must start on both; the guest kernel seeds
//!   itself (RDRAND, jitter entropy). vsock, likewise gated behind `vhost_vsock` in 2.5, is
//!   emitted only when asked for (`vsock.cid`), and then needs a stratovirt built with it.
//! - No `microvm-shutdown`: the microvm machine has no ACPI power button and no keyboard
//!   controller. QMP `system_powerdown` there only moves the VM to the shut-down state without
//!   telling the guest (the `MachineLifecycle::powerdown` default), `input_event` is a no-op,
//!   and `quit` stops the VMM under the guest; none of them lets the guest shut down cleanly.
//! - The balloon is `virtio-balloon-device` with `deflate-on-oom=true|false`; QMP `balloon`
//!   takes the guest's target memory in bytes, like qemu. With huge pages the balloon takes
//!   memory from the guest but stratovirt returns none of it to the host.

use super::{
    Backend, Launch, MacvtapFdNumbers, Part, Requirement, Step, Word, argv_path, kv, on_off,
    refuse_chars, true_false,
};
use crate::diagnostic::Diagnostic;
use crate::path;
use crate::spec::{Hypervisor, InterfaceType, RunnerSpec, ShareProto, System, Tool};
use crate::templates;

pub struct Stratovirt;

/// Block device slots of the microvm machine (`MMIO_REPLACEABLE_BLK_NR`).
pub const MAX_BLOCK_DEVICES: usize = 4;
/// NIC slots of the microvm machine (`MMIO_REPLACEABLE_NET_NR`).
pub const MAX_NET_DEVICES: usize = 2;
/// x86_64 interrupt lines for virtio-mmio transports (`IRQ_BASE` 5 to `IRQ_MAX` 15).
pub const X86_64_MMIO_TRANSPORTS: usize = 11;
/// vCPUs stratovirt accepts (`MAX_NR_CPUS`).
pub const MAX_VCPUS: u32 = 254;
/// Guest memory stratovirt accepts, in MiB (`MIN_MEMSIZE`, `MAX_MEMSIZE`).
pub const MEM_RANGE_MIB: (u64, u64) = (128, 512 * 1024);
/// The vhost-user-fs tag must be shorter than its 36-byte field (`valid_tag`).
pub const MAX_TAG_BYTES: usize = 35;

/// The `microvm-run` variable holding the `-serial` value (a chardev: stdio or a file).
const CONSOLE_VAR: &str = "console";

/// Characters `str_slip_to_clap` splits values at.
const SYNTAX: &[char] = &[',', '='];

/// `-drive` settings stratovirt accepts together: O_DIRECT with native AIO, the page cache
/// with synchronous I/O (native AIO without O_DIRECT and O_DIRECT without AIO are refused).
fn drive_io(direct: bool) -> [(&'static str, String); 2] {
    [
        ("direct", on_off(direct)),
        ("aio", if direct { "native" } else { "off" }.to_owned()),
    ]
}

fn cmdline(spec: &RunnerSpec) -> String {
    let mut own = vec![super::uart_console(spec.system)];
    if spec.system.is_x86_64() {
        own.push("edd=off");
    }
    own.extend(["reboot=t", "panic=-1"]);
    super::kernel_cmdline(spec, &own)
}

/// virtio-mmio transports beyond the reserved disk and NIC slots.
fn other_transports(spec: &RunnerSpec) -> usize {
    spec.virtiofs_shares().count()
        + usize::from(spec.vsock.cid.is_some())
        + usize::from(spec.balloon)
}

impl Backend for Stratovirt {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let hv = Hypervisor::Stratovirt;
        let mut findings = Vec::new();
        if spec.socket.is_none() {
            findings.push(
                Diagnostic::error(
                    "microvm::stratovirt::socket",
                    "stratovirt does not start without a QMP socket",
                )
                .at(path!["socket"])
                .help("set socket to a path, such as \"<hostName>.sock\""),
            );
        }
        if spec.vcpu > MAX_VCPUS {
            findings.push(
                Diagnostic::error(
                    "microvm::stratovirt::vcpu",
                    format!(
                        "stratovirt runs at most {MAX_VCPUS} vCPUs, not {}",
                        spec.vcpu
                    ),
                )
                .at(path!["vcpu"])
                .help(format!("set vcpu to {MAX_VCPUS} or fewer")),
            );
        }
        let (min, max) = MEM_RANGE_MIB;
        if spec.mem < min || spec.mem > max {
            findings.push(
                Diagnostic::error(
                    "microvm::stratovirt::mem",
                    format!(
                        "stratovirt gives a guest {min} to {max} MiB, not {} MiB",
                        spec.mem
                    ),
                )
                .at(path!["mem"])
                .help(format!("set mem between {min} and {max}")),
            );
        }

        let disks = usize::from(spec.store_disk.is_some()) + spec.volumes.len();
        if disks > MAX_BLOCK_DEVICES {
            findings.push(
                Diagnostic::error(
                    "microvm::stratovirt::block_slots",
                    format!(
                        "stratovirt's microvm machine has {MAX_BLOCK_DEVICES} disk slots; this spec has {disks} disks"
                    ),
                )
                .at(path!["volumes"])
                .label("the store disk takes a slot too")
                .help("merge volumes, or share host directories with virtiofs instead"),
            );
        }
        let nics = spec.interfaces.len();
        if nics > MAX_NET_DEVICES {
            findings.push(
                Diagnostic::error(
                    "microvm::stratovirt::net_slots",
                    format!(
                        "stratovirt's microvm machine has {MAX_NET_DEVICES} NIC slots; this spec has {nics} interfaces"
                    ),
                )
                .at(path!["interfaces"])
                .help("use at most two interfaces (a bridge on the host can join more networks)"),
            );
        }
        let others = other_transports(spec);
        let free = X86_64_MMIO_TRANSPORTS - MAX_BLOCK_DEVICES - MAX_NET_DEVICES;
        if spec.system == System::X86_64Linux && others > free {
            findings.push(
                Diagnostic::error(
                    "microvm::stratovirt::mmio_slots",
                    format!(
                        "stratovirt's x86_64 microvm machine has interrupts for {X86_64_MMIO_TRANSPORTS} virtio devices, {} of them taken by the disk and NIC slots; this spec needs {others} more (virtiofs shares, vsock, balloon)",
                        MAX_BLOCK_DEVICES + MAX_NET_DEVICES
                    ),
                )
                .at(path!["shares"])
                .help(format!(
                    "use at most {free} of: one per virtiofs share, vsock, balloon"
                )),
            );
        }

        super::check_disks(
            &mut findings,
            spec,
            "-drive",
            "-device virtio-blk-device",
            SYNTAX,
        );
        for (i, share) in spec.shares.iter().enumerate() {
            if share.proto != ShareProto::Virtiofs {
                continue;
            }
            refuse_chars(
                &mut findings,
                hv,
                &share.tag,
                path!["shares", i, "tag"],
                "-device vhost-user-fs-device",
                SYNTAX,
            );
            if share.tag.len() > MAX_TAG_BYTES {
                findings.push(
                    Diagnostic::error(
                        "microvm::stratovirt::tag_too_long",
                        format!(
                            "virtiofs tag {:?} is {} bytes; stratovirt takes {MAX_TAG_BYTES}",
                            share.tag,
                            share.tag.len()
                        ),
                    )
                    .at(path!["shares", i, "tag"])
                    .help(format!("shorten the tag to {MAX_TAG_BYTES} bytes")),
                );
            }
        }
        for (i, interface) in spec.interfaces.iter().enumerate() {
            refuse_chars(
                &mut findings,
                hv,
                &interface.id,
                path!["interfaces", i, "id"],
                "-netdev",
                SYNTAX,
            );
        }
        findings
    }

    fn tools(&self, spec: &RunnerSpec) -> Vec<(Tool, String)> {
        let mut tools = vec![(
            Tool::Stratovirt,
            "hypervisor = \"stratovirt\" runs it".to_owned(),
        )];
        if self.balloon_template(spec).is_some() {
            tools.push((
                Tool::Socat,
                "microvm-balloon talks QMP through it".to_owned(),
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
        let mut requirements = vec![Requirement::kvm("stratovirt")];

        push("-name", spec.host_name.clone());
        let mut machine: Vec<(&str, String)> = Vec::new();
        if spec.virtiofs_shares().next().is_some() {
            // vhost-user-fs maps guest memory into virtiofsd.
            machine.push(("mem-share", on_off(true)));
        }
        push("-machine", kv("microvm", machine));
        push("-smp", spec.vcpu.to_string());
        push("-m", format!("{}M", spec.mem));
        if spec.hugepage_mem {
            requirements.push(Requirement::hugepages());
            push("-mem-path", "/dev/hugepages".to_owned());
        }
        push("-kernel", argv_path(&spec.kernel));
        push("-initrd", argv_path(&spec.initrd_path));
        push("-append", cmdline(spec));
        args.push(Word::from("-serial"));
        args.push(Word(vec![Part::Var(CONSOLE_VAR.to_owned())]));
        let mut push = |flag: &str, value: String| {
            args.push(Word::from(flag));
            args.push(Word::from(value));
        };
        if let Some(socket) = &spec.socket {
            // stratovirt removes a leftover socket file itself before binding.
            push("-qmp", format!("unix:{},server,nowait", argv_path(socket)));
        }

        let mut disk =
            |drive: String, file: &str, read_only: bool, direct: bool, serial: Option<String>| {
                let [direct, aio] = drive_io(direct);
                push(
                    "-drive",
                    kv(
                        "",
                        [
                            ("id", drive.clone()),
                            ("file", argv_path(file)),
                            ("format", "raw".to_owned()),
                            ("readonly", on_off(read_only)),
                            direct,
                            aio,
                        ],
                    ),
                );
                let mut device = vec![("id", format!("blk-{drive}")), ("drive", drive)];
                if let Some(serial) = serial {
                    device.push(("serial", serial));
                }
                push("-device", kv("virtio-blk-device", device));
            };
        if let Some(store) = &spec.store_disk {
            disk("store".to_owned(), store, true, false, None);
        }
        for (i, volume) in spec.volumes.iter().enumerate() {
            disk(
                format!("vol{i}"),
                &volume.image,
                volume.read_only,
                volume.direct,
                volume.serial.clone(),
            );
        }

        for (i, share) in spec.virtiofs_shares().enumerate() {
            let chardev = format!("fs{i}");
            push(
                "-chardev",
                kv(
                    "socket",
                    [
                        ("id", chardev.clone()),
                        (
                            "path",
                            argv_path(share.socket.as_deref().unwrap_or_default()),
                        ),
                    ],
                ),
            );
            push(
                "-device",
                kv(
                    "vhost-user-fs-device",
                    [
                        ("id", format!("{chardev}-dev")),
                        ("chardev", chardev),
                        ("tag", share.tag.clone()),
                    ],
                ),
            );
        }

        let mut macvtap_fds = MacvtapFdNumbers::default();
        for (i, interface) in spec.interfaces.iter().enumerate() {
            let netdev = format!("net{i}");
            let host = match interface.kind {
                InterfaceType::Tap => ("ifname", interface.id.clone()),
                InterfaceType::Macvtap => {
                    // Single-queue (see the module comment): one descriptor, though `fds`
                    // is a colon-separated list (one fd per queue pair).
                    let fds: Vec<String> = macvtap_fds
                        .open(&interface.id, 1)
                        .iter()
                        .map(u32::to_string)
                        .collect();
                    ("fds", fds.join(":"))
                }
                // Refused by the capability table.
                InterfaceType::User | InterfaceType::Bridge => continue,
            };
            push("-netdev", kv("tap", [("id", netdev.clone()), host]));
            push(
                "-device",
                kv(
                    "virtio-net-device",
                    [
                        ("id", format!("{netdev}-dev")),
                        ("netdev", netdev),
                        ("mac", interface.mac.clone()),
                    ],
                ),
            );
        }
        if spec.tap_interfaces().next().is_some() {
            requirements.push(Requirement::tun());
        }

        if let Some(cid) = spec.vsock.cid {
            requirements.push(Requirement::vhost_vsock());
            push(
                "-device",
                kv(
                    "vhost-vsock-device",
                    [("id", "vsock0".to_owned()), ("guest-cid", cid.to_string())],
                ),
            );
        }
        if spec.balloon {
            push(
                "-device",
                kv(
                    "virtio-balloon-device",
                    [
                        ("id", "balloon0".to_owned()),
                        ("deflate-on-oom", true_false(spec.deflate_on_oom)),
                        ("free-page-reporting", true_false(true)),
                    ],
                ),
            );
        }

        Launch {
            program: Tool::Stratovirt,
            after_extra_args: Vec::new(),
            args,
            requirements,
            macvtap_fds: macvtap_fds.opened(),
            steps: vec![Step::Console {
                var: CONSOLE_VAR.to_owned(),
                terminal: "stdio".to_owned(),
                piped_prefix: "file,path=".to_owned(),
            }],
        }
    }

    fn tap_multi_queue(&self, _: &RunnerSpec) -> bool {
        false
    }

    fn shutdown_template(&self, _: &RunnerSpec) -> Option<&'static str> {
        // The microvm machine cannot tell the guest to shut down; see the module comment.
        None
    }

    fn balloon_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        (spec.socket.is_some() && spec.balloon).then_some(templates::QMP_BALLOON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_io_pairs_are_the_ones_stratovirt_accepts() {
        assert_eq!(
            drive_io(true),
            [("direct", "on".to_owned()), ("aio", "native".to_owned())]
        );
        assert_eq!(
            drive_io(false),
            [("direct", "off".to_owned()), ("aio", "off".to_owned())]
        );
    }

    #[test]
    fn the_x86_64_interrupts_leave_five_transports() {
        assert_eq!(
            X86_64_MMIO_TRANSPORTS - MAX_BLOCK_DEVICES - MAX_NET_DEVICES,
            5
        );
    }
}
