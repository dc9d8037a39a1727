//! The boot-test harness (tier 3), shared by the boot tests and the end-to-end evaluation test:
//! the boot environment checks/boot-env.sh prepares, a spec for the test guest, and `Vm`, which
//! generates a runner with `microvm-codegen generate`, starts it and reads the guest's console.
//! Included with `#[path = "common/vm.rs"] mod vm;` next to `mod common;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

/// Hard limit for one VM; normal ones finish in 2–10 s under TCG.
pub const VM_TIMEOUT: Duration = Duration::from_secs(120);

pub struct BootEnv {
    pub kernel: String,
    pub initrd: String,
    pub virtiofsd: String,
    /// vhost-device-vsock, qemu's vsock here (no /dev/vhost-vsock); empty when not built.
    pub vhost_vsock: String,
    pub tsc_khz: String,
}

pub fn boot_env() -> BootEnv {
    let path = std::env::var_os("MICROVM_TEST_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".cache/boot/env"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run checks/boot-env.sh first (checks/test.sh does)",
            path.display()
        )
    });
    let vars: BTreeMap<&str, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('\'').to_owned()))
        .collect();
    let get = |key: &str| vars.get(key).cloned().unwrap_or_default();
    common::require("qemu-system-x86_64", "qemu-system-x86");
    BootEnv {
        kernel: get("MICROVM_TEST_KERNEL"),
        initrd: get("MICROVM_TEST_INITRD"),
        virtiofsd: get("MICROVM_TEST_VIRTIOFSD"),
        vhost_vsock: get("MICROVM_TEST_VHOST_VSOCK"),
        tsc_khz: get("MICROVM_TEST_TSC_KHZ"),
    }
}

pub fn host_tool(name: &str) -> String {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path.display().to_string();
        }
    }
    panic!("{name} is not installed")
}

/// A spec for the test guest: TCG, small, the scenario on the kernel command line.
pub fn spec(env: &BootEnv, name: &str, scenario: &str, params: &[String]) -> Value {
    let mut kernel_params = vec![
        "loglevel=4".to_owned(),
        format!("tsc_early_khz={}", env.tsc_khz),
        format!("mvtest={scenario}"),
    ];
    kernel_params.extend(params.iter().cloned());
    let mut tools = json!({
        "bash": host_tool("bash"),
        "qemu": host_tool("qemu-system-x86_64"),
        "socat": host_tool("socat"),
        "ip": host_tool("ip"),
        "mkdir": host_tool("mkdir"),
        "ln": host_tool("ln"),
        "rm": host_tool("rm"),
        "truncate": host_tool("truncate"),
        "chattr": host_tool("chattr"),
        "chown": host_tool("chown"),
        "sleep": host_tool("sleep"),
        "nproc": host_tool("nproc"),
        "mkfs.ext4": host_tool("mkfs.ext4"),
    });
    if !env.virtiofsd.is_empty() {
        tools["virtiofsd"] = json!(env.virtiofsd);
        // Only virtiofsd-run reports readiness.
        tools["systemd-notify"] = json!(host_tool("systemd-notify"));
    }
    json!({
        "specVersion": 1,
        "hostName": name,
        "hypervisor": "qemu",
        "cpu": "max",
        "mem": 256,
        "kernel": env.kernel,
        "initrdPath": env.initrd,
        "kernelParams": kernel_params,
        "socket": "vm.sock",
        "host": { "user": "root", "group": "root" },
        "tools": tools,
    })
}

/// Console lines shared between the reader thread and the test.
#[derive(Default)]
pub struct Console {
    pub lines: Mutex<Vec<String>>,
    pub grew: Condvar,
}

/// One VM, started from a generated runner, killed (with its process group) when dropped.
pub struct Vm {
    /// The VM's working directory (state dir): relative sockets and volumes live here.
    pub dir: PathBuf,
    pub runner: PathBuf,
    pub child: Option<Child>,
    pub console: Arc<Console>,
    pub stderr: Arc<Mutex<String>>,
}

/// Writes the spec and runs `microvm-codegen generate` on it, as a user would.
pub fn generate(dir: &Path, spec: &Value) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string_pretty(spec).unwrap()).unwrap();
    let runner = dir.join("runner");
    let output = Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
        .arg("generate")
        .arg("--spec")
        .arg(&spec_path)
        .arg("--out")
        .arg(&runner)
        .arg("--force")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "generate failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    runner
}

impl Vm {
    pub fn new(dir: &Path, spec: &Value) -> Vm {
        let runner = generate(dir, spec);
        Vm {
            dir: dir.to_owned(),
            runner,
            child: None,
            console: Arc::default(),
            stderr: Arc::default(),
        }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.runner.join("bin").join(name)
    }

    /// Starts `bin/microvm-run`, inside network namespace `netns` when given.
    pub fn start(&mut self, netns: Option<&str>) {
        let program = self.bin("microvm-run");
        self.start_with(netns, &[program.as_os_str()]);
    }

    /// Starts `argv` as the VM's process (e.g. `microvm run NAME`), in `netns` when given.
    pub fn start_with(&mut self, netns: Option<&str>, argv: &[&std::ffi::OsStr]) {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new(host_tool("ip"));
                c.args(["netns", "exec", ns]).args(argv);
                c
            }
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let mut child = command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let console = Arc::clone(&self.console);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                console.lines.lock().unwrap().push(line);
                console.grew.notify_all();
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr_text = Arc::clone(&self.stderr);
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            stderr_text.lock().unwrap().push_str(&text);
        });
        self.child = Some(child);
    }

    pub fn transcript(&self) -> String {
        format!(
            "console:\n{}\nmicrovm-run stderr:\n{}",
            self.console.lines.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits for a console line starting with `prefix`; returns it.
    pub fn wait_for(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut lines = self.console.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                drop(lines);
                panic!(
                    "no console line starting {prefix:?} within {timeout:?}\n{}",
                    self.transcript()
                );
            }
            lines = self
                .console
                .grew
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    pub fn has(&self, prefix: &str) -> bool {
        self.console
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(prefix))
    }

    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.console
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits for `microvm-run` (qemu) to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "microvm-run still running after {timeout:?}\n{}",
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a guest to its end and checks it powered off by itself, cleanly.
    pub fn run_to_end(&mut self) {
        self.start(None);
        let status = self.wait_exit(VM_TIMEOUT);
        assert!(
            status.success(),
            "microvm-run failed: {status}\n{}",
            self.transcript()
        );
        assert!(
            self.has("MVTEST:poweroff"),
            "no clean poweroff\n{}",
            self.transcript()
        );
        assert!(!self.has("MVTEST:error"), "{}", self.transcript());
        assert!(!self.has("MVTEST:timeout"), "{}", self.transcript());
    }

    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child
            && child.try_wait().ok().flatten().is_none()
        {
            // SAFETY: plain kill(2) on the process group the child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Runs one of the runner's scripts in the VM's working directory.
    pub fn script(&self, name: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.bin(name))
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn param(key: &str, value: impl std::fmt::Display) -> String {
    format!("mvtest.{key}={value}")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("microvm-boot-")
        .tempdir()
        .unwrap()
}

/// Presses the power button with the generated `microvm-shutdown` and checks the guest went
/// down cleanly and quickly, with `microvm-run` exiting 0.
pub fn shut_down(vm: &mut Vm) -> Duration {
    let start = Instant::now();
    let output = vm.script("microvm-shutdown", &[]);
    assert!(
        output.status.success(),
        "microvm-shutdown failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        vm.transcript()
    );
    let status = vm.wait_exit(Duration::from_secs(30));
    let took = start.elapsed();
    assert!(
        status.success(),
        "microvm-run exited with {status}\n{}",
        vm.transcript()
    );
    vm.wait_for("MVTEST:powerbutton", Duration::ZERO);
    vm.wait_for("MVTEST:poweroff", Duration::ZERO);
    took
}

/// A network namespace for the test, deleted (with everything in it) when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Netns {
        let ip = host_tool("ip");
        let _ = Command::new(&ip)
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let status = Command::new(&ip)
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot create network namespace {name}: run as root"
        );
        let ns = Netns(name.to_owned());
        ns.run(&[&ip, "link", "set", "lo", "up"]);
        ns
    }

    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new(host_tool("ip"));
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }

    pub fn run(&self, argv: &[&str]) -> std::process::Output {
        let output = self.command(argv).output().unwrap();
        assert!(
            output.status.success(),
            "{argv:?} failed in {}: {}",
            self.0,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(host_tool("ip"))
            .args(["netns", "del", &self.0])
            .status();
    }
}
