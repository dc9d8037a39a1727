use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One entry of `microvm.interfaces`: a guest network interface and its host side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interface {
    #[serde(rename = "type")]
    pub kind: InterfaceType,
    /// Host-side interface name (tap, macvtap) or the hypervisor's id for it.
    pub id: String,
    /// Guest MAC address, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// Host bridge for `type = "bridge"`.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Parent link and mode for `type = "macvtap"`.
    #[serde(default)]
    pub macvtap: Option<Macvtap>,
    #[serde(default)]
    pub tap: TapOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    User,
    Tap,
    Macvtap,
    Bridge,
}

impl InterfaceType {
    pub fn name(self) -> &'static str {
        match self {
            InterfaceType::User => "user",
            InterfaceType::Tap => "tap",
            InterfaceType::Macvtap => "macvtap",
            InterfaceType::Bridge => "bridge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Macvtap {
    /// Parent host interface.
    pub link: String,
    pub mode: MacvtapMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MacvtapMode {
    Private,
    Vepa,
    Bridge,
    Passthru,
    Source,
}

impl MacvtapMode {
    pub fn name(self) -> &'static str {
        match self {
            MacvtapMode::Private => "private",
            MacvtapMode::Vepa => "vepa",
            MacvtapMode::Bridge => "bridge",
            MacvtapMode::Passthru => "passthru",
            MacvtapMode::Source => "source",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TapOptions {
    /// vhost-net acceleration (needs /dev/vhost-net on the host).
    #[serde(default)]
    pub vhost: bool,
}
