//! How each hypervisor is invoked: one file per hypervisor, each turning a validated spec into a
//! [`Launch`] (the command `microvm-run` execs) plus the scripts it can offer.

pub mod alioth;
pub mod cloud_hypervisor;
pub mod crosvm;
pub mod firecracker;
pub mod gpu;
pub mod kvmtool;
pub mod qemu;
pub mod stratovirt;
pub mod vfkit;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::spec::{Hypervisor, RunnerSpec, System, Tool};

/// One word of a command line. Literal parts are quoted when rendered; variable parts expand
/// a shell variable the runner script sets at run time (such as a device path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Word(pub Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Lit(String),
    Var(String),
}

impl From<String> for Word {
    fn from(value: String) -> Word {
        Word(vec![Part::Lit(value)])
    }
}

impl From<&str> for Word {
    fn from(value: &str) -> Word {
        Word(vec![Part::Lit(value.to_owned())])
    }
}

impl Word {
    /// The literal text, if the word has no run-time parts.
    pub fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(_) => return None,
            }
        }
        Some(out)
    }
}

/// A host file the hypervisor needs. `microvm-run` checks for it before starting, because some
/// hypervisors crash (qemu aborts on vhost=on without /dev/vhost-net) instead of saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub path: String,
    /// Read and write access is needed, not just existence.
    pub read_write: bool,
    /// Printed when the check fails: what is missing, which option asked for it, what to do.
    pub message: String,
}

// The host files several hypervisors need, each stated once with the option that asks for it.
impl Requirement {
    fn new(path: &str, read_write: bool, message: String) -> Requirement {
        Requirement {
            path: path.to_owned(),
            read_write,
            message: format!("microvm-run: {message}"),
        }
    }

    /// `/dev/kvm`, for a hypervisor that has no software CPU to fall back to.
    pub fn kvm(hypervisor: &str) -> Requirement {
        Requirement::new(
            "/dev/kvm",
            true,
            format!(
                "{hypervisor} needs read-write access to /dev/kvm. Enable virtualisation and give the runner's user access (the kvm group)."
            ),
        )
    }

    /// `/dev/net/tun`, which the hypervisor opens to attach a tap interface.
    pub fn tun() -> Requirement {
        Requirement::new(
            "/dev/net/tun",
            true,
            "/dev/net/tun is missing or not accessible, but microvm.interfaces has a tap interface. Load the tun module and give the runner's user access.".to_owned(),
        )
    }

    /// `/dev/vhost-net`, asked for by `interfaces[index].tap.vhost`.
    pub fn vhost_net(index: usize) -> Requirement {
        Requirement::new(
            "/dev/vhost-net",
            true,
            format!(
                "/dev/vhost-net is missing or not accessible, but microvm.interfaces[{index}].tap.vhost = true asks for vhost-net. Load the vhost_net module, or set tap.vhost = false."
            ),
        )
    }

    /// `/dev/vhost-vsock`, for a kernel-backed vsock device.
    pub fn vhost_vsock() -> Requirement {
        Requirement::new(
            "/dev/vhost-vsock",
            true,
            "/dev/vhost-vsock is missing or not accessible, but microvm.vsock.cid is set. Load the vhost_vsock module and give the runner's user access, or set vsock.cid = null.".to_owned(),
        )
    }

    /// `/dev/hugepages`, asked for by `hugepageMem`, for a hypervisor that creates its guest
    /// memory file in that hugetlbfs mount.
    pub fn hugepages() -> Requirement {
        Requirement::new(
            "/dev/hugepages",
            true,
            "/dev/hugepages is missing or not writable, but microvm.hugepageMem = true asks for huge pages. Mount hugetlbfs there, reserve pages (vm.nr_hugepages) and let the runner's user create files in it, or set hugepageMem = false.".to_owned(),
        )
    }
}

/// A macvtap device the runner opens before starting the hypervisor, once per queue, on
/// fixed descriptor numbers the command line refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MacvtapFds {
    pub interface: String,
    pub fds: Vec<u32>,
}

/// Hands out the descriptor numbers `microvm-run` opens macvtap devices on: from 3 on (after
/// stdin, stdout and stderr), one per queue, in the order the interfaces come.
#[derive(Debug)]
pub struct MacvtapFdNumbers {
    next: u32,
    opened: Vec<MacvtapFds>,
}

impl Default for MacvtapFdNumbers {
    fn default() -> MacvtapFdNumbers {
        MacvtapFdNumbers {
            next: 3,
            opened: Vec::new(),
        }
    }
}

impl MacvtapFdNumbers {
    /// The descriptors of `interface`'s `queues` queues.
    pub fn open(&mut self, interface: &str, queues: u32) -> Vec<u32> {
        let fds: Vec<u32> = (self.next..self.next + queues).collect();
        self.next += queues;
        self.opened.push(MacvtapFds {
            interface: interface.to_owned(),
            fds: fds.clone(),
        });
        fds
    }

    /// Every device opened, for [`Launch::macvtap_fds`].
    pub fn opened(self) -> Vec<MacvtapFds> {
        self.opened
    }
}

/// For a hypervisor that opens a macvtap's character device itself: the step that sets a
/// shell variable to `/dev/tap<ifindex>` of the `index`th interface, and that variable.
pub fn macvtap_device(index: usize, interface: &str) -> (Step, String) {
    let var = format!("macvtap{index}");
    let step = Step::MacvtapDevice {
        var: var.clone(),
        interface: interface.to_owned(),
    };
    (step, var)
}

/// Preparation specific to one hypervisor, run by `microvm-run` after `preStart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// Remove a stale file (a control socket the hypervisor refuses to reuse).
    Remove { path: String },
    /// Create a directory.
    MakeDir { path: String },
    /// Set a shell variable to the character device of a macvtap interface.
    MacvtapDevice { var: String, interface: String },
    /// Export an environment variable.
    Export { name: String, value: String },
    /// Start a helper daemon in the background (killed when `microvm-run` exits) and wait up to
    /// 30 s for the socket it creates.
    Background { argv: Vec<Word>, socket: String },
    /// Set `var` to the hypervisor's console setting: `terminal` when stdin is a terminal, else
    /// `piped_prefix` followed by the path of a pipe whose reader copies to stdout. For a
    /// hypervisor that opens its console itself and needs a terminal for stdio (or a path it
    /// can open, which the journal's socket behind a service's stdout is not).
    Console {
        var: String,
        terminal: String,
        piped_prefix: String,
    },
    /// Run `microvm-run` on a pseudo-terminal when stdin is not a terminal (as under systemd),
    /// for a hypervisor whose only console is stdio and needs a terminal. Rendered first, before
    /// anything else runs.
    Terminal,
    /// Set `var` to `elf` when `kernel` is an ELF file, else to `other`: the flag that loads
    /// that kind of kernel image.
    KernelFlag {
        var: String,
        kernel: String,
        elf: String,
        other: String,
    },
    /// Refuse to start when a unix socket path known only at run time (a word with variables,
    /// such as `PWD`) is longer than `max_bytes`, or holds `%`, `?` or a control character, which
    /// a URI would not carry as themselves; `message` says which option to change.
    CheckSocketPath {
        path: Word,
        max_bytes: usize,
        message: String,
    },
    /// Refuse to start unless the host's huge page pool (`/proc/meminfo`: `HugePages_Free` less
    /// `HugePages_Rsvd`, plus what `vm.nr_overcommit_hugepages` still allows, in pages of
    /// `Hugepagesize`) holds `mem_mib` MiB, saying how many pages `microvm.hugepageMem` needs
    /// and how to reserve them.
    FreeHugePages { mem_mib: u64 },
    /// Refuse to start unless the environment variable `var` is set and not empty, saying in
    /// `message` (one line) what needs it: a word built from it would otherwise fail in a
    /// background helper (`set -u`), and `microvm-run` would wait for a socket that never comes.
    RequireVar { var: String, message: String },
    /// Refuse to start unless `program --help` lists `flag` (as a word of its own, followed by
    /// a space, `=` or the end of a line), saying `message` (one line): for a flag that only some
    /// builds of the hypervisor have, which another build would refuse as an unknown argument
    /// without saying which build is needed.
    RequireHelpFlag {
        program: String,
        flag: String,
        message: String,
    },
}

/// The hypervisor command `microvm-run` execs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Launch {
    #[serde(skip)]
    pub program: Tool,
    pub args: Vec<Word>,
    /// Words after the run-time `extraArgsScript` arguments (a trailing positional argument).
    pub after_extra_args: Vec<Word>,
    pub requirements: Vec<Requirement>,
    pub macvtap_fds: Vec<MacvtapFds>,
    pub steps: Vec<Step>,
}

/// The Unix socket, in the VM's working directory, through which a hypervisor with hybrid vsock
/// multiplexes the guest's vsock ports (connect, then `CONNECT <port>`; systemd's ssh proxy
/// calls that `vsock-mux/<path>`). microvm.nix's name, so habits and scripts carry over.
pub const VSOCK_MUX_SOCKET: &str = "notify.vsock";

/// How a hypervisor's virtiofs shares are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtiofsServer {
    /// One virtiofsd per share, on the share's vhost-user socket; the hypervisor gives the
    /// guest the tag itself.
    Virtiofsd,
    /// One virtiofsd per share, told the tag (`--tag`): the hypervisor's vhost-user fs device
    /// takes it from the backend.
    VirtiofsdWithTag,
    /// The hypervisor serves the shared directories itself: no virtiofsd, no socket.
    BuiltIn,
}

/// What one hypervisor contributes to a runner.
pub trait Backend {
    /// Spec checks only this hypervisor needs (on top of the capability table).
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic>;
    /// Programs this hypervisor's scripts run, each with the reason.
    fn tools(&self, spec: &RunnerSpec) -> Vec<(Tool, String)>;
    fn launch(&self, spec: &RunnerSpec) -> Launch;
    /// Whether taps are created multi-queue (must match what the hypervisor opens).
    fn tap_multi_queue(&self, spec: &RunnerSpec) -> bool;
    /// Template of `bin/microvm-shutdown`, when this hypervisor can shut the guest down.
    fn shutdown_template(&self, spec: &RunnerSpec) -> Option<&'static str>;
    /// Template of `bin/microvm-balloon`, when the balloon can be changed at run time.
    fn balloon_template(&self, spec: &RunnerSpec) -> Option<&'static str>;
    /// Where `microvm-balloon` records the balloon size it set, relative to the working
    /// directory, for a hypervisor that only moves the balloon by a difference.
    fn balloon_state_file(&self, _spec: &RunnerSpec) -> Option<String> {
        None
    }
    /// Extra files of the runner (such as a hypervisor config file), by relative path.
    fn extra_files(&self, _spec: &RunnerSpec) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Who serves the virtiofs shares. (qemu sets the tag itself, and virtiofsd's `--tag`
    /// makes qemu 7.1–8.0 crash, so the tag goes to virtiofsd only where it must.)
    fn virtiofs_server(&self) -> VirtiofsServer {
        VirtiofsServer::Virtiofsd
    }
    /// The socket the guest's vsock is reached through, relative to the VM's working
    /// directory, when the hypervisor multiplexes it ([`VSOCK_MUX_SOCKET`]); None when the
    /// host's vsock reaches the guest by its cid.
    fn vsock_mux_socket(&self) -> Option<&'static str> {
        None
    }
}

/// What `microvm-run` runs: the hypervisor's [`Launch`], after the checks that hold whichever
/// hypervisor runs the VM.
///
/// `hugepageMem`: every hypervisor that accepts it (the capability table) backs guest memory
/// with the host's reserved huge pages, and without enough of them free some fail with a message
/// that does not say why (firecracker: "Kernel Loader: failed to load"; qemu: "unable to map
/// backing store"). So `microvm-run` first checks the pool holds the memory the guest has at
/// start: `mem` and the hotplug memory plugged at start.
pub fn launch(spec: &RunnerSpec) -> Launch {
    let mut launch = backend(spec.hypervisor).launch(spec);
    if spec.hugepage_mem {
        launch.steps.insert(
            0,
            Step::FreeHugePages {
                mem_mib: spec.mem.saturating_add(spec.hotplugged_mem()),
            },
        );
    }
    launch
}

pub fn backend(hypervisor: Hypervisor) -> &'static dyn Backend {
    match hypervisor {
        Hypervisor::Qemu => &qemu::Qemu,
        Hypervisor::CloudHypervisor => &cloud_hypervisor::CloudHypervisor,
        Hypervisor::Firecracker => &firecracker::Firecracker,
        Hypervisor::Crosvm => &crosvm::Crosvm,
        Hypervisor::Kvmtool => &kvmtool::Kvmtool,
        Hypervisor::Stratovirt => &stratovirt::Stratovirt,
        Hypervisor::Alioth => &alioth::Alioth,
        Hypervisor::Vfkit => &vfkit::Vfkit,
    }
}

/// The console parameter for the architecture's usual first UART, where the hypervisor
/// emulates that one: an 8250 (`ttyS0`) on x86_64, a PL011 (`ttyAMA0`) on aarch64.
pub fn uart_console(system: System) -> &'static str {
    match system {
        System::X86_64Linux => "console=ttyS0",
        System::Aarch64Linux => "console=ttyAMA0",
    }
}

/// The guest kernel's command line: the hypervisor's own parameters, then `kernelParams`,
/// separated by spaces, then the credential that tells the guest's systemd where to send
/// readiness (`vsock.notify`; the kernel command line reaches every hypervisor's guest, where
/// SMBIOS and fw_cfg credentials do not).
pub fn kernel_cmdline(spec: &RunnerSpec, own: &[&str]) -> String {
    let params = spec.kernel_params.iter().cloned();
    let notify = spec
        .vsock
        .notify_address()
        .map(|address| format!("systemd.set_credential=vmm.notify_socket:{address}"));
    own.iter()
        .map(|s| (*s).to_owned())
        .chain(params)
        .chain(notify)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A boolean as `on`/`off`.
pub fn on_off(value: bool) -> String {
    if value { "on" } else { "off" }.to_owned()
}

/// A boolean as `true`/`false`.
pub fn true_false(value: bool) -> String {
    if value { "true" } else { "false" }.to_owned()
}

/// A path as a command-line word of its own: one starting with `-` would be taken for a flag.
pub fn argv_path(path: &str) -> String {
    if path.starts_with('-') {
        format!("./{path}")
    } else {
        path.to_owned()
    }
}

/// Escapes a value for qemu's `key=value,…` option syntax, where a literal comma is doubled.
pub fn qemu_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// The shell variable `microvm-run` sets to the runner's own directory, for files the runner
/// ships (such as a hypervisor config file).
pub const RUNNER_DIR_VAR: &str = "runner";

/// A word naming a file inside the runner directory.
pub fn runner_file(relative: &str) -> Word {
    Word(vec![
        Part::Var(RUNNER_DIR_VAR.to_owned()),
        Part::Lit(format!("/{relative}")),
    ])
}

/// Joins `key=value` pairs with commas, for option grammars without an escape for commas;
/// [`refuse_chars`] keeps such values out of the spec first.
pub fn kv<'a>(head: &str, pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut out = head.to_owned();
    for (key, value) in pairs {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&value);
    }
    out
}

/// Refuses a value that the hypervisor's option grammar cannot carry (it has no escaping for
/// these characters), naming the option and the place in the spec.
pub fn refuse_chars(
    findings: &mut Vec<Diagnostic>,
    hypervisor: Hypervisor,
    value: &str,
    at: crate::json_path::JsonPath,
    flag: &str,
    forbidden: &[char],
) {
    if let Some(bad) = value.chars().find(|c| forbidden.contains(c)) {
        findings.push(
            Diagnostic::error(
                format!("microvm::{}::unrepresentable", hypervisor.name().replace('-', "_")),
                format!("{hypervisor}'s {flag} syntax cannot carry {bad:?} in a value"),
            )
            .at(at)
            .help("rename the file or name so it has no such character, or use hypervisor = \"qemu\" (its options escape everything)"),
        );
    }
}

/// A single-valued flag of a hypervisor's command line: its long form, its one-dash alias, and
/// the spec option the runner sets it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnFlag {
    pub long: &'static str,
    pub short: Option<&'static str>,
    pub option: &'static str,
}

impl OwnFlag {
    pub const fn new(long: &'static str, option: &'static str) -> OwnFlag {
        OwnFlag {
            long,
            short: None,
            option,
        }
    }

    pub const fn with_short(self, short: &'static str) -> OwnFlag {
        OwnFlag {
            short: Some(short),
            ..self
        }
    }
}

/// The flag a command-line word sets, in its long form: `--x` and `--x=value` set `--x`; a
/// one-dash alias of `flags`, alone or with its value attached (`-c`, `-c=4`, `-c4`), sets its
/// long flag; another one-dash word is returned up to its `=`. A value sets none.
pub fn flag_name<'a>(word: &'a str, flags: &[OwnFlag]) -> Option<&'a str> {
    if word.len() < 2 || !word.starts_with('-') {
        return None;
    }
    if !word.starts_with("--")
        && let Some(flag) = flags
            .iter()
            .find(|f| f.short.is_some_and(|short| word.starts_with(short)))
    {
        return Some(flag.long);
    }
    Some(word.split_once('=').map_or(word, |(flag, _)| flag))
}

/// Whether `extra_args` sets the flag `long` (in any of its spellings).
pub fn sets_flag(extra_args: &[String], long: &str) -> bool {
    extra_args
        .iter()
        .any(|arg| flag_name(arg, &[]) == Some(long))
}

/// Refuses every word of `<hv>.extraArgs` that sets a flag the runner sets itself (`own`):
/// the hypervisor would refuse the flag given twice, or one of the two would silently win.
pub fn refuse_own_flags(
    findings: &mut Vec<Diagnostic>,
    hv: Hypervisor,
    extra_args: &[String],
    own: &[OwnFlag],
) {
    for (i, arg) in extra_args.iter().enumerate() {
        let Some(name) = flag_name(arg, own) else {
            continue;
        };
        let Some(flag) = own.iter().find(|f| f.long == name) else {
            continue;
        };
        findings.push(
            Diagnostic::error(
                format!("microvm::{}::extra_args", hv.name().replace('-', "_")),
                format!(
                    "{hv}.extraArgs sets {name}, which the runner sets from {}",
                    flag.option
                ),
            )
            .at(crate::path![hv.name(), "extraArgs", i])
            .help(format!(
                "remove {name} from extraArgs and set {} instead",
                flag.option
            )),
        );
    }
}

/// The disk values of a `key=value,…` grammar: the store disk and volume images (`disk_flag`)
/// and volume serials (`serial_flag`) keep out the grammar's `syntax` characters. (How long a
/// serial may be is checked for every hypervisor by validation.)
pub fn check_disks(
    findings: &mut Vec<Diagnostic>,
    spec: &RunnerSpec,
    disk_flag: &str,
    serial_flag: &str,
    syntax: &[char],
) {
    let hv = spec.hypervisor;
    if let Some(store) = &spec.store_disk {
        refuse_chars(
            findings,
            hv,
            store,
            crate::path!["storeDisk"],
            disk_flag,
            syntax,
        );
    }
    for (i, volume) in spec.volumes.iter().enumerate() {
        refuse_chars(
            findings,
            hv,
            &volume.image,
            crate::path!["volumes", i, "image"],
            disk_flag,
            syntax,
        );
        if let Some(serial) = &volume.serial {
            refuse_chars(
                findings,
                hv,
                serial,
                crate::path!["volumes", i, "serial"],
                serial_flag,
                syntax,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[OwnFlag] = &[
        OwnFlag::new("--cpus", "microvm.vcpu").with_short("-c"),
        OwnFlag::new("--kernel", "microvm.kernel"),
    ];

    #[test]
    fn paths_never_look_like_flags() {
        assert_eq!(argv_path("-vm.sock"), "./-vm.sock");
        assert_eq!(argv_path("vm.sock"), "vm.sock");
        assert_eq!(argv_path("/abs/-x"), "/abs/-x");
    }

    #[test]
    fn macvtap_descriptors_follow_each_other_from_3() {
        let mut numbers = MacvtapFdNumbers::default();
        assert_eq!(numbers.open("a", 2), [3, 4]);
        assert_eq!(numbers.open("b", 1), [5]);
        let opened = numbers.opened();
        assert_eq!(opened[1].interface, "b");
        assert_eq!(opened[1].fds, [5]);
    }

    #[test]
    fn every_spelling_of_a_flag_names_its_long_form() {
        for word in ["--cpus", "--cpus=4", "-c", "-c=4", "-c4"] {
            assert_eq!(flag_name(word, FLAGS), Some("--cpus"), "{word}");
        }
        assert_eq!(flag_name("--gpu=x", FLAGS), Some("--gpu"));
        assert_eq!(flag_name("-z=1", FLAGS), Some("-z"));
        for value in ["4", "-", "", "path=x"] {
            assert_eq!(flag_name(value, FLAGS), None, "{value}");
        }
    }

    #[test]
    fn own_flags_in_extra_args_are_refused_where_they_stand() {
        let extra: Vec<String> = ["--gpu", "-c4", "backend=2d", "--kernel=/k", "-1"]
            .map(String::from)
            .to_vec();
        let mut findings = Vec::new();
        refuse_own_flags(&mut findings, Hypervisor::Crosvm, &extra, FLAGS);
        let refused: Vec<String> = findings
            .iter()
            .map(|d| format!("{} {}", d.code, d.path().unwrap()))
            .collect();
        assert_eq!(
            refused,
            [
                "microvm::crosvm::extra_args $.crosvm.extraArgs[1]",
                "microvm::crosvm::extra_args $.crosvm.extraArgs[3]",
            ]
        );
        assert!(findings[1].message.contains("--kernel"));
        assert!(sets_flag(&extra, "--kernel") && !sets_flag(&extra, "--mem"));
    }
}
