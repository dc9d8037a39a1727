//! `microvm up`, `down` and `forward`: a VM started with one command from a flake or a built
//! runner, mvmctl's flow, without a host configuration.
//!
//! `up` reads the runner's own spec (`share/microvm/spec.json`), applies the command line's
//! overrides to it (vcpus, memory, hypervisor, ports, shares, volumes, environment), validates
//! the result against the capability table and renders the runner anew into the VM's state
//! directory (`runner/`, which `current` points at). The guest learns what to mount and which
//! environment its services get from the kernel command line (`microvm.up.mount=`,
//! `microvm.up.env=`), which the guest module's `microvm-up.service` reads: no NixOS rebuild
//! for a port or a share.
//!
//! The VM runs as a transient systemd unit (`microvm-up-NAME.service`) when systemd runs, else
//! under `microvm supervise NAME`, a detached process writing the console to `console.log`.
//! `up.json` records how, so `list`, `status`, `logs` and `down` find it.

use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::report::UnitStatus;
use super::state::VmDir;
use crate::host::validate::is_vm_name;
use crate::spec::{
    ForwardEndpoint, ForwardFrom, ForwardPort, ForwardProto, Hypervisor, Interface, InterfaceType,
    RunnerSpec, Share, ShareProto, Volume,
};

use super::state::{
    CONSOLE_LOG, PID_FILE, RECORD, RUNNER_DIR, SOURCE_LINK, UP_NOTIFY_SOCKET as NOTIFY_SOCKET,
};

/// The kernel command line parameters the guest module reads (nixos-modules/microvm/up.nix).
pub const MOUNT_PARAM: &str = "microvm.up.mount";
pub const ENV_PARAM: &str = "microvm.up.env";
pub const NET_PARAM: &str = "microvm.up.net";
/// The kernel's command line holds 2048 bytes on x86; the environment may take half.
const MAX_ENV_PARAM_BYTES: usize = 1024;
/// A host address `-p` binds when none is given: only this host reaches the guest.
const DEFAULT_FORWARD_ADDRESS: &str = "127.0.0.1";

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0:?} is not a valid VM name")]
    BadName(String),
    #[error("bad {flag} {value:?}: {why}")]
    BadArgument {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("{path} is not a directory")]
    MissingDirectory { path: PathBuf },
    #[error("the name {name} is in use: {why}")]
    NameInUse { name: String, why: String },
    #[error("{name} was not started by `microvm up`")]
    NotUp { name: String },
    #[error("there is no VM {name} in {state_dir}")]
    NotFound { name: String, state_dir: PathBuf },
    #[error("{0} is not a runner (it has no bin/microvm-run)")]
    NotARunner(PathBuf),
    #[error("{0} has no share/microvm/spec.json, so `up` cannot apply overrides to it")]
    NoSpec(PathBuf),
    #[error("the overrides make a VM that cannot run:\n{findings}")]
    Refused { findings: String },
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("{name} stopped while starting (it is {status})")]
    DiedWhileStarting { name: String, status: String },
    #[error("{name} did not become ready within {seconds} s; it keeps running")]
    NotReady { name: String, seconds: u64 },
    #[error("{what} failed: {why}")]
    Control { what: String, why: String },
    #[error("{program} failed ({status})")]
    Program { program: String, status: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl UpError {
    /// Stable code, for `--json` (`microvm::up::<name>`).
    pub fn code(&self) -> &'static str {
        use UpError::*;
        match self {
            BadName(..) => "microvm::up::bad_name",
            BadArgument { .. } => "microvm::up::bad_argument",
            MissingDirectory { .. } => "microvm::up::missing_directory",
            NameInUse { .. } => "microvm::up::name_in_use",
            NotUp { .. } => "microvm::up::not_up",
            NotFound { .. } => "microvm::up::not_found",
            NotARunner(..) => "microvm::up::not_a_runner",
            NoSpec(..) => "microvm::up::no_spec",
            Refused { .. } => "microvm::up::refused",
            NotRunning { .. } => "microvm::up::not_running",
            DiedWhileStarting { .. } => "microvm::up::died_while_starting",
            NotReady { .. } => "microvm::up::not_ready",
            Control { .. } => "microvm::up::control",
            Program { .. } => "microvm::up::program_failed",
            Spawn { .. } => "microvm::up::spawn",
            Io { .. } => "microvm::up::io",
        }
    }

    pub fn hint(&self) -> Option<String> {
        Some(match self {
            UpError::NameInUse { name, .. } => format!(
                "stop it with `microvm down {name}`, or pick another name with --name"
            ),
            UpError::NotUp { name } => format!(
                "it is managed by systemd as microvm@{name}.service; `microvm status {name}` shows it"
            ),
            UpError::NotFound { .. } => "`microvm ls` shows the VMs; --state-dir or MICROVM_STATE_DIR picks another state directory".to_owned(),
            UpError::NotRunning { name } => format!("start it with `microvm up --name {name}`"),
            UpError::DiedWhileStarting { name, .. } => format!("`microvm logs {name}` shows why"),
            UpError::NotReady { name, .. } => format!(
                "`microvm logs {name}` shows how far it got; `microvm down {name}` stops it"
            ),
            UpError::MissingDirectory { .. } => {
                "-v takes an existing host directory: create it first".to_owned()
            }
            _ => return None,
        })
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> UpError + '_ {
    move |source| UpError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `-p [ADDRESS:]HOST:GUEST[/tcp|/udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub address: String,
    pub host: u16,
    pub guest: u16,
    pub udp: bool,
}

impl FromStr for PortMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<PortMapping, String> {
        let (ports, udp) = match text.rsplit_once('/') {
            Some((ports, "udp")) => (ports, true),
            Some((ports, "tcp")) => (ports, false),
            Some((_, other)) => return Err(format!("unknown protocol {other:?} (tcp or udp)")),
            None => (text, false),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (address, host, guest) = match parts[..] {
            [host, guest] => (DEFAULT_FORWARD_ADDRESS, host, guest),
            [address, host, guest] if address.parse::<std::net::Ipv4Addr>().is_ok() => {
                (address, host, guest)
            }
            [address, _, _] => return Err(format!("{address:?} is not an IPv4 address")),
            _ => return Err("expected HOST:GUEST, ADDRESS:HOST:GUEST, with /udp for UDP".into()),
        };
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
            Ok(port) => Ok(port),
        };
        Ok(PortMapping {
            address: address.to_owned(),
            host: port(host)?,
            guest: port(guest)?,
            udp,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} → guest {}/{}",
            self.address,
            self.host,
            self.guest,
            if self.udp { "udp" } else { "tcp" }
        )
    }
}

/// `-v HOSTDIR:GUESTPATH[:SIZE_MIB]`: a read-only share, or with a size a volume whose image
/// lives in HOSTDIR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMapping {
    pub host: PathBuf,
    pub guest: String,
    pub size_mib: Option<u64>,
}

/// Where a mount would break the guest; the guest's script refuses these too.
const GUEST_PATHS_REFUSED: &[&str] = &["/nix", "/proc", "/sys", "/dev"];

/// A guest path the guest's mount script takes: absolute, plain characters, no `..`, not one
/// of [`GUEST_PATHS_REFUSED`] or under it (but /nix/var and the like).
fn is_guest_path(path: &str) -> bool {
    let trimmed = path.trim_end_matches('/');
    let refused = GUEST_PATHS_REFUSED.iter().any(|refused| {
        trimmed == *refused
            || (*refused != "/nix" && trimmed.starts_with(&format!("{refused}/")))
            || trimmed.starts_with("/nix/store")
    });
    !refused
        && !path.contains("//")
        && path.starts_with('/')
        && path.len() > 1
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !path.split('/').any(|part| part == ".." || part == ".")
}

impl FromStr for VolumeMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<VolumeMapping, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, guest, size) = match parts[..] {
            [host, guest] => (host, guest, None),
            [host, guest, size] => (host, guest, Some(size)),
            _ => return Err("expected HOSTDIR:GUESTPATH or HOSTDIR:GUESTPATH:SIZE_MIB".into()),
        };
        if host.is_empty() {
            return Err("the host directory is empty".into());
        }
        if !is_guest_path(guest) {
            return Err(format!(
                "{guest:?} is not a guest path `up` can announce: absolute, of letters, digits and . _ / - only, without `..`"
            ));
        }
        let size_mib = match size {
            None => None,
            Some(size) => match size.parse::<u64>() {
                Ok(mib) if mib >= 8 => Some(mib),
                _ => return Err(format!("{size:?} is not a size in MiB (8 or more)")),
            },
        };
        Ok(VolumeMapping {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            size_mib,
        })
    }
}

/// `--env KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSetting {
    pub key: String,
    pub value: String,
}

impl FromStr for EnvSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<EnvSetting, String> {
        let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
        let mut chars = key.chars();
        let valid_key = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(format!(
                "{key:?} is not a variable name (letters, digits, _)"
            ));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err("the value has a control character (a newline?)".into());
        }
        Ok(EnvSetting {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// How `-p` reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardVia {
    /// The hypervisor's user network forwards (qemu's `hostfwd`).
    User,
    /// A tap of the VM's own with an address on each side, and a userspace forwarder on the
    /// host (manage/proxy.rs): for hypervisors without a user network. Needs root.
    Proxy,
}

impl FromStr for ForwardVia {
    type Err = String;

    fn from_str(text: &str) -> Result<ForwardVia, String> {
        match text {
            "user" => Ok(ForwardVia::User),
            "proxy" => Ok(ForwardVia::Proxy),
            _ => Err("user or proxy".into()),
        }
    }
}

/// The command line's changes to the runner's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub hypervisor: Option<Hypervisor>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMapping>,
    pub env: Vec<EnvSetting>,
    /// Unset: the user network where the hypervisor has one, else the proxy.
    pub forward_via: Option<ForwardVia>,
}

/// The point-to-point network of a VM whose ports go through the proxy: its tap, the host's
/// address on it and the guest's, a /30 of 100.64.0.0/10 (shared address space, which no LAN
/// or the internet uses) chosen by the VM's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyNet {
    pub tap: String,
    pub host_address: std::net::Ipv4Addr,
    pub guest_address: std::net::Ipv4Addr,
}

impl ProxyNet {
    pub const PREFIX: u8 = 30;

    pub fn for_vm(name: &str) -> ProxyNet {
        let hash = fnv1a32(name);
        // 2^20 /30 networks in 100.64.0.0/10.
        let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + (hash % (1 << 20)) * 4;
        ProxyNet {
            tap: format!("mvu{hash:08x}"),
            host_address: std::net::Ipv4Addr::from(base + 1),
            guest_address: std::net::Ipv4Addr::from(base + 2),
        }
    }
}

fn fnv1a32(text: &str) -> u32 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// A short stable id for what is mounted at `guest_path`: a share's tag, or a volume's serial
/// and filesystem label (16 bytes at most for ext4, 20 for a virtio serial). Derived from the
/// path so a volume keeps its label whatever order the `-v` flags come in.
pub fn mount_id(guest_path: &str) -> String {
    format!("up-{:08x}", fnv1a32(guest_path))
}

/// The file name of a volume's image in its host directory.
fn image_name(guest_path: &str) -> String {
    let slug = guest_path.trim_matches('/').replace('/', "-");
    format!("{slug}.img")
}

/// A locally administered MAC for the user interface `up` adds, derived from the VM's name.
fn user_mac(name: &str) -> String {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let b = hash.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// The environment as the guest writes it to /run/microvm/env: systemd's EnvironmentFile syntax,
/// each value double-quoted.
pub fn env_file_text(env: &[EnvSetting]) -> String {
    env.iter()
        .map(|e| {
            let value = e.value.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{}=\"{value}\"\n", e.key)
        })
        .collect()
}

/// Applies the overrides to `spec`; `name` is the VM's. Host directories of `-v` must already
/// be absolute (see [`resolve_host_paths`]). Returns the proxy's network when the ports go
/// through it.
pub fn apply(
    spec: &mut RunnerSpec,
    name: &str,
    overrides: &Overrides,
) -> Result<Option<ProxyNet>, UpError> {
    if let Some(cpus) = overrides.cpus {
        spec.vcpu = cpus;
    }
    if let Some(mib) = overrides.memory_mib {
        spec.mem = mib;
    }
    if let Some(hypervisor) = overrides.hypervisor {
        spec.hypervisor = hypervisor;
    }
    // A second `up` starts from the runner it was made from, so nothing here is applied twice;
    // still, a kernel parameter of ours that came with the spec is replaced, not repeated.
    spec.kernel_params.retain(|p| {
        [MOUNT_PARAM, ENV_PARAM, NET_PARAM]
            .iter()
            .all(|param| !p.starts_with(&format!("{param}=")))
    });
    let mut seen = std::collections::BTreeSet::new();
    for volume in &overrides.volumes {
        if !seen.insert(volume.guest.clone()) {
            return Err(UpError::BadArgument {
                flag: "-v",
                value: volume.guest.clone(),
                why: "two -v flags mount at the same guest path".into(),
            });
        }
        let id = mount_id(&volume.guest);
        let host = volume.host.display().to_string();
        match volume.size_mib {
            None => {
                // 9p needs no daemon, where qemu has it; the others share through virtiofsd.
                let proto = if crate::capabilities::supports(spec.hypervisor, "share.9p.readOnly") {
                    ShareProto::NineP
                } else {
                    ShareProto::Virtiofs
                };
                spec.shares.push(Share {
                    tag: id.clone(),
                    socket: (proto == ShareProto::Virtiofs).then(|| format!("{id}.sock")),
                    source: host,
                    security_model: Default::default(),
                    mount_point: volume.guest.clone(),
                    proto,
                    read_only: true,
                    cache: Default::default(),
                    posix_acl: true,
                    extra_args: Vec::new(),
                });
                spec.kernel_params.push(format!(
                    "{MOUNT_PARAM}={}:{id}:{}",
                    proto.name(),
                    volume.guest
                ));
            }
            Some(size) => {
                let serial = crate::capabilities::supports(spec.hypervisor, "volume.serial")
                    .then(|| id.clone());
                spec.volumes.push(Volume {
                    image: volume
                        .host
                        .join(image_name(&volume.guest))
                        .display()
                        .to_string(),
                    serial,
                    direct: false,
                    read_only: false,
                    label: Some(id.clone()),
                    mount_point: Some(volume.guest.clone()),
                    size: Some(size),
                    auto_create: true,
                    mkfs_extra_args: Vec::new(),
                    fs_type: "ext4".to_owned(),
                    image_type: Default::default(),
                    ephemeral: false,
                    contents_file: None,
                });
                spec.kernel_params
                    .push(format!("{MOUNT_PARAM}=disk:{id}:{}", volume.guest));
            }
        }
    }
    let via = overrides.forward_via.unwrap_or(
        if crate::capabilities::supports(spec.hypervisor, "forwardPorts") {
            ForwardVia::User
        } else {
            ForwardVia::Proxy
        },
    );
    let mut proxy = None;
    if !overrides.ports.is_empty() && via == ForwardVia::Proxy {
        let net = ProxyNet::for_vm(name);
        let mac = user_mac(&format!("{name}/proxy"));
        spec.interfaces.push(Interface {
            kind: InterfaceType::Tap,
            id: net.tap.clone(),
            mac: mac.clone(),
            bridge: None,
            macvtap: None,
            tap: Default::default(),
        });
        // tap-up hands the tap to the user that runs the hypervisor: whoever runs `up`,
        // which is root (the tap needs it).
        spec.host.user = "root".to_owned();
        spec.host.group = "root".to_owned();
        spec.kernel_params.push(format!(
            "{NET_PARAM}={mac},{}/{},{}",
            net.guest_address,
            ProxyNet::PREFIX,
            net.host_address
        ));
        proxy = Some(net);
    } else if !overrides.ports.is_empty() {
        if !spec
            .interfaces
            .iter()
            .any(|i| i.kind == InterfaceType::User)
        {
            spec.interfaces.push(Interface {
                kind: InterfaceType::User,
                id: "up".to_owned(),
                mac: user_mac(name),
                bridge: None,
                macvtap: None,
                tap: Default::default(),
            });
        }
        for port in &overrides.ports {
            spec.forward_ports.push(ForwardPort {
                from: ForwardFrom::Host,
                proto: if port.udp {
                    ForwardProto::Udp
                } else {
                    ForwardProto::Tcp
                },
                host: ForwardEndpoint {
                    address: port.address.clone(),
                    port: u32::from(port.host),
                },
                guest: ForwardEndpoint {
                    address: String::new(),
                    port: u32::from(port.guest),
                },
            });
        }
    }
    if !overrides.env.is_empty() {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(env_file_text(&overrides.env));
        if encoded.len() > MAX_ENV_PARAM_BYTES {
            return Err(UpError::BadArgument {
                flag: "--env",
                value: format!("{} variables", overrides.env.len()),
                why: format!(
                    "they take {} bytes of the kernel command line, which gives them {MAX_ENV_PARAM_BYTES}; put large values in a file on a -v share",
                    encoded.len()
                ),
            });
        }
        spec.kernel_params.push(format!("{ENV_PARAM}={encoded}"));
    }
    Ok(proxy)
}

/// Makes the `-v` host directories absolute, refusing missing ones.
pub fn resolve_host_paths(volumes: &mut [VolumeMapping]) -> Result<(), UpError> {
    for volume in volumes {
        match fs::canonicalize(&volume.host) {
            // The sandbox binds it with a unit setting, which splits at whitespace.
            Ok(path)
                if path
                    .to_str()
                    .is_none_or(|p| p.chars().any(crate::render::is_special_in_units)) =>
            {
                return Err(UpError::BadArgument {
                    flag: "-v",
                    value: path.display().to_string(),
                    why: "a path with whitespace, quotes, `$`, `%`, `\\` or `;` cannot be bound into the VM's sandbox; use a plainer directory or a link to it".into(),
                });
            }
            Ok(path) if path.is_dir() => volume.host = path,
            _ => {
                return Err(UpError::MissingDirectory {
                    path: volume.host.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Programs the overrides need that the runner was built without (a volume's mkfs, virtiofsd
/// for a share) are taken from PATH: `up` runs on the host that runs the VM. Returns what was
/// taken.
pub fn fill_missing_tools(spec: &mut RunnerSpec, path: Option<&std::ffi::OsStr>) -> Vec<String> {
    let mut taken = Vec::new();
    for (tool, _) in crate::runner::required_tools(spec) {
        if spec.tools.get(tool).is_some() {
            continue;
        }
        let found = path
            .into_iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(tool.name()))
            .find(|candidate| {
                use std::os::unix::fs::PermissionsExt;
                candidate
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            });
        if let Some(program) = found {
            taken.push(format!("{} ({})", tool.name(), program.display()));
            spec.tools.set(tool, program.display().to_string());
        }
    }
    taken
}

/// Validates the overridden spec; the refusal lists every error with its code and help.
pub fn check(spec: &RunnerSpec) -> Result<(), UpError> {
    let findings: Vec<String> = crate::validate::validate(spec)
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| {
            let mut line = format!("  {} [{}]", d.message, d.code);
            if let Some(path) = d.path() {
                line.push_str(&format!(" at {path}"));
            }
            if let Some(help) = &d.help {
                line.push_str(&format!("\n    help: {help}"));
            }
            line
        })
        .collect();
    if findings.is_empty() {
        Ok(())
    } else {
        Err(UpError::Refused {
            findings: findings.join("\n"),
        })
    }
}

/// How an `up` VM runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Supervisor {
    /// A transient unit of systemd (the user's manager when `user`).
    Systemd { unit: String, user: bool },
    /// `microvm supervise NAME`, detached; its pid is in `up.pid`.
    Process,
}

/// `up.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpRecord {
    /// The runner the overrides were applied to.
    pub source: PathBuf,
    /// The flake it was built from, when it was.
    pub flake: Option<String>,
    pub overrides: Overrides,
    pub supervisor: Supervisor,
    /// `microvm forward` adds to these while the VM runs.
    pub forwards: Vec<PortMapping>,
    /// The tap and addresses the proxy forwards over, when it does.
    pub proxy: Option<ProxyNet>,
}

impl UpRecord {
    pub fn read(vm: &VmDir) -> Option<UpRecord> {
        let text = fs::read_to_string(vm.dir.join(RECORD)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&self, vm: &VmDir) -> Result<(), UpError> {
        let path = vm.dir.join(RECORD);
        let tmp = vm.dir.join(format!(".{RECORD}.new"));
        fs::write(
            &tmp,
            serde_json::to_string_pretty(self).expect("serializes") + "\n",
        )
        .map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))
    }
}

/// Which supervisor `up` uses: `MICROVM_UP_SUPERVISOR` (systemd or process) when set, else
/// systemd when it runs (as PID 1, or a user manager for a user).
fn choose_supervisor(name: &str) -> Supervisor {
    let root = is_root();
    let systemd = match std::env::var("MICROVM_UP_SUPERVISOR").as_deref() {
        Ok("systemd") => true,
        Ok("process") => false,
        _ => {
            Path::new("/run/systemd/system").is_dir()
                && (root
                    || std::env::var_os("XDG_RUNTIME_DIR")
                        .is_some_and(|d| Path::new(&d).join("systemd/private").exists()))
        }
    };
    if systemd {
        Supervisor::Systemd {
            unit: format!("microvm-up-{name}.service"),
            user: !root,
        }
    } else {
        Supervisor::Process
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The state directory when none is given: the host's for root, the user's own otherwise.
pub fn default_state_dir() -> PathBuf {
    state_dir_for(
        is_root(),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn state_dir_for(
    root: bool,
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if root {
        return PathBuf::from("/var/lib/microvms");
    }
    // The XDG base directory spec: a relative XDG_STATE_HOME is to be ignored.
    let state_home = xdg_state_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|home| PathBuf::from(home).join(".local/state")));
    match state_home {
        Some(dir) => dir.join("microvm"),
        None => PathBuf::from("/var/lib/microvms"),
    }
}

/// Whether and how the `up` VM runs now.
pub fn unit_status(vm: &VmDir, record: &UpRecord) -> UnitStatus {
    unit_status_and_job(vm, record).0
}

/// Whether and how the `up` VM runs now, and whether systemd still holds its start job, both
/// from one look: `systemd-run --no-block` returns once the job is queued, and until the job
/// runs the unit is as inactive as one that already died; asked apart, the job may end between
/// the two answers.
fn unit_status_and_job(vm: &VmDir, record: &UpRecord) -> (UnitStatus, bool) {
    match &record.supervisor {
        Supervisor::Systemd { unit, user } => {
            let mut command = Command::new("systemctl");
            if *user {
                command.arg("--user");
            }
            let shown = command
                .args(["show", unit])
                .args(["-p", "ActiveState", "-p", "SubState", "-p", "MainPID"])
                .args(["-p", "Job"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let job_queued = shown.lines().any(|line| {
                line.strip_prefix("Job=")
                    .and_then(|job| job.split_whitespace().next()?.parse::<u32>().ok())
                    .is_some_and(|id| id != 0)
            });
            (UnitStatus::from_show(unit.clone(), &shown), job_queued)
        }
        Supervisor::Process => {
            let pid = supervisor_pid(vm);
            let status = UnitStatus {
                name: format!("microvm supervise {}", vm.name),
                active_state: if pid.is_some() { "active" } else { "inactive" }.to_owned(),
                sub_state: if pid.is_some() { "running" } else { "dead" }.to_owned(),
                main_pid: pid,
            };
            (status, false)
        }
    }
}

/// The live supervisor's pid: the pid file names a process that is `microvm supervise NAME`.
fn supervisor_pid(vm: &VmDir) -> Option<u32> {
    let pid: u32 = fs::read_to_string(vm.dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = words
        .windows(2)
        .any(|w| w[0] == b"supervise" && w[1] == vm.name.as_bytes());
    ours.then_some(pid)
}

pub fn running(vm: &VmDir, record: &UpRecord) -> bool {
    matches!(
        unit_status(vm, record).active_state.as_str(),
        "active" | "activating" | "reloading" | "deactivating"
    )
}

/// What `up` was asked for.
pub struct UpRequest {
    pub flake: Option<String>,
    pub runner: Option<PathBuf>,
    pub name: Option<String>,
    pub overrides: Overrides,
    pub timeout: Duration,
    pub wait: bool,
}

/// The flake attribute and the VM name of `FLAKEREF[#NAME]`.
fn flake_targets(flake: &str) -> (Vec<String>, Option<String>) {
    match flake.split_once('#') {
        Some((base, attr)) if !attr.is_empty() && !attr.contains('.') => (
            vec![
                format!("{base}#nixosConfigurations.{attr}.config.microvm.declaredRunner"),
                format!("{base}#{attr}"),
            ],
            Some(attr.to_owned()),
        ),
        Some(_) => (vec![flake.to_owned()], None),
        None => (vec![flake.to_owned()], None),
    }
}

/// Builds the runner with nix into `out` (a link nix registers as a garbage-collector root).
fn build_runner(flake: &str, out: &Path) -> Result<(), UpError> {
    let (targets, _) = flake_targets(flake);
    let mut last = None;
    for target in &targets {
        eprintln!("microvm: building {target}");
        let status = Command::new("nix")
            .args(["build", "-o"])
            .arg(out)
            .arg(target)
            .status()
            .map_err(|source| UpError::Spawn {
                program: "nix".into(),
                source,
            })?;
        if status.success() {
            return Ok(());
        }
        last = Some(UpError::Program {
            program: format!("nix build {target}"),
            status: status.to_string(),
        });
    }
    Err(last.expect("at least one target"))
}

fn read_spec(runner: &Path) -> Result<RunnerSpec, UpError> {
    let path = runner.join("share/microvm/spec.json");
    let text = fs::read_to_string(&path).map_err(|_| UpError::NoSpec(runner.to_owned()))?;
    serde_json::from_str(&text).map_err(|e| UpError::BadArgument {
        flag: "--runner",
        value: path.display().to_string(),
        why: format!("its spec does not parse: {e}"),
    })
}

/// Renders the spec into `dir/runner` (through a staging directory, so a failure leaves the
/// previous runner) and points `current` at it.
fn install_runner(vm: &VmDir, spec: &RunnerSpec) -> Result<(), UpError> {
    let tree = crate::runner::build(spec, &crate::render::Renderer::new()).map_err(|e| {
        UpError::Control {
            what: "rendering the runner".into(),
            why: e.to_string(),
        }
    })?;
    let staging = vm.dir.join(".runner.new");
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    crate::output::write(&staging, &tree, false).map_err(|e| UpError::Control {
        what: "writing the runner".into(),
        why: e.to_string(),
    })?;
    let runner = vm.dir.join(RUNNER_DIR);
    if fs::symlink_metadata(&runner).is_ok() {
        fs::remove_dir_all(&runner).map_err(io_error(&runner))?;
    }
    fs::rename(&staging, &runner).map_err(io_error(&runner))?;
    let current = vm.dir.join("current");
    if fs::read_link(&current).ok().as_deref() != Some(Path::new(RUNNER_DIR)) {
        let _ = fs::remove_file(&current);
        symlink(RUNNER_DIR, &current).map_err(io_error(&current))?;
    }
    Ok(())
}

pub fn up(state_dir: &Path, mut request: UpRequest) -> Result<(), UpError> {
    resolve_host_paths(&mut request.overrides.volumes)?;
    fs::create_dir_all(state_dir).map_err(io_error(state_dir))?;
    // The runner, and from it the name: --name, else FLAKE#NAME, else the guest's hostName.
    let staging_source = state_dir.join(format!(".up-{}.source", std::process::id()));
    let _ = fs::remove_file(&staging_source);
    let source = match (&request.runner, &request.flake) {
        (Some(runner), _) => fs::canonicalize(runner).map_err(io_error(runner))?,
        (None, flake) => {
            let flake = flake.clone().unwrap_or_else(|| ".".to_owned());
            build_runner(&flake, &staging_source)?;
            fs::canonicalize(&staging_source).map_err(io_error(&staging_source))?
        }
    };
    let result = up_from(state_dir, &request, &source, &staging_source);
    let _ = fs::remove_file(&staging_source);
    result
}

fn up_from(
    state_dir: &Path,
    request: &UpRequest,
    source: &Path,
    staging_source: &Path,
) -> Result<(), UpError> {
    if !source.join("bin/microvm-run").is_file() {
        return Err(UpError::NotARunner(source.to_owned()));
    }
    let mut spec = read_spec(source)?;
    let name = request
        .name
        .clone()
        .or_else(|| request.flake.as_deref().and_then(|f| flake_targets(f).1))
        .unwrap_or_else(|| spec.host_name.clone());
    if !is_vm_name(&name) {
        return Err(UpError::BadName(name));
    }
    let vm = VmDir::new(state_dir, &name);
    let previous = UpRecord::read(&vm);
    match &previous {
        Some(record) if running(&vm, record) => {
            return Err(UpError::NameInUse {
                name,
                why: "a VM of that name is up".into(),
            });
        }
        Some(_) => {}
        None if vm.installed() => {
            return Err(UpError::NameInUse {
                name,
                why: format!(
                    "{} holds a VM installed by `microvm create` or the host",
                    vm.dir.display()
                ),
            });
        }
        None => {}
    }
    let proxy = apply(&mut spec, &name, &request.overrides)?;
    if proxy.is_some() && !is_root() {
        return Err(UpError::Control {
            what: format!("forwarding ports to a {} VM", spec.hypervisor),
            why: "it takes a tap interface of the VM's own, which only root can make".into(),
        });
    }
    let taken = fill_missing_tools(&mut spec, std::env::var_os("PATH").as_deref());
    if !taken.is_empty() {
        eprintln!(
            "microvm: the runner was built without {}; taken from PATH",
            taken.join(", ")
        );
    }
    check(&spec)?;
    fs::create_dir_all(&vm.dir).map_err(io_error(&vm.dir))?;
    // The source link roots the built runner for as long as the VM is here.
    let source_link = vm.dir.join(SOURCE_LINK);
    let _ = fs::remove_file(&source_link);
    if fs::symlink_metadata(staging_source).is_ok() {
        fs::rename(staging_source, &source_link).map_err(io_error(&source_link))?;
    } else {
        symlink(source, &source_link).map_err(io_error(&source_link))?;
    }
    install_runner(&vm, &spec)?;
    let record = UpRecord {
        source: source.to_owned(),
        flake: request.flake.clone(),
        overrides: request.overrides.clone(),
        supervisor: choose_supervisor(&name),
        forwards: Vec::new(),
        proxy,
    };
    record.write(&vm)?;
    if let Some(net) = &record.proxy {
        tap_up(&vm, &spec, net)?;
    }
    start(&vm, &record, &spec)?;
    eprintln!(
        "microvm: started {name} ({}) from {}",
        spec.hypervisor,
        source.display()
    );
    if request.wait {
        wait_until_up(&vm, &record, &spec, request.timeout)?;
    }
    print_reach(&vm, &record, &spec);
    Ok(())
}

/// Properties of the `microvm@` template's sandbox, which the transient unit gets too: the
/// template's `# Sandbox.` section, less what names the host's paths. Home directories are an
/// empty tmpfs instead of inaccessible: `up`'s shares and volumes, often in a home, are bound
/// into it (and into the private /tmp) one by one, which an inaccessible /home would refuse
/// (a real systemd said "mkdir: cannot create directory '/home'").
fn sandbox_properties() -> Vec<String> {
    const TEMPLATE: &str = include_str!("../../../templates/units/microvm@.service");
    TEMPLATE
        .lines()
        .skip_while(|line| !line.starts_with("# Sandbox."))
        .filter(|line| !line.starts_with('#') && line.contains('=') && !line.contains("{{"))
        .filter(|line| !line.starts_with("ReadWritePaths="))
        .map(|line| match line {
            "ProtectHome=yes" => "ProtectHome=tmpfs".to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

/// The host paths of an `up` VM, bound into its sandbox: its directory and the volumes'
/// directories writable, the shares read-only.
fn sandbox_bind_properties(vm: &VmDir, record: &UpRecord) -> Vec<String> {
    let mut properties = vec![format!("BindPaths={}", vm.dir.display())];
    for volume in &record.overrides.volumes {
        let kind = match volume.size_mib {
            Some(_) => "BindPaths",
            None => "BindReadOnlyPaths",
        };
        properties.push(format!("{kind}={}", volume.host.display()));
    }
    properties
}

/// The transient unit of an `up` VM's virtiofsd, beside the VM's own.
fn virtiofsd_unit(name: &str) -> String {
    format!("microvm-up-{name}-virtiofsd.service")
}

/// `systemd-run`, for the user's manager when `user`.
fn systemd_run(user: bool) -> Command {
    let mut command = Command::new("systemd-run");
    if user {
        command.arg("--user");
    }
    command
}

fn run_checked(mut command: Command, what: &str) -> Result<(), UpError> {
    let status = command.status().map_err(|source| UpError::Spawn {
        program: what.to_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(UpError::Program {
            program: what.to_owned(),
            status: status.to_string(),
        })
    }
}

fn microvm_exe() -> Result<PathBuf, UpError> {
    std::env::current_exe().map_err(|source| UpError::Spawn {
        program: "microvm".into(),
        source,
    })
}

fn start(vm: &VmDir, record: &UpRecord, spec: &RunnerSpec) -> Result<(), UpError> {
    let state_dir = vm.dir.parent().expect("a VM's directory has a parent");
    match &record.supervisor {
        Supervisor::Systemd { unit, user } => {
            // virtiofsd runs outside the VM's sandbox, as microvm-virtiofsd@ does beside
            // microvm@; systemd-run returns once it said every share is served.
            let virtiofsd_run = vm.dir.join("current/bin/virtiofsd-run");
            if virtiofsd_run.is_file() {
                let mut command = systemd_run(*user);
                command
                    .arg(format!("--unit={}", virtiofsd_unit(&vm.name)))
                    .arg("--collect")
                    .arg(format!("--working-directory={}", vm.dir.display()))
                    .args(["-p", "Type=notify", "-p", "NotifyAccess=all"])
                    .args(["-p", "KillMode=mixed"])
                    .arg(&virtiofsd_run);
                run_checked(command, "systemd-run (virtiofsd)")?;
            }
            let mut command = systemd_run(*user);
            command
                .arg(format!("--unit={unit}"))
                .arg("--collect")
                .arg("--no-block")
                .arg(format!("--working-directory={}", vm.dir.display()))
                .arg(format!("--description=MicroVM {} (microvm up)", vm.name));
            if spec.vsock.notify.is_some() {
                command.args(["-p", "Type=notify", "-p", "NotifyAccess=all"]);
            }
            command.arg("-p").arg(format!(
                "ExecStopPost=-{}",
                vm.dir.join("current/bin/microvm-discard").display()
            ));
            if !*user {
                for property in sandbox_properties()
                    .into_iter()
                    .chain(sandbox_bind_properties(vm, record))
                {
                    command.arg("-p").arg(property);
                }
            }
            command
                .arg(microvm_exe()?)
                .arg("--state-dir")
                .arg(state_dir)
                .arg("supervise")
                .arg(&vm.name)
                .arg("--without-virtiofsd");
            run_checked(command, "systemd-run")
        }
        Supervisor::Process => {
            let log_path = vm.dir.join(CONSOLE_LOG);
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(io_error(&log_path))?;
            let mut command = Command::new(microvm_exe()?);
            command
                .arg("--state-dir")
                .arg(state_dir)
                .arg("supervise")
                .arg(&vm.name)
                .current_dir(&vm.dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io_error(&log_path))?)
                .stderr(log);
            // Its own session and process group (so `down` can stop all of it), and no
            // terminal's hangup or ^C reaches the VM.
            // SAFETY: setsid is async-signal-safe and touches no memory of ours.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let child = command.spawn().map_err(|source| UpError::Spawn {
                program: "microvm supervise".into(),
                source,
            })?;
            let pid_path = vm.dir.join(PID_FILE);
            fs::write(&pid_path, format!("{}\n", child.id())).map_err(io_error(&pid_path))?;
            Ok(())
        }
    }
}

/// Waits until the guest said it is ready (readiness over vsock), or, for guests that do not
/// report, until the hypervisor is up (its control socket exists); a progress line meanwhile.
fn wait_until_up(
    vm: &VmDir,
    record: &UpRecord,
    spec: &RunnerSpec,
    timeout: Duration,
) -> Result<(), UpError> {
    let started = Instant::now();
    let readiness = spec.vsock.notify.is_some();
    let socket = spec.socket.as_ref().map(|s| vm.dir.join(s));
    let mut last_report = 0;
    loop {
        let (status, job_queued) = unit_status_and_job(vm, record);
        let running = matches!(status.active_state.as_str(), "active" | "activating");
        if !running && !job_queued {
            return Err(UpError::DiedWhileStarting {
                name: vm.name.clone(),
                status: format!("{} ({})", status.active_state, status.sub_state),
            });
        }
        let up = if !running {
            false
        } else if readiness {
            vm.guest_health().is_some_and(|h| h.ready)
        } else {
            match &socket {
                Some(socket) => socket.exists(),
                None => started.elapsed() > Duration::from_secs(2),
            }
        };
        if up {
            eprintln!(
                "microvm: {} is {} after {} s",
                vm.name,
                if readiness { "ready" } else { "up" },
                started.elapsed().as_secs()
            );
            return Ok(());
        }
        let elapsed = started.elapsed().as_secs();
        if elapsed >= timeout.as_secs() {
            return Err(UpError::NotReady {
                name: vm.name.clone(),
                seconds: timeout.as_secs(),
            });
        }
        if elapsed >= last_report + 5 {
            last_report = elapsed;
            eprintln!(
                "microvm: waiting for {} to be {} ({elapsed} s)",
                vm.name,
                if readiness {
                    "ready (its guest reports readiness)"
                } else {
                    "up"
                }
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_reach(vm: &VmDir, record: &UpRecord, spec: &RunnerSpec) {
    let name = &vm.name;
    for port in record.overrides.ports.iter().chain(&record.forwards) {
        println!("  port    {port}");
    }
    for volume in &record.overrides.volumes {
        match volume.size_mib {
            None => println!(
                "  share   {} → {} (read-only)",
                volume.host.display(),
                volume.guest
            ),
            Some(size) => println!(
                "  volume  {} → {} ({size} MiB)",
                volume.host.join(image_name(&volume.guest)).display(),
                volume.guest
            ),
        }
    }
    if spec.vsock.cid.is_some() {
        println!("  ssh     microvm ssh {name}");
    }
    println!("  logs    microvm logs {name} -f");
    println!("  stop    microvm down {name}");
}

fn up_vm(state_dir: &Path, name: &str) -> Result<(VmDir, UpRecord), UpError> {
    if !is_vm_name(name) {
        return Err(UpError::BadName(name.to_owned()));
    }
    let vm = VmDir::new(state_dir, name);
    if !vm.exists() {
        return Err(UpError::NotFound {
            name: name.to_owned(),
            state_dir: state_dir.to_owned(),
        });
    }
    let record = UpRecord::read(&vm).ok_or_else(|| UpError::NotUp {
        name: name.to_owned(),
    })?;
    Ok((vm, record))
}

/// `microvm down NAME`: the guest's power button through `bin/microvm-shutdown`, a bounded
/// wait, then the supervisor is stopped (and with it what is left of the hypervisor).
pub fn down(state_dir: &Path, name: &str, timeout: Duration) -> Result<(), UpError> {
    let (vm, record) = up_vm(state_dir, name)?;
    if !running(&vm, &record) {
        return Err(UpError::NotRunning {
            name: name.to_owned(),
        });
    }
    let shutdown = vm.dir.join("current/bin/microvm-shutdown");
    let started = Instant::now();
    let mut clean = false;
    if shutdown.is_file() {
        eprintln!("microvm: pressing {name}'s power button");
        let status = Command::new(&shutdown)
            .current_dir(&vm.dir)
            .arg("--timeout")
            .arg(timeout.as_secs().to_string())
            .status();
        if let Err(e) = status {
            eprintln!("microvm: cannot run {}: {e}", shutdown.display());
        }
        while running(&vm, &record) && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(200));
        }
        clean = !running(&vm, &record);
    }
    if !clean {
        eprintln!(
            "microvm: {name} did not power off within {} s; stopping it",
            timeout.as_secs()
        );
        stop_supervisor(&vm, &record)?;
    }
    let _ = fs::remove_file(vm.dir.join(PID_FILE));
    stop_virtiofsd_unit(&vm, &record);
    after_stop(&vm);
    println!(
        "microvm: {name} is down{}",
        if clean {
            " (powered off)"
        } else {
            " (stopped)"
        }
    );
    Ok(())
}

/// Stops the VM's virtiofsd unit (systemd runs it beside the VM's), when it has one.
fn stop_virtiofsd_unit(vm: &VmDir, record: &UpRecord) {
    if let Supervisor::Systemd { user, .. } = &record.supervisor
        && vm.dir.join("current/bin/virtiofsd-run").is_file()
    {
        let mut command = Command::new("systemctl");
        if *user {
            command.arg("--user");
        }
        let _ = command.args(["stop", &virtiofsd_unit(&vm.name)]).status();
    }
}

/// Stops the VM at once (after a graceful attempt, or for `remove`) and what runs beside it.
pub fn stop_supervisor(vm: &VmDir, record: &UpRecord) -> Result<(), UpError> {
    let result = stop_vm(vm, record);
    stop_virtiofsd_unit(vm, record);
    after_stop(vm);
    result
}

fn stop_vm(vm: &VmDir, record: &UpRecord) -> Result<(), UpError> {
    match &record.supervisor {
        Supervisor::Systemd { unit, user } => {
            let mut command = Command::new("systemctl");
            if *user {
                command.arg("--user");
            }
            let status =
                command
                    .args(["stop", unit])
                    .status()
                    .map_err(|source| UpError::Spawn {
                        program: "systemctl".into(),
                        source,
                    })?;
            if status.success() {
                Ok(())
            } else {
                Err(UpError::Program {
                    program: format!("systemctl stop {unit}"),
                    status: status.to_string(),
                })
            }
        }
        Supervisor::Process => {
            let Some(pid) = supervisor_pid(vm) else {
                return Ok(());
            };
            // The supervisor leads its own process group: the runner and virtiofsd are in it.
            let group = -(pid as i32);
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(group, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while supervisor_pid(vm).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if supervisor_pid(vm).is_some() {
                // SAFETY: as above.
                unsafe { libc::kill(group, libc::SIGKILL) };
            }
            Ok(())
        }
    }
}

/// `microvm forward NAME -p HOST:GUEST`: a forward added to the running VM (qemu's user
/// network, through QMP's `hostfwd_add`). It lasts until the VM stops.
pub fn forward(state_dir: &Path, name: &str, ports: &[PortMapping]) -> Result<(), UpError> {
    let (vm, mut record) = up_vm(state_dir, name)?;
    if !running(&vm, &record) {
        return Err(UpError::NotRunning {
            name: name.to_owned(),
        });
    }
    let spec = vm
        .spec()
        .ok_or_else(|| UpError::NoSpec(vm.dir.join("current")))?;
    if record.proxy.is_some() {
        return forward_by_proxy(&vm, record, ports);
    }
    if spec.hypervisor != Hypervisor::Qemu {
        return Err(UpError::Control {
            what: format!("forwarding on {}", spec.hypervisor),
            why: format!(
                "{name} has no network to forward over; `microvm up -p …` gives it the proxy's"
            ),
        });
    }
    let Some(index) = spec
        .interfaces
        .iter()
        .position(|i| i.kind == InterfaceType::User)
    else {
        return Err(UpError::Control {
            what: "forwarding".into(),
            why: format!("{name} has no user network; start it with `microvm up -p …` to get one"),
        });
    };
    let socket = spec
        .socket
        .as_ref()
        .map(|s| vm.dir.join(s))
        .ok_or_else(|| UpError::Control {
            what: "forwarding".into(),
            why: "the runner has no QMP socket (microvm.socket)".into(),
        })?;
    let netdev = crate::hypervisor::qemu::netdev_id(index);
    for port in ports {
        let rule = format!(
            "{}:{}:{}-:{}",
            if port.udp { "udp" } else { "tcp" },
            port.address,
            port.host,
            port.guest
        );
        qmp_human_command(&socket, &format!("hostfwd_add {netdev} {rule}"))?;
        println!("microvm: {name}: {port}");
        record.forwards.push(port.clone());
    }
    record.write(&vm)
}

/// Hands the forwards to the supervisor (through `up.json`, which it reads every second) and
/// waits until it listens on each TCP one.
fn forward_by_proxy(
    vm: &VmDir,
    mut record: UpRecord,
    ports: &[PortMapping],
) -> Result<(), UpError> {
    for port in ports {
        if record
            .overrides
            .ports
            .iter()
            .chain(&record.forwards)
            .any(|p| p.host == port.host && p.udp == port.udp)
        {
            return Err(UpError::BadArgument {
                flag: "-p",
                value: port.to_string(),
                why: "that host port is forwarded already".into(),
            });
        }
    }
    record.forwards.extend(ports.iter().cloned());
    record.write(vm)?;
    for port in ports.iter().filter(|p| !p.udp) {
        let address = match port.address.as_str() {
            "0.0.0.0" => "127.0.0.1",
            other => other,
        };
        let listen = format!("{address}:{}", port.host);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(&listen).is_err() {
            if Instant::now() > deadline {
                return Err(UpError::Control {
                    what: format!("forwarding {port}"),
                    why: format!(
                        "nothing listens on {listen} after 5 s; `microvm logs {}` says why",
                        vm.name
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("microvm: {}: {port}", vm.name);
    }
    Ok(())
}

/// Runs one human monitor command over QMP; qemu's answer text, when not empty, is an error.
fn qmp_human_command(socket: &Path, command_line: &str) -> Result<(), UpError> {
    let failed = |why: String| UpError::Control {
        what: format!("QMP {command_line:?} on {}", socket.display()),
        why,
    };
    let stream = UnixStream::connect(socket).map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| failed(e.to_string()))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| failed(e.to_string()))?);
    let mut writer = stream;
    let read_reply = |reader: &mut BufReader<UnixStream>| -> Result<serde_json::Value, UpError> {
        let mut line = String::new();
        loop {
            line.clear();
            if reader
                .read_line(&mut line)
                .map_err(|e| failed(e.to_string()))?
                == 0
            {
                return Err(failed("qemu closed the connection".into()));
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| failed(e.to_string()))?;
            // Events come between replies.
            if value.get("return").is_some() || value.get("error").is_some() {
                return Ok(value);
            }
        }
    };
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| failed(format!("no greeting: {e}")))?;
    writeln!(writer, r#"{{"execute":"qmp_capabilities"}}"#).map_err(|e| failed(e.to_string()))?;
    read_reply(&mut reader)?;
    let request = serde_json::json!({
        "execute": "human-monitor-command",
        "arguments": { "command-line": command_line },
    });
    writeln!(writer, "{request}").map_err(|e| failed(e.to_string()))?;
    let reply = read_reply(&mut reader)?;
    if let Some(error) = reply.get("error") {
        return Err(failed(error["desc"].as_str().unwrap_or("error").to_owned()));
    }
    match reply["return"].as_str().map(str::trim) {
        Some("") | None => Ok(()),
        Some(text) => Err(failed(text.to_owned())),
    }
}

/// `microvm supervise NAME` (hidden): what runs an `up` VM, under systemd or detached. Runs
/// the runner's virtiofsd (unless systemd runs it beside), waits for its sockets, serves the
/// proxy's forwards (the initial ones, then those `microvm forward` adds to `up.json`), takes
/// the runner's sd_notify messages when no unit does (so microvm-notify-bridge runs and keeps
/// health.json), and runs the runner.
pub fn supervise(state_dir: &Path, name: &str, without_virtiofsd: bool) -> Result<(), UpError> {
    let vm = VmDir::new(state_dir, name);
    let runner = vm.dir.join("current");
    let record = UpRecord::read(&vm).ok_or_else(|| UpError::NotUp {
        name: name.to_owned(),
    })?;
    let spec = vm.spec().ok_or_else(|| UpError::NoSpec(runner.clone()))?;
    eprintln!("microvm supervise: starting {name}");
    let mut notify_env = std::env::var_os("NOTIFY_SOCKET");
    let notify_path = vm.dir.join(NOTIFY_SOCKET);
    if notify_env.is_none() {
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).map_err(io_error(&notify_path))?;
        // Drain the messages so the sender never blocks; what they say is in health.json.
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while notify.recv(&mut buffer).is_ok() {}
        });
        notify_env = Some(notify_path.clone().into_os_string());
    }
    let notify_env = notify_env.expect("set above");
    let mut virtiofsd = None;
    let virtiofsd_run = runner.join("bin/virtiofsd-run");
    if virtiofsd_run.is_file() && !without_virtiofsd {
        let mut child = Command::new(&virtiofsd_run)
            .current_dir(&vm.dir)
            .env("NOTIFY_SOCKET", &notify_env)
            .spawn()
            .map_err(|source| UpError::Spawn {
                program: "virtiofsd-run".into(),
                source,
            })?;
        let sockets: Vec<PathBuf> = spec
            .shares
            .iter()
            .filter(|s| s.proto == ShareProto::Virtiofs)
            .filter_map(|s| s.socket.as_ref().map(|socket| vm.dir.join(socket)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sockets.iter().all(|s| s.exists()) {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                return Err(UpError::Control {
                    what: "virtiofsd-run".into(),
                    why: "it did not make every share's socket within 30 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        virtiofsd = Some(child);
    }
    if let Some(net) = &record.proxy {
        let mut serving = Vec::new();
        for port in record.overrides.ports.iter().chain(&record.forwards) {
            serve_forward(net, port).map_err(|e| UpError::Control {
                what: format!("forwarding {port}"),
                why: e.to_string(),
            })?;
            serving.push(port.clone());
        }
        let vm_for_thread = VmDir::new(state_dir, name);
        let net = net.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(record) = UpRecord::read(&vm_for_thread) else {
                    continue;
                };
                for port in record.forwards {
                    if !serving.contains(&port) {
                        match serve_forward(&net, &port) {
                            Ok(()) => eprintln!("microvm supervise: forwarding {port}"),
                            Err(e) => eprintln!("microvm supervise: cannot forward {port}: {e}"),
                        }
                        serving.push(port);
                    }
                }
            }
        });
    }
    let status = Command::new(runner.join("bin/microvm-run"))
        .current_dir(&vm.dir)
        .env("NOTIFY_SOCKET", &notify_env)
        .status();
    if let Some(mut child) = virtiofsd {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    after_stop(&vm);
    let _ = fs::remove_file(&notify_path);
    let _ = fs::remove_file(vm.dir.join(PID_FILE));
    match status {
        Ok(status) => {
            eprintln!("microvm supervise: {name} stopped ({status})");
            Ok(())
        }
        Err(source) => Err(UpError::Spawn {
            program: "microvm-run".into(),
            source,
        }),
    }
}

fn serve_forward(net: &ProxyNet, port: &PortMapping) -> io::Result<()> {
    let address: std::net::IpAddr = port
        .address
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    super::proxy::spawn(super::proxy::Forward {
        listen: std::net::SocketAddr::new(address, port.host),
        target: std::net::SocketAddr::new(net.guest_address.into(), port.guest),
        udp: port.udp,
    })
}

/// Makes the proxy's tap (the runner's `tap-up`) and gives the host its address on it.
fn tap_up(vm: &VmDir, spec: &RunnerSpec, net: &ProxyNet) -> Result<(), UpError> {
    let mut command = Command::new(vm.dir.join("current/bin/tap-up"));
    command.current_dir(&vm.dir);
    run_checked(command, "tap-up")?;
    let ip = spec.tools.ip.clone().unwrap_or_else(|| "ip".to_owned());
    let mut command = Command::new(&ip);
    command
        .args(["address", "replace"])
        .arg(format!("{}/{}", net.host_address, ProxyNet::PREFIX))
        .args(["dev", &net.tap]);
    run_checked(command, "ip address replace")
}

/// What is left to undo once the hypervisor has exited: ephemeral volumes (the runner's
/// `microvm-discard`) and the proxy's tap (`tap-down`). Both may run twice.
fn after_stop(vm: &VmDir) {
    for script in ["microvm-discard", "tap-down"] {
        let path = vm.dir.join("current/bin").join(script);
        if path.is_file() {
            let _ = Command::new(&path).current_dir(&vm.dir).status();
        }
    }
}

/// `microvm logs NAME` of an `up` VM: its transient unit's journal, or its console file.
pub fn logs(vm: &VmDir, record: &UpRecord, follow: bool, lines: u32) -> Result<(), UpError> {
    let mut command = match &record.supervisor {
        Supervisor::Systemd { unit, user } => {
            let mut command = Command::new("journalctl");
            command
                .arg(if *user { "--user-unit" } else { "-u" })
                .arg(unit)
                .arg("-n")
                .arg(lines.to_string());
            if follow {
                command.arg("-f");
            }
            command
        }
        Supervisor::Process => {
            let mut command = Command::new("tail");
            command.arg("-n").arg(lines.to_string());
            if follow {
                command.arg("-F");
            }
            command.arg(vm.dir.join(CONSOLE_LOG));
            command
        }
    };
    let program = command.get_program().to_string_lossy().into_owned();
    let source = command.exec();
    Err(UpError::Spawn { program, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_spec(hypervisor: &str) -> RunnerSpec {
        let mut spec: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/ok/qemu-minimal.json"))
                .unwrap();
        spec["hypervisor"] = hypervisor.into();
        if !crate::capabilities::supports(
            Hypervisor::from_name(hypervisor).unwrap(),
            "controlSocket",
        ) {
            spec["socket"] = serde_json::Value::Null;
        }
        serde_json::from_value(spec).unwrap()
    }

    fn overrides_with_port() -> Overrides {
        Overrides {
            ports: vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()],
            ..Overrides::default()
        }
    }

    #[test]
    fn ports_of_a_hypervisor_without_user_network_go_through_the_proxys_tap() {
        for hypervisor in [
            "cloud-hypervisor",
            "firecracker",
            "crosvm",
            "stratovirt",
            "alioth",
        ] {
            let mut spec = minimal_spec(hypervisor);
            let net = apply(&mut spec, "web", &overrides_with_port())
                .unwrap()
                .unwrap_or_else(|| panic!("{hypervisor}: no proxy"));
            assert_eq!(net, ProxyNet::for_vm("web"));
            assert!(spec.forward_ports.is_empty(), "{hypervisor}");
            let tap = &spec.interfaces[0];
            assert_eq!(
                (tap.kind, tap.id.as_str()),
                (InterfaceType::Tap, net.tap.as_str())
            );
            assert!(tap.id.len() <= 15, "an interface name holds 15 bytes");
            assert_eq!(
                spec.kernel_params.last().unwrap(),
                &format!(
                    "microvm.up.net={},{}/30,{}",
                    tap.mac, net.guest_address, net.host_address
                )
            );
            assert_eq!(spec.host.user, "root");
            // The spec, tools aside, is one the hypervisor takes.
            let errors: Vec<String> = crate::validate::validate(&spec)
                .into_iter()
                .filter(|d| d.is_error() && d.code != "microvm::validate::missing_tool")
                .map(|d| d.code)
                .collect();
            assert!(errors.is_empty(), "{hypervisor}: {errors:?}");
        }
        // Both ends in one /30 of 100.64.0.0/10, different per VM.
        let net = ProxyNet::for_vm("web");
        assert_eq!(
            u32::from(net.host_address) & !3,
            u32::from(net.guest_address) & !3
        );
        assert_eq!(net.host_address.octets()[0], 100);
        assert!((64..128).contains(&net.host_address.octets()[1]));
        assert_ne!(net, ProxyNet::for_vm("db"));
    }

    #[test]
    fn ports_of_qemu_go_through_its_user_network_unless_asked_otherwise() {
        let mut spec = minimal_spec("qemu");
        assert_eq!(
            apply(&mut spec, "web", &overrides_with_port()).unwrap(),
            None
        );
        assert_eq!(spec.interfaces[0].kind, InterfaceType::User);
        assert_eq!(spec.forward_ports.len(), 2);
        assert_eq!(spec.forward_ports[1].proto, ForwardProto::Udp);
        let mut spec = minimal_spec("qemu");
        let overrides = Overrides {
            forward_via: Some(ForwardVia::Proxy),
            ..overrides_with_port()
        };
        assert!(apply(&mut spec, "web", &overrides).unwrap().is_some());
        assert_eq!(spec.interfaces[0].kind, InterfaceType::Tap);
        // A second up starts from the runner's spec again: nothing of ours is doubled.
        let before = spec.kernel_params.len();
        apply(&mut spec, "web", &Overrides::default()).unwrap();
        assert_eq!(spec.kernel_params.len(), before - 1);
    }

    #[test]
    fn root_keeps_the_hosts_state_directory_and_users_their_own() {
        let some = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            state_dir_for(true, some("/x"), some("/root")),
            Path::new("/var/lib/microvms")
        );
        assert_eq!(
            state_dir_for(false, some("/x/state"), some("/home/me")),
            Path::new("/x/state/microvm")
        );
        assert_eq!(
            state_dir_for(false, some("relative"), some("/home/me")),
            Path::new("/home/me/.local/state/microvm")
        );
        assert_eq!(
            state_dir_for(false, None, some("/home/me")),
            Path::new("/home/me/.local/state/microvm")
        );
    }

    #[test]
    fn port_mappings_parse() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PortMapping {
                address: "127.0.0.1".into(),
                host: 8080,
                guest: 80,
                udp: false
            }
        );
        let p: PortMapping = "0.0.0.0:53:5353/udp".parse().unwrap();
        assert_eq!(
            (p.address.as_str(), p.host, p.guest, p.udp),
            ("0.0.0.0", 53, 5353, true)
        );
        for bad in [
            "8080", "0:80", "80:70000", "a:b", "x:1:2", "1:2/sctp", "1:2:3:4",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_mappings_parse() {
        let v: VolumeMapping = "./data:/mnt/data:1024".parse().unwrap();
        assert_eq!(v.size_mib, Some(1024));
        assert_eq!(v.guest, "/mnt/data");
        for bad in [
            "./d",
            "./d:mnt",
            "./d:/mnt/../etc",
            "./d:/mnt/x y",
            "./d:/mnt:x",
            "./d:/mnt:4",
            ":/mnt",
            "./d:/",
            "./d://",
            "./d:/nix",
            "./d:/nix/store/x",
            "./d:/proc/x",
            "./d:/dev",
            "a:/b:1:2",
        ] {
            assert!(bad.parse::<VolumeMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn env_settings_parse_and_quote() {
        let e: EnvSetting = "GREETING=say \"hi\" \\o/".parse().unwrap();
        assert_eq!(env_file_text(&[e]), "GREETING=\"say \\\"hi\\\" \\\\o/\"\n");
        for bad in ["NOVALUE", "1A=x", "A-B=x", "A=x\ny"] {
            assert!(bad.parse::<EnvSetting>().is_err(), "{bad}");
        }
        let e: EnvSetting = "EMPTY=".parse().unwrap();
        assert_eq!(e.value, "");
    }

    #[test]
    fn mount_ids_are_stable_and_fit_labels_and_serials() {
        let id = mount_id("/mnt/data");
        assert_eq!(id, mount_id("/mnt/data"));
        assert_ne!(id, mount_id("/mnt/date"));
        assert!(id.len() <= 16, "{id}");
        assert_eq!(image_name("/mnt/data/x"), "mnt-data-x.img");
    }

    #[test]
    fn flake_targets_try_a_nixos_configuration_then_a_package() {
        assert_eq!(flake_targets("."), (vec![".".to_owned()], None));
        let (targets, name) = flake_targets("/f#web");
        assert_eq!(
            targets,
            [
                "/f#nixosConfigurations.web.config.microvm.declaredRunner",
                "/f#web"
            ]
        );
        assert_eq!(name.as_deref(), Some("web"));
        assert_eq!(flake_targets("/f#packages.x.y").1, None);
    }

    #[test]
    fn the_transient_unit_gets_the_templates_sandbox() {
        let properties = sandbox_properties();
        for expected in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "DevicePolicy=closed",
            "DeviceAllow=/dev/kvm rw",
            "ProtectHome=tmpfs",
        ] {
            assert!(
                properties.iter().any(|p| p == expected),
                "{expected}: {properties:?}"
            );
        }
        assert!(
            properties
                .iter()
                .all(|p| !p.contains("{{") && !p.starts_with("User="))
        );
    }
}
