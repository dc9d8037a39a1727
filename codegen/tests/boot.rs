//! Tier 3: real guests. Every VM here is started by a runner that `microvm-codegen generate`
//! wrote; the guest is a Debian kernel plus a busybox initramfs (checks/boot-env.sh builds both,
//! checks/guest/init is its PID 1) and proves each device class by printing `MVTEST:` markers on
//! its serial console. This machine's /dev/kvm cannot run stock kernels, so every spec sets
//! `cpu`, which makes qemu use TCG. Panics also end qemu with status 0, so tests trust markers,
//! never exit codes alone.

mod common;
#[path = "common/vm.rs"]
mod vm;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use vm::{Netns, VM_TIMEOUT, Vm, boot_env, generate, host_tool, param, shut_down, spec, tempdir};

#[test]
fn boots_to_init() {
    let env = boot_env();
    let tmp = tempdir();
    let mut vm = Vm::new(tmp.path(), &spec(&env, "boot", "boot", &[]));
    vm.run_to_end();
    vm.wait_for("MVTEST:init", Duration::ZERO);
    vm.wait_for("MVTEST:boot:ok", Duration::ZERO);
}

fn store_disk_is_mounted_read_only(fs: &str) {
    let env = boot_env();
    let tmp = tempdir();
    let content = tmp.path().join("store-content");
    std::fs::create_dir_all(&content).unwrap();
    let token = format!("store-{fs}-{}", std::process::id());
    std::fs::write(content.join("marker"), format!("{token}\n")).unwrap();
    let image = tmp.path().join(format!("store.{fs}"));
    let status = match fs {
        "erofs" => Command::new(host_tool("mkfs.erofs"))
            .arg("--quiet")
            .arg(&image)
            .arg(&content)
            .status(),
        _ => Command::new(host_tool("mksquashfs"))
            .arg(&content)
            .arg(&image)
            .args(["-noappend", "-quiet", "-comp", "zstd"])
            .status(),
    };
    assert!(status.unwrap().success());
    let mut s = spec(&env, &format!("store-{fs}"), "store", &[param("fs", fs)]);
    s["storeDisk"] = json!(image);
    let mut vm = Vm::new(&tmp.path().join("vm"), &s);
    vm.run_to_end();
    vm.wait_for(&format!("MVTEST:store:marker={token}"), Duration::ZERO);
    vm.wait_for("MVTEST:store:ro=1", Duration::ZERO);
    vm.wait_for("MVTEST:store:write=refused", Duration::ZERO);
}

#[test]
fn erofs_store_disk_is_mounted_read_only() {
    store_disk_is_mounted_read_only("erofs");
}

#[test]
fn squashfs_store_disk_is_mounted_read_only() {
    store_disk_is_mounted_read_only("squashfs");
}

#[test]
fn ext4_volume_is_created_once_and_kept_across_boots() {
    let env = boot_env();
    let tmp = tempdir();
    let mut s = spec(&env, "volume", "volume", &[param("serial", "data")]);
    s["volumes"] = json!([{
        "image": "data.img", "serial": "data", "label": "data",
        "mountPoint": "/data", "size": 64, "fsType": "ext4"
    }]);
    let image = tmp.path().join("data.img");
    assert!(!image.exists());

    let mut first = Vm::new(tmp.path(), &s);
    first.run_to_end();
    first.wait_for("MVTEST:volume:seen=none", Duration::ZERO);
    first.wait_for("MVTEST:volume:wrote=1", Duration::ZERO);
    assert!(
        first
            .stderr
            .lock()
            .unwrap()
            .contains("creating volume data.img")
    );
    let created = std::fs::metadata(&image).unwrap();
    assert_eq!(created.len(), 64 * 1024 * 1024);
    drop(first);

    let mut second = Vm::new(tmp.path(), &s);
    second.run_to_end();
    second.wait_for("MVTEST:volume:seen=1", Duration::ZERO);
    second.wait_for("MVTEST:volume:wrote=2", Duration::ZERO);
    assert!(
        !second.stderr.lock().unwrap().contains("creating volume"),
        "the existing image was recreated\n{}",
        second.transcript()
    );
    let kept = std::fs::metadata(&image).unwrap();
    assert_eq!(
        (kept.dev(), kept.ino()),
        (created.dev(), created.ino()),
        "same file"
    );
}

#[test]
fn existing_volume_image_is_never_touched() {
    let env = boot_env();
    let tmp = tempdir();
    let image = tmp.path().join("data.img");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&image, &garbage).unwrap();
    let mut s = spec(&env, "keep", "boot", &[]);
    s["volumes"] =
        json!([{ "image": "data.img", "mountPoint": "/data", "size": 64, "readOnly": true }]);
    let mut vm = Vm::new(tmp.path(), &s);
    vm.run_to_end();
    assert_eq!(
        std::fs::read(&image).unwrap(),
        garbage,
        "the image was modified"
    );
}

fn share_both_ways(
    proto: &str,
    vm_dir: &Path,
    host_dir: &Path,
    extra: impl FnOnce(&mut Value),
) -> Vm {
    let env = boot_env();
    std::fs::create_dir_all(host_dir).unwrap();
    let from_host = format!("{proto}-from-host-{}", std::process::id());
    let from_guest = format!("{proto}-from-guest-{}", std::process::id());
    std::fs::write(host_dir.join("from-host.txt"), format!("{from_host}\n")).unwrap();
    let mut s = spec(
        &env,
        &format!("share-{proto}"),
        proto,
        &[param("tag", "mvshare"), param("token", &from_guest)],
    );
    s["shares"] = json!([{
        "tag": "mvshare", "source": host_dir, "mountPoint": "/mnt/share", "proto": proto,
        "socket": "virtiofs-mvshare.sock", "securityModel": "none"
    }]);
    s["virtiofsd"] = json!({ "group": null });
    extra(&mut s);
    let mut vm = Vm::new(vm_dir, &s);
    vm.run_to_end();
    vm.wait_for(&format!("MVTEST:{proto}:read={from_host}"), Duration::ZERO);
    vm.wait_for(&format!("MVTEST:{proto}:wrote"), Duration::ZERO);
    let written = std::fs::read_to_string(host_dir.join("from-guest.txt")).unwrap();
    assert_eq!(written.trim(), from_guest);
    vm
}

#[test]
fn ninep_share_is_read_and_written_both_ways() {
    let tmp = tempdir();
    share_both_ways(
        "9p",
        &tmp.path().join("vm"),
        &tmp.path().join("shared"),
        |_| {},
    );
}

#[test]
fn virtiofs_share_works_through_the_generated_virtiofsd_run() {
    let env = boot_env();
    assert!(!env.virtiofsd.is_empty(), "boot-env.sh built no virtiofsd");
    let tmp = tempdir();
    let vm_dir = tmp.path().join("vm");
    let host_dir = tmp.path().join("shared");
    // Generate once to get virtiofsd-run, start it, then boot the same runner.
    let mut s = spec(&env, "share-virtiofs", "virtiofs", &[]);
    s["shares"] = json!([{
        "tag": "mvshare", "source": host_dir, "mountPoint": "/mnt/share", "proto": "virtiofs",
        "socket": "virtiofs-mvshare.sock"
    }]);
    s["virtiofsd"] = json!({ "group": null });
    std::fs::create_dir_all(&host_dir).unwrap();
    let runner = generate(&vm_dir, &s);
    let mut daemon = Command::new(runner.join("bin/virtiofsd-run"))
        .current_dir(&vm_dir)
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let mut stderr = BufReader::new(daemon.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.contains("virtiofsd-run: ready") {
        assert!(
            Instant::now() < deadline,
            "virtiofsd-run never got ready: {ready}"
        );
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("virtiofsd-run exited: {ready}");
        }
        ready.push_str(&line);
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
    });
    let result = std::panic::catch_unwind(|| {
        share_both_ways("virtiofs", &vm_dir, &host_dir, |_| {});
    });
    // SAFETY: plain kill(2) on the process group virtiofsd-run leads.
    unsafe { libc::kill(-(daemon.id() as i32), libc::SIGTERM) };
    let _ = daemon.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(address: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn user_network_serves_a_guest_page_on_a_forwarded_port() {
    let env = boot_env();
    let tmp = tempdir();
    let port = free_port();
    let token = format!("user-net-{}", std::process::id());
    let mut s = spec(&env, "netuser", "net", &[param("token", &token)]);
    s["interfaces"] = json!([{ "type": "user", "id": "usernet", "mac": "02:00:00:00:10:01" }]);
    s["forwardPorts"] =
        json!([{ "host": { "address": "127.0.0.1", "port": port }, "guest": { "port": 80 } }]);
    let mut vm = Vm::new(tmp.path(), &s);
    vm.start(None);
    vm.wait_for("MVTEST:net:listening", VM_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        match http_get(&format!("127.0.0.1:{port}")) {
            Ok(page) if page.contains("MVTEST-PAGE") => break page,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(300)),
            other => panic!(
                "no page through the forwarded port: {other:?}\n{}",
                vm.transcript()
            ),
        }
    };
    assert!(page.contains(&format!("MVTEST-PAGE:{token}")), "{page}");
    shut_down(&mut vm);
}

#[test]
fn tap_network_in_a_namespace_carries_traffic_both_ways() {
    let env = boot_env();
    let tmp = tempdir();
    let ns = Netns::new(&format!("mvtest-{}", std::process::id()));
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let host_token = format!("from-host-{}", std::process::id());
    std::fs::write(www.join("host.txt"), format!("{host_token}\n")).unwrap();
    let guest_token = format!("from-guest-{}", std::process::id());

    let mut s = spec(
        &env,
        "tap",
        "net",
        &[
            param("ip", "192.168.77.2/24"),
            param("gw", "192.168.77.1"),
            param("token", &guest_token),
            param("fetch", "http://192.168.77.1:8000/host.txt"),
        ],
    );
    s["interfaces"] = json!([{ "type": "tap", "id": "mvtap0", "mac": "02:00:00:00:20:01" }]);
    let mut vm = Vm::new(&tmp.path().join("vm"), &s);

    let tap_up = vm.bin("tap-up").display().to_string();
    ns.run(&[&tap_up]);
    let ip = host_tool("ip");
    ns.run(&[&ip, "addr", "add", "192.168.77.1/24", "dev", "mvtap0"]);
    let busybox = host_tool("busybox");
    let www_dir = www.display().to_string();
    ns.run(&[&busybox, "httpd", "-p", "192.168.77.1:8000", "-h", &www_dir]);

    vm.start(Some(&ns.0));
    vm.wait_for("MVTEST:net:listening", VM_TIMEOUT);
    vm.wait_for(&format!("MVTEST:net:fetched={host_token}"), Duration::ZERO);
    let curl = host_tool("curl");
    let page = ns.run(&[&curl, "-s", "--max-time", "10", "http://192.168.77.2/"]);
    assert_eq!(
        String::from_utf8_lossy(&page.stdout).trim(),
        format!("MVTEST-PAGE:{guest_token}")
    );
    shut_down(&mut vm);

    let tap_down = vm.bin("tap-down").display().to_string();
    ns.run(&[&tap_down]);
    let gone = ns
        .command(&[&ip, "link", "show", "dev", "mvtap0"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "tap-down left mvtap0 behind");
}

#[test]
fn microvm_shutdown_powers_the_guest_off_cleanly_within_20_seconds() {
    let env = boot_env();
    let tmp = tempdir();
    let mut vm = Vm::new(tmp.path(), &spec(&env, "shutdown", "shutdown", &[]));
    vm.start(None);
    vm.wait_for("MVTEST:shutdown:ready", VM_TIMEOUT);
    let took = shut_down(&mut vm);
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    assert!(
        !tmp.path().join("vm.sock").exists() || {
            // qemu may leave the socket file; a second shutdown must then be a no-op.
            vm.script("microvm-shutdown", &[]).status.success()
        }
    );
}

#[test]
fn microvm_balloon_changes_the_guests_memory() {
    let env = boot_env();
    let tmp = tempdir();
    let mut s = spec(&env, "balloon", "balloon", &[]);
    s["balloon"] = json!(true);
    // With deflate-on-oom the guest keeps ballooned pages in MemTotal; without, they leave it,
    // which makes the guest's view easy to check.
    s["deflateOnOOM"] = json!(false);
    let mut vm = Vm::new(tmp.path(), &s);
    vm.start(None);
    let first = vm.wait_for("MVTEST:balloon:memtotal=", VM_TIMEOUT);
    let kib = |line: &str| -> u64 { line.rsplit('=').next().unwrap().parse().unwrap() };
    let before = kib(&first);

    let output = vm.script("microvm-balloon", &["128"]);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "microvm-balloon failed: {stdout}{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        vm.transcript()
    );
    assert!(
        stdout.contains("balloon 128 MiB; the guest has 128 of 256 MiB"),
        "{stdout}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shrunk = vm
            .lines_starting("MVTEST:balloon:memtotal=")
            .iter()
            .map(|l| kib(l))
            .any(|now| now + 100 * 1024 < before);
        if shrunk {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "MemTotal did not drop by 100 MiB\n{}",
            vm.transcript()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    shut_down(&mut vm);
}

/// The host path, without systemd: what the units would run, run by hand in their order.
/// `microvm create` installs an already generated runner (no Nix build), the host package's
/// set-booted records it, the runner's tap-up runs in a network namespace, `microvm run` boots
/// the guest, the unit's ExecStop script shuts it down through the booted version's
/// microvm-shutdown, and the booted version's tap-down removes the tap.
#[test]
fn host_path_create_run_shutdown_and_tap_teardown() {
    let env = boot_env();
    let tmp = tempdir();
    let ns = Netns::new(&format!("mvhost-{}", std::process::id()));
    let state = tmp.path().join("state");
    let token = format!("host-path-{}", std::process::id());
    let mut s = spec(
        &env,
        "hostpath",
        "net",
        &[
            param("ip", "192.168.79.2/24"),
            param("gw", "192.168.79.1"),
            param("token", &token),
        ],
    );
    s["interfaces"] = json!([{ "type": "tap", "id": "mvtap-host", "mac": "02:00:00:00:30:01" }]);
    let runner = generate(&tmp.path().join("build"), &s);

    let host_spec = json!({
        "specVersion": 1, "stateDir": state, "user": "root", "group": "root",
        "startupTimeout": 150, "shutdownTimeout": 60,
        "tools": { "bash": host_tool("bash"), "ln": host_tool("ln"), "rm": host_tool("rm"),
                   "mkdir": host_tool("mkdir"), "chown": host_tool("chown"), "readlink": host_tool("readlink"), "microvm": env!("CARGO_BIN_EXE_microvm") }
    });
    let package = common::generate_host(&host_spec, tmp.path());
    let libexec = |script: &str| package.join("libexec/microvm").join(script);

    let microvm = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_microvm"));
        c.args(args)
            .env("MICROVM_STATE_DIR", &state)
            .env("MICROVM_GCROOTS_DIR", tmp.path().join("gcroots"));
        c
    };
    let created = microvm(&["create", "hostpath", "--runner", runner.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let vm_dir = state.join("hostpath");
    assert!(vm_dir.join("current/bin/microvm-run").is_file());

    let status = Command::new(libexec("set-booted"))
        .arg("hostpath")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_link(vm_dir.join("booted")).unwrap(), runner);

    let tap_up = vm_dir.join("current/bin/tap-up").display().to_string();
    ns.run(&[&tap_up]);
    let ip = host_tool("ip");
    ns.run(&[&ip, "addr", "add", "192.168.79.1/24", "dev", "mvtap-host"]);

    let mut vm = Vm {
        dir: vm_dir.clone(),
        runner: vm_dir.join("current"),
        child: None,
        console: Default::default(),
        stderr: Default::default(),
    };
    let microvm_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_microvm"));
    let state_arg = format!("--state-dir={}", state.display());
    vm.start_with(
        Some(&ns.0),
        &[
            microvm_bin.as_os_str(),
            state_arg.as_ref(),
            "run".as_ref(),
            "hostpath".as_ref(),
        ],
    );
    vm.wait_for("MVTEST:net:listening", VM_TIMEOUT);
    let curl = host_tool("curl");
    let page = ns.run(&[&curl, "-s", "--max-time", "10", "http://192.168.79.2/"]);
    assert_eq!(
        String::from_utf8_lossy(&page.stdout).trim(),
        format!("MVTEST-PAGE:{token}")
    );

    // The unit's ExecStop: the booted version's microvm-shutdown, in the VM's directory.
    let stop = Command::new(libexec("stop"))
        .arg("hostpath")
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&stop.stderr),
        vm.transcript()
    );
    let exit = vm.wait_exit(Duration::from_secs(30));
    assert!(
        exit.success(),
        "microvm run exited with {exit}\n{}",
        vm.transcript()
    );
    vm.wait_for("MVTEST:powerbutton", Duration::ZERO);
    vm.wait_for("MVTEST:poweroff", Duration::ZERO);

    // The tap unit's ExecStop: the booted version's tap-down.
    let run_booted = libexec("run-booted").display().to_string();
    ns.run(&[&run_booted, "hostpath", "tap-down"]);
    let gone = ns
        .command(&[&ip, "link", "show", "dev", "mvtap-host"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "tap-down left mvtap-host behind");
    let status = Command::new(libexec("unset-booted"))
        .arg("hostpath")
        .status()
        .unwrap();
    assert!(status.success() && !vm_dir.join("booted").exists());
}

/// Issue 10: a guest's readiness and health travel over vsock to the unit's notify socket. qemu
/// gets its vsock from vhost-device-vsock (a vhost-user device: this host has no
/// /dev/vhost-vsock), which hands the guest's connection to host port 8888 to the Unix socket
/// `<uds>_8888`, where microvm-notify-bridge listens, as it does for firecracker and
/// cloud-hypervisor. The guest (checks/guest/init, scenario `readiness`) sends what the guest
/// module's units send: each change of its check, READY=1 once the check has passed, then a
/// failure.
#[test]
fn guest_readiness_then_a_failing_check_reach_the_notify_socket_over_vsock() {
    use std::os::unix::net::UnixDatagram;

    let env = boot_env();
    assert!(
        !env.vhost_vsock.is_empty(),
        "boot-env.sh built no vhost-device-vsock"
    );
    let tmp = tempdir();
    let dir = tmp.path();
    let notify = dir.join("notify");
    let unit = UnixDatagram::bind(&notify).unwrap();
    unit.set_read_timeout(Some(VM_TIMEOUT)).unwrap();
    let uds = dir.join("notify.vsock");
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_microvm-notify-bridge"))
        .arg("--unix")
        .arg(dir.join("notify.vsock_8888"))
        .arg("--state")
        .arg(dir.join("health.json"))
        .env("NOTIFY_SOCKET", &notify)
        .process_group(0)
        .spawn()
        .unwrap();
    let vhost_socket = dir.join("vhost-vsock.sock");
    let mut device = Command::new(&env.vhost_vsock)
        .arg("--guest-cid=3")
        .arg(format!("--socket={}", vhost_socket.display()))
        .arg(format!("--uds-path={}", uds.display()))
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !vhost_socket.exists() {
        assert!(
            Instant::now() < deadline,
            "vhost-device-vsock made no socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut s = spec(&env, "readiness", "readiness", &[param("port", 8888)]);
    s["qemu"] = json!({ "extraArgs": [
        "-object", "memory-backend-memfd,id=vumem,size=256M,share=on",
        "-machine", "memory-backend=vumem",
        "-chardev", format!("socket,id=vs0,path={}", vhost_socket.display()),
        "-device", "vhost-user-vsock-device,chardev=vs0",
    ]});
    let mut vm = Vm::new(&dir.join("vm"), &s);
    vm.run_to_end();
    let _ = bridge.kill();
    let _ = device.kill();
    let _ = bridge.wait();
    let _ = device.wait();
    assert!(
        vm.has("MVTEST:readiness:failure-sent"),
        "{}",
        vm.transcript()
    );

    // What the unit heard, in order: only after the check passed did READY=1 come.
    unit.set_nonblocking(true).unwrap();
    let mut heard = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = unit.recv(&mut buffer) {
        heard.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    let first_lines: Vec<&str> = heard.iter().filter_map(|m| m.lines().next()).collect();
    assert_eq!(
        first_lines,
        [
            "X_MICROVM_HEALTH=hello failing check saw failing",
            "X_MICROVM_HEALTH=hello passing check saw passing",
            "READY=1",
            "X_MICROVM_HEALTH=hello failing check saw failing",
        ],
        "{heard:#?}"
    );
    assert!(
        heard[3].contains("STATUS=ready; checks: hello failing (check saw failing)"),
        "{heard:#?}"
    );
    let health: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("health.json")).unwrap()).unwrap();
    assert_eq!(health["ready"], json!(true));
    assert_eq!(health["checks"]["hello"]["state"], json!("failing"));
}

/// The guest side of `microvm up` (issue 11), without the command: a share, a volume and an
/// environment announced on the kernel command line (`microvm.up.*`) are mounted and written by
/// nixos-modules/microvm/up-announcements.sh (the test guest runs it as the guest module's
/// microvm-up.service does); the guest serves a forwarded port, powers off cleanly with the
/// volume unmounted, and a second boot finds the volume's data.
#[test]
fn the_guest_mounts_and_uses_what_the_kernel_command_line_announces() {
    let env = boot_env();
    let tmp = tempdir();
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let token = format!("up-share-{}", std::process::id());
    std::fs::write(share.join("hello.txt"), format!("{token}\n")).unwrap();
    let port = free_port();
    let mut s = spec(
        &env,
        "up",
        "up",
        &[
            "microvm.up.mount=9p:up0:/mnt/x".to_owned(),
            "microvm.up.mount=disk:up1:/mnt/y".to_owned(),
            // GREETING="hello from up"
            "microvm.up.env=R1JFRVRJTkc9ImhlbGxvIGZyb20gdXAiCg==".to_owned(),
        ],
    );
    s["shares"] = json!([{
        "tag": "up0", "source": share, "mountPoint": "/mnt/x", "proto": "9p", "readOnly": true
    }]);
    s["volumes"] = json!([{
        "image": "up1.img", "serial": "up1", "label": "up1", "mountPoint": "/mnt/y",
        "size": 64, "fsType": "ext4", "autoCreate": true
    }]);
    s["interfaces"] = json!([{ "type": "user", "id": "usernet", "mac": "02:00:00:00:30:01" }]);
    s["forwardPorts"] =
        json!([{ "host": { "address": "127.0.0.1", "port": port }, "guest": { "port": 8080 } }]);

    for boot in 0..2 {
        let mut vm = Vm::new(tmp.path(), &s);
        vm.start(None);
        vm.wait_for("MVTEST:up:serving", VM_TIMEOUT);
        for line in [
            "microvm-up: mounted 9p up0 on /mnt/x (ro)",
            "microvm-up: mounted disk up1 (/dev/vda) on /mnt/y (rw)",
            "microvm-up: wrote /run/microvm/env (1 variable)",
            "MVTEST:up:announced",
            &format!("MVTEST:up:share={token}"),
            "MVTEST:up:share-write=refused",
            &format!("MVTEST:up:volume-before={boot}"),
            &format!("MVTEST:up:volume-after={}", boot + 1),
            "MVTEST:up:env=hello from up",
        ] {
            vm.wait_for(line, Duration::ZERO);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            let answer = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut answer = String::new();
                c.read_to_string(&mut answer)?;
                Ok(answer)
            });
            match answer {
                Ok(answer) if !answer.is_empty() => break answer,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(300)),
                other => panic!("no answer on port {port}: {other:?}\n{}", vm.transcript()),
            }
        };
        assert_eq!(answer, "hello from up\n");
        shut_down(&mut vm);
        vm.wait_for("MVTEST:up:clean-poweroff", Duration::ZERO);
    }
}
