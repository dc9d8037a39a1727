//! crosvm's vhost-user GPU device (`crosvm device gpu`), which the crosvm and cloud-hypervisor
//! runners start next to the VM for `graphics.enable`, as microvm.nix does. The VMM reaches it
//! over the vhost-user socket `graphics.socket` (crosvm: `--vhost-user gpu,socket=…`;
//! cloud-hypervisor: `--gpu socket=…`); the device draws on the host's Wayland compositor.
//!
//! Grammar: `crosvm device gpu` takes `--socket-path` (`--socket` is its deprecated spelling),
//! `--wayland-sock` and `--params`, a JSON object of crosvm's GPU parameters.

use serde_json::json;

use super::{Part, Step, Word, argv_path};
use crate::diagnostic::Diagnostic;
use crate::path;
use crate::spec::{Hypervisor, RunnerSpec, Tool};

/// The Wayland context types the GPU device offers, as microvm.nix configures it.
pub const CONTEXT_TYPES: &str = "virgl:virgl2:cross-domain";

/// The steps that start the GPU device on `socket` and wait for it: the stale socket removed,
/// the Wayland variables required, the device in the background.
pub fn device_steps(spec: &RunnerSpec, socket: &str) -> Vec<Step> {
    let crosvm = spec.tools.get(Tool::Crosvm).unwrap_or_default();
    let params = json!({
        "context-types": CONTEXT_TYPES,
        "displays": [{ "hidden": true }],
        "egl": true,
        "vulkan": true,
    });
    // The device binds the socket and fails on a leftover one; the wait for the socket must not
    // see the old one either.
    let mut steps = vec![Step::Remove {
        path: socket.to_owned(),
    }];
    for var in ["XDG_RUNTIME_DIR", "WAYLAND_DISPLAY"] {
        steps.push(Step::RequireVar {
            var: var.to_owned(),
            message: format!(
                "microvm-run: {var} is not set: crosvm's GPU device (microvm.graphics) finds the Wayland socket by XDG_RUNTIME_DIR and WAYLAND_DISPLAY; start the VM from a Wayland session, or set graphics.enable = false"
            ),
        });
    }
    steps.push(Step::Background {
        argv: vec![
            Word::from(crosvm),
            Word::from("device"),
            Word::from("gpu"),
            Word::from("--socket-path"),
            Word::from(argv_path(socket)),
            Word::from("--wayland-sock"),
            Word(vec![
                Part::Var("XDG_RUNTIME_DIR".to_owned()),
                Part::Lit("/".to_owned()),
                Part::Var("WAYLAND_DISPLAY".to_owned()),
            ]),
            Word::from("--params"),
            Word::from(params.to_string()),
        ],
        socket: socket.to_owned(),
    });
    steps
}

/// The refusal of graphics without `graphics.socket`: the device and the VMM meet there.
pub fn check_socket(hv: Hypervisor, spec: &RunnerSpec) -> Option<Diagnostic> {
    (spec.graphics.enable && spec.graphics.socket.is_none()).then(|| {
        Diagnostic::error(
            format!("microvm::{}::graphics_socket", hv.name().replace('-', "_")),
            format!("{hv} needs graphics.socket for graphics"),
        )
        .at(path!["graphics", "socket"])
        .help("set graphics.socket to a path for the vhost-user GPU socket, such as \"<hostName>-gpu.sock\"")
    })
}
