//! firecracker: everything about the VM goes into a config file the runner ships,
//! `share/microvm/firecracker.json`, built from the typed sections in [`config`]; the command
//! line is only `firecracker --config-file <runner>/share/microvm/firecracker.json`, then
//! `--api-sock <socket>` (or `--no-api` when `microvm.socket` is null), then
//! `microvm.firecracker.extraArgs`.
//!
//! Grammar: firecracker's `src/firecracker/src/main.rs` and `src/utils/src/arg_parser.rs` for the
//! flags (only `--flag value` as two words, no flag twice), `src/vmm/src/resources.rs` and
//! `src/vmm/src/vmm_config/*.rs` for the file, `src/firecracker/swagger/firecracker.yaml` for the
//! API the scripts use.
//!
//! In the file: the kernel, initrd and command line (`boot-source`; on x86_64 the command line
//! carries the i8042 parameters the guest needs to receive Ctrl-Alt-Del); vCPUs and memory
//! (`machine-config`, with `huge_pages: "2M"` for `microvm.hugepageMem`, and never `smt`, which
//! firecracker refuses on aarch64 and with an odd vCPU count); the store disk first (read-only,
//! not the root device) and then the volumes, all with `microvm.firecracker.driveIoEngine`
//! (`drives`, ids `store` and `volume<i>` after the volume's index); taps by name
//! (`network-interfaces`, ids `net<i>` after the interface's index, usable in `mmds-config`); the
//! vsock multiplexer socket `notify.vsock` in the working directory, as cloud-hypervisor's; a
//! balloon of `microvm.initialBalloonMem` MiB with statistics every second (microvm-balloon reads
//! them); a virtio-rng (`entropy: {}`); `microvm.firecracker.cpu` as an inline `cpu-config`.
//! `microvm.firecracker.extraConfig` is then merged in (objects key by key, the rest replaced,
//! like Nix's `recursiveUpdate`) and the result read back as the typed config, so a key
//! firecracker does not know, or a value of the wrong type, is refused at build time.
//!
//! With `microvm.hugepageMem`, `microvm-run` first checks that enough huge pages are free for
//! the guest's memory ([`super::launch`]): without them firecracker only says "Kernel Loader:
//! failed to load" (it cannot write the kernel into guest memory that has no pages behind it).
//!
//! `--enable-pci` is not passed: it exists from firecracker 1.13 on, and the spec does not know
//! which firecracker it runs (add it to `extraArgs` for a new enough one).
//!
//! Scripts: `microvm-shutdown` sends Ctrl-Alt-Del (`PUT /actions`), which firecracker offers on
//! x86_64 only (aarch64 answers 400), so aarch64 runners have none; `microvm-balloon` sets the
//! balloon size (`PATCH /balloon`, MiB) and waits for `actual_mib` to follow.

pub mod config;

use serde_json::Value;

use self::config::{
    Balloon, BootSource, Config, CpuConfig, CpuTemplate, Drive, Entropy, HugePages, IoEngine,
    MachineConfig, NetworkInterface, Vsock,
};
use super::{Backend, Launch, OwnFlag, Requirement, Step, VSOCK_MUX_SOCKET, Word, runner_file};
use crate::diagnostic::Diagnostic;
use crate::json_path::JsonPath;
use crate::path;
use crate::spec::{FirecrackerIoEngine, InterfaceType, RunnerSpec, Tool};
use crate::templates;

pub struct Firecracker;

/// The config file, relative to the runner directory.
pub const CONFIG_FILE: &str = "share/microvm/firecracker.json";

/// `MAX_SUPPORTED_VCPUS` in firecracker's `machine_config.rs`.
pub const MAX_VCPUS: u32 = 32;

/// How often the balloon statistics are refreshed, in seconds; microvm-balloon polls them.
pub const BALLOON_STATS_INTERVAL_S: u16 = 1;

/// Flags the runner sets itself; firecracker refuses a flag given twice.
const OWN_FLAGS: &[OwnFlag] = &[
    // The config file is generated from the spec; extraConfig adds to it.
    OwnFlag::new("--config-file", "microvm.firecracker.extraConfig"),
    OwnFlag::new("--api-sock", "microvm.socket"),
    OwnFlag::new("--no-api", "microvm.socket"),
];

fn code(name: &str) -> String {
    format!("microvm::firecracker::{name}")
}

fn extra_config_path() -> JsonPath {
    path!["firecracker", "extraConfig"]
}

/// The kernel command line: the serial console, reboot (which ends firecracker) on panic, and on
/// x86_64 the i8042 settings for firecracker's minimal keyboard controller, the device that
/// delivers Ctrl-Alt-Del.
fn boot_args(spec: &RunnerSpec) -> String {
    let mut own = vec!["console=ttyS0", "reboot=k", "panic=1"];
    if spec.system.is_x86_64() {
        own.extend(["i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd"]);
    }
    super::kernel_cmdline(spec, &own)
}

/// `microvm.firecracker.cpu` as an inline custom CPU template.
fn cpu_template(spec: &RunnerSpec) -> Result<Option<CpuTemplate>, Box<Diagnostic>> {
    let Some(cpu) = &spec.firecracker.cpu else {
        return Ok(None);
    };
    serde_path_to_error::deserialize::<_, CpuTemplate>(cpu.clone())
        .map(Some)
        .map_err(|e| {
            let at = e.path().to_string();
            Box::new(Diagnostic::error(
                code("cpu"),
                format!(
                    "firecracker.cpu is not a custom CPU template{}: {}",
                    if at == "." {
                        String::new()
                    } else {
                        format!(" (at {at})")
                    },
                    e.inner()
                ),
            )
            .at(path!["firecracker", "cpu"])
            .help("write the template's keys (kvm_capabilities, cpuid_modifiers and msr_modifiers on x86_64; vcpu_features and reg_modifiers on aarch64) as firecracker's docs/cpu_templates/cpu-templates.md describes them"))
        })
}

/// The config file as the spec alone describes it (before `extraConfig`).
pub fn generated_config(spec: &RunnerSpec) -> Result<Config, Box<Diagnostic>> {
    let cpu = cpu_template(spec)?;
    let io_engine = Some(match spec.firecracker.drive_io_engine {
        FirecrackerIoEngine::Async => IoEngine::Async,
        FirecrackerIoEngine::Sync => IoEngine::Sync,
    });
    let drive = |drive_id: String, path: &str, read_only: bool| Drive {
        drive_id,
        partuuid: None,
        is_root_device: false,
        cache_type: None,
        is_read_only: Some(read_only),
        path_on_host: Some(path.to_owned()),
        rate_limiter: None,
        io_engine,
        socket: None,
    };
    let mut drives = Vec::new();
    if let Some(store) = &spec.store_disk {
        drives.push(drive("store".to_owned(), store, true));
    }
    for (i, volume) in spec.volumes.iter().enumerate() {
        drives.push(drive(format!("volume{i}"), &volume.image, volume.read_only));
    }
    let network_interfaces = spec
        .interfaces
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == InterfaceType::Tap)
        .map(|(i, interface)| NetworkInterface {
            iface_id: format!("net{i}"),
            host_dev_name: interface.id.clone(),
            guest_mac: Some(interface.mac.clone()),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        })
        .collect();
    Ok(Config {
        boot_source: BootSource {
            kernel_image_path: spec.kernel.clone(),
            initrd_path: Some(spec.initrd_path.clone()),
            boot_args: Some(boot_args(spec)),
        },
        machine_config: Some(MachineConfig {
            vcpu_count: spec.vcpu,
            mem_size_mib: spec.mem,
            smt: None,
            cpu_template: None,
            track_dirty_pages: None,
            huge_pages: spec.hugepage_mem.then_some(HugePages::Hugetlbfs2M),
        }),
        cpu_config: cpu.map(CpuConfig::Template),
        drives,
        network_interfaces,
        vsock: spec.vsock.cid.map(|cid| Vsock {
            vsock_id: None,
            // Validation refuses cids that do not fit.
            guest_cid: u32::try_from(cid).unwrap_or(u32::MAX),
            uds_path: VSOCK_MUX_SOCKET.to_owned(),
        }),
        balloon: spec.balloon.then(|| Balloon {
            amount_mib: u32::try_from(spec.initial_balloon_mem).unwrap_or(u32::MAX),
            deflate_on_oom: spec.deflate_on_oom,
            stats_polling_interval_s: Some(BALLOON_STATS_INTERVAL_S),
            free_page_hinting: None,
            free_page_reporting: None,
        }),
        entropy: Some(Entropy { rate_limiter: None }),
        logger: None,
        metrics: None,
        mmds_config: None,
        pmem: Vec::new(),
        memory_hotplug: None,
    })
}

/// The config file firecracker gets: the generated one with `extraConfig` merged in.
pub fn config(spec: &RunnerSpec) -> Result<Config, Box<Diagnostic>> {
    let generated = generated_config(spec)?;
    if spec.firecracker.extra_config.is_empty() {
        return Ok(generated);
    }
    let refused = |message: String| {
        Box::new(
            Diagnostic::error(code("extra_config"), message)
                .at(extra_config_path())
                .help("use the keys of firecracker's config file (see firecracker's src/vmm/src/vmm_config/ or tests/framework/vm_config.json), with values of their types"),
        )
    };
    let mut document = serde_json::to_value(&generated)
        .map_err(|e| refused(format!("the generated config does not serialize: {e}")))?;
    config::merge(
        &mut document,
        &Value::Object(spec.firecracker.extra_config.clone()),
    );
    config::parse(document).map_err(|e| {
        let at = if e.path == "." {
            String::new()
        } else {
            format!(" at {}", e.path)
        };
        refused(format!(
            "firecracker.extraConfig makes a config firecracker would refuse{at}: {}",
            e.message
        ))
    })
}

/// Checks of the final config that firecracker makes at start: reported at the spec option
/// that set the value, or at `extraConfig` when the merge changed it.
fn check_config(
    spec: &RunnerSpec,
    generated: &Config,
    merged: &Config,
    findings: &mut Vec<Diagnostic>,
) {
    let where_ = |changed: bool, spec_path: JsonPath| {
        if changed {
            extra_config_path()
        } else {
            spec_path
        }
    };
    if let Some(machine) = &merged.machine_config {
        let changed = generated.machine_config.as_ref() != Some(machine);
        if machine.vcpu_count > MAX_VCPUS || (changed && machine.vcpu_count == 0) {
            findings.push(
                Diagnostic::error(
                    code("vcpu_count"),
                    format!(
                        "firecracker runs 1 to {MAX_VCPUS} vCPUs, not {}",
                        machine.vcpu_count
                    ),
                )
                .at(where_(changed, path!["vcpu"]))
                .help(format!(
                    "set vcpu to at most {MAX_VCPUS}, or use hypervisor = \"cloud-hypervisor\" for more"
                )),
            );
        }
        if machine.smt == Some(true) {
            if !spec.system.is_x86_64() {
                findings.push(
                    Diagnostic::error(code("smt"), "firecracker refuses SMT on aarch64")
                        .at(extra_config_path())
                        .help("remove machine-config.smt from extraConfig"),
                );
            } else if machine.vcpu_count > 1 && machine.vcpu_count % 2 == 1 {
                findings.push(
                    Diagnostic::error(
                        code("smt"),
                        format!(
                            "firecracker refuses SMT with an odd vCPU count ({})",
                            machine.vcpu_count
                        ),
                    )
                    .at(extra_config_path())
                    .help("use an even vcpu, or remove machine-config.smt from extraConfig"),
                );
            }
        }
        let huge = matches!(
            machine.huge_pages,
            Some(HugePages::Hugetlbfs2M | HugePages::Transparent)
        );
        if huge && machine.mem_size_mib % 2 == 1 {
            findings.push(
                Diagnostic::error(
                    code("huge_pages_mem"),
                    format!(
                        "firecracker backs memory with 2 MiB huge pages, which {} MiB is not a multiple of",
                        machine.mem_size_mib
                    ),
                )
                .at(where_(changed, path!["mem"]))
                .help("set mem to an even number of MiB, or hugepageMem = false"),
            );
        }
        if let Some(balloon) = &merged.balloon
            && generated.balloon.as_ref() != Some(balloon)
            && u64::from(balloon.amount_mib) > machine.mem_size_mib
        {
            findings.push(
                Diagnostic::error(
                    code("balloon_size"),
                    format!(
                        "the balloon ({} MiB) is larger than the guest's memory ({} MiB)",
                        balloon.amount_mib, machine.mem_size_mib
                    ),
                )
                .at(extra_config_path())
                .help("keep balloon.amount_mib below mem"),
            );
        }
    }
    if let Some(CpuConfig::Template(template)) = &merged.cpu_config {
        let foreign = template.foreign_keys(spec.system.is_x86_64());
        if !foreign.is_empty() {
            let arch = if spec.system.is_x86_64() {
                "x86_64"
            } else {
                "aarch64"
            };
            findings.push(
                Diagnostic::error(
                    code("cpu"),
                    format!(
                        "firecracker's {arch} CPU templates have no {}",
                        foreign.join(" or ")
                    ),
                )
                .at(where_(
                    generated.cpu_config != merged.cpu_config,
                    path!["firecracker", "cpu"],
                ))
                .help(if spec.system.is_x86_64() {
                    "x86_64 templates take kvm_capabilities, cpuid_modifiers and msr_modifiers"
                } else {
                    "aarch64 templates take kvm_capabilities, vcpu_features and reg_modifiers"
                }),
            );
        }
    }
    if balloon_script(spec)
        && merged
            .balloon
            .as_ref()
            .is_some_and(|b| b.stats_polling_interval_s.unwrap_or(0) == 0)
    {
        findings.push(
            Diagnostic::error(
                code("balloon_stats"),
                "extraConfig turns the balloon statistics off, which microvm-balloon reads",
            )
            .at(extra_config_path())
            .help("leave balloon.stats_polling_interval_s at 1 or more"),
        );
    }
}

fn balloon_script(spec: &RunnerSpec) -> bool {
    spec.socket.is_some() && spec.balloon
}

fn shutdown_script(spec: &RunnerSpec) -> bool {
    // SendCtrlAltDel exists on x86_64 only; aarch64 answers 400.
    spec.socket.is_some() && spec.system.is_x86_64()
}

fn check_extra_args(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    let extra_args = &spec.firecracker.extra_args;
    super::refuse_own_flags(findings, spec.hypervisor, extra_args, OWN_FLAGS);
    let mut seen: Vec<&str> = Vec::new();
    for (i, arg) in extra_args.iter().enumerate() {
        // firecracker's flags are `--name`; anything else is a value.
        let Some(flag) = super::flag_name(arg, OWN_FLAGS).filter(|f| f.starts_with("--")) else {
            continue;
        };
        if flag != arg {
            findings.push(
                Diagnostic::error(
                    code("extra_args"),
                    format!("firecracker does not read {arg:?}: it takes {flag} and its value as two arguments"),
                )
                .at(path!["firecracker", "extraArgs", i])
                .help(format!("write \"{flag}\" and the value as two list items")),
            );
        } else if seen.contains(&flag) && !OWN_FLAGS.iter().any(|own| own.long == flag) {
            findings.push(
                Diagnostic::error(
                    code("extra_args"),
                    format!("firecracker.extraArgs gives {flag} twice, which firecracker refuses"),
                )
                .at(path!["firecracker", "extraArgs", i])
                .help(format!("give {flag} once")),
            );
        }
        seen.push(flag);
    }
}

impl Backend for Firecracker {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let mut findings = Vec::new();
        check_extra_args(spec, &mut findings);
        match generated_config(spec) {
            Err(diagnostic) => findings.push(*diagnostic),
            Ok(generated) => match config(spec) {
                Err(diagnostic) => findings.push(*diagnostic),
                Ok(merged) => check_config(spec, &generated, &merged, &mut findings),
            },
        }
        findings
    }

    fn tools(&self, spec: &RunnerSpec) -> Vec<(Tool, String)> {
        let mut tools = vec![(
            Tool::Firecracker,
            "hypervisor = \"firecracker\" runs it".to_owned(),
        )];
        let mut scripts = Vec::new();
        if shutdown_script(spec) {
            scripts.push("microvm-shutdown");
        }
        if balloon_script(spec) {
            scripts.push("microvm-balloon");
        }
        if !scripts.is_empty() {
            let users = scripts.join(" and ");
            tools.push((
                Tool::Curl,
                format!("{users} talk to the API socket with it"),
            ));
            tools.push((Tool::Sleep, format!("{users} wait for the VM with it")));
        }
        tools
    }

    fn launch(&self, spec: &RunnerSpec) -> Launch {
        let mut args: Vec<Word> = vec![Word::from("--config-file"), runner_file(CONFIG_FILE)];
        let mut steps = Vec::new();
        let mut requirements = Vec::new();
        match &spec.socket {
            Some(socket) => {
                // firecracker will not bind over a socket a previous run left behind.
                steps.push(Step::Remove {
                    path: socket.clone(),
                });
                args.push(Word::from("--api-sock"));
                args.push(Word::from(socket.clone()));
            }
            None => args.push(Word::from("--no-api")),
        }
        let vsock = config(spec).ok().and_then(|c| c.vsock);
        if let Some(vsock) = vsock {
            steps.push(Step::Remove {
                path: vsock.uds_path,
            });
        }
        if spec.tap_interfaces().next().is_some() {
            requirements.push(Requirement::tun());
        }
        args.extend(spec.firecracker.extra_args.iter().cloned().map(Word::from));
        Launch {
            program: Tool::Firecracker,
            after_extra_args: Vec::new(),
            args,
            requirements,
            macvtap_fds: Vec::new(),
            steps,
        }
    }

    fn tap_multi_queue(&self, _: &RunnerSpec) -> bool {
        // firecracker opens each tap with one queue pair.
        false
    }

    fn shutdown_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        shutdown_script(spec).then_some(templates::FIRECRACKER_SHUTDOWN)
    }

    fn balloon_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        balloon_script(spec).then_some(templates::FIRECRACKER_BALLOON)
    }

    fn vsock_mux_socket(&self) -> Option<&'static str> {
        // firecracker's vsock is a hybrid vsock on this socket (`uds_path`).
        Some(VSOCK_MUX_SOCKET)
    }

    fn extra_files(&self, spec: &RunnerSpec) -> Vec<(String, String)> {
        // Validation has accepted the spec, so the config builds; a spec that does not gets no
        // file rather than a wrong one.
        let Ok(config) = config(spec) else {
            return Vec::new();
        };
        match serde_json::to_string_pretty(&config) {
            Ok(text) => vec![(CONFIG_FILE.to_owned(), text + "\n")],
            Err(_) => Vec::new(),
        }
    }
}
