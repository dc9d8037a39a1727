//! The per-hypervisor option namespaces (`microvm.qemu.*`, `microvm.cloud-hypervisor.*`, …).
//! Each is read only when its hypervisor renders.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::default_true;

/// `microvm.qemu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QemuOptions {
    /// `-M` machine (null: `microvm` on x86_64, `virt` on aarch64; `q35` when memory hotplug asks).
    #[serde(default)]
    pub machine: Option<String>,
    /// Replaces the computed `-M` options entirely.
    #[serde(default)]
    pub machine_opts: Option<BTreeMap<String, String>>,
    /// Appended last to the qemu command line.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Serial console on the runner's stdio, and the kernel `console=` parameters for it.
    #[serde(default = "default_true")]
    pub serial_console: bool,
    #[serde(default)]
    pub pcie_root_ports: Vec<PcieRootPort>,
    /// Pass `-sandbox on` (the qemu build must have seccomp support).
    #[serde(default)]
    pub sandbox: bool,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            machine: None,
            machine_opts: None,
            extra_args: Vec::new(),
            serial_console: true,
            pcie_root_ports: Vec::new(),
            sandbox: false,
        }
    }
}

/// One entry of `microvm.qemu.pcieRootPorts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PcieRootPort {
    pub id: String,
    #[serde(default)]
    pub bus: Option<String>,
    #[serde(default)]
    pub chassis: Option<u32>,
    #[serde(default)]
    pub slot: Option<String>,
    #[serde(default)]
    pub addr: Option<String>,
}

/// `microvm.cloud-hypervisor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudHypervisorOptions {
    /// Items of `--platform oem_strings=[…]`.
    #[serde(default, rename = "platformOEMStrings")]
    pub platform_oem_strings: Vec<String>,
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// `microvm.firecracker`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirecrackerOptions {
    /// Custom CPU template, written to a file and referenced from the config.
    #[serde(default)]
    pub cpu: Option<serde_json::Value>,
    #[serde(default)]
    pub drive_io_engine: FirecrackerIoEngine,
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Merged into the generated config file, recursively.
    #[serde(default)]
    pub extra_config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FirecrackerIoEngine {
    #[default]
    Async,
    Sync,
}

/// `microvm.crosvm`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrosvmOptions {
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// `--pivot-root` sandbox directory, created before start.
    #[serde(default)]
    pub pivot_root: Option<String>,
}

/// `microvm.vfkit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfkitOptions {
    #[serde(default)]
    pub extra_args: Vec<String>,
    #[serde(default = "default_log_level")]
    pub log_level: Option<VfkitLogLevel>,
    #[serde(default)]
    pub rosetta: VfkitRosetta,
}

impl Default for VfkitOptions {
    fn default() -> Self {
        VfkitOptions {
            extra_args: Vec::new(),
            log_level: default_log_level(),
            rosetta: VfkitRosetta::default(),
        }
    }
}

fn default_log_level() -> Option<VfkitLogLevel> {
    Some(VfkitLogLevel::Info)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VfkitLogLevel {
    Debug,
    Info,
    Error,
}

impl VfkitLogLevel {
    pub fn name(self) -> &'static str {
        match self {
            VfkitLogLevel::Debug => "debug",
            VfkitLogLevel::Info => "info",
            VfkitLogLevel::Error => "error",
        }
    }
}

/// `microvm.vfkit.rosetta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfkitRosetta {
    #[serde(default)]
    pub enable: bool,
    #[serde(default)]
    pub install: bool,
    #[serde(default)]
    pub ignore_if_missing: bool,
}
