use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::default_true;

/// One entry of `microvm.shares`: a host directory the guest mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Share {
    /// Mount tag the guest uses.
    pub tag: String,
    /// vhost-user socket of the virtiofsd serving this share (virtiofs only).
    #[serde(default)]
    pub socket: Option<String>,
    /// Host directory.
    pub source: String,
    /// 9p security model.
    #[serde(default)]
    pub security_model: ShareSecurityModel,
    /// Guest mount point.
    pub mount_point: String,
    #[serde(default)]
    pub proto: ShareProto,
    #[serde(default)]
    pub read_only: bool,
    /// virtiofsd cache policy.
    #[serde(default)]
    pub cache: ShareCache,
    /// virtiofsd POSIX ACL and xattr support.
    #[serde(default = "default_true")]
    pub posix_acl: bool,
    /// Extra virtiofsd arguments for this share.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ShareProto {
    #[default]
    #[serde(rename = "9p")]
    NineP,
    #[serde(rename = "virtiofs")]
    Virtiofs,
}

impl ShareProto {
    pub fn name(self) -> &'static str {
        match self {
            ShareProto::NineP => "9p",
            ShareProto::Virtiofs => "virtiofs",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ShareSecurityModel {
    Passthrough,
    #[default]
    None,
    Mapped,
    MappedFile,
}

impl ShareSecurityModel {
    pub fn name(self) -> &'static str {
        match self {
            ShareSecurityModel::Passthrough => "passthrough",
            ShareSecurityModel::None => "none",
            ShareSecurityModel::Mapped => "mapped",
            ShareSecurityModel::MappedFile => "mapped-file",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareCache {
    #[default]
    Auto,
    Always,
    Metadata,
    Never,
}

impl ShareCache {
    pub fn name(self) -> &'static str {
        match self {
            ShareCache::Auto => "auto",
            ShareCache::Always => "always",
            ShareCache::Metadata => "metadata",
            ShareCache::Never => "never",
        }
    }
}
