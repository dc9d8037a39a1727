//! The runner spec: everything the generator needs to build a runner, as one JSON document.
//!
//! Field names follow the `microvm.*` option names so that the Nix side can build the spec by
//! copying option values. Every struct denies unknown fields: a typo in a hand-written spec or a
//! drift between Nix and Rust is an error, never a silently ignored value.

mod device;
mod forward_port;
mod graphics;
mod hypervisor_options;
mod interface;
mod share;
mod tools;
mod virtiofsd;
pub mod volume;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use device::{Device, DeviceBus, QemuDeviceOptions};
pub use forward_port::{ForwardEndpoint, ForwardFrom, ForwardPort, ForwardProto};
pub use graphics::{Graphics, GraphicsBackend, VulkanProtocol};
pub use hypervisor_options::{
    CloudHypervisorOptions, CrosvmOptions, FirecrackerIoEngine, FirecrackerOptions, PcieRootPort,
    QemuOptions, VfkitLogLevel, VfkitOptions, VfkitRosetta,
};
pub use interface::{Interface, InterfaceType, Macvtap, MacvtapMode, TapOptions};
pub use share::{Share, ShareCache, ShareProto, ShareSecurityModel};
pub use tools::{Tool, Tools};
pub use virtiofsd::{InodeFileHandles, VirtiofsdOptions};
pub use volume::{ImageType, Volume};

/// The spec version this generator reads. Bumped on any incompatible change.
pub const SPEC_VERSION: u32 = 1;

/// The eight hypervisors, spelled as `microvm.hypervisor` spells them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Hypervisor {
    Qemu,
    CloudHypervisor,
    Firecracker,
    Crosvm,
    Kvmtool,
    Stratovirt,
    Alioth,
    Vfkit,
}

impl Hypervisor {
    pub const ALL: [Hypervisor; 8] = [
        Hypervisor::Qemu,
        Hypervisor::CloudHypervisor,
        Hypervisor::Firecracker,
        Hypervisor::Crosvm,
        Hypervisor::Kvmtool,
        Hypervisor::Stratovirt,
        Hypervisor::Alioth,
        Hypervisor::Vfkit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hypervisor::Qemu => "qemu",
            Hypervisor::CloudHypervisor => "cloud-hypervisor",
            Hypervisor::Firecracker => "firecracker",
            Hypervisor::Crosvm => "crosvm",
            Hypervisor::Kvmtool => "kvmtool",
            Hypervisor::Stratovirt => "stratovirt",
            Hypervisor::Alioth => "alioth",
            Hypervisor::Vfkit => "vfkit",
        }
    }

    pub fn from_name(name: &str) -> Option<Hypervisor> {
        Hypervisor::ALL.into_iter().find(|hv| hv.name() == name)
    }
}

impl std::fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The guest's Nix system double. It decides the kernel console device and machine defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum System {
    #[serde(rename = "x86_64-linux")]
    X86_64Linux,
    #[serde(rename = "aarch64-linux")]
    Aarch64Linux,
}

impl System {
    pub fn is_x86_64(self) -> bool {
        self == System::X86_64Linux
    }
}

/// Who owns the host-side resources the runner's helper scripts create (taps, macvtap devices,
/// VFIO groups). On a NixOS host this is the `microvm` user of the host module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSettings {
    /// User that runs the hypervisor and owns taps and device nodes.
    #[serde(default = "default_host_user")]
    pub user: String,
    /// Group that owns device nodes handed to the hypervisor.
    #[serde(default = "default_host_group")]
    pub group: String,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            user: default_host_user(),
            group: default_host_group(),
        }
    }
}

fn default_host_user() -> String {
    "microvm".to_owned()
}

fn default_host_group() -> String {
    "kvm".to_owned()
}

/// `microvm.vsock.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vsock {
    /// Guest context id; setting it adds a vsock device. 0, 1 and 2 are reserved.
    #[serde(default)]
    pub cid: Option<u64>,
    /// `microvm.readiness`: the guest reports readiness and health to the host over vsock
    /// (null: it does not). Needs `cid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<VsockNotify>,
}

/// Guest readiness over vsock: the guest's systemd sends `READY=1` (and its health checks
/// their state changes) to host port `port`, where `microvm-notify-bridge` listens and
/// forwards to the unit's `NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VsockNotify {
    /// The host's vsock port the guest sends to. Under qemu, crosvm, kvmtool and stratovirt
    /// (the host kernel's vsock) it must be unique among the host's VMs.
    pub port: u32,
}

impl Vsock {
    /// The `vmm.notify_socket` credential's value the guest's systemd reads.
    pub fn notify_address(&self) -> Option<String> {
        self.notify
            .as_ref()
            .map(|n| format!("vsock-stream:2:{}", n.port))
    }
}

/// Everything a runner needs, as the Nix side (or a person) writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "microvm runner spec")]
pub struct RunnerSpec {
    /// Version of this format; this generator reads version 1.
    pub spec_version: u32,
    /// The guest's host name (`networking.hostName`); names the VM process and its files.
    pub host_name: String,
    /// `microvm.hypervisor`.
    pub hypervisor: Hypervisor,
    /// The guest's system.
    #[serde(default = "default_system")]
    pub system: System,
    /// `microvm.vcpu`: number of virtual CPUs.
    #[serde(default = "default_vcpu")]
    pub vcpu: u32,
    /// `microvm.mem`: guest RAM in MiB.
    #[serde(default = "default_mem")]
    pub mem: u64,
    /// `microvm.hugepageMem`: back guest RAM with huge pages.
    #[serde(default)]
    pub hugepage_mem: bool,
    /// `microvm.hotplugMem`: virtio-mem hotplug region in MiB (0: none).
    #[serde(default)]
    pub hotplug_mem: u64,
    /// `microvm.hotpluggedMem`: hotplug memory plugged at start in MiB (null: all of hotplugMem).
    #[serde(default)]
    pub hotplugged_mem: Option<u64>,
    /// `microvm.balloon`: add a virtio-balloon device.
    #[serde(default)]
    pub balloon: bool,
    /// `microvm.initialBalloonMem`: balloon size at start in MiB.
    #[serde(default)]
    pub initial_balloon_mem: u64,
    /// `microvm.deflateOnOOM`: let the guest deflate the balloon when it runs out of memory.
    #[serde(default = "default_true", rename = "deflateOnOOM")]
    pub deflate_on_oom: bool,
    /// `microvm.cpu`: CPU model to emulate (qemu only); set, it makes qemu use TCG instead of KVM.
    #[serde(default)]
    pub cpu: Option<String>,
    /// `microvm.user`: user for the hypervisor to switch to (qemu only).
    #[serde(default)]
    pub user: Option<String>,
    /// `microvm.socket`: control socket path, relative to the runner's working directory.
    #[serde(default)]
    pub socket: Option<String>,
    /// The kernel image file the hypervisor boots.
    pub kernel: String,
    /// `microvm.initrdPath`: the initrd file.
    pub initrd_path: String,
    /// `microvm.kernelParams`.
    #[serde(default)]
    pub kernel_params: Vec<String>,
    /// `microvm.storeDisk`: the read-only store image, attached first (null: no store disk).
    #[serde(default)]
    pub store_disk: Option<String>,
    /// `microvm.preStart`: shell code run by `microvm-run` before the hypervisor starts.
    #[serde(default)]
    pub pre_start: String,
    /// `microvm.extraArgsScript`: shell command whose output is split into extra arguments.
    #[serde(default)]
    pub extra_args_script: Option<String>,
    /// `microvm.prettyProcnames`: name the hypervisor process `microvm@<hostName>`.
    #[serde(default = "default_true")]
    pub pretty_procnames: bool,
    /// `microvm.machineId`: SMBIOS system UUID (null: a UUIDv5 of the host name).
    #[serde(default)]
    pub machine_id: Option<String>,
    /// `microvm.credentialFiles`: systemd credential name to host file.
    #[serde(default)]
    pub credential_files: BTreeMap<String, String>,
    /// `microvm.binScripts`: extra scripts installed as `bin/<name>`.
    #[serde(default)]
    pub bin_scripts: BTreeMap<String, String>,
    /// `microvm.volumes`.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// `microvm.shares`.
    #[serde(default)]
    pub shares: Vec<Share>,
    /// `microvm.interfaces`.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// `microvm.forwardPorts`.
    #[serde(default)]
    pub forward_ports: Vec<ForwardPort>,
    /// `microvm.devices`.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// `microvm.vsock`.
    #[serde(default)]
    pub vsock: Vsock,
    /// `microvm.graphics`.
    #[serde(default)]
    pub graphics: Graphics,
    /// `microvm.qemu`.
    #[serde(default)]
    pub qemu: QemuOptions,
    /// `microvm.cloud-hypervisor`.
    #[serde(default, rename = "cloud-hypervisor")]
    pub cloud_hypervisor: CloudHypervisorOptions,
    /// `microvm.firecracker`.
    #[serde(default)]
    pub firecracker: FirecrackerOptions,
    /// `microvm.crosvm`.
    #[serde(default)]
    pub crosvm: CrosvmOptions,
    /// `microvm.vfkit`.
    #[serde(default)]
    pub vfkit: VfkitOptions,
    /// `microvm.virtiofsd`.
    #[serde(default)]
    pub virtiofsd: VirtiofsdOptions,
    /// The guest's `system.build.toplevel`, linked as `share/microvm/system` (null: no link).
    #[serde(default)]
    pub system_symlink: Option<String>,
    /// Host-side ownership for taps and device nodes.
    #[serde(default)]
    pub host: HostSettings,
    /// Absolute paths of every program the generated scripts run.
    pub tools: Tools,
}

fn default_system() -> System {
    System::X86_64Linux
}

fn default_vcpu() -> u32 {
    1
}

fn default_mem() -> u64 {
    512
}

pub(crate) fn default_true() -> bool {
    true
}

/// More vCPUs than any of the hypervisors accepts.
pub const MAX_VCPUS: u32 = 1024;
/// 16 TiB: far beyond what a microVM host has, small enough that sums cannot overflow.
pub const MAX_MEM_MIB: u64 = 16 * 1024 * 1024;

impl RunnerSpec {
    /// The sizes every backend can compute with: vCPUs and memory within the limits validation
    /// checks. A launch sizes queues and descriptors by them, so none is built outside.
    pub fn within_bounds(&self) -> bool {
        self.vcpu <= MAX_VCPUS
            && [
                self.mem,
                self.hotplug_mem,
                self.hotplugged_mem.unwrap_or(0),
                self.initial_balloon_mem,
            ]
            .iter()
            .all(|&mib| mib <= MAX_MEM_MIB)
    }

    /// Hotplug memory plugged at start: `hotpluggedMem`, defaulting to all of `hotplugMem`.
    pub fn hotplugged_mem(&self) -> u64 {
        self.hotplugged_mem.unwrap_or(self.hotplug_mem)
    }

    /// The interfaces whose host side is a tap device the runner's `tap-up` creates.
    pub fn tap_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces
            .iter()
            .filter(|i| i.kind == InterfaceType::Tap)
    }

    pub fn macvtap_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces
            .iter()
            .filter(|i| i.kind == InterfaceType::Macvtap)
    }

    pub fn virtiofs_shares(&self) -> impl Iterator<Item = &Share> {
        self.shares
            .iter()
            .filter(|s| s.proto == ShareProto::Virtiofs)
    }
}
