//! firecracker's config file (`--config-file`): one type per section, with firecracker's own
//! key names, so the file is built and checked as data and never assembled from text.
//!
//! Follows firecracker's `VmmConfig` (`src/vmm/src/resources.rs`, kebab-case top-level keys) and
//! the section types in `src/vmm/src/vmm_config/*.rs` and `src/vmm/src/logger/logging.rs`.
//! Every section denies unknown keys, as firecracker does for most of them: a key firecracker
//! would reject (or, at the top level, silently ignore) is an error here. Optional keys are left
//! out of the file when unset, so firecracker applies its own defaults.
//!
//! Deviations: `vcpu_count` is read as any unsigned number (firecracker's is a `u8`) so that the
//! range check can say "at most 32" instead of a parse error; nested free-form parts (CPU template
//! modifiers) are kept as JSON values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub boot_source: BootSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_config: Option<MachineConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_config: Option<CpuConfig>,
    /// Required by firecracker even when empty.
    pub drives: Vec<Drive>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<Balloon>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<Entropy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmds_config: Option<MmdsConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pmem: Vec<Pmem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_hotplug: Option<MemoryHotplug>,
}

/// `boot-source` (`vmm_config/boot_source.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// `machine-config` (`vmm_config/machine_config.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// 1 to 32.
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    /// Simultaneous multithreading: refused on aarch64 and with an odd vCPU count above 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// A static CPU template (deprecated upstream): C3, T2, T2S, T2CL, T2A, V1N1 or None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<StaticCpuTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaticCpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    None,
}

/// `machine-config.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    None,
    /// Unreleased at the time of writing (firecracker HEAD only).
    Transparent,
    /// hugetlbfs 2 MiB pages (firecracker 1.7 and later).
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// `cpu-config`: a path to a custom CPU template file, or the template inline (1.13 and later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CpuConfig {
    Path(String),
    Template(CpuTemplate),
}

/// A custom CPU template (`cpu_config/{x86_64,aarch64}/custom_cpu_template.rs`). x86_64 takes
/// `kvm_capabilities`, `cpuid_modifiers` and `msr_modifiers`; aarch64 takes `kvm_capabilities`,
/// `vcpu_features` and `reg_modifiers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm_capabilities: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuid_modifiers: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msr_modifiers: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_features: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg_modifiers: Option<Vec<Value>>,
}

impl CpuTemplate {
    /// The keys of the template that the given architecture does not have.
    pub fn foreign_keys(&self, x86_64: bool) -> Vec<&'static str> {
        let keys = [
            ("cpuid_modifiers", self.cpuid_modifiers.is_some(), true),
            ("msr_modifiers", self.msr_modifiers.is_some(), true),
            ("vcpu_features", self.vcpu_features.is_some(), false),
            ("reg_modifiers", self.reg_modifiers.is_some(), false),
        ];
        keys.into_iter()
            .filter(|(_, set, for_x86)| *set && *for_x86 != x86_64)
            .map(|(key, _, _)| key)
            .collect()
    }
}

/// One of `drives` (`vmm_config/drive.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Required by firecracker.
    pub is_root_device: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// vhost-user-blk backend socket (instead of `path_on_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// `io_engine`: `Async` is io_uring (host kernel 5.10.51 or later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Async,
    Sync,
}

/// `rate_limiter` (`vmm_config/mod.rs` `RateLimiterConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
}

/// One of `network-interfaces` (`vmm_config/net.rs`): a tap opened by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// 1.16 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `vsock` (`vmm_config/vsock.rs`): a Unix socket multiplexer on the host side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Deprecated upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    pub guest_cid: u32,
    pub uds_path: String,
}

/// `balloon` (`vmm_config/balloon.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    /// Balloon size in MiB.
    pub amount_mib: u32,
    /// Required by firecracker.
    pub deflate_on_oom: bool,
    /// 0 turns statistics off for good; they cannot be turned on after boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_polling_interval_s: Option<u16>,
    /// 1.14 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_hinting: Option<bool>,
    /// 1.14 and later (developer preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_reporting: Option<bool>,
}

/// `entropy` (`vmm_config/entropy.rs`): `{}` adds a virtio-rng device (1.4 and later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entropy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `logger` (`logger/logging.rs` `LoggerConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Error, Warning, Info, Debug, Trace or Off (firecracker ignores the case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `metrics` (`vmm_config/metrics.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: String,
    /// Unreleased at the time of writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_id: Option<bool>,
    /// Unreleased at the time of writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

/// `mmds-config` (`vmm_config/mmds.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<MmdsVersion>,
    /// `iface_id`s of `network-interfaces`.
    pub network_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_compat: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    V1,
    V2,
}

/// One of `pmem` (`vmm_config/pmem.rs`, 1.14 and later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pmem {
    pub id: String,
    pub path_on_host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `memory-hotplug` (`vmm_config/memory_hotplug.rs`, 1.14 and later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryHotplug {
    pub total_size_mib: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size_mib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_size_mib: Option<u32>,
}

/// Merges `patch` into `target` the way Nix's `lib.recursiveUpdate` does: objects merge key by
/// key, everything else (arrays included) replaces. A `null` replaces too, which drops an
/// optional section.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Why a JSON document is not a firecracker config: the path inside the document and the
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Reads a JSON document as a firecracker config.
pub fn parse(document: Value) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(document).map_err(|e| ConfigError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "boot-source": { "kernel_image_path": "/vmlinux" },
            "drives": [],
        })
    }

    #[test]
    fn the_smallest_config_firecracker_takes_parses() {
        let config = parse(minimal()).unwrap();
        assert_eq!(config.boot_source.kernel_image_path, "/vmlinux");
        assert_eq!(serde_json::to_value(&config).unwrap(), minimal());
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused_with_their_path() {
        let mut doc = minimal();
        doc["machine-config"] = json!({ "vcpu_count": 1, "mem_size_mib": 256, "smtt": true });
        let error = parse(doc).unwrap_err();
        assert_eq!(error.path, "machine-config.smtt");
        assert!(error.message.contains("unknown field `smtt`"), "{error:?}");

        let mut doc = minimal();
        doc["balloon"] = json!({ "amount_mib": "64", "deflate_on_oom": true });
        let error = parse(doc).unwrap_err();
        assert_eq!(error.path, "balloon.amount_mib");

        let mut doc = minimal();
        doc["network-interface"] = json!([]);
        assert!(
            parse(doc)
                .unwrap_err()
                .message
                .contains("network-interface")
        );
    }

    #[test]
    fn drives_and_required_drive_keys_cannot_be_left_out() {
        let error = parse(json!({ "boot-source": { "kernel_image_path": "/k" } })).unwrap_err();
        assert!(
            error.message.contains("missing field `drives`"),
            "{error:?}"
        );
        let mut doc = minimal();
        doc["drives"] = json!([{ "drive_id": "a", "path_on_host": "/a" }]);
        assert!(
            parse(doc)
                .unwrap_err()
                .message
                .contains("missing field `is_root_device`")
        );
    }

    #[test]
    fn merging_updates_objects_and_replaces_the_rest() {
        let mut doc = json!({ "a": { "b": 1, "c": [1, 2] }, "d": 1 });
        merge(
            &mut doc,
            &json!({ "a": { "c": [3], "e": true }, "d": null, "f": {} }),
        );
        assert_eq!(
            doc,
            json!({ "a": { "b": 1, "c": [3], "e": true }, "d": null, "f": {} })
        );
    }

    #[test]
    fn huge_pages_and_cpu_templates_use_firecrackers_spelling() {
        let mut doc = minimal();
        doc["machine-config"] = json!({ "vcpu_count": 2, "mem_size_mib": 256, "huge_pages": "2M" });
        doc["cpu-config"] = json!({ "cpuid_modifiers": [], "vcpu_features": [] });
        let config = parse(doc.clone()).unwrap();
        assert_eq!(
            config.machine_config.as_ref().unwrap().huge_pages,
            Some(HugePages::Hugetlbfs2M)
        );
        let Some(CpuConfig::Template(template)) = &config.cpu_config else {
            panic!("an object is an inline template");
        };
        assert_eq!(template.foreign_keys(true), vec!["vcpu_features"]);
        assert_eq!(template.foreign_keys(false), vec!["cpuid_modifiers"]);
        assert_eq!(serde_json::to_value(&config).unwrap(), doc);
        doc["cpu-config"] = json!("/etc/template.json");
        assert!(matches!(
            parse(doc).unwrap().cpu_config,
            Some(CpuConfig::Path(_))
        ));
    }
}
