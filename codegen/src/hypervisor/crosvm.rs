//! crosvm: `crosvm run [options] KERNEL`, one repeated flag per device, the control socket
//! (`-s`) for `crosvm powerbtn` and `crosvm balloon`.
//!
//! Grammar: crosvm's `src/crosvm/cmdline.rs` (argh `RunCommand`: `--flag value`, the kernel as
//! the one positional, repeatable `Vec` options, single-valued `Option` ones) and the option
//! structs it parses with `serde_keyvalue` (`DiskOption` in `devices/src/virtio/block/mod.rs`,
//! `NetParameters` in `devices/src/virtio/net.rs`, `VhostUserFrontendOption` and `MemOptions`
//! in `src/crosvm/config.rs`, `VfioOption` and `SharedDir` in `src/crosvm/sys/linux/config.rs`).
//! Values are `key=value` pairs joined by `,`; booleans are `true`/`false` (not on/off); a
//! string holding `,`, a quote or a bracket is double-quoted with `\` escapes.
//!
//! Choices, from crosvm's source:
//! - Disks use `--block path=…,ro=…`, never the deprecated `-r`/`--root`, which adds
//!   `root=/dev/vda ro` to the kernel command line behind the spec's back.
//! - The balloon is on by default in crosvm, so `balloon = false` is `--no-balloon`. The
//!   balloon always offers deflate-on-OOM (`devices/src/virtio/balloon.rs`), so
//!   `deflateOnOOM = false` is refused rather than ignored. `initialBalloonMem` is
//!   `--init-mem`, the memory *outside* the balloon at boot (mem − initialBalloonMem).
//! - Tap interfaces get `vq-pairs=<vcpu>` when vcpu > 1: crosvm then opens the named tap with
//!   IFF_MULTI_QUEUE once per pair (`net_util` `Tap::new_with_name`, `into_mq_taps`), so
//!   `tap-up` creates the taps multi-queue. A macvtap stays single-queue: crosvm opens the extra
//!   queues through /dev/net/tun, which a macvtap device is not.
//! - Graphics run crosvm's own vhost-user GPU device (`crosvm device gpu`) next to the VM, as
//!   microvm.nix does, rather than the built-in `--gpu`: the built-in device runs inside
//!   crosvm's minijail sandbox, where the host's GL and Wayland libraries need seccomp and
//!   bind-mount allowances the external process does not, and the spec's `graphics.socket`
//!   names exactly this vhost-user socket. The device's steps are in `gpu.rs`, which the
//!   cloud-hypervisor runner shares.
//! - `crosvm powerbtn` works only where the board has an ACPI PM device, which the aarch64
//!   board lacks (`ENOTSUP`), so only x86_64 guests get `microvm-shutdown`. It waits for the
//!   control socket to disappear: crosvm binds it as an `UnlinkUnixSeqpacketListener`, dropped
//!   (and so unlinked) when `run_control` returns as the VMM shuts down.

use super::{
    Backend, Launch, MacvtapFdNumbers, MacvtapFds, OwnFlag, Requirement, Step, VirtiofsServer,
    Word, argv_path, kv, refuse_chars, true_false,
};
use crate::diagnostic::Diagnostic;
use crate::path;
use crate::spec::{DeviceBus, Hypervisor, InterfaceType, RunnerSpec, ShareProto, System, Tool};
use crate::templates;

pub struct Crosvm;

/// Single-valued `crosvm run` options (argh `Option` fields, refused when given twice), with
/// their short aliases and the spec option the runner sets them from.
const SINGLE_FLAGS: &[OwnFlag] = &[
    OwnFlag::new("--cpus", "microvm.vcpu").with_short("-c"),
    OwnFlag::new("--mem", "microvm.mem").with_short("-m"),
    OwnFlag::new("--initrd", "microvm.initrdPath").with_short("-i"),
    OwnFlag::new("--socket", "microvm.socket").with_short("-s"),
    OwnFlag::new("--pivot-root", "microvm.crosvm.pivotRoot"),
    OwnFlag::new("--vsock", "microvm.vsock.cid"),
    OwnFlag::new("--init-mem", "microvm.initialBalloonMem"),
    OwnFlag::new("--no-balloon", "microvm.balloon"),
    OwnFlag::new("--balloon-page-reporting", "microvm.balloon"),
];

/// A string value in crosvm's `key=value` grammar (`serde_keyvalue::key_values::any_string`):
/// bare unless it is empty or holds a character that ends or quotes a bare value.
pub fn kv_string(value: &str) -> String {
    if !value.is_empty() && !value.contains([',', '"', '\'', '[', ']']) {
        value.to_owned()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn multi_queue(spec: &RunnerSpec) -> bool {
    spec.vcpu > 1
}

fn can_power_off(spec: &RunnerSpec) -> bool {
    spec.system == System::X86_64Linux
}

fn kernel_params(spec: &RunnerSpec) -> String {
    // crosvm's serial port is a 16550 UART (ttyS0) on x86_64 and aarch64 alike.
    super::kernel_cmdline(spec, &["console=ttyS0", "reboot=k", "panic=1"])
}

/// The runner's own part of the command line, before `crosvm.extraArgs` and the kernel. Every
/// flag the runner sets is here, so `check` can refuse the same flag in `extraArgs`.
struct Command {
    args: Vec<Word>,
    requirements: Vec<Requirement>,
    macvtap_fds: Vec<MacvtapFds>,
    steps: Vec<Step>,
}

fn command(spec: &RunnerSpec) -> Command {
    let mut args: Vec<Word> = Vec::new();
    let mut push = |flag: &str, value: Option<String>| {
        args.push(Word::from(flag));
        if let Some(value) = value {
            args.push(Word::from(value));
        }
    };
    let mut requirements = vec![Requirement::kvm("crosvm")];
    let mut steps = Vec::new();

    push("--cpus", Some(format!("num-cores={}", spec.vcpu)));
    push("--mem", Some(format!("size={}", spec.mem)));
    push(
        "--serial",
        Some("type=stdout,console=true,stdin=true".to_owned()),
    );
    push("-p", Some(kernel_params(spec)));
    if spec.balloon {
        push("--balloon-page-reporting", None);
        if spec.initial_balloon_mem > 0 {
            let outside = spec.mem.saturating_sub(spec.initial_balloon_mem);
            push("--init-mem", Some(outside.to_string()));
        }
    } else {
        push("--no-balloon", None);
    }
    if let Some(socket) = &spec.socket {
        // crosvm binds the socket and fails when a file is in the way (a crashed run's).
        steps.push(Step::Remove {
            path: socket.clone(),
        });
        push("-s", Some(argv_path(socket)));
    }
    if let Some(pivot_root) = &spec.crosvm.pivot_root {
        steps.push(Step::MakeDir {
            path: pivot_root.clone(),
        });
        push("--pivot-root", Some(argv_path(pivot_root)));
    }

    if let Some(store) = &spec.store_disk {
        push(
            "--block",
            Some(kv(
                "",
                [("path", kv_string(store)), ("ro", true_false(true))],
            )),
        );
    }
    for volume in &spec.volumes {
        let mut pairs = vec![
            ("path", kv_string(&volume.image)),
            ("ro", true_false(volume.read_only)),
        ];
        if volume.direct {
            pairs.push(("direct", true_false(true)));
        }
        if let Some(serial) = &volume.serial {
            pairs.push(("id", kv_string(serial)));
        }
        push("--block", Some(kv("", pairs)));
    }

    for share in &spec.shares {
        match share.proto {
            ShareProto::Virtiofs => push(
                "--vhost-user",
                Some(kv(
                    "fs",
                    [(
                        "socket",
                        kv_string(share.socket.as_deref().unwrap_or_default()),
                    )],
                )),
            ),
            // Fields separated by ':'; check() refuses sources and tags that hold one.
            ShareProto::NineP => push(
                "--shared-dir",
                Some(format!(
                    "{}:{}:type=p9",
                    argv_path(&share.source),
                    share.tag
                )),
            ),
        }
    }

    let mut macvtap_fds = MacvtapFdNumbers::default();
    for interface in &spec.interfaces {
        let mut pairs = Vec::new();
        match interface.kind {
            InterfaceType::Tap => {
                pairs.push(("tap-name", kv_string(&interface.id)));
                pairs.push(("mac", interface.mac.clone()));
                if multi_queue(spec) {
                    pairs.push(("vq-pairs", spec.vcpu.to_string()));
                }
            }
            InterfaceType::Macvtap => {
                // One queue: see the module comment.
                let fd = macvtap_fds.open(&interface.id, 1)[0];
                pairs.push(("tap-fd", fd.to_string()));
                pairs.push(("mac", interface.mac.clone()));
            }
            // Refused by the capability table.
            InterfaceType::User | InterfaceType::Bridge => continue,
        }
        push("--net", Some(kv("", pairs)));
    }
    if spec.tap_interfaces().next().is_some() {
        requirements.push(Requirement::tun());
    }

    if let Some(cid) = spec.vsock.cid {
        requirements.push(Requirement::vhost_vsock());
        push("--vsock", Some(format!("cid={cid}")));
    }
    for device in spec.devices.iter().filter(|d| d.bus == DeviceBus::Pci) {
        push(
            "--vfio",
            Some(kv(
                &kv_string(&format!("/sys/bus/pci/devices/{}", device.path)),
                [("iommu", "viommu".to_owned())],
            )),
        );
    }

    if spec.graphics.enable
        && let Some(socket) = &spec.graphics.socket
    {
        steps.extend(super::gpu::device_steps(spec, socket));
        push(
            "--vhost-user",
            Some(kv("gpu", [("socket", kv_string(socket))])),
        );
    }
    push("--initrd", Some(argv_path(&spec.initrd_path)));

    Command {
        args,
        requirements,
        macvtap_fds: macvtap_fds.opened(),
        steps,
    }
}

impl Backend for Crosvm {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let hv = Hypervisor::Crosvm;
        let mut findings = Vec::new();

        // The single-valued flags the runner's own words set.
        let words: Vec<String> = command(spec)
            .args
            .iter()
            .filter_map(Word::literal)
            .collect();
        let own: Vec<OwnFlag> = SINGLE_FLAGS
            .iter()
            .filter(|flag| {
                words
                    .iter()
                    .any(|w| super::flag_name(w, SINGLE_FLAGS) == Some(flag.long))
            })
            .copied()
            .collect();
        super::refuse_own_flags(&mut findings, hv, &spec.crosvm.extra_args, &own);

        if spec.balloon && !spec.deflate_on_oom {
            findings.push(
                Diagnostic::error(
                    "microvm::crosvm::deflate_on_oom",
                    "crosvm's balloon always lets the guest deflate it when memory runs out",
                )
                .at(path!["deflateOnOOM"])
                .help("set deflateOnOOM = true (crosvm has no switch for it), or use hypervisor = \"qemu\" or \"cloud-hypervisor\""),
            );
        }

        findings.extend(super::gpu::check_socket(hv, spec));

        for (i, share) in spec.shares.iter().enumerate() {
            if share.proto != ShareProto::NineP {
                continue;
            }
            for (field, value) in [("source", &share.source), ("tag", &share.tag)] {
                refuse_chars(
                    &mut findings,
                    hv,
                    value,
                    path!["shares", i, field],
                    "--shared-dir SOURCE:TAG:…",
                    &[':', ','],
                );
            }
        }
        findings
    }

    fn tools(&self, spec: &RunnerSpec) -> Vec<(Tool, String)> {
        let mut tools = vec![(Tool::Crosvm, "hypervisor = \"crosvm\" runs it".to_owned())];
        if self.shutdown_template(spec).is_some() {
            tools.push((
                Tool::Sleep,
                "microvm-shutdown waits for the VM with it".to_owned(),
            ));
        }
        if self.balloon_template(spec).is_some() {
            tools.push((
                Tool::Sleep,
                "microvm-balloon waits for the guest with it".to_owned(),
            ));
        }
        tools
    }

    fn launch(&self, spec: &RunnerSpec) -> Launch {
        let Command {
            mut args,
            requirements,
            macvtap_fds,
            steps,
        } = command(spec);
        args.insert(0, Word::from("run"));
        args.extend(spec.crosvm.extra_args.iter().cloned().map(Word::from));
        Launch {
            program: Tool::Crosvm,
            // The kernel is the one positional argument: it comes last, after the arguments
            // extraArgsScript adds at run time too.
            after_extra_args: vec![Word::from(argv_path(&spec.kernel))],
            args,
            requirements,
            macvtap_fds,
            steps,
        }
    }

    fn tap_multi_queue(&self, spec: &RunnerSpec) -> bool {
        multi_queue(spec)
    }

    fn shutdown_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        (spec.socket.is_some() && can_power_off(spec)).then_some(templates::CROSVM_SHUTDOWN)
    }

    fn balloon_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        (spec.socket.is_some() && spec.balloon).then_some(templates::CROSVM_BALLOON)
    }

    fn virtiofs_server(&self) -> VirtiofsServer {
        // crosvm's vhost-user fs device takes the mount tag from the backend.
        VirtiofsServer::VirtiofsdWithTag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_only_when_the_grammar_needs_it() {
        assert_eq!(kv_string("/var/lib/vm.img"), "/var/lib/vm.img");
        assert_eq!(kv_string("a=b:c"), "a=b:c");
        assert_eq!(kv_string("a,b"), "\"a,b\"");
        assert_eq!(kv_string("say \"hi\" \\o/"), "\"say \\\"hi\\\" \\\\o/\"");
        assert_eq!(kv_string("[x]"), "\"[x]\"");
        assert_eq!(kv_string(""), "\"\"");
    }

    #[test]
    fn extra_flags_are_compared_in_their_long_form() {
        let flag = |word| super::super::flag_name(word, SINGLE_FLAGS);
        assert_eq!(flag("-c"), Some("--cpus"));
        assert_eq!(flag("--mem=size=2"), Some("--mem"));
        assert_eq!(flag("-s=x"), Some("--socket"));
        assert_eq!(flag("--gpu"), Some("--gpu"));
        assert_eq!(flag("value"), None);
        assert_eq!(flag("-"), None);
    }
}
