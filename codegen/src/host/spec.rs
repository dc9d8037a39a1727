//! The host spec: what the host module knows about the host and its declared VMs, as JSON
//! (`microvm-codegen host --spec FILE --out DIR`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const HOST_SPEC_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "microvm host spec")]
pub struct HostSpec {
    /// Version of this format; this generator reads version 1.
    pub spec_version: u32,
    // The settings below have their defaults in the host module's options, and the host
    // module always writes them: no second copy of a default here.
    /// `microvm.stateDir`: one directory per VM below it. An absolute, normalised path (no
    /// `.` or `..` components, no `//`, no trailing `/`): systemd refuses a `WorkingDirectory=`
    /// that is not normalised.
    pub state_dir: String,
    /// User the hypervisors run as.
    pub user: String,
    /// Group of the hypervisor user; it owns /dev/kvm.
    pub group: String,
    /// `microvm.host.startupTimeout`: seconds for a VM to start.
    pub startup_timeout: u32,
    /// `microvm.host.shutdownTimeout`: seconds `microvm-shutdown` waits before systemd kills.
    pub shutdown_timeout: u32,
    /// `microvm.host.useNotifySockets`: every VM is `Type=notify`.
    #[serde(default)]
    pub use_notify_sockets: bool,
    /// `microvm.autostart`: VMs `microvms.target` starts (declared or imperative).
    #[serde(default)]
    pub autostart: Vec<String>,
    /// `microvm.vms`: the declared VMs, by name.
    #[serde(default)]
    pub vms: BTreeMap<String, DeclaredVm>,
    pub tools: HostTools,
}

/// One of `microvm.vms.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeclaredVm {
    /// The runner the host installs as `current`. Always built by the host, also for a VM
    /// from a flake: a declared VM without one would never start.
    pub runner: String,
    /// The guest's `system.build.toplevel` for fully declarative VMs (`microvm.vms.<n>.config`);
    /// `microvm update` refuses those.
    #[serde(default)]
    pub toplevel: Option<String>,
    /// The flake the VM comes from (`microvm.vms.<n>.flake`).
    #[serde(default)]
    pub flake: Option<String>,
    /// `microvm.vms.<n>.updateFlake`: written to the state directory once, for later
    /// `microvm update`; the host then installs the VM only while it has no `current` runner.
    #[serde(default)]
    pub update_flake: Option<String>,
    /// `microvm.vms.<n>.restartIfChanged`: a host switch that changes the VM restarts it.
    #[serde(default)]
    pub restart_if_changed: bool,
    /// Paths outside the state directory the hypervisor writes (directories of volume images,
    /// 9p share sources); missing ones are skipped. Absolute and normalised (no `.` or `..`
    /// components, no `//`): systemd ignores a `ReadWritePaths=` entry with `..`.
    #[serde(default)]
    pub writable_paths: Vec<String>,
    /// The guest reports readiness (its runner spec has `vsock.notify`): its `microvm@` unit is
    /// `Type=notify`, so starting it returns once the guest is really up.
    #[serde(default)]
    pub notify: bool,
}

macro_rules! host_tools {
    ($( $field:ident => $variant:ident, $json:literal; )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum HostTool { $( $variant, )* }

        impl HostTool {
            pub const ALL: &'static [HostTool] = &[ $( HostTool::$variant, )* ];
            pub fn name(self) -> &'static str {
                match self { $( HostTool::$variant => $json, )* }
            }
        }

        /// Programs the host scripts run, by absolute path.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct HostTools {
            $( #[serde(default, rename = $json, skip_serializing_if = "Option::is_none")]
               pub $field: Option<String>, )*
        }

        impl HostTools {
            pub fn get(&self, tool: HostTool) -> Option<&str> {
                match tool { $( HostTool::$variant => self.$field.as_deref(), )* }
            }
        }
    };
}

host_tools! {
    bash => Bash, "bash";
    ln => Ln, "ln";
    rm => Rm, "rm";
    mkdir => Mkdir, "mkdir";
    chown => Chown, "chown";
    readlink => Readlink, "readlink";
    // The `microvm` command, for reconciliation.
    microvm => Microvm, "microvm";
}
