//! Tier 3, `microvm up` (issue 11) against the real qemu under TCG: the test guest
//! (checks/guest/init, scenario `up`) started by `microvm up` from a generated runner, with a
//! read-only share, a volume, an environment variable and forwarded ports, without systemd (the
//! supervised process). The guest reads the share, writes the volume and answers on its port;
//! `microvm down` powers it off cleanly, and the next `up` finds what it wrote.

mod common;
#[path = "common/vm.rs"]
mod vm;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vm::{Netns, VM_TIMEOUT, boot_env, generate, host_tool, spec, tempdir};

struct Up {
    tmp: tempfile::TempDir,
    runner: PathBuf,
    name: String,
    netns: Option<Netns>,
}

impl Up {
    fn new(name: &str, netns: bool) -> Up {
        let env = boot_env();
        let tmp = tempdir();
        // The guest's own kernel command line says only which scenario to run: everything of
        // `up`'s comes from the command line below.
        let runner = generate(&tmp.path().join("build"), &spec(&env, name, "up", &[]));
        for dir in ["share", "data", "state"] {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        let name = format!("{name}-{}", std::process::id());
        let netns = netns.then(|| Netns::new(&format!("mvup-{}", std::process::id())));
        Up {
            tmp,
            runner,
            name,
            netns,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.tmp.path().join(relative)
    }

    /// Runs `microvm ARGS` (in the namespace, when the test has one), without systemd.
    fn microvm(&self, args: &[&str]) -> Output {
        let exe = env!("CARGO_BIN_EXE_microvm");
        let mut command = match &self.netns {
            Some(ns) => ns.command(&[exe]),
            None => Command::new(exe),
        };
        command
            .args(args)
            .env("MICROVM_STATE_DIR", self.path("state"))
            .env("MICROVM_UP_SUPERVISOR", "process")
            .output()
            .unwrap()
    }

    fn up(&self, extra: &[&str]) -> Output {
        let share = format!("{}:/mnt/x", self.path("share").display());
        let data = format!("{}:/mnt/y:64", self.path("data").display());
        let mut args = vec![
            "up",
            "--runner",
            self.runner.to_str().unwrap(),
            "--name",
            &self.name,
            "-v",
            &share,
            "-v",
            &data,
            "--env",
            "GREETING=hello from up",
            "--timeout",
            "120",
        ];
        args.extend_from_slice(extra);
        let output = self.microvm(&args);
        assert!(
            output.status.success(),
            "microvm up failed:\n{}\n{}",
            text(&output.stderr),
            self.console()
        );
        output
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.path("state").join(&self.name).join("console.log"))
            .unwrap_or_default()
    }

    /// Waits until the console (of every boot so far) has `count` lines starting with `line`.
    fn wait_for(&self, line: &str, count: usize) {
        let deadline = Instant::now() + VM_TIMEOUT;
        loop {
            let console = self.console();
            if console.lines().filter(|l| l.starts_with(line)).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} (#{count}) on the console:\n{console}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What the guest answers on a host port, tried until it answers (the forward may be
    /// there before the guest's server).
    fn answer(&self, port: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = match &self.netns {
                Some(ns) => {
                    let output = ns
                        .command(&[
                            &host_tool("socat"),
                            "-T",
                            "10",
                            "-",
                            &format!("TCP:127.0.0.1:{port}"),
                        ])
                        .stdin(std::process::Stdio::null())
                        .output()
                        .unwrap();
                    Ok(text(&output.stdout))
                }
                None => std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let mut answer = String::new();
                    c.read_to_string(&mut answer)?;
                    Ok(answer)
                }),
            };
            match answer {
                Ok(answer) if !answer.is_empty() => return answer,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(300)),
                other => panic!("no answer on port {port}: {other:?}\n{}", self.console()),
            }
        }
    }

    fn down(&self) {
        let output = self.microvm(&["down", &self.name, "--timeout", "30"]);
        assert!(
            output.status.success(),
            "microvm down failed: {}\n{}",
            text(&output.stderr),
            self.console()
        );
        assert!(
            text(&output.stdout).contains("is down (powered off)"),
            "not a clean power-off: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }

    fn state(&self) -> serde_json::Value {
        let output = self.microvm(&["ls", "--json"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let entries: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == self.name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{} is not listed: {entries}", self.name))
    }
}

impl Drop for Up {
    /// A failed test leaves no VM running.
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.path("state").join(&self.name).join("up.pid"));
        if let Ok(pid) = pid
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: kill has no memory preconditions; the supervisor leads its group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assert_guest_used_everything(up: &Up, boot: usize) {
    for line in [
        "MVTEST:up:announced",
        "MVTEST:up:share=from the host",
        "MVTEST:up:share-write=refused",
        &format!("MVTEST:up:volume-before={boot}"),
        &format!("MVTEST:up:volume-after={}", boot + 1),
        "MVTEST:up:env=hello from up",
    ] {
        up.wait_for(line, 1);
    }
}

#[test]
fn up_shares_a_volume_and_ports_then_down_and_up_again_keeps_the_volume() {
    let up = Up::new("upvm", false);
    std::fs::write(up.path("share/hello.txt"), "from the host\n").unwrap();
    let port = free_port();
    let forward = format!("127.0.0.1:{port}:8080");
    for boot in 0..2 {
        let output = up.up(&["-p", &forward]);
        assert!(
            text(&output.stdout).contains(&format!("127.0.0.1:{port} → guest 8080/tcp")),
            "{}",
            text(&output.stdout)
        );
        up.wait_for("MVTEST:up:serving", boot + 1);
        assert_guest_used_everything(&up, boot);
        assert_eq!(up.answer(port), "hello from up\n");
        let listed = up.state();
        assert_eq!(
            (listed["up"].as_bool(), listed["state"].as_str()),
            (Some(true), Some("running"))
        );
        if boot == 0 {
            // A forward added to the running VM (QMP hostfwd_add).
            let second = free_port();
            let added = up.microvm(&[
                "forward",
                &up.name,
                "-p",
                &format!("127.0.0.1:{second}:8080"),
            ]);
            assert!(added.status.success(), "{}", text(&added.stderr));
            assert_eq!(up.answer(second), "hello from up\n");
        }
        up.down();
        up.wait_for("MVTEST:up:clean-poweroff", boot + 1);
        assert_eq!(up.state()["state"], "stopped");
    }
    // The volume's image is the user's, in the directory they named.
    assert!(up.path("data/mnt-y.img").is_file());
    assert!(!up.path("share/from-guest").exists());
}

#[test]
fn ports_through_the_proxy_reach_a_guest_on_its_tap_and_down_leaves_no_tap() {
    let up = Up::new("upproxy", true);
    std::fs::write(up.path("share/hello.txt"), "from the host\n").unwrap();
    let ns = up.netns.as_ref().unwrap();
    let port = free_port();
    up.up(&[
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "--forward-via",
        "proxy",
    ]);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(up.path("state").join(&up.name).join("up.json")).unwrap(),
    )
    .unwrap();
    let tap = record["proxy"]["tap"].as_str().unwrap().to_owned();
    up.wait_for("MVTEST:up:serving", 1);
    up.wait_for(
        &format!(
            "microvm-up: gave eth0 the address {}/30",
            record["proxy"]["guestAddress"].as_str().unwrap()
        ),
        1,
    );
    assert_guest_used_everything(&up, 0);
    assert_eq!(up.answer(port), "hello from up\n");
    // `forward` hands a new port to the supervisor's proxy.
    let second = free_port();
    let added = up.microvm(&[
        "forward",
        &up.name,
        "-p",
        &format!("127.0.0.1:{second}:8080"),
    ]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert_eq!(up.answer(second), "hello from up\n");
    up.down();
    up.wait_for("MVTEST:up:clean-poweroff", 1);
    let ip = host_tool("ip");
    let gone = ns
        .command(&[&ip, "link", "show", "dev", &tap])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "down left {tap} behind");
    // Nothing listens on the forwarded port any more.
    let closed = ns
        .command(&[
            &host_tool("socat"),
            "-T",
            "2",
            "-",
            &format!("TCP:127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !closed.status.success(),
        "port {port} still open after down"
    );
}
