//! Tier 3, the units under a real systemd: systemd 252 runs as PID 1 of a PID and mount
//! namespace of the test's own (no systemd runs this machine), and starts the generated
//! `microvm@` unit of a created VM and the transient unit of `microvm up`, with their whole
//! sandbox, around the test guest under TCG. A model of the sandbox cannot tell what a real
//! seccomp filter or mount namespace refuses; this found qemu killed by SIGSYS (its seccomp(2))
//! and a volume in /home hidden by ProtectHome=.
//!
//! The manager loads units only from the test's directory (SYSTEMD_UNIT_PATH), where empty
//! stand-ins of the targets a service depends on stand: none of the host's units run, so
//! nothing like systemd-tmpfiles touches the host. Needs root, unshare and nsenter.

mod common;
#[path = "common/systemd.rs"]
mod systemd;
#[path = "common/vm.rs"]
mod vm;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use systemd::{Manager, create, install_host_units, state_tempdir};
use vm::{VM_TIMEOUT, boot_env, generate, host_tool, spec};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wait_for_file_line(path: &Path, line: &str) {
    systemd::wait_for_file_line(path, line, VM_TIMEOUT);
}

#[test]
fn a_created_vm_runs_and_stops_cleanly_as_its_microvm_unit() {
    let env = boot_env();
    let tmp = state_tempdir();
    let mut s = spec(&env, "unitvm", "shutdown", &[]);
    systemd::make_visible(tmp.path(), &mut s);
    let runner = generate(&tmp.path().join("build"), &s);
    let state = tmp.path().join("state");
    install_host_units(tmp.path(), &state, "unitvm", &[]);
    let console = tmp.path().join("console.log");
    let manager = Manager::start(&tmp.path().join("units"));
    create(tmp.path(), &state, "unitvm", &runner);
    let started = manager.run(&["systemctl", "start", "microvm@unitvm.service"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    wait_for_file_line(&console, "MVTEST:shutdown:ready");
    assert_eq!(
        manager.show("microvm@unitvm.service", "ActiveState"),
        "active"
    );
    // set-booted ran before it: the running version is recorded.
    assert_eq!(
        std::fs::read_link(state.join("unitvm/booted")).unwrap(),
        runner
    );

    // ExecStop presses the power button and waits; the guest powers off on its own.
    let stopped = manager.run(&["systemctl", "stop", "microvm@unitvm.service"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    wait_for_file_line(&console, "MVTEST:poweroff");
    assert_eq!(
        (
            manager
                .show("microvm@unitvm.service", "ActiveState")
                .as_str(),
            manager.show("microvm@unitvm.service", "Result").as_str()
        ),
        ("inactive", "success"),
        "{}",
        std::fs::read_to_string(&console).unwrap_or_default()
    );
}

#[test]
fn a_created_vms_virtiofs_share_is_served_by_its_virtiofsd_unit() {
    let env = boot_env();
    assert!(!env.virtiofsd.is_empty(), "boot-env.sh built no virtiofsd");
    let tmp = state_tempdir();
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let from_host = format!("from-host-{}", std::process::id());
    std::fs::write(shared.join("hello.txt"), format!("{from_host}\n")).unwrap();
    // The `up` scenario reads the share and then stays up until the power button, so the stop
    // below is the unit's, not a guest that powers off by itself (and gets restarted).
    let mut s = spec(
        &env,
        "unitfs",
        "up",
        &["microvm.up.mount=virtiofs:mvshare:/mnt/x".to_owned()],
    );
    s["shares"] = json!([{
        "tag": "mvshare", "source": shared, "mountPoint": "/mnt/x", "proto": "virtiofs",
        "socket": "virtiofs-mvshare.sock"
    }]);
    s["interfaces"] = json!([{ "type": "user", "id": "usernet", "mac": "02:00:00:00:40:01" }]);
    s["virtiofsd"] = json!({ "group": null });
    systemd::make_visible(tmp.path(), &mut s);
    let runner = generate(&tmp.path().join("build"), &s);
    let state = tmp.path().join("state");
    install_host_units(tmp.path(), &state, "unitfs", &[]);
    let console = tmp.path().join("console.log");
    let manager = Manager::start(&tmp.path().join("units"));
    create(tmp.path(), &state, "unitfs", &runner);
    // microvm@ requires microvm-virtiofsd@, which is ready once virtiofsd-run says so.
    let started = manager.run(&["systemctl", "start", "microvm@unitfs.service"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    wait_for_file_line(
        &console,
        "microvm-up: mounted virtiofs mvshare on /mnt/x (ro)",
    );
    wait_for_file_line(&console, &format!("MVTEST:up:share={from_host}"));
    wait_for_file_line(&console, "MVTEST:up:serving");
    let stopped = manager.run(&["systemctl", "stop", "microvm@unitfs.service"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    // (No volume at /mnt/y here, so no clean-poweroff mark: the power button is enough.)
    wait_for_file_line(&console, "MVTEST:powerbutton");
    wait_for_file_line(&console, "MVTEST:poweroff");
    // PartOf=: virtiofsd stops with the VM, and cleanly: its virtiofsd ended when the VM went,
    // and the stop comes while virtiofsd-run pauses before restarting it. That pause must not
    // hold the stop up (it once did, for the second a foreground sleep took).
    let virtiofsd = "microvm-virtiofsd@unitfs.service";
    let state = manager.wait_for_state(virtiofsd, &["inactive", "failed"], Duration::from_secs(10));
    assert_eq!(
        (state.as_str(), manager.show(virtiofsd, "Result").as_str()),
        ("inactive", "success"),
        "{virtiofsd} after the VM stopped (exit code {}, status {}); virtiofsd-run said:\n{}",
        manager.show(virtiofsd, "ExecMainCode"),
        manager.show(virtiofsd, "ExecMainStatus"),
        std::fs::read_to_string(tmp.path().join("virtiofsd.log")).unwrap_or_default()
    );
}

#[test]
fn microvm_up_runs_as_a_sandboxed_transient_unit_with_shares_a_volume_and_a_port() {
    let env = boot_env();
    let tmp = state_tempdir();
    // The user's directories: one in /home-like hidden territory would do as well; these are
    // bound into the unit's sandbox one by one.
    let share = tmp.path().join("share");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(share.join("hello.txt"), "from the host\n").unwrap();
    let mut s = spec(&env, "upunit", "up", &[]);
    systemd::make_visible(tmp.path(), &mut s);
    let runner = generate(&tmp.path().join("build"), &s);
    // `up` hands its own path to systemd-run, for the unit to run as the supervisor.
    let microvm_exe = systemd::microvm_exe(tmp.path());
    let manager = Manager::start(&tmp.path().join("units"));
    let state = tmp.path().join("state");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let microvm = |args: &[&str]| -> Output {
        let mut argv = vec!["env"];
        let state_env = format!("MICROVM_STATE_DIR={}", state.display());
        argv.push(&state_env);
        argv.push(microvm_exe.to_str().unwrap());
        argv.extend_from_slice(args);
        manager.run(&argv)
    };
    let up = microvm(&[
        "up",
        "--runner",
        runner.to_str().unwrap(),
        "--name",
        "upunit",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-v",
        &format!("{}:/mnt/x", share.display()),
        "-v",
        &format!("{}:/mnt/y:64", data.display()),
        "--env",
        "GREETING=hello from up",
    ]);
    assert!(
        up.status.success(),
        "{}\n{}\n{}",
        text(&up.stderr),
        text(
            &manager
                .run(&[
                    "systemctl",
                    "status",
                    "--no-pager",
                    "microvm-up-upunit.service"
                ])
                .stdout
        ),
        manager.logs()
    );
    // systemd runs it (the manager is PID 1 there, so `up` chose it by itself).
    assert!(
        text(&up.stderr).contains("Running as unit: microvm-up-upunit.service"),
        "{}",
        text(&up.stderr)
    );
    let unit = "microvm-up-upunit.service";
    assert_eq!(manager.show(unit, "ProtectSystem"), "strict");
    assert_eq!(manager.show(unit, "ProtectHome"), "tmpfs");
    assert_eq!(manager.show(unit, "NoNewPrivileges"), "yes");

    let deadline = Instant::now() + VM_TIMEOUT;
    let answer = loop {
        let output = manager
            .command(&[
                &host_tool("socat"),
                "-T",
                "10",
                "-",
                &format!("TCP:127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let answer = text(&output.stdout);
        if !answer.is_empty() {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no answer on port {port}; the unit is {}\n{}",
            manager.show(unit, "ActiveState"),
            manager.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(answer, "hello from up\n");
    assert_eq!(manager.show(unit, "ActiveState"), "active");

    let down = microvm(&["down", "upunit", "--timeout", "30"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(
        text(&down.stdout).contains("upunit is down (powered off)"),
        "{}{}",
        text(&down.stdout),
        text(&down.stderr)
    );
    // The guest wrote its counter into the volume, inside the sandbox, before it powered off.
    let counter = Command::new(host_tool("debugfs"))
        .args(["-R", "cat /counter"])
        .arg(data.join("mnt-y.img"))
        .output()
        .unwrap();
    assert_eq!(
        text(&counter.stdout).trim(),
        "1",
        "{}",
        text(&counter.stderr)
    );
}
