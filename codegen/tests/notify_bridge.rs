//! `microvm-notify-bridge` as a host unit runs it: a stand-in for the hypervisor's hybrid vsock
//! connects to `<mux socket>_<port>` once per guest message (as firecracker, cloud-hypervisor and
//! vhost-device-vsock do for a guest's connection to host port <port>) and the test listens on
//! the unit's notify socket.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use microvm_codegen::notify_bridge::{CheckState, GuestHealth};

struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends one message as the guest's systemd does: connect, write, half-close, wait for EOF.
fn guest_sends(socket: &Path, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("the bridge never listened on {socket:?}: {error}"),
        }
    };
    stream.write_all(message.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut rest).unwrap();
}

fn received(unit: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = unit.recv(&mut buffer).expect("a notification");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[test]
fn the_unit_hears_ready_only_after_the_guest_says_it_then_each_health_change() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let unit = UnixDatagram::bind(&notify_path).unwrap();
    unit.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let vsock = dir.path().join("notify.vsock_8888");
    let state = dir.path().join("health.json");
    let _bridge = Bridge(
        Command::new(env!("CARGO_BIN_EXE_microvm-notify-bridge"))
            .arg("--unix")
            .arg(&vsock)
            .arg("--state")
            .arg(&state)
            .env("NOTIFY_SOCKET", &notify_path)
            .spawn()
            .unwrap(),
    );

    guest_sends(&vsock, "X_MICROVM_HEALTH=web passing <h1>Hello</h1>\n");
    assert_eq!(
        received(&unit),
        "X_MICROVM_HEALTH=web passing <h1>Hello</h1>\nSTATUS=starting; checks: web passing\n"
    );
    // What the guest may not set never reaches the unit.
    guest_sends(&vsock, "MAINPID=1\nREADY=1\n");
    assert_eq!(
        received(&unit),
        "READY=1\nSTATUS=ready; checks: web passing\n"
    );
    guest_sends(&vsock, "X_MICROVM_HEALTH=web failing curl: (7) refused\n");
    assert_eq!(
        received(&unit),
        "X_MICROVM_HEALTH=web failing curl: (7) refused\nSTATUS=ready; checks: web failing (curl: (7) refused)\n"
    );

    let health: GuestHealth =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(health.ready);
    assert_eq!(health.checks["web"].state, CheckState::Failing);
    assert_eq!(health.checks["web"].output, "curl: (7) refused");
}

#[test]
fn without_a_notify_socket_the_bridge_refuses_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_microvm-notify-bridge"))
        .args(["--unix", "/nonexistent/x"])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("microvm::notify_bridge::no_notify_socket"),
        "{stderr}"
    );
}

/// Some hybrid vsocks do not pass the guest's half-close on, and systemd ≥ 256 waits for the
/// host's EOF after it: a message that pauses is complete, well before the 5 s read timeout.
#[test]
fn a_message_without_a_half_close_is_delivered_after_a_short_pause() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let unit = UnixDatagram::bind(&notify_path).unwrap();
    unit.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let vsock = dir.path().join("notify.vsock_8888");
    let _bridge = Bridge(
        Command::new(env!("CARGO_BIN_EXE_microvm-notify-bridge"))
            .arg("--unix")
            .arg(&vsock)
            .arg("--state")
            .arg(dir.path().join("health.json"))
            .env("NOTIFY_SOCKET", &notify_path)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match UnixStream::connect(&vsock) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("the bridge never listened: {error}"),
        }
    };
    let sent = Instant::now();
    stream.write_all(b"READY=1").unwrap();
    assert_eq!(received(&unit), "READY=1\nSTATUS=ready\n");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    // The bridge then closes, which is the EOF the guest waits for.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut rest).unwrap();
}
