//! What `list --json` and `status --json` print. The JSON Schemas of these types are committed
//! under doc/ and a test keeps them, and the output, in line.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::notify_bridge::{CheckState, GuestHealth};

/// One line of `microvm list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListEntry {
    pub name: String,
    /// The hypervisor of the installed runner.
    pub hypervisor: Option<String>,
    /// systemd's ActiveState of `microvm@<name>.service` (active, inactive, failed, …).
    pub unit: String,
    /// running, stopped, or outdated (running an older runner than the installed one).
    pub state: VmState,
    /// Declared in the host configuration (`microvm update` refuses it).
    pub declarative: bool,
    /// Started by `microvm up` (a transient unit or a supervised process, not `microvm@`).
    pub up: bool,
    /// The running guest said it is ready (null: it does not report readiness, or is not
    /// running).
    pub ready: Option<bool>,
    /// Each health check's last reported state, by name (running guests that report them).
    pub checks: BTreeMap<String, CheckState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Outdated,
    Stopped,
}

/// `microvm status NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Status {
    pub name: String,
    pub state_dir: String,
    pub hypervisor: Option<String>,
    pub declarative: bool,
    /// Where `microvm update` builds it from.
    pub flake: Option<String>,
    /// The installed runner.
    pub current: Option<String>,
    /// The runner of the running VM.
    pub booted: Option<String>,
    /// The running VM is not the installed version: restart to apply the update.
    pub restart_needed: bool,
    pub unit: UnitStatus,
    pub spec: Option<SpecSummary>,
    /// What the running guest reported over vsock (`microvm.readiness`): readiness and each
    /// health check (null: it does not report, or is not running).
    pub guest: Option<GuestHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnitStatus {
    pub name: String,
    pub active_state: String,
    pub sub_state: String,
    pub main_pid: Option<u32>,
}

impl UnitStatus {
    /// The unit `name` as `systemctl show NAME -p ActiveState -p SubState -p MainPID` printed
    /// it (`unknown` when systemctl said nothing).
    pub fn from_show(name: String, shown: &str) -> UnitStatus {
        let get = |key: &str| {
            shown
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
                .to_owned()
        };
        UnitStatus {
            name,
            active_state: match get("ActiveState") {
                s if s.is_empty() => "unknown".to_owned(),
                s => s,
            },
            sub_state: get("SubState"),
            main_pid: get("MainPID").parse().ok().filter(|pid| *pid != 0),
        }
    }
}

/// The runner spec in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecSummary {
    pub vcpu: u32,
    pub mem_mib: u64,
    pub socket: Option<String>,
    pub vsock_cid: Option<u64>,
    pub interfaces: Vec<String>,
    pub volumes: Vec<String>,
    pub shares: Vec<String>,
}

impl SpecSummary {
    pub fn of(spec: &crate::spec::RunnerSpec) -> SpecSummary {
        SpecSummary {
            vcpu: spec.vcpu,
            mem_mib: spec.mem,
            socket: spec.socket.clone(),
            vsock_cid: spec.vsock.cid,
            interfaces: spec
                .interfaces
                .iter()
                .map(|i| format!("{} {} {}", i.kind.name(), i.id, i.mac))
                .collect(),
            volumes: spec
                .volumes
                .iter()
                .map(|v| match &v.mount_point {
                    Some(mount) => format!("{} at {mount}", v.image),
                    None => v.image.clone(),
                })
                .collect(),
            shares: spec
                .shares
                .iter()
                .map(|s| format!("{} {} at {}", s.proto.name(), s.source, s.mount_point))
                .collect(),
        }
    }
}

/// What `--json` prints on standard output instead of the result when the command fails (the
/// report for people still goes to standard error). Its one member, `error`, tells it from a
/// result, which never has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorReport {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, e.g. `microvm::manage::not_found`; `microvm::manage::usage` for a command line
    /// that did not parse.
    pub code: String,
    /// What went wrong, as standard error says it.
    pub message: String,
    /// What to do about it, when there is something to say.
    pub help: Option<String>,
}

impl ErrorReport {
    pub fn new(code: &str, message: String, help: Option<String>) -> ErrorReport {
        ErrorReport {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                help,
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializes")
    }
}

/// What `microvm list --json` prints: the VMs (one object each, an empty array for none), or,
/// when it fails, an error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ListOutput {
    Vms(Vec<ListEntry>),
    Error(ErrorReport),
}

/// What `microvm status NAME --json` prints: the VM's status, or, when it fails, an error
/// object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusOutput {
    Status(Box<Status>),
    Error(ErrorReport),
}

pub fn list_schema_json() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(ListOutput)).expect("serializes")
}

pub fn status_schema_json() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(StatusOutput)).expect("serializes")
}
