//! `microvm`: the host's command for managing microVMs in the state directory — create, update,
//! run, list, status, ssh, logs, remove, and the reconciliation the host module runs on switch;
//! and `fleet list|plan-move` over the hosts `lib.fleet` describes (fleet.rs).
//!
//! It runs `nix`, `systemctl`, `journalctl` and `ssh` from PATH, so tests put recording
//! stand-ins there. The short flags of microvm.nix's command (`-c`, `-u`, `-R`, `-r`, `-l`,
//! `-s`, `-f`) still work.

mod cli;
mod fleet;
mod proxy;
mod report;
mod state;
mod up;
mod verbs;

pub use cli::{Cli, main, run};
pub use report::{
    ErrorDetail, ErrorReport, ListEntry, ListOutput, Status, StatusOutput, list_schema_json,
    status_schema_json,
};
