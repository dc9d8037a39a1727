//! crosvm: not rendered yet; every spec is refused with `microvm::hypervisor::not_rendered`.

use super::{Backend, Launch};
use crate::diagnostic::Diagnostic;
use crate::spec::{RunnerSpec, Tool};

pub struct Crosvm;

impl Backend for Crosvm {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        vec![super::not_rendered(spec)]
    }

    fn tools(&self, _: &RunnerSpec) -> Vec<(Tool, String)> {
        Vec::new()
    }

    fn launch(&self, _: &RunnerSpec) -> Launch {
        super::empty_launch(Tool::Crosvm)
    }

    fn tap_multi_queue(&self, _: &RunnerSpec) -> bool {
        false
    }

    fn shutdown_template(&self, _: &RunnerSpec) -> Option<&'static str> {
        None
    }

    fn balloon_template(&self, _: &RunnerSpec) -> Option<&'static str> {
        None
    }
}
