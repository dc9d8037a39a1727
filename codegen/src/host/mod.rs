//! The host side: the systemd units that run microVMs as services (declared ones from the host
//! module, and imperative ones made with `microvm create`), the per-VM install units, and the
//! list of declared VMs that reconciliation compares against.

pub mod names;
pub mod spec;
pub mod units;
pub mod validate;

pub use spec::{DeclaredVm, HostSpec, HostTool, HostTools};
