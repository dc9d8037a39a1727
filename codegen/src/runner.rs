//! Assembles a runner: the directory tree `microvm-codegen generate` writes, as data.
//!
//! Layout (kept from microvm.nix so host tooling carries over): `bin/microvm-run` always, the
//! other `bin/` scripts when the spec needs them, and `share/microvm/` metadata.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hypervisor::{self, Launch, Part, Step, VirtiofsServer, Word};
use crate::render::{RenderError, Renderer};
use crate::spec::{DeviceBus, Hypervisor, RunnerSpec, Tool, volume};
use crate::templates;

/// Scripts the generator writes itself; `binScripts` may not take these names.
pub const GENERATED_BIN_NAMES: &[&str] = &[
    "microvm-run",
    "microvm-discard",
    "microvm-shutdown",
    "microvm-balloon",
    "tap-up",
    "tap-down",
    "macvtap-up",
    "macvtap-down",
    "pci-setup",
    "virtiofsd-run",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { contents: String, executable: bool },
    Symlink { target: String },
}

/// Relative path to entry, in a stable order.
pub type Tree = BTreeMap<String, Entry>;

/// Programs the generated scripts run, with the reason, for the spec's features.
pub fn required_tools(spec: &RunnerSpec) -> Vec<(Tool, String)> {
    let mut tools = vec![(Tool::Bash, "every generated script runs in it".to_owned())];
    for volume in spec.volumes.iter().filter(|v| v.contents_file.is_some()) {
        let reason = format!(
            "microvm-run copies the contents of the volume {:?} with it",
            volume.image
        );
        for tool in [Tool::Cat, Tool::Truncate, Tool::Ln, Tool::Rm] {
            tools.push((tool, reason.clone()));
        }
    }
    if spec.volumes.iter().any(|v| v.ephemeral) {
        tools.push((
            Tool::Rm,
            "microvm-run and microvm-discard remove ephemeral volumes with it".to_owned(),
        ));
    }
    for volume in spec.volumes.iter().filter(|v| v.gets_filesystem()) {
        let reason = format!("microvm-run creates the volume {:?} with it", volume.image);
        for tool in [Tool::Mkdir, Tool::Truncate, Tool::Ln, Tool::Rm] {
            tools.push((tool, reason.clone()));
        }
        if let Some(mkfs) = Tool::mkfs(&volume.fs_type) {
            tools.push((mkfs, reason.clone()));
        }
    }
    if spec.tap_interfaces().next().is_some() {
        tools.push((
            Tool::Ip,
            "tap-up creates the tap interfaces with it".to_owned(),
        ));
    }
    if spec.macvtap_interfaces().next().is_some() {
        tools.push((
            Tool::Ip,
            "macvtap-up creates the macvtap interfaces with it".to_owned(),
        ));
        tools.push((
            Tool::Chown,
            "macvtap-up hands the tap device to the VM user".to_owned(),
        ));
    }
    if spec.devices.iter().any(|d| d.bus == DeviceBus::Pci) {
        tools.push((
            Tool::Modprobe,
            "pci-setup loads vfio-pci with it".to_owned(),
        ));
        tools.push((
            Tool::Chown,
            "pci-setup hands the VFIO group to the VM user".to_owned(),
        ));
    }
    if spec.vsock.notify.is_some() {
        tools.push((
            Tool::NotifyBridge,
            "microvm-run starts it to carry the guest's readiness to its systemd unit".to_owned(),
        ));
        if hypervisor::backend(spec.hypervisor)
            .vsock_mux_socket()
            .is_some()
        {
            tools.push((
                Tool::Sleep,
                "microvm-run waits for microvm-notify-bridge's socket".to_owned(),
            ));
        }
    }
    if needs_virtiofsd(spec) {
        let reason = "virtiofsd-run serves the virtiofs shares with it".to_owned();
        tools.push((Tool::Virtiofsd, reason.clone()));
        tools.push((Tool::Rm, reason.clone()));
        tools.push((Tool::Sleep, reason.clone()));
        tools.push((
            Tool::SystemdNotify,
            "virtiofsd-run tells its systemd unit when every share is served".to_owned(),
        ));
        if spec.virtiofsd.thread_pool_size.is_none() {
            tools.push((
                Tool::Nproc,
                "virtiofsd-run sizes virtiofsd's thread pool by the CPU count".to_owned(),
            ));
        }
    }
    let backend = hypervisor::backend(spec.hypervisor);
    // A launch sizes queues and descriptors by vcpu: only build one within the validated bounds.
    let steps = if spec.within_bounds() {
        hypervisor::launch(spec).steps
    } else {
        Vec::new()
    };
    for step in steps {
        let (tool, what) = match step {
            Step::Remove { path } => (Tool::Rm, format!("microvm-run removes a stale {path:?}")),
            Step::MakeDir { path } => (Tool::Mkdir, format!("microvm-run creates {path:?}")),
            Step::Background { socket, .. } => {
                (Tool::Sleep, format!("microvm-run waits for {socket:?}"))
            }
            Step::Terminal => (
                Tool::Script,
                "microvm-run runs itself on a pseudo-terminal when there is no terminal".to_owned(),
            ),
            Step::Console { .. } => (
                Tool::Cat,
                "microvm-run copies the console to stdout when there is no terminal".to_owned(),
            ),
            _ => continue,
        };
        tools.push((tool, format!("{what} with it")));
    }
    tools.extend(backend.tools(spec));
    tools
}

fn uses_runner_dir(launch: &Launch) -> bool {
    let in_word = |w: &Word| {
        w.0.iter()
            .any(|p| matches!(p, Part::Var(v) if v == hypervisor::RUNNER_DIR_VAR))
    };
    launch.args.iter().any(in_word)
        || launch.steps.iter().any(|s| match s {
            Step::Background { argv, .. } => argv.iter().any(in_word),
            _ => false,
        })
}

/// The host OSes the hypervisor runs on, from the capability table, as bash `$OSTYPE` prefixes;
/// empty when it runs on every host OS the table names, so `microvm-run` need not check.
fn host_os(hypervisor: Hypervisor) -> Vec<&'static str> {
    let table = crate::capabilities::table();
    let Some(info) = table.hypervisors.get(hypervisor.name()) else {
        return Vec::new();
    };
    let every = table.hypervisors.values().flat_map(|h| &h.host_os);
    let mut runs_everywhere = true;
    for os in every {
        runs_everywhere &= info.host_os.contains(os);
    }
    if runs_everywhere {
        Vec::new()
    } else {
        info.host_os.iter().map(String::as_str).collect()
    }
}

/// Whether the runner starts virtiofsd: for virtiofs shares the hypervisor does not serve itself.
pub fn needs_virtiofsd(spec: &RunnerSpec) -> bool {
    hypervisor::backend(spec.hypervisor).virtiofs_server() != VirtiofsServer::BuiltIn
        && spec.virtiofs_shares().next().is_some()
}

#[derive(Serialize)]
struct VolumeContext<'a> {
    image: &'a str,
    size: u64,
    fs_type: &'a str,
    mkfs: &'a str,
    /// mkfs arguments before the image: quiet flag, label, the user's extra arguments.
    mkfs_args: Vec<String>,
}

#[derive(Serialize)]
struct ContentsContext<'a> {
    image: &'a str,
    /// The host file whose bytes the image holds.
    source: &'a str,
}

#[derive(Serialize)]
struct TapContext<'a> {
    id: &'a str,
    multi_queue: bool,
}

#[derive(Serialize)]
struct MacvtapContext<'a> {
    id: &'a str,
    mac: &'a str,
    link: &'a str,
    mode: &'a str,
}

#[derive(Serialize)]
struct VirtiofsContext<'a> {
    tag: &'a str,
    socket: &'a str,
    argv: Vec<Word>,
}

#[derive(Serialize)]
struct LaunchContext<'a> {
    program: &'a str,
    #[serde(flatten)]
    launch: &'a Launch,
}

#[derive(Serialize)]
struct Context<'a> {
    host_name: &'a str,
    hypervisor: &'static str,
    /// kvmtool's record of the balloon size, which microvm-balloon keeps and microvm-run removes.
    balloon_state_file: Option<String>,
    /// The host OSes `microvm-run` starts on (empty: any).
    host_os: Vec<&'static str>,
    mem: u64,
    socket: Option<&'a str>,
    /// Tool paths by spec key; keys that are not identifiers are also given with `_`.
    tools: BTreeMap<String, Option<&'a str>>,
    launch: LaunchContext<'a>,
    procname: Option<String>,
    pre_start: &'a str,
    extra_args_script: Option<&'a str>,
    /// Images removed before the volumes are made, and by `microvm-discard` after a stop.
    ephemeral_images: Vec<&'a str>,
    /// Images copied from a host file at every start.
    contents_volumes: Vec<ContentsContext<'a>>,
    volumes: Vec<VolumeContext<'a>>,
    taps: Vec<TapContext<'a>>,
    macvtaps: Vec<MacvtapContext<'a>>,
    pci_devices: Vec<&'a str>,
    virtiofs: Vec<VirtiofsContext<'a>>,
    virtiofsd_threads_from_nproc: bool,
    host_user: &'a str,
    host_group: &'a str,
    uses_runner_dir: bool,
    notify_bridge: Option<NotifyBridgeContext>,
}

/// `microvm-notify-bridge` as `microvm-run` starts it (`vsock.notify`).
#[derive(Serialize)]
struct NotifyBridgeContext {
    argv: Vec<String>,
    /// The Unix socket it listens on, which `microvm-run` waits for (hybrid vsock).
    socket: Option<String>,
}

/// Where the guest's readiness arrives: the hybrid vsock's `<mux socket>_<port>`, or the host's
/// vsock port, from the VM's cid only.
fn notify_bridge(spec: &RunnerSpec) -> Option<NotifyBridgeContext> {
    let notify = spec.vsock.notify.as_ref()?;
    let program = spec.tools.get(Tool::NotifyBridge)?.to_owned();
    let mut argv = vec![
        program,
        "--state".to_owned(),
        crate::notify_bridge::STATE_FILE.to_owned(),
    ];
    let socket = match hypervisor::backend(spec.hypervisor).vsock_mux_socket() {
        Some(mux) => {
            let socket = format!("{mux}_{}", notify.port);
            argv.extend(["--unix".to_owned(), socket.clone()]);
            Some(socket)
        }
        None => {
            argv.extend([
                "--vsock-port".to_owned(),
                notify.port.to_string(),
                "--cid".to_owned(),
                spec.vsock.cid.unwrap_or_default().to_string(),
            ]);
            None
        }
    };
    Some(NotifyBridgeContext { argv, socket })
}

fn quiet_flag(fs_type: &str) -> Option<&'static str> {
    match fs_type {
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" => Some("-q"),
        _ => None,
    }
}

fn virtiofsd_argv(spec: &RunnerSpec, share: &crate::spec::Share, virtiofsd: &str) -> Vec<Word> {
    let o = &spec.virtiofsd;
    let mut argv: Vec<Word> = vec![
        Word::from(virtiofsd),
        Word::from(format!(
            "--socket-path={}",
            share.socket.as_deref().unwrap_or_default()
        )),
        Word::from(format!("--shared-dir={}", share.source)),
    ];
    if let Some(group) = &o.group {
        argv.push(Word::from(format!("--socket-group={group}")));
    }
    argv.push(Word::from("--thread-pool-size"));
    argv.push(match o.thread_pool_size {
        Some(n) => Word::from(n.to_string()),
        None => Word(vec![Part::Var("threads".to_owned())]),
    });
    if share.posix_acl {
        argv.push(Word::from("--posix-acl"));
        argv.push(Word::from("--xattr"));
    }
    argv.push(Word::from(format!("--cache={}", share.cache.name())));
    if let Some(handles) = o.inode_file_handles {
        argv.push(Word::from(format!(
            "--inode-file-handles={}",
            handles.name()
        )));
    }
    if share.read_only {
        argv.push(Word::from("--readonly"));
    }
    if hypervisor::backend(spec.hypervisor).virtiofs_server() == VirtiofsServer::VirtiofsdWithTag {
        argv.push(Word::from(format!("--tag={}", share.tag)));
    }
    for arg in o.extra_args.iter().chain(&share.extra_args) {
        argv.push(Word::from(arg.clone()));
    }
    argv
}

/// Every tool by name (null when the spec has none), so templates can test for optional ones.
fn tool_map(spec: &RunnerSpec) -> BTreeMap<String, Option<&str>> {
    let mut map = BTreeMap::new();
    for &tool in Tool::ALL {
        let path = spec.tools.get(tool);
        map.insert(tool.name().to_owned(), path);
        map.insert(tool.name().replace(['-', '.'], "_"), path);
    }
    map
}

fn file(contents: String) -> Entry {
    Entry::File {
        contents,
        executable: false,
    }
}

fn script(contents: String) -> Entry {
    Entry::File {
        contents,
        executable: true,
    }
}

fn lines<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str(item);
        out.push('\n');
    }
    out
}

/// mkfs arguments before the image: quiet flag, label, the user's extra arguments.
fn mkfs_args(image: &volume::Volume, label_flag: &str) -> Vec<String> {
    let mut args: Vec<String> = quiet_flag(&image.fs_type)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(label) = &image.label {
        args.push(label_flag.to_owned());
        args.push(label.clone());
    }
    args.extend(image.mkfs_extra_args.iter().cloned());
    args
}

/// Every word the generated scripts hand to `exec` as one argument or environment string (the
/// hypervisor's arguments, its helpers', virtiofsd's, mkfs's, exported variables): Linux
/// refuses to start a program when one of them is longer than MAX_ARG_STRLEN, so validation
/// checks them.
pub fn argument_words(spec: &RunnerSpec) -> Vec<Word> {
    let mut words = Vec::new();
    // A launch sizes queues and descriptors by vcpu: only build one within the validated bounds.
    if spec.within_bounds() {
        let launch = hypervisor::launch(spec);
        words.extend(launch.args);
        words.extend(launch.after_extra_args);
        for step in launch.steps {
            match step {
                Step::Background { argv, .. } => words.extend(argv),
                Step::Export { name, value } => words.push(Word::from(format!("{name}={value}"))),
                _ => {}
            }
        }
    }
    for volume in spec.volumes.iter().filter(|v| v.gets_filesystem()) {
        words.push(Word::from(volume.image.clone()));
        words.extend(mkfs_args(volume, "").into_iter().map(Word::from));
    }
    if needs_virtiofsd(spec) {
        let virtiofsd = spec.tools.get(Tool::Virtiofsd).unwrap_or_default();
        for share in spec.virtiofs_shares() {
            words.extend(virtiofsd_argv(spec, share, virtiofsd));
        }
    }
    words
}

/// Builds the runner tree of a spec that [`crate::validate::validate`] accepted.
pub fn build(spec: &RunnerSpec, renderer: &Renderer) -> Result<Tree, RenderError> {
    let backend = hypervisor::backend(spec.hypervisor);
    let launch = hypervisor::launch(spec);
    let context = context(spec, backend, &launch);
    let mut tree = Tree::new();
    lifecycle_scripts(&mut tree, spec, backend, &context, renderer)?;
    host_setup(&mut tree, &context, renderer)?;
    device_lists(&mut tree, spec);
    virtiofs(&mut tree, spec, &context, renderer)?;
    bin_scripts(&mut tree, spec, &context, renderer)?;
    description(&mut tree, spec, backend);
    Ok(tree)
}

/// Everything the templates read, gathered from the spec and the hypervisor's launch once.
fn context<'a>(
    spec: &'a RunnerSpec,
    backend: &dyn hypervisor::Backend,
    launch: &'a Launch,
) -> Context<'a> {
    Context {
        host_name: &spec.host_name,
        hypervisor: spec.hypervisor.name(),
        balloon_state_file: backend.balloon_state_file(spec),
        host_os: host_os(spec.hypervisor),
        mem: spec.mem,
        socket: spec.socket.as_deref(),
        launch: LaunchContext {
            program: spec.tools.get(launch.program).unwrap_or_default(),
            launch,
        },
        tools: tool_map(spec),
        procname: spec
            .pretty_procnames
            .then(|| format!("microvm@{}", spec.host_name)),
        pre_start: &spec.pre_start,
        extra_args_script: spec.extra_args_script.as_deref(),
        ephemeral_images: spec
            .volumes
            .iter()
            .filter(|v| v.ephemeral)
            .map(|v| v.image.as_str())
            .collect(),
        contents_volumes: spec
            .volumes
            .iter()
            .filter_map(|v| {
                Some(ContentsContext {
                    image: &v.image,
                    source: v.contents_file.as_deref()?,
                })
            })
            .collect(),
        volumes: volume_contexts(spec),
        taps: {
            let multi_queue = backend.tap_multi_queue(spec);
            spec.tap_interfaces()
                .map(|i| TapContext {
                    id: &i.id,
                    multi_queue,
                })
                .collect()
        },
        macvtaps: spec
            .macvtap_interfaces()
            .filter_map(|i| {
                let macvtap = i.macvtap.as_ref()?;
                Some(MacvtapContext {
                    id: &i.id,
                    mac: &i.mac,
                    link: &macvtap.link,
                    mode: macvtap.mode.name(),
                })
            })
            .collect(),
        pci_devices: devices_on(spec, DeviceBus::Pci),
        virtiofs: virtiofs_contexts(spec),
        virtiofsd_threads_from_nproc: spec.virtiofsd.thread_pool_size.is_none(),
        host_user: &spec.host.user,
        host_group: &spec.host.group,
        uses_runner_dir: uses_runner_dir(launch),
        notify_bridge: notify_bridge(spec),
    }
}

/// The volumes `microvm-run` creates with a filesystem, with the mkfs that makes it.
fn volume_contexts(spec: &RunnerSpec) -> Vec<VolumeContext<'_>> {
    spec.volumes
        .iter()
        .filter(|v| v.gets_filesystem())
        .filter_map(|v| {
            let mkfs = spec.tools.get(Tool::mkfs(&v.fs_type)?)?;
            let label_flag = volume::AUTO_CREATE_FILESYSTEMS
                .iter()
                .find(|(fs, _)| *fs == v.fs_type)
                .map(|(_, flag)| *flag)?;
            Some(VolumeContext {
                image: &v.image,
                size: v.size.unwrap_or(0),
                fs_type: &v.fs_type,
                mkfs,
                mkfs_args: mkfs_args(v, label_flag),
            })
        })
        .collect()
}

/// The virtiofsd command line of each share that virtiofsd-run serves (none when the
/// hypervisor serves virtiofs itself).
fn virtiofs_contexts(spec: &RunnerSpec) -> Vec<VirtiofsContext<'_>> {
    if !needs_virtiofsd(spec) {
        return Vec::new();
    }
    let virtiofsd = spec.tools.get(Tool::Virtiofsd).unwrap_or_default();
    spec.virtiofs_shares()
        .map(|share| VirtiofsContext {
            tag: &share.tag,
            socket: share.socket.as_deref().unwrap_or_default(),
            argv: virtiofsd_argv(spec, share, virtiofsd),
        })
        .collect()
}

fn devices_on(spec: &RunnerSpec, bus: DeviceBus) -> Vec<&str> {
    spec.devices
        .iter()
        .filter(|d| d.bus == bus)
        .map(|d| d.path.as_str())
        .collect()
}

/// `microvm-run`, and what stops, resizes and cleans up after it where the VM has that.
fn lifecycle_scripts(
    tree: &mut Tree,
    spec: &RunnerSpec,
    backend: &dyn hypervisor::Backend,
    context: &Context,
    renderer: &Renderer,
) -> Result<(), RenderError> {
    tree.insert(
        "bin/microvm-run".to_owned(),
        script(renderer.render(templates::MICROVM_RUN, context)?),
    );
    if !context.ephemeral_images.is_empty() {
        tree.insert(
            "bin/microvm-discard".to_owned(),
            script(renderer.render(templates::MICROVM_DISCARD, context)?),
        );
    }
    if let Some(template) = backend.shutdown_template(spec) {
        tree.insert(
            "bin/microvm-shutdown".to_owned(),
            script(renderer.render(template, context)?),
        );
    }
    if let Some(template) = backend.balloon_template(spec) {
        tree.insert(
            "bin/microvm-balloon".to_owned(),
            script(renderer.render(template, context)?),
        );
    }
    Ok(())
}

/// What the host units run before the VM starts: taps, macvtaps and PCI devices to set up and
/// tear down, each with the list the host module reads.
fn host_setup(tree: &mut Tree, context: &Context, renderer: &Renderer) -> Result<(), RenderError> {
    if !context.taps.is_empty() {
        tree.insert(
            "bin/tap-up".to_owned(),
            script(renderer.render(templates::TAP_UP, context)?),
        );
        tree.insert(
            "bin/tap-down".to_owned(),
            script(renderer.render(templates::TAP_DOWN, context)?),
        );
        tree.insert(
            "share/microvm/tap-interfaces".to_owned(),
            file(lines(context.taps.iter().map(|t| t.id))),
        );
    }
    if !context.macvtaps.is_empty() {
        tree.insert(
            "bin/macvtap-up".to_owned(),
            script(renderer.render(templates::MACVTAP_UP, context)?),
        );
        tree.insert(
            "bin/macvtap-down".to_owned(),
            script(renderer.render(templates::MACVTAP_DOWN, context)?),
        );
        let described: Vec<String> = context
            .macvtaps
            .iter()
            .map(|m| format!("{} {} {} {}", m.id, m.mac, m.link, m.mode))
            .collect();
        tree.insert(
            "share/microvm/macvtap-interfaces".to_owned(),
            file(lines(described.iter().map(String::as_str))),
        );
    }
    if !context.pci_devices.is_empty() {
        tree.insert(
            "bin/pci-setup".to_owned(),
            script(renderer.render(templates::PCI_SETUP, context)?),
        );
        tree.insert(
            "share/microvm/pci-devices".to_owned(),
            file(lines(context.pci_devices.iter().copied())),
        );
    }
    Ok(())
}

/// USB devices need no setup script, only the list the host module reads.
fn device_lists(tree: &mut Tree, spec: &RunnerSpec) {
    let usb = devices_on(spec, DeviceBus::Usb);
    if !usb.is_empty() {
        tree.insert("share/microvm/usb-devices".to_owned(), file(lines(usb)));
    }
}

/// virtiofsd-run, and each virtiofs share's socket and source for the host's virtiofsd unit.
fn virtiofs(
    tree: &mut Tree,
    spec: &RunnerSpec,
    context: &Context,
    renderer: &Renderer,
) -> Result<(), RenderError> {
    if !context.virtiofs.is_empty() {
        tree.insert(
            "bin/virtiofsd-run".to_owned(),
            script(renderer.render(templates::VIRTIOFSD_RUN, context)?),
        );
    }
    for share in spec.virtiofs_shares() {
        let dir = format!("share/microvm/virtiofs/{}", share.tag);
        if let Some(socket) = &share.socket {
            tree.insert(format!("{dir}/socket"), file(format!("{socket}\n")));
        }
        tree.insert(format!("{dir}/source"), file(format!("{}\n", share.source)));
    }
    Ok(())
}

/// The user's `binScripts`, each with the tools of the runner.
fn bin_scripts(
    tree: &mut Tree,
    spec: &RunnerSpec,
    context: &Context,
    renderer: &Renderer,
) -> Result<(), RenderError> {
    #[derive(Serialize)]
    struct BinScript<'a> {
        tools: &'a BTreeMap<String, Option<&'a str>>,
        text: &'a str,
    }
    for (name, text) in &spec.bin_scripts {
        let rendered = renderer.render(
            templates::BIN_SCRIPT,
            &BinScript {
                tools: &context.tools,
                text,
            },
        )?;
        tree.insert(format!("bin/{name}"), script(rendered));
    }
    Ok(())
}

/// What the runner says of itself under share/microvm: its hypervisor, vsock cid, system, the
/// spec it was made from (`microvm up` re-generates from it) and the backend's own files.
fn description(tree: &mut Tree, spec: &RunnerSpec, backend: &dyn hypervisor::Backend) {
    if let Some(cid) = spec.vsock.cid {
        tree.insert(
            "share/microvm/vsock-cid".to_owned(),
            file(format!("{cid}\n")),
        );
    }
    tree.insert(
        "share/microvm/hypervisor".to_owned(),
        file(format!("{}\n", spec.hypervisor)),
    );
    if let Some(system) = &spec.system_symlink {
        tree.insert(
            "share/microvm/system".to_owned(),
            Entry::Symlink {
                target: system.clone(),
            },
        );
    }
    let spec_json = serde_json::to_string_pretty(spec).expect("a spec always serializes");
    tree.insert("share/microvm/spec.json".to_owned(), file(spec_json + "\n"));
    for (path, contents) in backend.extra_files(spec) {
        tree.insert(path, file(contents));
    }
}
