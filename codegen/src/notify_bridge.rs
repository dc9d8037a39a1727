//! `microvm-notify-bridge`: carries a guest's readiness and health from its vsock to the host
//! unit's `NOTIFY_SOCKET`, and keeps the health each check last reported where `microvm status`
//! reads it.
//!
//! The guest's systemd (≥ 254) sends `READY=1` when boot finishes to the address of its
//! `vmm.notify_socket` credential; with `vsock-stream:2:<port>` (the form the guest module
//! passes) it opens one stream connection per message and half-closes after writing, and
//! systemd ≥ 256 waits for the peer's EOF — so a message is everything up to EOF, and the
//! connection is closed after it. The guest's health checks send `X_MICROVM_HEALTH=<check>
//! <passing|failing> <last output line>` the same way.
//!
//! Where the guest's connection arrives depends on the hypervisor: qemu, crosvm, kvmtool and
//! stratovirt use the host kernel's vsock, so the bridge listens on AF_VSOCK (stream and, for
//! guests whose address says `vsock-seqpacket:`, seqpacket) and takes connections only from the
//! VM's cid; firecracker and cloud-hypervisor (hybrid vsock, as vhost-device-vsock) connect a
//! guest's connection to host port P to the Unix socket `<mux socket>_P`, where the bridge
//! listens instead.
//!
//! Only `READY=1`, `STATUS=`, `STOPPING=1` and health lines are forwarded; a guest cannot set
//! the unit's main PID, watchdog or file descriptors.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The field a guest's health check reports with.
pub const HEALTH_FIELD: &str = "X_MICROVM_HEALTH";

/// The file, in the VM's working directory, where the bridge keeps what the guest reported.
pub const STATE_FILE: &str = "health.json";

/// A message larger than this is not a notification; the rest is ignored.
const MAX_MESSAGE: u64 = 64 * 1024;

/// How long one connection may take to deliver its message.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A pause this long ends a message that has begun.
const MESSAGE_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot listen on {what}: {source}")]
    Listen { what: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("no NOTIFY_SOCKET: the bridge forwards to a systemd unit's notify socket")]
    NoNotifySocket,
    #[error("{0}")]
    Usage(String),
}

impl BridgeError {
    /// Stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            BridgeError::Listen { .. } => "microvm::notify_bridge::listen",
            BridgeError::State { .. } => "microvm::notify_bridge::state",
            BridgeError::NoNotifySocket => "microvm::notify_bridge::no_notify_socket",
            BridgeError::Usage(_) => "microvm::notify_bridge::usage",
        }
    }
}

/// What a health check last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    Passing,
    Failing,
}

/// One health check as the host last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckReport {
    pub state: CheckState,
    /// When the state last changed, in seconds since the epoch (host clock).
    pub since: u64,
    /// The check's last line of output.
    pub output: String,
}

/// What the bridge keeps in [`STATE_FILE`]; reset when the VM starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestHealth {
    /// The guest said `READY=1` since the VM started.
    pub ready: bool,
    /// When it did, in seconds since the epoch.
    pub ready_since: Option<u64>,
    /// The guest's last `STATUS=`.
    pub status: Option<String>,
    /// Each health check by name.
    pub checks: BTreeMap<String, CheckReport>,
}

impl GuestHealth {
    /// One line for `systemctl status`: `ready; checks: web passing, db failing (…)`.
    pub fn summary(&self) -> String {
        let mut text = if self.ready { "ready" } else { "starting" }.to_owned();
        if !self.checks.is_empty() {
            let checks: Vec<String> = self
                .checks
                .iter()
                .map(|(name, check)| match check.state {
                    CheckState::Passing => format!("{name} passing"),
                    CheckState::Failing if check.output.is_empty() => format!("{name} failing"),
                    CheckState::Failing => format!("{name} failing ({})", check.output),
                })
                .collect();
            text.push_str("; checks: ");
            text.push_str(&checks.join(", "));
        }
        text
    }

    /// Takes one message of the guest in; returns what to send to the unit's notify socket
    /// (empty: nothing).
    pub fn absorb(&mut self, message: &str, now: u64) -> String {
        let mut forward = Vec::new();
        let mut changed = false;
        for line in message.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "READY" if value == "1" => {
                    if !self.ready {
                        self.ready = true;
                        self.ready_since = Some(now);
                    }
                    forward.push(line.to_owned());
                }
                "STOPPING" if value == "1" => forward.push(line.to_owned()),
                "STATUS" => {
                    self.status = Some(value.to_owned());
                    changed = true;
                }
                HEALTH_FIELD => {
                    if let Some((name, state, output)) = parse_health(value) {
                        let since = match self.checks.get(name) {
                            Some(old) if old.state == state => old.since,
                            _ => now,
                        };
                        self.checks.insert(
                            name.to_owned(),
                            CheckReport {
                                state,
                                since,
                                output: output.to_owned(),
                            },
                        );
                        forward.push(line.to_owned());
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        if changed || !forward.is_empty() {
            let status = match &self.status {
                Some(guest) if self.checks.is_empty() => guest.clone(),
                _ => self.summary(),
            };
            forward.push(format!("STATUS={}", one_line(&status)));
        }
        if forward.is_empty() {
            String::new()
        } else {
            forward.join("\n") + "\n"
        }
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// `<check> <passing|failing> [output…]`.
fn parse_health(value: &str) -> Option<(&str, CheckState, &str)> {
    let mut parts = value.splitn(3, ' ');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let state = match parts.next()? {
        "passing" => CheckState::Passing,
        "failing" => CheckState::Failing,
        _ => return None,
    };
    Some((name, state, parts.next().unwrap_or("").trim()))
}

/// Where the guest's connections arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Hybrid vsock: the Unix socket the hypervisor connects a guest's port to.
    Unix(PathBuf),
    /// The host's AF_VSOCK, port `port`, from the guest `cid` only.
    Vsock { port: u32, cid: u32 },
}

/// `microvm-notify-bridge` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub listen: Listen,
    pub notify_socket: String,
    pub state: PathBuf,
}

const USAGE: &str = "usage: microvm-notify-bridge (--unix PATH | --vsock-port PORT --cid CID) [--state FILE] [--notify-socket ADDR]";

impl Options {
    /// Parses the arguments (without the program name); NOTIFY_SOCKET is the default target.
    pub fn parse(args: &[String], notify_env: Option<String>) -> Result<Options, BridgeError> {
        let mut unix = None;
        let mut port = None;
        let mut cid = None;
        let mut state = PathBuf::from(STATE_FILE);
        let mut notify = notify_env;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = || {
                iter.next()
                    .cloned()
                    .ok_or_else(|| BridgeError::Usage(format!("{arg} needs a value\n{USAGE}")))
            };
            let number = |text: String| {
                text.parse::<u32>()
                    .map_err(|_| BridgeError::Usage(format!("{arg}: not a number: {text}")))
            };
            match arg.as_str() {
                "--unix" => unix = Some(PathBuf::from(value()?)),
                "--vsock-port" => port = Some(number(value()?)?),
                "--cid" => cid = Some(number(value()?)?),
                "--state" => state = PathBuf::from(value()?),
                "--notify-socket" => notify = Some(value()?),
                other => {
                    return Err(BridgeError::Usage(format!(
                        "unknown argument {other}\n{USAGE}"
                    )));
                }
            }
        }
        let listen = match (unix, port, cid) {
            (Some(path), None, None) => Listen::Unix(path),
            (None, Some(port), Some(cid)) => Listen::Vsock { port, cid },
            _ => return Err(BridgeError::Usage(USAGE.to_owned())),
        };
        let notify_socket = notify
            .filter(|n| !n.is_empty())
            .ok_or(BridgeError::NoNotifySocket)?;
        Ok(Options {
            listen,
            notify_socket,
            state,
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes the state file whole (a reader never sees half of it).
fn write_state(path: &Path, health: &GuestHealth) -> Result<(), BridgeError> {
    let error = |source| BridgeError::State {
        path: path.to_owned(),
        source,
    };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let text = serde_json::to_string_pretty(health).expect("serializes") + "\n";
    std::fs::write(&temp, text).map_err(error)?;
    std::fs::rename(&temp, path).map_err(error)
}

/// Sends one datagram to the unit's notify socket (a path, or `@name` for an abstract one).
fn notify(target: &str, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), target)?;
    }
    Ok(())
}

/// Reads one message: everything until the guest half-closes, at most [`MAX_MESSAGE`] — or
/// until it pauses for [`MESSAGE_PAUSE`] after it began. Not every hybrid vsock passes a
/// half-close on (cloud-hypervisor before 53, vhost-device-vsock), and systemd ≥ 256 waits for
/// our EOF after its half-close: without the pause, every message would take [`READ_TIMEOUT`].
fn read_message(stream: &mut impl Read, set_timeout: impl Fn(Duration)) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    set_timeout(READ_TIMEOUT);
    while (bytes.len() as u64) < MAX_MESSAGE {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                set_timeout(MESSAGE_PAUSE);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // A timeout, or a peer that reset: what it wrote is the message.
            Err(_) => break,
        }
    }
    bytes.truncate(MAX_MESSAGE as usize);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Handles one message: updates the state file and forwards.
fn deliver(options: &Options, health: &mut GuestHealth, message: &str) -> Result<(), BridgeError> {
    let forward = health.absorb(message, now());
    write_state(&options.state, health)?;
    if !forward.is_empty()
        && let Err(error) = notify(&options.notify_socket, &forward)
    {
        eprintln!(
            "microvm-notify-bridge: cannot notify {}: {error}",
            options.notify_socket
        );
    }
    Ok(())
}

/// Runs the bridge until it is killed.
pub fn run(options: &Options) -> Result<(), BridgeError> {
    let mut health = GuestHealth::default();
    write_state(&options.state, &health)?;
    match &options.listen {
        Listen::Unix(path) => {
            // A socket left by an earlier run of this VM would make bind fail.
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).map_err(|source| BridgeError::Listen {
                what: path.display().to_string(),
                source,
            })?;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let timeouts = stream.try_clone().ok();
                let message = read_message(&mut stream, |timeout| {
                    if let Some(s) = &timeouts {
                        let _ = s.set_read_timeout(Some(timeout));
                    }
                });
                drop::<UnixStream>(stream);
                deliver(options, &mut health, &message)?;
            }
        }
        Listen::Vsock { port, cid } => {
            let listener =
                vsock_listen(libc::SOCK_STREAM, *port).map_err(|source| BridgeError::Listen {
                    what: format!("vsock port {port}"),
                    source,
                })?;
            loop {
                let Ok((fd, peer)) = vsock_accept(&listener) else {
                    continue;
                };
                if peer != *cid {
                    continue;
                }
                let raw = fd.as_raw_fd();
                let mut stream = std::fs::File::from(fd);
                let message = read_message(&mut stream, |timeout| set_read_timeout(raw, timeout));
                drop(stream);
                deliver(options, &mut health, &message)?;
            }
        }
    }
    Ok(())
}

fn vsock_listen(kind: libc::c_int, port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        if libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ) < 0
            || libc::listen(fd.as_raw_fd(), 16) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

fn vsock_accept(listener: &OwnedFd) -> io::Result<(OwnedFd, u32)> {
    // SAFETY: accept fills an address of the size it is given.
    unsafe {
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        let fd = libc::accept4(
            listener.as_raw_fd(),
            (&raw mut addr).cast(),
            &mut len,
            libc::SOCK_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fd), addr.svm_cid))
    }
}

fn set_read_timeout(fd: std::os::fd::RawFd, timeout: Duration) {
    let timeout = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads a timeval of the size it is given, on a descriptor the caller
    // keeps open.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// The `microvm-notify-bridge` program.
pub fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = Options::parse(&args, std::env::var("NOTIFY_SOCKET").ok()).and_then(|o| run(&o));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("microvm-notify-bridge: {error} [{}]", error.code());
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_forwarded_with_a_status_and_other_fields_are_not() {
        let mut health = GuestHealth::default();
        let out = health.absorb("READY=1\nMAINPID=1\nWATCHDOG=1\nFDSTORE=1\n", 10);
        assert_eq!(out, "READY=1\nSTATUS=ready\n");
        assert!(health.ready);
        assert_eq!(health.ready_since, Some(10));
        assert_eq!(health.absorb("MAINPID=4\n", 11), "");
    }

    #[test]
    fn a_check_keeps_its_since_until_its_state_changes() {
        let mut health = GuestHealth::default();
        health.absorb("X_MICROVM_HEALTH=web passing ok", 5);
        health.absorb("X_MICROVM_HEALTH=web passing ok again", 9);
        assert_eq!(health.checks["web"].since, 5);
        assert_eq!(health.checks["web"].output, "ok again");
        let out = health.absorb("X_MICROVM_HEALTH=web failing curl: (7) refused", 12);
        assert_eq!(health.checks["web"].since, 12);
        assert_eq!(
            out,
            "X_MICROVM_HEALTH=web failing curl: (7) refused\nSTATUS=starting; checks: web failing (curl: (7) refused)\n"
        );
    }

    #[test]
    fn malformed_health_lines_are_dropped() {
        let mut health = GuestHealth::default();
        assert_eq!(health.absorb("X_MICROVM_HEALTH=web sick", 1), "");
        assert_eq!(health.absorb("X_MICROVM_HEALTH= passing", 1), "");
        assert!(health.checks.is_empty());
    }

    #[test]
    fn options_need_one_listener_and_a_notify_socket() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = Options::parse(&args(&["--unix", "n.vsock_8888"]), Some("/run/n".into())).unwrap();
        assert_eq!(ok.listen, Listen::Unix("n.vsock_8888".into()));
        assert!(matches!(
            Options::parse(&args(&["--unix", "x"]), None),
            Err(BridgeError::NoNotifySocket)
        ));
        assert!(matches!(
            Options::parse(&args(&["--vsock-port", "8888"]), Some("/n".into())),
            Err(BridgeError::Usage(_))
        ));
    }
}
