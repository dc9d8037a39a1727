use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One entry of `microvm.devices`: a host PCI or USB device passed through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub bus: DeviceBus,
    /// PCI address (`0000:01:00.0`) or a qemu usb-host spec (`vendorid=0x1234,productid=0x5678`).
    pub path: String,
    #[serde(default)]
    pub qemu: QemuDeviceOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceBus {
    Pci,
    Usb,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QemuDeviceOptions {
    /// qemu device `id=`.
    #[serde(default)]
    pub id: Option<String>,
    /// qemu device `bus=` (e.g. a pcie-root-port id).
    #[serde(default)]
    pub bus: Option<String>,
    /// Raw text appended to the qemu vfio-pci device options.
    #[serde(default)]
    pub device_extra_args: Option<String>,
}
