use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One entry of `microvm.forwardPorts` (user networking only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardPort {
    /// `host`: a host port reaches the guest; `guest`: a guest address reaches the host.
    #[serde(default)]
    pub from: ForwardFrom,
    #[serde(default)]
    pub proto: ForwardProto,
    pub host: ForwardEndpoint,
    pub guest: ForwardEndpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardEndpoint {
    /// IPv4 address ("" for any).
    #[serde(default)]
    pub address: String,
    pub port: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForwardFrom {
    #[default]
    Host,
    Guest,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProto {
    #[default]
    Tcp,
    Udp,
}

impl ForwardProto {
    pub fn name(self) -> &'static str {
        match self {
            ForwardProto::Tcp => "tcp",
            ForwardProto::Udp => "udp",
        }
    }
}
