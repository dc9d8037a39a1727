//! Tier 3: the generated `bin/virtiofsd-run` against the real virtiofsd (the one
//! checks/boot-env.sh installs, found like the boot tests find it), without a guest. It may
//! report readiness to systemd only when every virtiofsd it starts is running and has made its
//! socket: a virtiofsd that refuses its flags must end it with an error, never look ready.

mod common;
#[path = "common/vm.rs"]
mod vm;

use std::io::Read;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use vm::{boot_env, generate, spec, tempdir};

/// How long virtiofsd-run may take to decide; it gives up on a socket after 30 s.
const TIMEOUT: Duration = Duration::from_secs(40);

/// A spec serving `shares` (`(tag, extra virtiofsd arguments)`) from directories under `dir`.
fn virtiofsd_spec(dir: &Path, shares: &[(&str, &[&str])]) -> Value {
    let env = boot_env();
    assert!(!env.virtiofsd.is_empty(), "boot-env.sh built no virtiofsd");
    let mut s = spec(&env, "virtiofsd-run", "boot", &[]);
    s["shares"] = shares
        .iter()
        .map(|(tag, extra_args)| {
            let source = dir.join(format!("source-{tag}"));
            std::fs::create_dir_all(&source).unwrap();
            json!({
                "tag": tag, "source": source, "mountPoint": format!("/mnt/{tag}"),
                "proto": "virtiofs", "socket": format!("{tag}.sock"), "extraArgs": extra_args,
            })
        })
        .collect();
    s["virtiofsd"] = json!({ "group": null });
    s
}

/// `bin/virtiofsd-run`, started in the VM's directory the way its unit starts it, in a process
/// group of its own, telling "systemd" through a socket the test reads.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    notifications: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(runner: &Path, vm_dir: &Path, notify_path: &Path) -> Daemon {
        // Read at once, as systemd does: systemd-notify then waits for its barrier message to
        // be taken (the descriptor it sends is closed when the message is read).
        let notify = UnixDatagram::bind(notify_path).unwrap();
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::clone(&notifications);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = notify.recv(&mut buf) {
                received
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        let mut child = Command::new(runner.join("bin/virtiofsd-run"))
            .current_dir(vm_dir)
            .env("NOTIFY_SOCKET", notify_path)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Daemon {
            child,
            stderr,
            notifications,
        }
    }

    fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every message sent to the notify socket so far.
    fn notifications(&self) -> Vec<String> {
        self.notifications.lock().unwrap().clone()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until `done` holds, failing with what virtiofsd-run said when it does not.
    fn wait_until(&mut self, what: &str, mut done: impl FnMut(&mut Daemon) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !done(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "virtiofsd-run exited ({status}) before {what}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {TIMEOUT:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on the process group virtiofsd-run leads.
        unsafe { libc::kill(-self.pgid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The live processes of process group `pgid`, as (pid, parent pid, command name), read from
/// /proc.
fn group_members(pgid: i32) -> Vec<(i32, i32, String)> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ppid = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0);
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
            members.push((pid, ppid, stat[open + 1..close].to_owned()));
        }
    }
    members
}

/// The virtiofsd processes virtiofsd-run started (each forks its sandboxed worker, which is
/// left out).
fn virtiofsd_pids(pgid: i32) -> Vec<i32> {
    let members = group_members(pgid);
    let is_virtiofsd = |pid: i32| {
        members
            .iter()
            .any(|(p, _, comm)| *p == pid && comm == "virtiofsd")
    };
    members
        .iter()
        .filter(|(pid, ppid, _)| is_virtiofsd(*pid) && !is_virtiofsd(*ppid))
        .map(|(pid, _, _)| *pid)
        .collect()
}

/// Leaves a socket file at `path` that nothing listens on, as a virtiofsd killed by SIGKILL
/// (or a crashed host) leaves its socket behind.
fn stale_socket(path: &Path) {
    drop(UnixListener::bind(path).unwrap());
    assert!(path.exists());
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Issue 14 (3c): a virtiofsd that refuses its flags (here one it does not know, given through
/// the share's `extraArgs`) exits at once and never makes its socket, while its sibling serves.
/// virtiofsd-run used to wait for socket files only, so the sockets of an earlier run made it
/// report ready at once, to its log and to systemd, while the refused virtiofsd crash-looped.
#[test]
fn virtiofsd_run_fails_rather_than_report_ready_when_virtiofsd_refuses_its_flags() {
    let tmp = tempdir();
    let vm_dir = tmp.path().join("vm");
    let s = virtiofsd_spec(
        tmp.path(),
        &[("served", &[]), ("refused", &["--flag-virtiofsd-refuses"])],
    );
    let runner = generate(&vm_dir, &s);
    for socket in ["served.sock", "refused.sock"] {
        stale_socket(&vm_dir.join(socket));
    }

    let mut daemon = Daemon::start(&runner, &vm_dir, &tmp.path().join("notify"));
    let status = daemon.wait_exit(TIMEOUT);
    let stderr = daemon.stderr();
    let notifications = daemon.notifications();
    assert!(
        !stderr.contains("virtiofsd-run: ready"),
        "reported ready although one virtiofsd refused its flags:\n{stderr}"
    );
    assert!(
        !notifications.iter().any(|m| m.contains("READY=1")),
        "told systemd it was ready: {notifications:?}\n{stderr}"
    );
    let status = status.unwrap_or_else(|| {
        panic!("virtiofsd-run still runs after {TIMEOUT:?} instead of failing:\n{stderr}")
    });
    assert!(!status.success(), "exited with {status}:\n{stderr}");
    assert!(
        stderr.contains("refused.sock") && stderr.contains("exited with status"),
        "does not say which virtiofsd failed:\n{stderr}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        group_members(daemon.pgid()),
        [],
        "the virtiofsd that did start outlives virtiofsd-run"
    );
}

/// The other side: with every virtiofsd up, virtiofsd-run reports ready (to its log and to
/// systemd), starts each virtiofsd that exits again on a fresh socket, and stops everything on
/// SIGTERM with status 0.
#[test]
fn virtiofsd_run_reports_ready_when_served_and_restarts_a_virtiofsd_that_exits() {
    let tmp = tempdir();
    let vm_dir = tmp.path().join("vm");
    let s = virtiofsd_spec(tmp.path(), &[("one", &[]), ("two", &[])]);
    let runner = generate(&vm_dir, &s);
    stale_socket(&vm_dir.join("one.sock"));

    let mut daemon = Daemon::start(&runner, &vm_dir, &tmp.path().join("notify"));
    daemon.wait_until("READY=1", |d| {
        d.notifications().iter().any(|m| m.contains("READY=1"))
    });
    assert!(
        daemon
            .stderr()
            .contains("virtiofsd-run: ready, serving 2 share(s)")
    );
    for socket in ["one.sock", "two.sock"] {
        assert!(is_socket(&vm_dir.join(socket)), "{socket} is not there");
    }
    let before = virtiofsd_pids(daemon.pgid());
    assert_eq!(before.len(), 2, "{:?}", group_members(daemon.pgid()));

    // The second one exits while virtiofsd-run waits to restart the first.
    for pid in &before {
        // SAFETY: plain kill(2) on a virtiofsd of the group.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(300));
    }
    daemon.wait_until("both virtiofsd restarted", |d| {
        let now = virtiofsd_pids(d.pgid());
        now.len() == 2 && !now.iter().any(|pid| before.contains(pid))
    });
    daemon.wait_until("sockets again", |_| {
        is_socket(&vm_dir.join("one.sock")) && is_socket(&vm_dir.join("two.sock"))
    });
    assert!(
        daemon.stderr().contains("restarting"),
        "{}",
        daemon.stderr()
    );

    // SAFETY: plain kill(2) on virtiofsd-run itself, as systemd stops it.
    unsafe { libc::kill(daemon.pgid(), libc::SIGTERM) };
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.stderr()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(group_members(daemon.pgid()), [], "a virtiofsd outlives it");
}
