//! What the state directory holds for one VM: `current` (the installed runner), `booted` (the
//! runner that is running), `toplevel` (marks a VM declared in the host configuration),
//! `flake` (where `microvm update` builds it from), and its volumes and sockets.

use std::fs;
use std::path::{Path, PathBuf};

use crate::host::validate::is_vm_name;
use crate::hypervisor::kvmtool::LKVM_DIR;
use crate::spec::RunnerSpec;

/// The entries of a VM's directory that `microvm`, the host's units and the runner make and
/// can make again: what `microvm remove --yes` deletes, besides sockets. Anything else there
/// (volume images, share sources, the user's own files) is only deleted with --purge.
pub const MADE_FOR_THE_VM: &[&str] = &[
    "current",
    "booted",
    "toplevel",
    "flake",
    // `microvm update` builds into it before it replaces `current`.
    ".current.new",
    // kvmtool's control socket and microvm-balloon's record of the balloon size.
    LKVM_DIR,
    // What `microvm up` writes (manage/up.rs); volume images it asks for are the user's.
    RECORD,
    PID_FILE,
    CONSOLE_LOG,
    UP_NOTIFY_SOCKET,
    RUNNER_DIR,
    SOURCE_LINK,
    ".runner.new",
];

/// `microvm up`: how the VM was started and from what.
pub const RECORD: &str = "up.json";
/// `microvm up` without systemd: the supervisor's process id.
pub const PID_FILE: &str = "up.pid";
/// `microvm up` without systemd: the guest's console and the runner's messages.
pub const CONSOLE_LOG: &str = "console.log";
/// `microvm up` without systemd: where the supervisor takes the runner's sd_notify messages.
pub const UP_NOTIFY_SOCKET: &str = "up-notify.sock";
/// `microvm up`: the runner rendered with the command line's overrides.
pub const RUNNER_DIR: &str = "runner";
/// `microvm up`: the runner it was made from (a garbage-collector root when nix built it).
pub const SOURCE_LINK: &str = "runner-source";

/// The links of a VM's directory whose runners garbage-collector roots keep: `microvm create`
/// and `update` root `current` and `booted`; the guest's `deploy.installOnHost` also roots the
/// runner it replaced, `old`.
pub const ROOTED_LINKS: &[&str] = &["current", "booted", "old"];

/// The name of the garbage-collector root of VM `name`'s `link`: `LINK@NAME`. No VM name has an
/// `@`, so no two VMs' roots share a name, and none has a name of the old scheme.
pub fn gc_root(link: &str, name: &str) -> String {
    format!("{link}@{name}")
}

/// The name the root of `link` had before [`gc_root`]: `NAME` for `current`, `LINK-NAME` for
/// the others. Those names collide (VM `booted-web`'s `current` was web's `booted`), so such a
/// root is this VM's only when it points at this VM's link.
pub fn legacy_gc_root(link: &str, name: &str) -> String {
    match link {
        "current" => name.to_owned(),
        _ => format!("{link}-{name}"),
    }
}

/// Text read from disk (link targets, file names, a runner's files), for a terminal: control
/// characters (newlines, escape sequences) and backslashes are written as Rust escapes, so what
/// is shown is one line and the terminal does what it shows.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '\\' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub struct VmDir {
    pub name: String,
    pub dir: PathBuf,
}

impl VmDir {
    pub fn new(state_dir: &Path, name: &str) -> VmDir {
        VmDir {
            name: name.to_owned(),
            dir: state_dir.join(name),
        }
    }

    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.dir).is_ok()
    }

    /// A runner is installed: `current` exists, as a link (even a dangling one).
    pub fn installed(&self) -> bool {
        fs::symlink_metadata(self.dir.join("current")).is_ok()
    }

    /// The VM's directory is a directory of its own, not a link to one.
    pub fn is_real_dir(&self) -> bool {
        fs::symlink_metadata(&self.dir).is_ok_and(|m| m.is_dir())
    }

    fn link(&self, name: &str) -> Option<PathBuf> {
        fs::read_link(self.dir.join(name)).ok()
    }

    /// Where `current` points (the installed runner).
    pub fn current(&self) -> Option<PathBuf> {
        self.link("current")
    }

    /// Where `booted` points (the runner of the running VM).
    pub fn booted(&self) -> Option<PathBuf> {
        self.link("booted")
    }

    /// Runs an older version than the installed one: its unit is `active` and `booted` is not
    /// `current`. (A running VM without `booted` was started before the host recorded it.)
    pub fn outdated(&self, active: bool) -> bool {
        active
            && self
                .booted()
                .is_some_and(|booted| Some(booted) != self.current())
    }

    /// Fully declarative VMs (`microvm.vms.<n>.config`) carry a `toplevel` link.
    pub fn declarative(&self) -> bool {
        self.link("toplevel").is_some()
    }

    pub fn flake(&self) -> Option<String> {
        crate::input_file::read_to_string(&self.dir.join("flake"), crate::input_file::STATE)
            .ok()
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
    }

    fn share(&self, file: &str) -> Option<String> {
        let path = self.dir.join("current/share/microvm").join(file);
        crate::input_file::read_to_string(&path, crate::input_file::STATE)
            .ok()
            .map(|s| s.trim().to_owned())
    }

    pub fn hypervisor(&self) -> Option<String> {
        self.share("hypervisor")
    }

    pub fn vsock_cid(&self) -> Option<u64> {
        self.share("vsock-cid")?.parse().ok()
    }

    /// The runner's validated spec (`share/microvm/spec.json`).
    pub fn spec(&self) -> Option<RunnerSpec> {
        serde_json::from_str(&self.share("spec.json")?).ok()
    }

    /// What the running guest reported through microvm-notify-bridge (`health.json`), when the
    /// runner has guest readiness; None for a runner without it or before the bridge wrote it.
    pub fn guest_health(&self) -> Option<crate::notify_bridge::GuestHealth> {
        self.spec()?.vsock.notify?;
        let text = std::fs::read_to_string(self.dir.join(crate::notify_bridge::STATE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The installed runner can start the VM.
    pub fn has_runner(&self) -> bool {
        self.dir.join("current/bin/microvm-run").is_file()
    }
}

/// Every VM in the state directory: a directory with a `current` link, by name. An entry whose
/// name is not a valid VM name is no VM (`create` and the host module refuse such names), so it
/// is neither listed nor asked about.
pub fn all(state_dir: &Path) -> std::io::Result<Vec<VmDir>> {
    let mut vms = Vec::new();
    let entries = match fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vms),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_vm_name(&name) {
            continue;
        }
        let vm = VmDir::new(state_dir, &name);
        if vm.current().is_some() {
            vms.push(vm);
        }
    }
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(vms)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// `LINK@NAME` for every pair of links and VM names is a different name, and none is a name
    /// of the old scheme, whatever the VM names: no VM name has an `@`.
    #[test]
    fn gc_roots_are_unambiguous() {
        let names = [
            "web",
            "booted-web",
            "current-web",
            "old-web",
            "booted",
            "current",
            "old",
            "w.b",
            "w_b",
        ];
        let mut seen = std::collections::BTreeMap::new();
        for name in names {
            assert!(is_vm_name(name));
            for link in ROOTED_LINKS {
                let root = gc_root(link, name);
                assert_eq!(seen.insert(root.clone(), (link, name)), None, "{root}");
                assert!(
                    names.iter().all(|other| ROOTED_LINKS
                        .iter()
                        .all(|l| legacy_gc_root(l, other) != root)),
                    "{root}"
                );
            }
        }
        assert!(!is_vm_name("web@x") && !is_vm_name("booted@web"));
    }

    #[test]
    fn printable_text_is_one_line_without_escapes() {
        assert_eq!(printable("/nix/store/a-b c"), "/nix/store/a-b c");
        assert_eq!(printable("a\nb\u{1b}[2J\u{9b}\\"), r"a\nb\u{1b}[2J\u{9b}\\");
    }

    #[test]
    fn outdated_only_while_running_another_version() {
        let state = tempfile::tempdir().unwrap();
        let vm = VmDir::new(state.path(), "web");
        std::fs::create_dir(&vm.dir).unwrap();
        symlink("/runners/new", vm.dir.join("current")).unwrap();
        assert!(!vm.outdated(true), "no booted record");
        symlink("/runners/old", vm.dir.join("booted")).unwrap();
        assert!(vm.outdated(true));
        assert!(
            !vm.outdated(false),
            "a stopped VM starts with the installed version"
        );
        std::fs::remove_file(vm.dir.join("booted")).unwrap();
        symlink("/runners/new", vm.dir.join("booted")).unwrap();
        assert!(!vm.outdated(true));
    }
}
