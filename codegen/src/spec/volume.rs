use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::default_true;

/// One entry of `microvm.volumes`: a disk image attached as a virtio block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// Image path on the host, relative to the runner's working directory.
    pub image: String,
    /// Disk serial the guest sees.
    #[serde(default)]
    pub serial: Option<String>,
    /// Open the image with O_DIRECT.
    #[serde(default)]
    pub direct: bool,
    /// Attach the disk read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Filesystem label given at creation.
    #[serde(default)]
    pub label: Option<String>,
    /// Guest mount point (null: not mounted by the guest module).
    #[serde(default)]
    pub mount_point: Option<String>,
    /// Size in MiB for auto-creation.
    #[serde(default)]
    pub size: Option<u64>,
    /// Create the image and its filesystem when the file does not exist.
    #[serde(default = "default_true")]
    pub auto_create: bool,
    /// Extra arguments for mkfs at creation.
    #[serde(default)]
    pub mkfs_extra_args: Vec<String>,
    /// Filesystem for creation.
    #[serde(default = "default_fs_type")]
    pub fs_type: String,
    /// Image format.
    #[serde(default)]
    pub image_type: ImageType,
    /// Throw the image away: `microvm-run` removes what the last run left and makes it anew at
    /// every start, and `microvm-discard` removes it when the VM has stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// Host file whose bytes become the (ephemeral, read-only) image at every start, padded to
    /// whole 512-byte sectors, instead of a new filesystem: how a secret read at start reaches
    /// a hypervisor that cannot pass systemd credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents_file: Option<String>,
}

impl Volume {
    /// Whether `microvm-run` makes a new filesystem for this image.
    pub fn gets_filesystem(&self) -> bool {
        self.auto_create && self.contents_file.is_none()
    }
}

fn default_fs_type() -> String {
    "ext4".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    #[default]
    Raw,
    Qcow2,
    Vhd,
    Vhdx,
}

impl ImageType {
    pub fn name(self) -> &'static str {
        match self {
            ImageType::Raw => "raw",
            ImageType::Qcow2 => "qcow2",
            ImageType::Vhd => "vhd",
            ImageType::Vhdx => "vhdx",
        }
    }
}

/// Filesystems `microvm-run` knows how to create, with the flag that sets the label.
pub const AUTO_CREATE_FILESYSTEMS: &[(&str, &str)] = &[
    ("ext2", "-L"),
    ("ext3", "-L"),
    ("ext4", "-L"),
    ("xfs", "-L"),
    ("btrfs", "-L"),
    ("vfat", "-n"),
];

/// Longest label each filesystem accepts, in bytes.
pub fn max_label_len(fs_type: &str) -> Option<usize> {
    match fs_type {
        "ext2" | "ext3" | "ext4" => Some(16),
        "xfs" => Some(12),
        "btrfs" => Some(255),
        "vfat" => Some(11),
        _ => None,
    }
}
