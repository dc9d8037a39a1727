//! alioth: `alioth boot` (`run` is an alias since 2025-04) with `-k`/`-i`/`-c`, `--cpu count=N`,
//! `--memory size=…,backend=memfd` and one repeated flag per device. alioth has no control
//! socket, so there is no `microvm-shutdown` (the guest powers itself off) and no balloon.
//!
//! Grammar: google/alioth `alioth-cli/src/boot/boot.rs` (flags, and the fallbacks that re-read a
//! `--blk` value it cannot parse as a bare file path) and `alioth-cli/src/boot/config.rs` (the
//! device enums), the spec structs (`alioth/src/virtio/dev/{blk,net/tap,fs/vu}.rs`,
//! `vsock/vhost_vsock.rs`, `alioth/src/mem/mem.rs`, `alioth/src/board/board.rs`), and the
//! value deserializer `serde-aco/src/de.rs`. Every value is `variant,key=value,…`: a value ends
//! at the next comma (there is no escape), a value starting with `id_` is looked up among `-o`
//! objects, unknown keys are errors, and booleans are on/off/true/false.
//!
//! - The console is stdio (`StdioConsole` in `alioth/src/device/console.rs`; releases up to
//!   0.12.0 have no other), and it needs a terminal on stdin: without one, as under systemd,
//!   alioth fails with "Failed to create a console". `microvm-run` then runs itself on a
//!   pseudo-terminal (util-linux `script`), which copies the console to stdout. alioth opens
//!   taps and macvtaps by path, so no descriptor has to survive the wrapper.
//! - `--kernel` loads only a boot-protocol image (bzImage: "Missing magic number 0xaa55"
//!   otherwise); an ELF vmlinux with a PVH note goes to `--pvh` (x86_64 only). `microvm-run`
//!   picks the flag by the kernel file's magic.

use super::{
    Backend, Launch, Part, Requirement, Step, Word, kv, macvtap_device, on_off, refuse_chars,
};
use crate::diagnostic::Diagnostic;
use crate::json_path::JsonPath;
use crate::path;
use crate::spec::{Hypervisor, InterfaceType, RunnerSpec, Tool};

pub struct Alioth;

/// The `microvm-run` variable holding the flag that loads the kernel.
const KERNEL_FLAG_VAR: &str = "kernel_flag";

/// The most queues a Linux tap or macvtap device takes (`MAX_TAP_QUEUES`).
const MAX_TAP_QUEUES: u32 = 256;

/// Interfaces are opened multi-queue when the guest has several vCPUs: alioth opens the tap
/// with IFF_MULTI_QUEUE exactly when `queue_pairs` > 1, which fails on a tap created without
/// `multi_queue`, so `tap-up` and the command line must agree (microvm.nix passed
/// `queue_pairs=<vcpu>` but created single-queue taps).
fn queue_pairs(spec: &RunnerSpec) -> u32 {
    spec.vcpu.min(MAX_TAP_QUEUES)
}

fn multi_queue(spec: &RunnerSpec) -> bool {
    queue_pairs(spec) > 1
}

fn cmdline(spec: &RunnerSpec) -> String {
    // x86_64 has a 16450 UART (ttyS0), aarch64 a PL011 (ttyAMA0). reboot=t: a triple fault
    // makes KVM exit, so a guest reboot ends alioth (and the service restarts it).
    let mut own = vec![super::uart_console(spec.system)];
    if spec.system.is_x86_64() {
        own.push("reboot=t");
    }
    own.push("panic=-1");
    super::kernel_cmdline(spec, &own)
}

/// Refuses a value serde-aco would not read back as itself: a comma ends the value, and a
/// value starting with `id_` names an object of `-o` instead.
fn refuse_value(findings: &mut Vec<Diagnostic>, value: &str, at: JsonPath, flag: &str) {
    refuse_chars(
        findings,
        Hypervisor::Alioth,
        value,
        at.clone(),
        flag,
        &[','],
    );
    if value.starts_with("id_") {
        findings.push(
            Diagnostic::error(
                "microvm::alioth::unrepresentable",
                format!("alioth's {flag} syntax reads a value starting with \"id_\" as the name of an object"),
            )
            .at(at)
            .help("rename the file or name so it does not start with \"id_\" (a relative path can start with \"./\")"),
        );
    }
}

impl Backend for Alioth {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let mut findings = Vec::new();
        if let Some(store) = &spec.store_disk {
            refuse_value(&mut findings, store, path!["storeDisk"], "--blk");
        }
        for (i, volume) in spec.volumes.iter().enumerate() {
            refuse_value(
                &mut findings,
                &volume.image,
                path!["volumes", i, "image"],
                "--blk",
            );
        }
        for (i, share) in spec.shares.iter().enumerate() {
            refuse_value(&mut findings, &share.tag, path!["shares", i, "tag"], "--fs");
            if let Some(socket) = &share.socket {
                refuse_value(&mut findings, socket, path!["shares", i, "socket"], "--fs");
            }
        }
        for (i, interface) in spec.interfaces.iter().enumerate() {
            refuse_value(
                &mut findings,
                &interface.id,
                path!["interfaces", i, "id"],
                "--net",
            );
        }
        findings
    }

    fn tools(&self, _: &RunnerSpec) -> Vec<(Tool, String)> {
        vec![(Tool::Alioth, "hypervisor = \"alioth\" runs it".to_owned())]
    }

    fn launch(&self, spec: &RunnerSpec) -> Launch {
        let mut args: Vec<Word> = vec![Word::from("boot")];
        let mut requirements = Vec::new();
        let mut steps = Vec::new();
        fn push(args: &mut Vec<Word>, flag: &str, value: impl Into<Word>) {
            args.push(Word::from(flag));
            args.push(value.into());
        }

        push(&mut args, "--cpu", format!("count={}", spec.vcpu));
        // memfd: vhost-user devices (virtiofsd) need guest memory they can map.
        push(
            &mut args,
            "--memory",
            kv(
                "",
                [
                    ("size", format!("{}M", spec.mem)),
                    ("backend", "memfd".to_owned()),
                ],
            ),
        );
        if spec.system.is_x86_64() {
            steps.push(Step::KernelFlag {
                var: KERNEL_FLAG_VAR.to_owned(),
                kernel: spec.kernel.clone(),
                elf: "--pvh".to_owned(),
                other: "--kernel".to_owned(),
            });
            args.push(Word(vec![Part::Var(KERNEL_FLAG_VAR.to_owned())]));
            args.push(Word::from(spec.kernel.clone()));
        } else {
            push(&mut args, "--kernel", spec.kernel.clone());
        }
        push(&mut args, "--initramfs", spec.initrd_path.clone());
        push(&mut args, "--cmdline", cmdline(spec));
        args.push(Word::from("--entropy"));
        steps.push(Step::Terminal);

        if let Some(store) = &spec.store_disk {
            push(
                &mut args,
                "--blk",
                kv(
                    "file",
                    [("path", store.clone()), ("readonly", on_off(true))],
                ),
            );
        }
        for volume in &spec.volumes {
            // The key is `readonly`: microvm.nix's `readOnly=` is an unknown key, after which
            // alioth takes the whole value for a file name.
            push(
                &mut args,
                "--blk",
                kv(
                    "file",
                    [
                        ("path", volume.image.clone()),
                        ("readonly", on_off(volume.read_only)),
                    ],
                ),
            );
        }
        for share in spec.virtiofs_shares() {
            push(
                &mut args,
                "--fs",
                kv(
                    "vu",
                    [
                        ("socket", share.socket.clone().unwrap_or_default()),
                        ("tag", share.tag.clone()),
                    ],
                ),
            );
        }

        for (i, interface) in spec.interfaces.iter().enumerate() {
            // alioth requires mtu; 1500 is what the host side of a tap or macvtap has.
            let mut pairs = vec![("mac", interface.mac.clone()), ("mtu", "1500".to_owned())];
            if multi_queue(spec) {
                pairs.push(("queue_pairs", queue_pairs(spec).to_string()));
            }
            let word = match interface.kind {
                InterfaceType::Tap => {
                    pairs.insert(0, ("if_name", interface.id.clone()));
                    Word::from(kv("tap", pairs))
                }
                InterfaceType::Macvtap => {
                    // A macvtap is opened through its character device, /dev/tap<ifindex>,
                    // which exists once macvtap-up has run; each open is one more queue.
                    let (step, var) = macvtap_device(i, &interface.id);
                    steps.push(step);
                    Word(vec![
                        Part::Lit("tap,tap=".to_owned()),
                        Part::Var(var),
                        Part::Lit(format!(",{}", kv("", pairs))),
                    ])
                }
                // Refused by the capability table.
                InterfaceType::User | InterfaceType::Bridge => continue,
            };
            push(&mut args, "--net", word);
        }
        if spec.tap_interfaces().next().is_some() {
            requirements.push(Requirement::tun());
        }

        if let Some(cid) = spec.vsock.cid {
            push(
                &mut args,
                "--vsock",
                kv("vhost", [("cid", cid.to_string())]),
            );
            requirements.push(Requirement::vhost_vsock());
        }

        Launch {
            program: Tool::Alioth,
            after_extra_args: Vec::new(),
            args,
            requirements,
            macvtap_fds: Vec::new(),
            steps,
        }
    }

    fn tap_multi_queue(&self, spec: &RunnerSpec) -> bool {
        multi_queue(spec)
    }

    fn shutdown_template(&self, _: &RunnerSpec) -> Option<&'static str> {
        // No control channel: the host can only kill alioth, which is not a shutdown.
        None
    }

    fn balloon_template(&self, _: &RunnerSpec) -> Option<&'static str> {
        None
    }
}
