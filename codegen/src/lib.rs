//! microvm-codegen: validates a runner spec against the hypervisors' capabilities and renders
//! the runner (scripts, helper scripts, metadata) a microVM is started from.

pub mod capabilities;
pub mod cli;
pub mod diagnostic;
pub mod exit_code;
pub mod host;
pub mod hypervisor;
pub mod input_file;
pub mod json_path;
pub mod json_spans;
pub mod lint;
pub mod load;
pub mod machine_id;
pub mod manage;
pub mod nix_syntax;
pub mod notify_bridge;
pub mod options;
pub mod output;
pub mod render;
pub mod runner;
pub mod schema;
pub mod spec;
pub mod suggest;
pub mod templates;
pub mod unique;
pub mod validate;
