use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `microvm.virtiofsd`: how `virtiofsd-run` starts one virtiofsd per virtiofs share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtiofsdOptions {
    #[serde(default = "default_inode_file_handles")]
    pub inode_file_handles: Option<InodeFileHandles>,
    /// Worker threads per virtiofsd (null: the host's CPU count, read at start).
    #[serde(default)]
    pub thread_pool_size: Option<u32>,
    /// Group owning the vhost-user sockets (null: the group of the user running virtiofsd).
    #[serde(default = "default_group")]
    pub group: Option<String>,
    /// Extra arguments for every virtiofsd, before the per-share ones.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

impl Default for VirtiofsdOptions {
    fn default() -> Self {
        VirtiofsdOptions {
            inode_file_handles: default_inode_file_handles(),
            thread_pool_size: None,
            group: default_group(),
            extra_args: Vec::new(),
        }
    }
}

fn default_inode_file_handles() -> Option<InodeFileHandles> {
    Some(InodeFileHandles::Prefer)
}

fn default_group() -> Option<String> {
    Some("kvm".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InodeFileHandles {
    Never,
    Prefer,
    Mandatory,
}

impl InodeFileHandles {
    pub fn name(self) -> &'static str {
        match self {
            InodeFileHandles::Never => "never",
            InodeFileHandles::Prefer => "prefer",
            InodeFileHandles::Mandatory => "mandatory",
        }
    }
}
