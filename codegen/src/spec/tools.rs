//! Absolute paths of the programs the generated scripts run. Scripts never search `PATH`: in
//! real use every path is a Nix store path, in tests a system path or a stub.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! tools {
    ($( $(#[doc = $doc:literal])* $field:ident => $variant:ident, $json:literal; )*) => {
        /// A program a generated script may run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Tool {
            $( $variant, )*
        }

        impl Tool {
            pub const ALL: &'static [Tool] = &[ $( Tool::$variant, )* ];

            /// The key in the spec's `tools` object.
            pub fn name(self) -> &'static str {
                match self {
                    $( Tool::$variant => $json, )*
                }
            }
        }

        /// `tools`: program name to absolute path. Only the programs the spec's features use
        /// must be present.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct Tools {
            $(
                $(#[doc = $doc])*
                #[serde(default, rename = $json, skip_serializing_if = "Option::is_none")]
                pub $field: Option<String>,
            )*
        }

        impl Tools {
            pub fn get(&self, tool: Tool) -> Option<&str> {
                match tool {
                    $( Tool::$variant => self.$field.as_deref(), )*
                }
            }

            pub fn set(&mut self, tool: Tool, path: impl Into<String>) {
                let path = Some(path.into());
                match tool {
                    $( Tool::$variant => self.$field = path, )*
                }
            }
        }
    };
}

tools! {
    /// Interpreter of every generated script.
    bash => Bash, "bash";
    /// `qemu-system-<arch>`.
    qemu => Qemu, "qemu";
    cloud_hypervisor => CloudHypervisor, "cloud-hypervisor";
    firecracker => Firecracker, "firecracker";
    crosvm => Crosvm, "crosvm";
    /// kvmtool's `lkvm`.
    lkvm => Lkvm, "lkvm";
    stratovirt => Stratovirt, "stratovirt";
    alioth => Alioth, "alioth";
    vfkit => Vfkit, "vfkit";
    virtiofsd => Virtiofsd, "virtiofsd";
    /// Talks to unix control sockets (QMP).
    socat => Socat, "socat";
    /// Talks to HTTP control sockets (cloud-hypervisor, firecracker, vfkit).
    curl => Curl, "curl";
    /// iproute2's `ip`, for taps and macvtaps.
    ip => Ip, "ip";
    mkdir => Mkdir, "mkdir";
    ln => Ln, "ln";
    rm => Rm, "rm";
    truncate => Truncate, "truncate";
    /// Copies a hypervisor's console from a pipe to the runner's stdout, where there is no
    /// terminal to give it.
    cat => Cat, "cat";
    /// util-linux's `script`: gives `microvm-run` a pseudo-terminal for a hypervisor whose
    /// console needs one.
    script => Script, "script";
    /// Marks new volume images no-copy-on-write; failures are ignored.
    chattr => Chattr, "chattr";
    chown => Chown, "chown";
    sleep => Sleep, "sleep";
    nproc => Nproc, "nproc";
    modprobe => Modprobe, "modprobe";
    systemd_notify => SystemdNotify, "systemd-notify";
    /// Carries the guest's readiness and health from vsock to the unit (`vsock.notify`).
    notify_bridge => NotifyBridge, "microvm-notify-bridge";
    /// The setuid helper behind qemu `bridge` interfaces.
    qemu_bridge_helper => QemuBridgeHelper, "qemu-bridge-helper";
    mkfs_ext2 => MkfsExt2, "mkfs.ext2";
    mkfs_ext3 => MkfsExt3, "mkfs.ext3";
    mkfs_ext4 => MkfsExt4, "mkfs.ext4";
    mkfs_xfs => MkfsXfs, "mkfs.xfs";
    mkfs_btrfs => MkfsBtrfs, "mkfs.btrfs";
    mkfs_vfat => MkfsVfat, "mkfs.vfat";
}

impl Tool {
    /// The mkfs program for a filesystem `microvm-run` can create.
    pub fn mkfs(fs_type: &str) -> Option<Tool> {
        Some(match fs_type {
            "ext2" => Tool::MkfsExt2,
            "ext3" => Tool::MkfsExt3,
            "ext4" => Tool::MkfsExt4,
            "xfs" => Tool::MkfsXfs,
            "btrfs" => Tool::MkfsBtrfs,
            "vfat" => Tool::MkfsVfat,
            _ => return None,
        })
    }
}
