//! A systemd of a test's own: systemd runs as PID 1 of a PID and mount namespace, loading
//! units only from the test's directory (SYSTEMD_UNIT_PATH), where empty stand-ins of the
//! targets a service depends on stand. None of the host's units run, so nothing like
//! systemd-tmpfiles touches the host. The namespace gets a /proc of its own: with the host's,
//! systemd reads a service's PID as a host process (a kernel thread, when the numbers meet),
//! takes its main process for someone else's child and stops the service with SIGKILL at once
//! instead of SIGTERM. Each manager also gets a cgroup subtree of its own, so managers running
//! side by side keep out of each other's units. Needs root, unshare and nsenter. Included with
//! `#[path = "common/systemd.rs"] mod systemd;` next to `mod vm;`.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::vm::host_tool;

pub const SYSTEMD: &str = "/lib/systemd/systemd";

/// Targets and the slice a service unit's default dependencies name.
pub const STAND_IN_UNITS: &[&str] = &[
    "minimal.target",
    "sysinit.target",
    "basic.target",
    "shutdown.target",
    "sockets.target",
    "paths.target",
    "timers.target",
    "multi-user.target",
    "local-fs.target",
    "network.target",
    "system.slice",
];

pub struct Manager {
    unshare: Child,
    pid: u32,
    services_log: PathBuf,
    cgroup: String,
}

impl Manager {
    pub fn start(units: &Path) -> Manager {
        assert!(
            Path::new(SYSTEMD).is_file(),
            "{SYSTEMD} is missing: install systemd (checks/test.sh does)"
        );
        std::fs::create_dir_all(units).unwrap();
        // No journald runs here, so a service's output would go to /dev/null; to a file instead,
        // for a failing test to show (systemd opens it before a unit's sandbox applies).
        let services_log = units.parent().unwrap_or(units).join("services.log");
        std::fs::create_dir_all(units.join("service.d")).unwrap();
        std::fs::write(
            units.join("service.d/10-test-output.conf"),
            format!(
                "[Service]\nStandardOutput=append:{}\nStandardError=inherit\n",
                services_log.display()
            ),
        )
        .unwrap();
        for unit in STAND_IN_UNITS {
            std::fs::write(
                units.join(unit),
                "[Unit]\nDescription=Stand-in for the test's manager\nDefaultDependencies=no\n",
            )
            .unwrap();
        }
        // A cgroup subtree of its own in every hierarchy: systemd takes the cgroup it starts in
        // for its root, and managers side by side in one root share init.scope and
        // system.slice, where one's bookkeeping ends another's services.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cgroup = format!(
            "microvm-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut join = String::new();
        for hierarchy in ["systemd", "unified"] {
            let dir = Path::new(CGROUPS).join(hierarchy).join(&cgroup);
            if std::fs::create_dir(&dir).is_ok() {
                join.push_str(&format!("echo $$ >'{}/cgroup.procs' && ", dir.display()));
            }
        }
        let unshare = Command::new("sh")
            .arg("-c")
            .arg(format!("{join}exec \"$@\""))
            .arg("sh")
            .arg(host_tool("unshare"))
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--propagation",
                "private",
                "--mount-proc",
            ])
            .arg("env")
            .arg("container=microvm-test")
            .arg(format!("SYSTEMD_UNIT_PATH={}", units.display()))
            .args([
                SYSTEMD,
                "--system",
                "--unit=minimal.target",
                "--log-target=console",
                "--show-status=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        // systemd is unshare's child, PID 1 of the new namespace.
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "unshare started no systemd");
            std::thread::sleep(Duration::from_millis(50));
        };
        let manager = Manager {
            unshare,
            pid,
            services_log,
            cgroup,
        };
        loop {
            let state = manager.run(&["systemctl", "is-system-running"]);
            let state = text(&state.stdout);
            if matches!(state.trim(), "running" | "degraded") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the test's systemd is not up: {state}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        manager
    }

    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new(host_tool("nsenter"));
        command
            .arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-p", "--"])
            .args(argv);
        command
    }

    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().unwrap()
    }

    /// What the services said so far, for a failing assertion's message.
    pub fn logs(&self) -> String {
        let said = std::fs::read_to_string(&self.services_log).unwrap_or_default();
        format!("--- what the services said ---\n{said}")
    }

    pub fn show(&self, unit: &str, property: &str) -> String {
        let output = self.run(&["systemctl", "show", unit, "-p", property, "--value"]);
        text(&output.stdout).trim().to_owned()
    }

    /// Waits until `unit`'s ActiveState is one of `states`, and returns the state it ended in
    /// (the last one seen when `timeout` passes first).
    pub fn wait_for_state(&self, unit: &str, states: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.show(unit, "ActiveState");
            if states.contains(&state.as_str()) || Instant::now() > deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Manager {
    /// Killing PID 1 of the namespace ends everything in it.
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.unshare.wait();
        // systemd made the same tree in the controllers' hierarchies; empty now, it can go.
        if let Ok(hierarchies) = std::fs::read_dir(CGROUPS) {
            for hierarchy in hierarchies.flatten() {
                remove_cgroup_tree(&hierarchy.path().join(&self.cgroup), Instant::now());
            }
        }
    }
}

const CGROUPS: &str = "/sys/fs/cgroup";

/// Removes an emptied cgroup and those under it, deepest first; the kernel may take a moment
/// to see the killed processes gone.
fn remove_cgroup_tree(dir: &Path, since: Instant) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path(), since);
        }
    }
    while std::fs::remove_dir(dir).is_err() && since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits until `path` has a line starting with `line`.
pub fn wait_for_file_line(path: &Path, line: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.starts_with(line)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where a checkout and its build may live but a unit's sandbox does not look: PrivateTmp=
/// gives it its own /tmp and /var/tmp, ProtectHome= hides the homes.
const HIDDEN_FROM_UNITS: &[&str] = &["/tmp/", "/var/tmp/", "/home/", "/root/", "/run/user/"];

/// `path`, or when a unit's sandbox cannot see it (the boot files and programs of a checkout in
/// /tmp or a home), a link or copy of it in `tmp`: on a host these are in the Nix store.
pub fn visible(tmp: &Path, path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    if !HIDDEN_FROM_UNITS
        .iter()
        .any(|hidden| text.starts_with(hidden))
    {
        return path.to_owned();
    }
    let dir = tmp.join("visible");
    std::fs::create_dir_all(&dir).unwrap();
    let n = std::fs::read_dir(&dir).unwrap().count();
    let target = dir.join(format!(
        "{n}-{}",
        path.file_name().unwrap().to_string_lossy()
    ));
    if std::fs::hard_link(path, &target).is_err() {
        std::fs::copy(path, &target).unwrap();
    }
    target
}

/// The spec's kernel, initrd, store disk and tools where the unit's sandbox sees them.
pub fn make_visible(tmp: &Path, spec: &mut Value) {
    for key in ["kernel", "initrdPath", "storeDisk"] {
        if let Some(path) = spec[key].as_str().map(PathBuf::from) {
            spec[key] = json!(visible(tmp, &path));
        }
    }
    if let Some(tools) = spec["tools"].as_object_mut() {
        for value in tools.values_mut() {
            if let Some(path) = value.as_str().map(PathBuf::from) {
                *value = json!(visible(tmp, &path));
            }
        }
    }
}

/// The test build's `microvm`, where a unit sees it.
pub fn microvm_exe(tmp: &Path) -> PathBuf {
    visible(tmp, Path::new(env!("CARGO_BIN_EXE_microvm")))
}

/// A directory for state that units' PrivateTmp= (a private /tmp and /var/tmp) does not hide,
/// as /var/lib/microvms is not hidden on a host.
pub fn state_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("microvm-systemd-test-")
        .tempdir_in("/var/lib")
        .unwrap()
}

/// The host package of state directory `state`, its units copied into `units`, with drop-ins
/// that append `name`'s console to `tmp/console.log` and virtiofsd-run's to `tmp/virtiofsd.log`.
pub fn install_host_units(tmp: &Path, state: &Path, name: &str, environment: &[(&str, &str)]) {
    let host_spec = serde_json::json!({
        "specVersion": 1, "stateDir": state, "user": "root", "group": "root",
        "startupTimeout": 150, "shutdownTimeout": 60,
        "tools": { "bash": host_tool("bash"), "ln": host_tool("ln"), "rm": host_tool("rm"),
                   "mkdir": host_tool("mkdir"), "chown": host_tool("chown"),
                   "readlink": host_tool("readlink"), "microvm": microvm_exe(tmp) }
    });
    let package = crate::common::generate_host(&host_spec, tmp);
    let units = tmp.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir(package.join("lib/systemd/system")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), units.join(entry.file_name())).unwrap();
    }
    // The journal would keep these on a host; this manager has none.
    for (unit, log) in [
        ("microvm", "console.log"),
        ("microvm-virtiofsd", "virtiofsd.log"),
    ] {
        let drop_ins = units.join(format!("{unit}@{name}.service.d"));
        std::fs::create_dir_all(&drop_ins).unwrap();
        let mut text = format!(
            "[Service]\nStandardOutput=append:{0}\nStandardError=append:{0}\n",
            tmp.join(log).display()
        );
        for (key, value) in environment {
            text.push_str(&format!("Environment={key}={value}\n"));
        }
        std::fs::write(drop_ins.join("test.conf"), text).unwrap();
    }
}

/// `microvm create NAME --runner RUNNER` in `state`.
pub fn create(tmp: &Path, state: &Path, name: &str, runner: &Path) {
    let created = Command::new(env!("CARGO_BIN_EXE_microvm"))
        .args(["create", name, "--runner", runner.to_str().unwrap()])
        .env("MICROVM_STATE_DIR", state)
        .env("MICROVM_GCROOTS_DIR", tmp.join("gcroots"))
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created.stderr));
}
