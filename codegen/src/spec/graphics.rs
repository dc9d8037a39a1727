use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `microvm.graphics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Graphics {
    #[serde(default)]
    pub enable: bool,
    /// qemu display backend.
    #[serde(default)]
    pub backend: GraphicsBackend,
    /// vhost-user GPU socket (cloud-hypervisor, crosvm).
    #[serde(default)]
    pub socket: Option<String>,
    /// qemu virtio-gpu Vulkan protocol.
    #[serde(default)]
    pub vulkan: Option<VulkanProtocol>,
    /// qemu virtio-gpu host memory window, with an M or G suffix.
    #[serde(default = "default_hostmem")]
    pub hostmem: String,
}

impl Default for Graphics {
    fn default() -> Self {
        Graphics {
            enable: false,
            backend: GraphicsBackend::default(),
            socket: None,
            vulkan: None,
            hostmem: default_hostmem(),
        }
    }
}

fn default_hostmem() -> String {
    "256M".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GraphicsBackend {
    #[default]
    Gtk,
    Cocoa,
    Headless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VulkanProtocol {
    Venus,
    DrmNativeContext,
}

impl VulkanProtocol {
    pub fn name(self) -> &'static str {
        match self {
            VulkanProtocol::Venus => "venus",
            VulkanProtocol::DrmNativeContext => "drm_native_context",
        }
    }
}
