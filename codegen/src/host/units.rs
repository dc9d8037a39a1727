//! Builds the host package: unit templates for every VM, per-VM install units and drop-ins for
//! declared VMs, the helper scripts the units run, and the list of declared VMs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::host::names;
use crate::host::spec::{DeclaredVm, HostSpec, HostTool};
use crate::render::{RenderError, Renderer};
use crate::runner::{Entry, Tree};
use crate::templates;

/// The unit templates rendered once per declared VM, under names of their own; every other one
/// is rendered once, under its own name.
const PER_VM_TEMPLATES: &[&str] = &[templates::INSTALL_UNIT, templates::DECLARED_DROP_IN];

/// systemd gives `microvm-shutdown` this long beyond its own timeout before it kills.
const STOP_GRACE_SECONDS: u32 = 15;

#[derive(Serialize)]
struct HostContext<'a> {
    state_dir: &'a str,
    user: &'a str,
    group: &'a str,
    package: &'a str,
    startup_timeout: u32,
    shutdown_timeout: u32,
    stop_timeout: u32,
    notify: bool,
    wants: Vec<String>,
    /// `microvm-tap-interfaces` etc.: `<prefix>@%i.service` are the units around a VM.
    helpers: Vec<&'static str>,
    tools: BTreeMap<&'static str, Option<&'a str>>,
}

#[derive(Serialize)]
struct VmContext<'a> {
    #[serde(flatten)]
    host: &'a HostContext<'a>,
    name: &'a str,
    runner: &'a str,
    toplevel: Option<&'a str>,
    flake: Option<&'a str>,
    install_once: bool,
    restart_if_changed: bool,
    writable_paths: &'a [String],
    /// A writable path is under /home, /root or /run/user, which ProtectHome= hides.
    home_access: bool,
    /// The guest reports readiness: `Type=notify` for this VM.
    notify: bool,
}

/// The declared VMs as reconciliation reads them (`share/microvm/declared.json`).
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeclaredList {
    pub vms: Vec<String>,
}

fn script(contents: String) -> Entry {
    Entry::File {
        contents,
        executable: true,
    }
}

fn file(contents: String) -> Entry {
    Entry::File {
        contents,
        executable: false,
    }
}

/// Builds the host package for a validated spec, to be written at `package` (its absolute
/// path: the units refer to the helper scripts inside it).
pub fn build(spec: &HostSpec, package: &str, renderer: &Renderer) -> Result<Tree, RenderError> {
    let mut wants: Vec<String> = spec
        .autostart
        .iter()
        .map(|name| names::vm_unit(name))
        .collect();
    wants.extend(spec.vms.keys().map(|name| names::install_unit(name)));
    let host = HostContext {
        state_dir: &spec.state_dir,
        user: &spec.user,
        group: &spec.group,
        package,
        startup_timeout: spec.startup_timeout,
        shutdown_timeout: spec.shutdown_timeout,
        stop_timeout: spec.shutdown_timeout.saturating_add(STOP_GRACE_SECONDS),
        notify: spec.use_notify_sockets,
        wants,
        helpers: names::helper_prefixes(),
        tools: HostTool::ALL
            .iter()
            .map(|&t| (t.name(), spec.tools.get(t)))
            .collect(),
    };

    let mut tree = Tree::new();
    let units = "lib/systemd/system";
    for (unit, _) in templates::UNIT_TEMPLATES
        .iter()
        .filter(|(unit, _)| !PER_VM_TEMPLATES.contains(unit))
    {
        tree.insert(
            format!("{units}/{unit}"),
            file(renderer.render_unit(unit, &host)?),
        );
    }
    for (name, template) in [
        ("stop", templates::HOST_STOP),
        ("run-booted", templates::HOST_RUN_BOOTED),
        ("set-booted", templates::HOST_SET_BOOTED),
        ("unset-booted", templates::HOST_UNSET_BOOTED),
    ] {
        tree.insert(
            format!("libexec/microvm/{name}"),
            script(renderer.render(template, &host)?),
        );
    }
    for (name, vm) in &spec.vms {
        let context = vm_context(&host, name, vm);
        tree.insert(
            format!("{units}/{}", names::install_unit(name)),
            file(renderer.render_unit(templates::INSTALL_UNIT, &context)?),
        );
        tree.insert(
            format!("{units}/{}", names::declared_drop_in(name)),
            file(renderer.render_unit(templates::DECLARED_DROP_IN, &context)?),
        );
        tree.insert(
            format!("libexec/microvm/install-{name}"),
            script(renderer.render(templates::HOST_INSTALL, &context)?),
        );
    }
    let declared = DeclaredList {
        vms: spec.vms.keys().cloned().collect(),
    };
    tree.insert(
        "share/microvm/declared.json".to_owned(),
        file(serde_json::to_string_pretty(&declared).expect("serializes") + "\n"),
    );
    tree.insert(
        "share/microvm/host-spec.json".to_owned(),
        file(serde_json::to_string_pretty(spec).expect("serializes") + "\n"),
    );
    Ok(tree)
}

fn vm_context<'a>(host: &'a HostContext<'a>, name: &'a str, vm: &'a DeclaredVm) -> VmContext<'a> {
    VmContext {
        host,
        name,
        runner: &vm.runner,
        toplevel: vm.toplevel.as_deref(),
        flake: vm.update_flake.as_deref().or(vm.flake.as_deref()),
        install_once: vm.flake.is_some() && vm.update_flake.is_some(),
        restart_if_changed: vm.restart_if_changed,
        writable_paths: &vm.writable_paths,
        notify: vm.notify,
        home_access: vm.writable_paths.iter().any(|p| {
            ["/home", "/root", "/run/user"]
                .iter()
                .any(|home| p == home || p.starts_with(&format!("{home}/")))
        }),
    }
}
