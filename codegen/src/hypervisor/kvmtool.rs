//! kvmtool: `lkvm run --name <hostName> --nodefaults …`, one flag per device.
//!
//! Grammar: kvmtool's `builtin-run.c` (`BUILD_OPTIONS`: long options take their value as the
//! next argument; `--disk`, `--9p`, `--network` and `--vfio-pci` repeat), `disk/core.c`
//! (`-d PATH[,ro][,direct]`, at most 4 disks, no escape for commas), `virtio/9p.c`
//! (`--9p DIR,TAG`), `virtio/net.c` (`-n key=value,…`, split on every `,` and `=`),
//! `builtin-balloon.c` and `virtio/balloon.c` (relative inflate/deflate in MiB), `kvm-ipc.c`
//! (the control socket `$HOME/.lkvm/<name>.sock`). Documentation: `Documentation/kvmtool.1`.
//!
//! `--nodefaults` is always passed. Without it lkvm writes its own kernel command line in front
//! of `--params` and adds `root=/dev/vda rw` (which would make the read-only store disk the root
//! file system); with it the command line is exactly what the runner passes, so the runner
//! passes the parts of lkvm's default line the guest needs: on x86_64 lkvm's hardware settings
//! (`noapic noacpi pci=conf1 reboot=k panic=1`, the i8042 settings, `earlyprintk=serial`), on
//! both `console=ttyS0` for `--console serial`. `--nodefaults` does not remove lkvm's default
//! user-mode NIC, which only `-n mode=none` does, so a VM without interfaces gets that.
//!
//! lkvm keeps its control socket in `$HOME/.lkvm/<name>.sock`: `microvm-run` exports `HOME=.`
//! (lkvm resolves it to the working directory at start), and `microvm-balloon` runs `lkvm
//! balloon` with the working directory as `HOME`, so each VM has its own socket directory and
//! the script finds the VM it belongs to. The host name names the socket file, so it may not
//! contain `/`. `microvm.socket` is refused by the capability table: lkvm has no other socket.
//!
//! `microvm-balloon SIZE_MIB` sets the balloon size like every other hypervisor's, but lkvm only
//! inflates or deflates by a number of MiB (`lkvm balloon -i N` / `-d N`), and silently ignores a
//! deflate larger than the balloon: the script keeps the size it last set in
//! `.lkvm/<name>.balloon` (which `microvm-run` removes at start, when lkvm's balloon is empty)
//! and sends the difference.
//!
//! No `microvm-shutdown`: lkvm cannot ask the guest to power off. `lkvm stop` ends the VM at
//! once, as pulling the plug would, and the only guest-visible path (`lkvm debug -s` magic SysRq
//! keys on the serial port) is not an orderly shutdown either.

use super::{Backend, Launch, Part, Requirement, Step, Word, macvtap_device, refuse_chars};
use crate::diagnostic::Diagnostic;
use crate::path;
use crate::spec::{
    DeviceBus, Hypervisor, InterfaceType, RunnerSpec, ShareProto, ShareSecurityModel, Tool,
};
use crate::templates;

pub struct Kvmtool;

/// `MAX_DISK_IMAGES` in kvmtool's `include/kvm/disk-image.h`.
pub const MAX_DISKS: usize = 4;

/// The directory lkvm keeps its control socket in, relative to `$HOME` (the working directory).
pub const LKVM_DIR: &str = ".lkvm";

/// Longest file name (NAME_MAX) minus the `.sock` suffix lkvm adds.
const MAX_NAME_BYTES: usize = 255 - ".sock".len();

/// Where `microvm-balloon` keeps the balloon size it last set, relative to the working
/// directory.
fn balloon_state_file(spec: &RunnerSpec) -> String {
    format!("{LKVM_DIR}/{}.balloon", spec.host_name)
}

fn code(name: &str) -> String {
    format!("microvm::kvmtool::{name}")
}

/// The kernel command line (lkvm passes it as is under `--nodefaults`).
fn params(spec: &RunnerSpec) -> String {
    let own: &[&str] = if spec.system.is_x86_64() {
        // lkvm's own x86 defaults (x86/kvm.c kvm__arch_set_cmdline) for its emulated hardware.
        &[
            "noapic",
            "noacpi",
            "pci=conf1",
            "reboot=k",
            "panic=1",
            "i8042.direct=1",
            "i8042.dumbkbd=1",
            "i8042.nopnp=1",
            "earlyprintk=serial",
            "i8042.noaux=1",
            "console=ttyS0",
        ]
    } else {
        &["panic=1", "console=ttyS0"]
    };
    super::kernel_cmdline(spec, own)
}

fn check_disk_images(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    let store = usize::from(spec.store_disk.is_some());
    if store + spec.volumes.len() > MAX_DISKS {
        let first_extra = MAX_DISKS - store;
        findings.push(
            Diagnostic::error(
                code("too_many_disks"),
                format!(
                    "kvmtool attaches at most {MAX_DISKS} disks; this VM has {}",
                    store + spec.volumes.len()
                ),
            )
            .at(path!["volumes", first_extra])
            .label(if store == 1 {
                "the store disk and three volumes fit"
            } else {
                "four volumes fit"
            })
            .help("combine volumes, share directories with proto = \"9p\", or use hypervisor = \"qemu\""),
        );
    }
    super::check_disks(findings, spec, "--disk", "--disk", &[',']);
    let mut disk = |value: &str, at: crate::json_path::JsonPath| {
        if value.starts_with("scsi:") {
            findings.push(
                Diagnostic::error(
                    code("scsi_prefix"),
                    format!("lkvm reads {value:?} as a vhost-scsi target, not a file"),
                )
                .at(at)
                .help("name the image without the scsi: prefix, such as ./scsi:…"),
            );
        }
    };
    if let Some(store) = &spec.store_disk {
        disk(store, path!["storeDisk"]);
    }
    for (i, volume) in spec.volumes.iter().enumerate() {
        disk(&volume.image, path!["volumes", i, "image"]);
    }
}

impl Backend for Kvmtool {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let hv = Hypervisor::Kvmtool;
        let mut findings = Vec::new();
        if spec.host_name.contains('/') || spec.host_name.len() > MAX_NAME_BYTES {
            findings.push(
                Diagnostic::error(
                    code("host_name"),
                    format!(
                        "lkvm names its control socket after the VM, and {:?} cannot be a file name",
                        spec.host_name
                    ),
                )
                .at(path!["hostName"])
                .label(format!("becomes $HOME/{LKVM_DIR}/<hostName>.sock"))
                .help(format!(
                    "use a host name without '/' of at most {MAX_NAME_BYTES} bytes"
                )),
            );
        }
        check_disk_images(spec, &mut findings);
        for (i, share) in spec.shares.iter().enumerate() {
            if share.proto != ShareProto::NineP {
                continue;
            }
            refuse_chars(
                &mut findings,
                hv,
                &share.source,
                path!["shares", i, "source"],
                "--9p",
                &[','],
            );
            if share.security_model != ShareSecurityModel::None {
                findings.push(
                    Diagnostic::error(
                        code("security_model"),
                        format!(
                            "kvmtool's 9p server has no security models; securityModel = {:?} cannot be honoured",
                            share.security_model.name()
                        ),
                    )
                    .at(path!["shares", i, "securityModel"])
                    .help("leave securityModel at \"none\" (files are accessed as the VM's user), or use hypervisor = \"qemu\""),
                );
            }
        }
        let mut user_nics = 0;
        for (i, interface) in spec.interfaces.iter().enumerate() {
            match interface.kind {
                InterfaceType::User => {
                    user_nics += 1;
                    if user_nics == 2 {
                        findings.push(
                            Diagnostic::error(
                                code("user_nics"),
                                "lkvm runs one user-mode network interface at a time",
                            )
                            .at(path!["interfaces", i, "type"])
                            .help(
                                "keep one interface with type = \"user\"; use taps for the others",
                            ),
                        );
                    }
                }
                InterfaceType::Tap => refuse_chars(
                    &mut findings,
                    hv,
                    &interface.id,
                    path!["interfaces", i, "id"],
                    "--network",
                    &[',', '='],
                ),
                InterfaceType::Macvtap | InterfaceType::Bridge => {}
            }
        }
        if spec.balloon && spec.deflate_on_oom {
            findings.push(
                Diagnostic::warning(
                    code("deflate_on_oom"),
                    "kvmtool's balloon cannot deflate when the guest runs out of memory",
                )
                .at(path!["balloon"])
                .label("deflateOnOOM (true unless set) asks for it; lkvm's virtio-balloon offers only statistics")
                .help("set deflateOnOOM = false to say so, or use hypervisor = \"qemu\" or \"cloud-hypervisor\""),
            );
        }
        findings
    }

    fn tools(&self, _: &RunnerSpec) -> Vec<(Tool, String)> {
        vec![(
            Tool::Lkvm,
            "hypervisor = \"kvmtool\" runs it (and microvm-balloon, when there is a balloon)"
                .to_owned(),
        )]
    }

    fn launch(&self, spec: &RunnerSpec) -> Launch {
        let mut args: Vec<Word> = Vec::new();
        let push = |args: &mut Vec<Word>, flag: &str, value: Word| {
            args.push(Word::from(flag));
            args.push(value);
        };
        let mut requirements = Vec::new();
        // lkvm resolves $HOME/.lkvm to an absolute path when it starts.
        let mut steps = vec![Step::Export {
            name: "HOME".to_owned(),
            value: ".".to_owned(),
        }];

        args.push(Word::from("run"));
        push(&mut args, "--name", Word::from(spec.host_name.clone()));
        args.push(Word::from("--nodefaults"));
        push(&mut args, "--cpus", Word::from(spec.vcpu.to_string()));
        // A plain number is MiB, in old and new lkvm alike (suffixes came later).
        push(&mut args, "--mem", Word::from(spec.mem.to_string()));
        push(&mut args, "--console", Word::from("serial"));
        push(&mut args, "--kernel", Word::from(spec.kernel.clone()));
        push(&mut args, "--initrd", Word::from(spec.initrd_path.clone()));
        push(&mut args, "--params", Word::from(params(spec)));
        args.push(Word::from("--rng"));
        if spec.balloon {
            args.push(Word::from("--balloon"));
            steps.push(Step::Remove {
                path: balloon_state_file(spec),
            });
        }
        if spec.hugepage_mem {
            push(&mut args, "--hugetlbfs", Word::from("/dev/hugepages"));
            requirements.push(Requirement::hugepages());
        }
        if let Some(store) = &spec.store_disk {
            push(&mut args, "--disk", Word::from(format!("{store},ro")));
        }
        for volume in &spec.volumes {
            let mut disk = volume.image.clone();
            if volume.read_only {
                disk.push_str(",ro");
            }
            if volume.direct {
                disk.push_str(",direct");
            }
            push(&mut args, "--disk", Word::from(disk));
        }
        for share in spec.shares.iter().filter(|s| s.proto == ShareProto::NineP) {
            push(
                &mut args,
                "--9p",
                Word::from(format!("{},{}", share.source, share.tag)),
            );
        }

        if spec.interfaces.is_empty() {
            // Without any -n, lkvm adds a user-mode NIC of its own.
            push(&mut args, "--network", Word::from("mode=none"));
        }
        for (i, interface) in spec.interfaces.iter().enumerate() {
            // vhost-net takes over the tap or macvtap descriptor lkvm opens; validation keeps
            // tap.vhost off user interfaces.
            let mut tail = String::new();
            if interface.tap.vhost {
                requirements.push(Requirement::vhost_net(i));
                tail.push_str(",vhost=1");
            }
            tail.push_str(&format!(",guest_mac={}", interface.mac));
            let word = match interface.kind {
                InterfaceType::User => Word::from(format!("mode=user{tail}")),
                InterfaceType::Tap => Word::from(format!("mode=tap,tapif={}{tail}", interface.id)),
                InterfaceType::Macvtap => {
                    // lkvm opens a tapif that starts with '/' as a macvtap character device.
                    let (step, var) = macvtap_device(i, &interface.id);
                    steps.push(step);
                    Word(vec![
                        Part::Lit("mode=tap,tapif=".to_owned()),
                        Part::Var(var),
                        Part::Lit(tail),
                    ])
                }
                // Refused by the capability table.
                InterfaceType::Bridge => continue,
            };
            push(&mut args, "--network", word);
        }
        if spec.tap_interfaces().next().is_some() {
            requirements.push(Requirement::tun());
        }
        if let Some(cid) = spec.vsock.cid {
            push(&mut args, "--vsock", Word::from(cid.to_string()));
            requirements.push(Requirement::vhost_vsock());
        }
        for device in spec.devices.iter().filter(|d| d.bus == DeviceBus::Pci) {
            push(&mut args, "--vfio-pci", Word::from(device.path.clone()));
        }

        Launch {
            program: Tool::Lkvm,
            after_extra_args: Vec::new(),
            args,
            requirements,
            macvtap_fds: Vec::new(),
            steps,
        }
    }

    fn tap_multi_queue(&self, _: &RunnerSpec) -> bool {
        // lkvm opens taps without IFF_MULTI_QUEUE.
        false
    }

    fn shutdown_template(&self, _: &RunnerSpec) -> Option<&'static str> {
        // lkvm has no graceful shutdown (see the module documentation).
        None
    }

    fn balloon_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        spec.balloon.then_some(templates::KVMTOOL_BALLOON)
    }

    fn balloon_state_file(&self, spec: &RunnerSpec) -> Option<String> {
        // lkvm only inflates or deflates by a number of MiB.
        spec.balloon.then(|| balloon_state_file(spec))
    }
}
