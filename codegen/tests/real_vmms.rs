//! Tier 5: the real hypervisors accept the runners we generate.
//!
//! For each of firecracker, cloud-hypervisor, alioth, stratovirt and kvmtool, every ok fixture
//! of that hypervisor is generated with its tools pointed at real programs (the VMM found in
//! `MICROVM_TEST_VMMS`, a directory, or on `PATH`), the boot environment's Debian kernel (the
//! bzImage, or the ELF vmlinux extracted from it for firecracker and cloud-hypervisor), its
//! initramfs and a small erofs store disk, and `bin/microvm-run` is started as a systemd
//! service starts it: stdin `/dev/null`, stdout and stderr pipes, no terminal. Taps and
//! macvtaps live in a network namespace the test makes (the macvtaps on a veth named like the
//! fixture's link), virtiofs shares are served by the generated `virtiofsd-run`, huge pages
//! are reserved (and hugetlbfs mounted) for the run and released after.
//!
//! `/dev/kvm` here is PVM-based: a stock guest kernel hangs after the VMM starts it, but each
//! VMM's verdict on its configuration comes first. Accepted and refused are told apart by what
//! each VMM prints (`shared/reference/real-vmms.md`): a line that only a started guest or VMM
//! prints, against an exit. A feature that needs a device this machine lacks (/dev/vhost-net,
//! /dev/vhost-vsock, /dev/vfio) is left out of the run, and the test says which; the grammar
//! tests cover its flags.
//!
//! Each VMM's minimal fixture also runs as a created VM's generated `microvm@` unit under a real
//! systemd of the test's own (common/systemd.rs), inside the unit's whole sandbox: a seccomp
//! filter or mount namespace that keeps a VMM from starting shows there only.
//!
//! checks/test.sh runs this tier only for the VMMs it finds, and prints a `skipped: tier 5`
//! line for the others; a test whose VMM is missing fails rather than pass.

mod common;
#[path = "common/systemd.rs"]
mod systemd;
#[path = "common/vm.rs"]
mod vm;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use vm::{BootEnv, Netns, host_tool};

/// How long a VMM gets to show it accepted its configuration.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(60);

struct Vmm {
    hypervisor: &'static str,
    /// The program, as found in `MICROVM_TEST_VMMS` or on `PATH`.
    program: &'static str,
    /// Boots an ELF vmlinux (with its PVH note) rather than a bzImage.
    elf_kernel: bool,
    /// Output lines that only an accepted configuration produces (any one of them).
    accepted: &'static [&'static str],
    /// Environment for `microvm-run` that makes the VMM say so.
    env: &'static [(&'static str, &'static str)],
}

const FIRECRACKER: Vmm = Vmm {
    hypervisor: "firecracker",
    program: "firecracker",
    elf_kernel: true,
    accepted: &["Successfully started microvm"],
    env: &[],
};
const CLOUD_HYPERVISOR: Vmm = Vmm {
    hypervisor: "cloud-hypervisor",
    program: "cloud-hypervisor",
    elf_kernel: true,
    // With -v (added to the spec's extraArgs by `prepare`): logged once every device is made.
    accepted: &["event = booted"],
    env: &[],
};
const ALIOTH: Vmm = Vmm {
    hypervisor: "alioth",
    program: "alioth",
    elf_kernel: false,
    // Logged once every device is made and the kernel (bzImage or, by its PVH note, ELF) and
    // initramfs are loaded; a refused configuration ends with "Error:" and a non-zero exit.
    // The guest kernel then fails on this machine's KVM and alioth exits.
    accepted: &["initramfs loaded at"],
    env: &[("RUST_LOG", "info")],
};
const STRATOVIRT: Vmm = Vmm {
    hypervisor: "stratovirt",
    program: "stratovirt",
    elf_kernel: false,
    accepted: &[
        "vcpu0 start running",
        "Probing EDD",
        "PPrroobbiinngg  EEDDDD",
    ],
    env: &[],
};
const KVMTOOL: Vmm = Vmm {
    hypervisor: "kvmtool",
    program: "lkvm",
    elf_kernel: false,
    // The bzImage's real-mode stub, which kvmtool's serial port echoes doubled.
    accepted: &["Probing EDD", "PPrroobbiinngg  EEDDDD"],
    env: &[],
};

/// The VMM's program: in `MICROVM_TEST_VMMS` (a directory), else on `PATH`.
fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("MICROVM_TEST_VMMS")
        .map(|d| vec![PathBuf::from(d)])
        .unwrap_or_default();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The ok fixtures of `hypervisor`, by file name.
fn fixtures_of(hypervisor: &str) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(common::fixtures().join("ok")).unwrap() {
        let path = entry.unwrap().path();
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if value["hypervisor"] == hypervisor {
            found.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn usable(device: &str) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .is_ok()
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The boot environment's extra files for this tier (see checks/boot-env.sh).
struct Files {
    env: BootEnv,
    vmlinux: String,
    store_disk: String,
}

fn files() -> Files {
    let env = vm::boot_env();
    let text = std::fs::read_to_string(
        std::env::var_os("MICROVM_TEST_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| common::repo_root().join(".cache/boot/env")),
    )
    .unwrap();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('\'').to_owned())
            .unwrap_or_else(|| panic!("{key} is missing: run checks/boot-env.sh"))
    };
    Files {
        vmlinux: get("MICROVM_TEST_VMLINUX"),
        store_disk: get("MICROVM_TEST_STORE_DISK"),
        env,
    }
}

/// A fixture made runnable here: paths point at real files and programs, features needing a
/// device this machine lacks are removed (listed in `left_out`).
struct Prepared {
    spec: Value,
    left_out: Vec<String>,
}

fn prepare(vmm: &Vmm, fixture: &Value, program: &Path, files: &Files, dir: &Path) -> Prepared {
    let mut spec = fixture.clone();
    let mut left_out = Vec::new();
    spec["kernel"] = json!(if vmm.elf_kernel {
        &files.vmlinux
    } else {
        &files.env.kernel
    });
    spec["initrdPath"] = json!(files.env.initrd);
    // `quiet` silences the bzImage stub's "Probing EDD", by which some VMMs are judged.
    if let Some(params) = spec.get_mut("kernelParams").and_then(Value::as_array_mut) {
        params.retain(|p| p != "quiet");
    }
    if !spec["storeDisk"].is_null() {
        spec["storeDisk"] = json!(files.store_disk);
    }
    spec["host"] = json!({ "user": "root", "group": "root" });
    if vmm.hypervisor == "cloud-hypervisor" {
        let mut args = spec["cloud-hypervisor"]["extraArgs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        args.push(json!("-v"));
        spec["cloud-hypervisor"]["extraArgs"] = json!(args);
    }
    if !spec["extraArgsScript"].is_null() {
        let script = dir.join("extra-args");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        spec["extraArgsScript"] = json!(script);
    }

    // Volumes the runner does not create must exist.
    if let Some(volumes) = spec["volumes"].as_array() {
        for volume in volumes {
            if volume["autoCreate"] == json!(false) {
                let image = dir.join(volume["image"].as_str().unwrap());
                if volume["imageType"] == "qcow2" {
                    run(
                        "qemu-img",
                        &[
                            "create",
                            "-q",
                            "-f",
                            "qcow2",
                            image.to_str().unwrap(),
                            "16M",
                        ],
                    );
                } else {
                    std::fs::File::create(&image)
                        .unwrap()
                        .set_len(16 << 20)
                        .unwrap();
                    run(
                        &host_tool("mkfs.ext4"),
                        &["-q", "-F", image.to_str().unwrap()],
                    );
                }
            }
        }
    }
    // A secret disk's contents come from a host unit's credential, which exists only under
    // systemd: a file of the test's own stands in.
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for (i, volume) in volumes.iter_mut().enumerate() {
            if volume["contentsFile"].is_string() {
                let contents = dir.join(format!("contents-{i}"));
                std::fs::write(&contents, "a stand-in secret\n").unwrap();
                volume["contentsFile"] = json!(contents);
            }
        }
    }
    // Shares serve directories of the test's own.
    if let Some(shares) = spec.get_mut("shares").and_then(Value::as_array_mut) {
        for share in shares {
            let source = dir.join(format!("share-{}", share["tag"].as_str().unwrap()));
            std::fs::create_dir_all(&source).unwrap();
            share["source"] = json!(source);
        }
        spec["virtiofsd"]["group"] = Value::Null;
    }
    if !usable("/dev/vhost-net")
        && let Some(interfaces) = spec.get_mut("interfaces").and_then(Value::as_array_mut)
    {
        for interface in interfaces {
            if interface["tap"]["vhost"] == json!(true) {
                interface["tap"]["vhost"] = json!(false);
                left_out.push(format!(
                    "tap.vhost of {} (no /dev/vhost-net)",
                    interface["id"].as_str().unwrap()
                ));
            }
        }
    }
    if !Path::new("/dev/vfio/vfio").exists()
        && let Some(devices) = spec.get_mut("devices").and_then(Value::as_array_mut)
    {
        let before = devices.len();
        devices.retain(|d| d["bus"] != "pci");
        if devices.len() < before {
            left_out.push("PCI passthrough (no /dev/vfio)".to_owned());
        }
    }

    // Every tool at its path on this machine.
    let tools: Vec<String> = spec["tools"].as_object().unwrap().keys().cloned().collect();
    for tool in tools {
        let path = match tool.as_str() {
            t if t == vmm.program => program.display().to_string(),
            "virtiofsd" => files.env.virtiofsd.clone(),
            // Ours: the readiness bridge the runner starts under a notify unit.
            "microvm-notify-bridge" => env!("CARGO_BIN_EXE_microvm-notify-bridge").to_owned(),
            // Serves another hypervisor's GPU only, and graphics are left out below.
            "crosvm" => continue,
            other => host_tool(other),
        };
        spec["tools"][tool] = json!(path);
    }

    // vsock: kernel-backed for some hypervisors, which the generated runner says by checking
    // for /dev/vhost-vsock.
    if !spec["vsock"]["cid"].is_null() && !usable("/dev/vhost-vsock") {
        let runner = vm::generate(&dir.join("probe"), &spec);
        let run = std::fs::read_to_string(runner.join("bin/microvm-run")).unwrap();
        if run.contains("/dev/vhost-vsock") {
            spec["vsock"]["cid"] = Value::Null;
            // Readiness travels over vsock, so it goes too.
            spec["vsock"]["notify"] = Value::Null;
            left_out.push("vsock (no /dev/vhost-vsock)".to_owned());
        }
        std::fs::remove_dir_all(dir.join("probe")).unwrap();
    }
    // Graphics need a Wayland session (crosvm's GPU device finds it by XDG_RUNTIME_DIR and
    // WAYLAND_DISPLAY), which a test has not. A cloud-hypervisor without --gpu (upstream's) is
    // the case the runner detects: it must refuse to start, saying which build graphics need,
    // before it starts anything.
    if spec["graphics"]["enable"] == json!(true) {
        let mut why = "no Wayland session".to_owned();
        if vmm.hypervisor == "cloud-hypervisor" && !lists_flag(program, "--gpu") {
            // The VM without what needs the namespace and huge pages the run sets up later,
            // so that the first check to fail is the one about the program.
            let mut probe = spec.clone();
            probe["hugepageMem"] = json!(false);
            for list in ["interfaces", "volumes", "shares", "devices"] {
                probe[list] = json!([]);
            }
            let runner = vm::generate(&dir.join("probe-gpu"), &probe);
            let output = Command::new(runner.join("bin/microvm-run"))
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(1),
                "a cloud-hypervisor without --gpu is refused:\n{stderr}"
            );
            assert!(
                stderr.contains("this cloud-hypervisor has no GPU device")
                    && stderr.contains("microvm.cloud-hypervisor.package"),
                "the refusal names the build graphics need:\n{stderr}"
            );
            std::fs::remove_dir_all(dir.join("probe-gpu")).unwrap();
            why.push_str(
                "; this cloud-hypervisor has no --gpu, and its runner refused it as it should",
            );
        }
        spec["graphics"]["enable"] = json!(false);
        left_out.push(format!("graphics ({why})"));
    }
    Prepared { spec, left_out }
}

/// Whether `program --help` lists `flag`.
fn lists_flag(program: &Path, flag: &str) -> bool {
    let output = Command::new(program).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    text.split(|c: char| c.is_whitespace() || c == '=' || c == ',')
        .any(|word| word == flag)
}

/// A network namespace with the links a spec's interfaces need (deleted when dropped): a
/// macvtap needs a lower device, and a veth is one this kernel has.
fn netns_for(name: &str, spec: &Value) -> Netns {
    let ns = Netns::new(name);
    let ip = host_tool("ip");
    for interface in spec["interfaces"].as_array().into_iter().flatten() {
        let Some(link) = interface["macvtap"]["link"].as_str() else {
            continue;
        };
        let exists = ns.command(&[&ip, "link", "show", "dev", link]).output();
        if exists.is_ok_and(|o| o.status.success()) {
            continue;
        }
        let peer = format!("{}-peer", &link[..link.len().min(10)]);
        ns.run(&[
            &ip, "link", "add", link, "type", "veth", "peer", "name", &peer,
        ]);
        ns.run(&[&ip, "link", "set", link, "up"]);
        ns.run(&[&ip, "link", "set", &peer, "up"]);
    }
    ns
}

/// Huge pages reserved for one run (and hugetlbfs mounted at /dev/hugepages, which stratovirt
/// and kvmtool map), given back when dropped.
struct HugePages {
    before: u64,
    mounted: bool,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl HugePages {
    fn reserve(mib: u64) -> HugePages {
        let page_kib = meminfo("Hugepagesize").max(1);
        let pages = (mib * 1024).div_ceil(page_kib) + 16;
        let before: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let mounted = !mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some("/dev/hugepages") && l.contains("hugetlbfs"));
        if mounted {
            std::fs::create_dir_all("/dev/hugepages").unwrap();
            run("mount", &["-t", "hugetlbfs", "hugetlbfs", "/dev/hugepages"]);
        }
        let guard = HugePages { before, mounted };
        std::fs::write(NR_HUGEPAGES, (before + pages).to_string()).unwrap();
        assert!(
            meminfo("HugePages_Free") >= pages,
            "could not reserve {pages} huge pages ({}; HugePages_Free {})",
            NR_HUGEPAGES,
            meminfo("HugePages_Free")
        );
        guard
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.before.to_string());
        if self.mounted {
            let _ = Command::new("umount").arg("/dev/hugepages").status();
        }
    }
}

/// Everything a process printed on stdout and stderr, line by line, as it comes.
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

fn spawn_logged(mut command: Command, output: &Arc<Output>) -> Child {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let streams: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for stream in streams {
        let output = Arc::clone(output);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                output.lines.lock().unwrap().push(line);
                output.grew.notify_all();
            }
        });
    }
    child
}

fn kill_group(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        // SAFETY: plain kill(2) on the process group the child leads.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    }
    let _ = child.wait();
}

enum Verdict {
    Accepted(String),
    Refused(String),
}

/// Lines of the log files a spec may send a VMM's own log to (firecracker's `logger`), in
/// the VM's working directory.
fn log_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            lines.extend(text.lines().map(|l| format!("{}: {l}", path.display())));
        }
    }
    lines
}

/// Waits for an accepting line (on the VMM's output or in its log file), an exit, or the
/// timeout.
fn verdict(vmm: &Vmm, child: &mut Child, output: &Output, dir: &Path) -> Verdict {
    let deadline = Instant::now() + VERDICT_TIMEOUT;
    let mut lines = output.lines.lock().unwrap();
    loop {
        if let Some(line) = lines
            .iter()
            .cloned()
            .chain(log_lines(dir))
            .find(|l| vmm.accepted.iter().any(|a| l.contains(a)))
        {
            return Verdict::Accepted(line);
        }
        if let Some(status) = child.try_wait().unwrap() {
            drop(lines);
            std::thread::sleep(Duration::from_millis(200));
            return Verdict::Refused(format!("microvm-run exited with {status}"));
        }
        let now = Instant::now();
        if now >= deadline {
            return Verdict::Refused(format!(
                "no sign of acceptance within {VERDICT_TIMEOUT:?} ({:?})",
                vmm.accepted
            ));
        }
        lines = output
            .grew
            .wait_timeout(lines, Duration::from_millis(200).min(deadline - now))
            .unwrap()
            .0;
    }
}

/// Starts the generated `virtiofsd-run` and waits until its sockets exist.
fn start_virtiofsd(runner: &Path, dir: &Path, spec: &Value, output: &Arc<Output>) -> Child {
    let mut command = Command::new(runner.join("bin/virtiofsd-run"));
    command.current_dir(dir);
    let mut child = spawn_logged(command, output);
    let sockets: Vec<PathBuf> = spec["shares"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["proto"] == "virtiofs")
        .map(|s| dir.join(s["socket"].as_str().unwrap()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sockets.iter().all(|s| s.exists()) {
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            kill_group(&mut child);
            panic!(
                "virtiofsd-run did not create {sockets:?}:\n{}",
                output.lines.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Generates, starts and judges one fixture; returns a report line, or an error with the
/// transcript.
fn try_fixture(
    vmm: &Vmm,
    program: &Path,
    files: &Files,
    name: &str,
    fixture: &Value,
) -> Result<String, String> {
    let tmp = tempfile::Builder::new()
        .prefix("microvm-vmm-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let Prepared { spec, left_out } = prepare(vmm, fixture, program, files, dir);
    let runner = vm::generate(&dir.join("gen"), &spec);

    let netns = spec["interfaces"]
        .as_array()
        .is_some_and(|i| !i.is_empty())
        .then(|| netns_for(&format!("mvvmm-{}", std::process::id()), &spec));
    if let Some(ns) = &netns {
        for script in ["tap-up", "macvtap-up"] {
            let path = runner.join("bin").join(script);
            if path.exists() {
                ns.run(&[path.to_str().unwrap()]);
            }
        }
    }
    let hugepages = (spec["hugepageMem"] == json!(true)).then(|| {
        let mem = spec["mem"].as_u64().unwrap_or(512);
        let hotplug = spec["hotplugMem"].as_u64().unwrap_or(0);
        HugePages::reserve(mem + hotplug)
    });

    let output = Arc::new(Output::default());
    let mut virtiofsd = runner
        .join("bin/virtiofsd-run")
        .exists()
        .then(|| start_virtiofsd(&runner, dir, &spec, &output));
    let microvm_run = runner.join("bin/microvm-run");
    let mut command = match &netns {
        Some(ns) => ns.command(&[microvm_run.to_str().unwrap()]),
        None => Command::new(&microvm_run),
    };
    command.current_dir(dir).envs(vmm.env.iter().copied());
    let mut child = spawn_logged(command, &output);
    let verdict = verdict(vmm, &mut child, &output, dir);
    kill_group(&mut child);
    if let Some(daemon) = &mut virtiofsd {
        kill_group(daemon);
    }
    drop(hugepages);
    drop(netns);

    let left_out = if left_out.is_empty() {
        String::new()
    } else {
        format!("; left out: {}", left_out.join(", "))
    };
    // A deprecation warning is a refusal announced in advance (cloud-hypervisor warned that
    // disk image type detection goes away, for a store disk without image_type).
    let deprecated: Vec<String> = output
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.to_lowercase().contains("deprecat"))
        .cloned()
        .collect();
    let verdict = match verdict {
        Verdict::Accepted(_) if !deprecated.is_empty() => {
            Verdict::Refused(format!("accepted, but warned: {}", deprecated.join(" / ")))
        }
        other => other,
    };
    match verdict {
        Verdict::Accepted(line) => Ok(format!(
            "tier 5: {} ({}): {name}: accepted ({line:?}){left_out}",
            vmm.hypervisor,
            program.display()
        )),
        Verdict::Refused(why) => Err(format!(
            "tier 5: {} ({}): {name}: REFUSED: {why}{left_out}\n--- output ---\n{}\n{}\n--- microvm-run ---\n{}",
            vmm.hypervisor,
            program.display(),
            output.lines.lock().unwrap().join("\n"),
            log_lines(dir).join("\n"),
            std::fs::read_to_string(&microvm_run).unwrap_or_default()
        )),
    }
}

/// Runs every ok fixture of `vmm` (plus `extra` variants) against the real program.
fn accepts_every_ok_fixture(vmm: &Vmm, extra: &[(&str, Value)]) {
    let program = find(vmm.program).unwrap_or_else(|| {
        panic!(
            "{} is not in MICROVM_TEST_VMMS or on PATH; checks/test.sh skips this test without it",
            vmm.program
        )
    });
    accepts_every_ok_fixture_of(vmm, &program, extra);
}

fn accepts_every_ok_fixture_of(vmm: &Vmm, program: &Path, extra: &[(&str, Value)]) {
    let program = program.to_owned();
    let files = files();
    let mut fixtures = fixtures_of(vmm.hypervisor);
    assert!(
        fixtures.iter().any(|(n, _)| n.ends_with("-minimal.json"))
            && fixtures
                .iter()
                .any(|(n, _)| n.ends_with("-every-feature.json")),
        "{}: the minimal and every-feature fixtures exist",
        vmm.hypervisor
    );
    fixtures.extend(extra.iter().map(|(n, v)| (n.to_string(), v.clone())));
    let mut failures = Vec::new();
    for (name, fixture) in &fixtures {
        match try_fixture(vmm, &program, &files, name, fixture) {
            Ok(report) => println!("{report}"),
            Err(report) => {
                println!("{report}");
                failures.push(report);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runners refused by {}:\n{}",
        failures.len(),
        fixtures.len(),
        program.display(),
        failures.join("\n\n")
    );
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("ok").join(name)).unwrap(),
    )
    .unwrap()
}

/// The VMM's minimal fixture, prepared as for `try_fixture`, created as VM `tier5` and started
/// as `microvm@tier5` by a systemd of the test's own; accepted when the console (or the VMM's
/// log) shows what only an accepted configuration prints.
fn runs_its_minimal_fixture_as_a_microvm_unit(vmm: &Vmm) {
    let program = find(vmm.program).unwrap_or_else(|| {
        panic!(
            "{} is not in MICROVM_TEST_VMMS or on PATH; checks/test.sh skips this test without it",
            vmm.program
        )
    });
    let files = files();
    let tmp = systemd::state_tempdir();
    // The unit's sandbox hides /tmp and /home and /root, where a VMM built by hand lives (on a
    // host it is in the Nix store): a copy goes where the unit sees it.
    let program = {
        let copy = tmp.path().join("bin").join(vmm.program);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&program, &copy).unwrap();
        copy
    };
    let state = tmp.path().join("state");
    let vm_dir = state.join("tier5");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let fixture = fixture(&format!("{}-minimal.json", vmm.hypervisor));
    // Files the runner reads relative to its working directory go where the unit runs it.
    let Prepared { mut spec, left_out } = prepare(vmm, &fixture, &program, &files, &vm_dir);
    systemd::make_visible(tmp.path(), &mut spec);
    let runner = vm::generate(&tmp.path().join("gen"), &spec);
    systemd::install_host_units(tmp.path(), &state, "tier5", vmm.env);
    let manager = systemd::Manager::start(&tmp.path().join("units"));
    systemd::create(tmp.path(), &state, "tier5", &runner);
    let started = manager.run(&["systemctl", "start", "microvm@tier5.service"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let console = tmp.path().join("console.log");
    let deadline = Instant::now() + VERDICT_TIMEOUT;
    let verdict = loop {
        let lines: Vec<String> = std::fs::read_to_string(&console)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .chain(log_lines(&vm_dir))
            .collect();
        if let Some(line) = lines
            .iter()
            .find(|l| vmm.accepted.iter().any(|a| l.contains(a)))
        {
            break Ok(line.clone());
        }
        let unit = manager.show("microvm@tier5.service", "ActiveState");
        if unit != "active" && unit != "activating" {
            break Err(format!("the unit is {unit}"));
        }
        if Instant::now() >= deadline {
            break Err(format!("no sign of acceptance within {VERDICT_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = manager.run(&[
        "systemctl",
        "kill",
        "--signal=SIGKILL",
        "microvm@tier5.service",
    ]);
    match verdict {
        Ok(line) => println!(
            "tier 5: {} ({}): minimal fixture as microvm@: accepted ({line:?}); left out: {left_out:?}",
            vmm.hypervisor,
            program.display()
        ),
        Err(why) => panic!(
            "tier 5: {} ({}): minimal fixture as microvm@: REFUSED: {why}\n--- console ---\n{}\n--- microvm-run ---\n{}",
            vmm.hypervisor,
            program.display(),
            std::fs::read_to_string(&console).unwrap_or_default(),
            std::fs::read_to_string(runner.join("bin/microvm-run")).unwrap_or_default()
        ),
    }
}

#[test]
fn firecracker_runs_its_minimal_fixture_as_a_microvm_unit() {
    runs_its_minimal_fixture_as_a_microvm_unit(&FIRECRACKER);
}

#[test]
fn cloud_hypervisor_runs_its_minimal_fixture_as_a_microvm_unit() {
    runs_its_minimal_fixture_as_a_microvm_unit(&CLOUD_HYPERVISOR);
}

#[test]
fn alioth_runs_its_minimal_fixture_as_a_microvm_unit() {
    runs_its_minimal_fixture_as_a_microvm_unit(&ALIOTH);
}

#[test]
fn stratovirt_runs_its_minimal_fixture_as_a_microvm_unit() {
    runs_its_minimal_fixture_as_a_microvm_unit(&STRATOVIRT);
}

#[test]
fn kvmtool_runs_its_minimal_fixture_as_a_microvm_unit() {
    runs_its_minimal_fixture_as_a_microvm_unit(&KVMTOOL);
}

#[test]
fn firecracker_accepts_every_ok_fixture() {
    accepts_every_ok_fixture(&FIRECRACKER, &[]);
}

#[test]
fn cloud_hypervisor_accepts_every_ok_fixture() {
    accepts_every_ok_fixture(&CLOUD_HYPERVISOR, &[]);
}

#[test]
fn alioth_accepts_every_ok_fixture() {
    // An ELF kernel too: microvm-run must pass it with --pvh.
    let elf = Vmm {
        elf_kernel: true,
        ..ALIOTH
    };
    let program = find(ALIOTH.program);
    accepts_every_ok_fixture(&ALIOTH, &[]);
    if let Some(program) = program {
        let report = try_fixture(
            &elf,
            &program,
            &files(),
            "alioth-minimal.json with an ELF vmlinux",
            &fixture("alioth-minimal.json"),
        );
        match report {
            Ok(line) => println!("{line}"),
            Err(report) => panic!("{report}"),
        }
    }
}

#[test]
fn stratovirt_accepts_every_ok_fixture() {
    accepts_every_ok_fixture(&STRATOVIRT, &[]);
    // stratovirt 2.5 builds virtio-rng and vhost-vsock only with features; a build without
    // them, when one is provided under this name, must take the same runners.
    if let Some(program) = find("stratovirt-default-features") {
        accepts_every_ok_fixture_of(&STRATOVIRT, &program, &[]);
    } else {
        println!(
            "tier 5: stratovirt: no stratovirt-default-features to try a 2.5 build without optional features"
        );
    }
}

#[test]
fn kvmtool_accepts_every_ok_fixture() {
    accepts_every_ok_fixture(&KVMTOOL, &[]);
}
