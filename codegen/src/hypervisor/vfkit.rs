//! vfkit (macOS, Virtualization.framework): `vfkit --cpus N --memory MiB --bootloader linux,…`
//! and one `--device type,option,…` per device; virtio-fs is built in (no virtiofsd). The REST
//! API on `--restful-uri unix:///<absolute path>` is the control socket: `microvm-shutdown`
//! asks for a graceful stop there (`POST /vm/state {"state":"Stop"}`, `RequestStop()`, which the
//! guest sees as a power button; `HardStop` would pull the plug).
//!
//! vfkit runs only on macOS (`hostOs` in the capability table): `microvm-run` refuses other
//! hosts at run time (the runner is still generated everywhere, so it can be built and
//! inspected on Linux).
//!
//! Grammar: crc-org/vfkit `doc/usage.md`, `pkg/cmdline/cmdline.go` (flags),
//! `pkg/cmdline/string_slice.go` (`--bootloader` is split at commas outside double quotes, so
//! the kernel command line is quoted and cannot contain `"`), `pkg/config/virtio.go` (`--device`
//! is split at every comma, with no quoting; a bare option is a flag, and giving a flag a value
//! is an error) and `pkg/rest/rest.go` (the URI, and its 103-byte path limit from macOS's
//! `sockaddr_un`).

use super::{Backend, Launch, OwnFlag, Part, Step, VirtiofsServer, Word, refuse_chars};
use crate::diagnostic::Diagnostic;
use crate::path;
use crate::spec::{Hypervisor, InterfaceType, RunnerSpec, ShareProto, System, Tool};
use crate::templates;

pub struct Vfkit;

/// The longest unix socket path vfkit accepts: `sun_path` is 104 bytes on macOS, with the NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 103;

/// The mount tag of the Rosetta share; the guest module mounts it by this name.
pub const ROSETTA_TAG: &str = "rosetta";

/// Flags this backend sets itself (with their short forms); the same flag in
/// `vfkit.extraArgs` would be a second bootloader, a conflicting kernel, or a silent override.
fn own_flags(spec: &RunnerSpec) -> Vec<OwnFlag> {
    let mut own = vec![
        OwnFlag::new("--cpus", "microvm.vcpu").with_short("-c"),
        OwnFlag::new("--memory", "microvm.mem").with_short("-m"),
        OwnFlag::new("--bootloader", "microvm.kernel").with_short("-b"),
        OwnFlag::new("--kernel", "microvm.kernel").with_short("-k"),
        OwnFlag::new("--initrd", "microvm.initrdPath").with_short("-i"),
        OwnFlag::new("--kernel-cmdline", "microvm.kernelParams").with_short("-C"),
    ];
    if spec.socket.is_some() {
        own.push(OwnFlag::new("--restful-uri", "microvm.socket"));
    }
    if spec.vfkit.log_level.is_some() {
        own.push(OwnFlag::new("--log-level", "microvm.vfkit.logLevel"));
    }
    own
}

fn cmdline(spec: &RunnerSpec) -> String {
    // With graphics the console is the framebuffer; otherwise virtio-serial's hvc0.
    let console = if spec.graphics.enable {
        "console=tty0"
    } else {
        "console=hvc0"
    };
    super::kernel_cmdline(spec, &[console, "reboot=t", "panic=-1"])
}

/// `--device` values are split at every comma; there is no escape.
const DEVICE_SYNTAX: &[char] = &[','];
/// `--bootloader` values are split at commas outside double quotes.
const BOOTLOADER_SYNTAX: &[char] = &[',', '"'];

impl Backend for Vfkit {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let hv = Hypervisor::Vfkit;
        let mut findings = Vec::new();
        super::refuse_own_flags(&mut findings, hv, &spec.vfkit.extra_args, &own_flags(spec));
        if let Some(socket) = &spec.socket {
            // A relative socket is made absolute with the working directory at run time, where
            // microvm-run checks the whole path; here only its least possible length is known.
            let least = if socket.starts_with('/') {
                socket.len()
            } else {
                socket.len() + 2
            };
            if least > MAX_SOCKET_PATH_BYTES {
                findings.push(
                    Diagnostic::error(
                        "microvm::vfkit::socket_path_too_long",
                        format!(
                            "vfkit's API socket path would be at least {least} bytes; macOS holds {MAX_SOCKET_PATH_BYTES}"
                        ),
                    )
                    .at(path!["socket"])
                    .help("use a shorter socket path; a relative one is made absolute in the directory the VM starts in"),
                );
            }
        }
        for (field, value) in [("kernel", &spec.kernel), ("initrdPath", &spec.initrd_path)] {
            refuse_chars(
                &mut findings,
                hv,
                value,
                path![field],
                "--bootloader",
                BOOTLOADER_SYNTAX,
            );
        }
        for (i, param) in spec.kernel_params.iter().enumerate() {
            // Inside cmdline="…" commas are fine, but a quote ends the value.
            if param.contains('"') {
                findings.push(
                    Diagnostic::error(
                        "microvm::vfkit::unrepresentable",
                        "vfkit's --bootloader cannot carry '\"' in a kernel parameter",
                    )
                    .at(path!["kernelParams", i])
                    .help("vfkit wraps the kernel command line in double quotes and has no escape for them: drop the quotes from this parameter, or use hypervisor = \"qemu\""),
                );
            }
        }
        super::check_disks(&mut findings, spec, "--device", "--device", DEVICE_SYNTAX);
        for (i, volume) in spec.volumes.iter().enumerate() {
            if let Some(serial) = &volume.serial
                && !serial.is_ascii()
            {
                findings.push(
                    Diagnostic::error(
                        "microvm::vfkit::serial",
                        format!("disk serial {serial:?} is not ASCII"),
                    )
                    .at(path!["volumes", i, "serial"])
                    .help("Virtualization.framework takes block device identifiers of ASCII characters only; rename the serial"),
                );
            }
        }
        for (i, share) in spec.shares.iter().enumerate() {
            if share.proto != ShareProto::Virtiofs {
                continue;
            }
            for (field, value) in [("source", &share.source), ("tag", &share.tag)] {
                refuse_chars(
                    &mut findings,
                    hv,
                    value,
                    path!["shares", i, field],
                    "--device",
                    DEVICE_SYNTAX,
                );
            }
            if spec.vfkit.rosetta.enable && share.tag == ROSETTA_TAG {
                findings.push(
                    Diagnostic::error(
                        "microvm::vfkit::rosetta_tag",
                        format!("the share tag {ROSETTA_TAG:?} is taken by vfkit.rosetta"),
                    )
                    .at(path!["shares", i, "tag"])
                    .help("give the share another tag"),
                );
            }
        }
        if spec.vfkit.rosetta.enable && spec.system != System::Aarch64Linux {
            findings.push(
                Diagnostic::error(
                    "microvm::vfkit::rosetta_arch",
                    "vfkit.rosetta runs x86_64 programs in an aarch64 guest, but this guest is x86_64",
                )
                .at(path!["vfkit", "rosetta", "enable"])
                .help("Rosetta needs an Apple silicon host and an aarch64-linux guest; set vfkit.rosetta.enable = false"),
            );
        }
        findings
    }

    fn tools(&self, spec: &RunnerSpec) -> Vec<(Tool, String)> {
        let mut tools = vec![(Tool::Vfkit, "hypervisor = \"vfkit\" runs it".to_owned())];
        if spec.socket.is_some() {
            tools.push((
                Tool::Curl,
                "microvm-shutdown talks to vfkit's REST API with it".to_owned(),
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
        let mut steps = Vec::new();
        fn push(args: &mut Vec<Word>, flag: &str, value: impl Into<Word>) {
            args.push(Word::from(flag));
            args.push(value.into());
        }

        push(&mut args, "--cpus", spec.vcpu.to_string());
        push(&mut args, "--memory", spec.mem.to_string());
        if let Some(level) = spec.vfkit.log_level {
            push(&mut args, "--log-level", level.name());
        }
        if spec.graphics.enable {
            args.push(Word::from("--gui"));
        }
        push(
            &mut args,
            "--bootloader",
            format!(
                "linux,kernel={},initrd={},cmdline=\"{}\"",
                spec.kernel,
                spec.initrd_path,
                cmdline(spec)
            ),
        );
        if let Some(socket) = &spec.socket {
            // vfkit's REST server fails on a socket file left behind by a crash.
            steps.push(Step::Remove {
                path: socket.clone(),
            });
            // The URI wants an absolute path: a relative socket is resolved in the working
            // directory microvm-run starts in, and checked there (length, URI-safe characters).
            let absolute = if socket.starts_with('/') {
                Word::from(socket.clone())
            } else {
                let path = Word(vec![
                    Part::Var("PWD".to_owned()),
                    Part::Lit(format!("/{socket}")),
                ]);
                steps.push(Step::CheckSocketPath {
                    path: path.clone(),
                    max_bytes: MAX_SOCKET_PATH_BYTES,
                    message: format!(
                        "microvm-run: vfkit takes an API socket path (microvm.socket = {socket:?}, made absolute in this directory) of at most {MAX_SOCKET_PATH_BYTES} bytes and without % or ?; start the VM in another directory or set an absolute microvm.socket"
                    ),
                });
                path
            };
            let mut uri = vec![Part::Lit("unix://".to_owned())];
            uri.extend(absolute.0);
            push(&mut args, "--restful-uri", Word(uri));
        }

        let mut device = |value: String| push(&mut args, "--device", value);
        device("virtio-rng".to_owned());
        if spec.graphics.enable {
            device("virtio-gpu".to_owned());
            device("virtio-input,keyboard".to_owned());
            device("virtio-input,pointing".to_owned());
        } else {
            device("virtio-serial,stdio".to_owned());
        }
        if let Some(store) = &spec.store_disk {
            device(format!("virtio-blk,path={store},readonly"));
        }
        for volume in &spec.volumes {
            let mut value = format!("virtio-blk,path={}", volume.image);
            if volume.read_only {
                value.push_str(",readonly");
            }
            if let Some(serial) = &volume.serial {
                // The guest sees it as /dev/disk/by-id/virtio-<serial>.
                value.push_str(&format!(",deviceId={serial}"));
            }
            device(value);
        }
        for share in spec.virtiofs_shares() {
            device(format!(
                "virtio-fs,sharedDir={},mountTag={}",
                share.source, share.tag
            ));
        }
        for interface in &spec.interfaces {
            // tap, macvtap and bridge are refused by the capability table.
            if interface.kind == InterfaceType::User {
                device(format!("virtio-net,nat,mac={}", interface.mac));
            }
        }
        let rosetta = &spec.vfkit.rosetta;
        if rosetta.enable {
            let mut value = format!("rosetta,mountTag={ROSETTA_TAG}");
            if rosetta.install {
                value.push_str(",install");
            }
            if rosetta.ignore_if_missing {
                // The option is spelled `ignore-if-missing` in pkg/config/virtio.go; the
                // `ignoreIfMissing` of doc/usage.md (and of microvm.nix) is an unknown option.
                value.push_str(",ignore-if-missing");
            }
            device(value);
        }
        for arg in &spec.vfkit.extra_args {
            args.push(Word::from(arg.clone()));
        }

        Launch {
            program: Tool::Vfkit,
            after_extra_args: Vec::new(),
            args,
            requirements: Vec::new(),
            macvtap_fds: Vec::new(),
            steps,
        }
    }

    fn tap_multi_queue(&self, _: &RunnerSpec) -> bool {
        // vfkit has no taps.
        false
    }

    fn shutdown_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        spec.socket.as_ref().map(|_| templates::VFKIT_SHUTDOWN)
    }

    fn balloon_template(&self, _: &RunnerSpec) -> Option<&'static str> {
        // vfkit's virtio-balloon has no run-time control; the capability table refuses it.
        None
    }

    fn virtiofs_server(&self) -> VirtiofsServer {
        // Virtualization.framework's virtio-fs device shares the directory itself.
        VirtiofsServer::BuiltIn
    }
}
