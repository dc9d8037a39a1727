//! `microvm up`, `down`, `forward`, and `ls`, `status`, `logs` of an `up` VM, with recording
//! stand-ins for nix, systemd-run, systemctl and journalctl first on PATH. systemd-run starts
//! nothing: the tests look at what it was asked to run and at the runner `up` rendered, whose
//! spec carries the overrides. Booting such a runner is the boot test's (boot_up.rs).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine;
use serde_json::Value;

const STAND_INS: &[(&str, &str)] = &[
    (
        "nix",
        r#"#!/bin/bash
printf '%s\n' "$*" >>"$RECORD/nix"
if [ "$1" = build ]; then
  [ "$2" = -o ] || exit 2
  # FAKE_ATTR: the only attribute the flake has.
  if [ -n "${FAKE_ATTR:-}" ] && [ "$4" != "$FAKE_ATTR" ]; then
    echo "error: flake does not provide attribute '$4'" >&2
    exit 1
  fi
  ln -sfn "$FAKE_RUNNER" "$3"
fi
"#,
    ),
    (
        "systemd-run",
        // With FAKE_STATE, the unit it starts is active from then on, as systemctl then says;
        // with FAKE_QUEUED too, only once systemctl has shown its start job that many times.
        "#!/bin/bash\nprintf '%s\\n' \"$*\" >>\"$RECORD/systemd-run\"\n\
         if [ -n \"${FAKE_STATE:-}\" ] && [ -z \"${FAKE_QUEUED:-}\" ]; then echo active >\"$FAKE_STATE\"; fi\n",
    ),
    (
        "systemctl",
        r#"#!/bin/bash
printf '%s\n' "$*" >>"$RECORD/systemctl"
if [ -n "${FAKE_STATE:-}" ] && [ -f "$FAKE_STATE" ]; then FAKE_ACTIVE=$(cat "$FAKE_STATE"); fi
case $1 in
  show)
    if [ -n "${FAKE_QUEUED:-}" ] && [ "$(cat "$FAKE_QUEUED")" -gt 0 ]; then
      printf 'ActiveState=inactive\nSubState=dead\nMainPID=0\nJob=7\n'
      echo $(($(cat "$FAKE_QUEUED") - 1)) >"$FAKE_QUEUED"
      if [ "$(cat "$FAKE_QUEUED")" -eq 0 ]; then echo active >"$FAKE_STATE"; fi
      exit 0
    fi
    printf 'ActiveState=%s\nSubState=%s\nMainPID=%s\n' "${FAKE_ACTIVE:-inactive}" "${FAKE_SUB:-dead}" "${FAKE_PID:-0}" ;;
  is-active) echo "${FAKE_ACTIVE:-inactive}"; [ "${FAKE_ACTIVE:-inactive}" = active ] ;;
esac
"#,
    ),
    (
        "journalctl",
        "#!/bin/bash\nprintf '%s\\n' \"$*\" >>\"$RECORD/journalctl\"\n",
    ),
];

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        for dir in ["bin", "record", "state", "share", "data"] {
            std::fs::create_dir_all(host.path(dir)).unwrap();
        }
        for (name, text) in STAND_INS {
            let path = host.path("bin").join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        host
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// A runner generated from an ok fixture (bash from this machine), as nix would build it.
    fn runner(&self, fixture: &str) -> PathBuf {
        let (mut spec, _) = common::ok_fixture(fixture);
        spec.tools.bash = Some("/bin/bash".to_owned());
        let out = self.path(&format!("runners/{fixture}"));
        microvm_codegen::output::write(&out, &common::build(&spec), false).unwrap();
        out
    }

    fn microvm(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(env!("CARGO_BIN_EXE_microvm"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("RECORD", self.path("record"))
            .env("MICROVM_STATE_DIR", self.path("state"))
            .env("MICROVM_UP_SUPERVISOR", "systemd");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    }

    fn calls(&self, program: &str) -> Vec<String> {
        std::fs::read_to_string(self.path("record").join(program))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn spec_of(&self, name: &str) -> Value {
        let path = self
            .path("state")
            .join(name)
            .join("current/share/microvm/spec.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn kernel_params(spec: &Value, prefix: &str) -> Vec<String> {
    spec["kernelParams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str()?.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

#[test]
fn up_applies_every_override_to_the_runners_spec_and_starts_a_sandboxed_transient_unit() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json");
    let share = host.path("share").display().to_string();
    let data = host.path("data").display().to_string();
    let output = host.microvm(
        &[
            "up",
            "--runner",
            runner.to_str().unwrap(),
            "--name",
            "web",
            "-p",
            "8080:80",
            "-p",
            "0.0.0.0:5353:53/udp",
            "-v",
            &format!("{share}:/mnt/config"),
            "-v",
            &format!("{data}:/mnt/data:1024"),
            "--cpus",
            "3",
            "--memory",
            "1536",
            "--env",
            "GREETING=say \"hi\"",
            "--env",
            "PORT=8080",
            "--no-wait",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let spec = host.spec_of("web");
    assert_eq!(spec["vcpu"], 3);
    assert_eq!(spec["mem"], 1536);
    // The runner's own kernel parameters stay; up's come after them.
    assert_eq!(
        spec["kernelParams"][0],
        "init=/nix/store/00000000000000000000000000000000-nixos-system/init"
    );
    let user: Vec<&Value> = spec["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "user")
        .collect();
    assert_eq!(user.len(), 1, "{}", spec["interfaces"]);
    let forwards: Vec<(String, u64, u64, String)> = spec["forwardPorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["host"]["address"].as_str().unwrap().to_owned(),
                f["host"]["port"].as_u64().unwrap(),
                f["guest"]["port"].as_u64().unwrap(),
                f["proto"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        forwards,
        [
            ("127.0.0.1".to_owned(), 8080, 80, "tcp".to_owned()),
            ("0.0.0.0".to_owned(), 5353, 53, "udp".to_owned())
        ]
    );
    // qemu shares read-only over 9p; the volume's image lives in the given directory.
    let share_entry = &spec["shares"][0];
    assert_eq!(share_entry["proto"], "9p");
    assert_eq!(share_entry["readOnly"], true);
    assert_eq!(share_entry["source"], share.as_str());
    let tag = share_entry["tag"].as_str().unwrap();
    let volume = &spec["volumes"][0];
    assert_eq!(volume["image"], format!("{data}/mnt-data.img"));
    assert_eq!(volume["size"], 1024);
    assert_eq!(volume["fsType"], "ext4");
    assert_eq!(volume["autoCreate"], true);
    let id = volume["label"].as_str().unwrap();
    assert_eq!(volume["serial"], id);
    assert_eq!(
        kernel_params(&spec, "microvm.up.mount="),
        [
            format!("9p:{tag}:/mnt/config"),
            format!("disk:{id}:/mnt/data")
        ]
    );
    let env = kernel_params(&spec, "microvm.up.env=");
    assert_eq!(env.len(), 1);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&env[0])
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "GREETING=\"say \\\"hi\\\"\"\nPORT=\"8080\"\n"
    );
    // The runner was rendered again: its script forwards the ports and shares the directory.
    let run = std::fs::read_to_string(host.path("state/web/current/bin/microvm-run")).unwrap();
    assert!(run.contains("hostfwd=tcp:127.0.0.1:8080-:80"), "{run}");
    assert!(run.contains(&format!("mount_tag={tag}")), "{run}");
    // Started as the transient unit, with the microvm@ template's sandbox.
    let calls = host.calls("systemd-run");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    for expected in [
        "--unit=microvm-up-web.service",
        "--collect",
        "-p NoNewPrivileges=yes",
        "-p ProtectSystem=strict",
        "-p DeviceAllow=/dev/kvm rw",
        "-p ProtectHome=tmpfs",
        &format!("-p BindPaths={}", host.path("state/web").display()),
        &format!("-p BindPaths={data}"),
        &format!("-p BindReadOnlyPaths={share}"),
    ] {
        assert!(call.contains(expected), "{expected:?} in {call}");
    }
    // The unit runs the supervisor, which runs the runner `up` rendered.
    assert!(
        call.ends_with(&format!(
            "--state-dir {} supervise web --without-virtiofsd",
            host.path("state").display()
        )),
        "{call}"
    );
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(host.path("state/web/up.json")).unwrap())
            .unwrap();
    assert_eq!(record["supervisor"]["unit"], "microvm-up-web.service");
    assert!(stdout(&output).contains("127.0.0.1:8080 → guest 80/tcp"));
    assert!(stdout(&output).contains("microvm down web"));
}

#[test]
fn up_builds_a_flakes_nixos_configuration_then_falls_back_to_a_package() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json");
    let runner = runner.to_str().unwrap();
    let configuration = host.microvm(
        &["up", "/flake#web", "--no-wait"],
        &[("FAKE_RUNNER", runner)],
    );
    assert!(configuration.status.success(), "{}", stderr(&configuration));
    let calls = host.calls("nix");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].ends_with(" /flake#nixosConfigurations.web.config.microvm.declaredRunner"),
        "{calls:?}"
    );
    // The built runner is rooted by the VM's directory, and the name is the flake's.
    assert_eq!(
        std::fs::read_link(host.path("state/web/runner-source")).unwrap(),
        PathBuf::from(runner)
    );

    let package = host.microvm(
        &["up", "/flake#tool", "--no-wait"],
        &[("FAKE_RUNNER", runner), ("FAKE_ATTR", "/flake#tool")],
    );
    assert!(package.status.success(), "{}", stderr(&package));
    assert!(host.path("state/tool/up.json").is_file());
    // No FLAKE#NAME: the default package, named after the guest's host name.
    let default = host.microvm(&["up", "--no-wait"], &[("FAKE_RUNNER", runner)]);
    assert!(default.status.success(), "{}", stderr(&default));
    assert!(host.calls("nix").last().unwrap().ends_with(" ."));
    assert!(host.path("state/minimal/up.json").is_file());
}

#[test]
fn up_refuses_bad_flags_missing_directories_and_what_the_hypervisor_cannot_do() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json");
    let runner = runner.to_str().unwrap();
    for (flag, value) in [
        ("-p", "8080"),
        ("-p", "0:80"),
        ("-p", "80:80/sctp"),
        ("-v", "./x:relative"),
        ("-v", "./x:/mnt/../etc"),
        ("-v", "./x:/mnt:big"),
        ("--env", "1X=y"),
        ("--cpus", "0"),
        ("--hypervisor", "xen"),
    ] {
        let output = host.microvm(&["up", "--runner", runner, flag, value], &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{flag} {value}: {}",
            stderr(&output)
        );
    }
    let missing = host.microvm(
        &["up", "--runner", runner, "-v", "/does/not/exist:/mnt/x"],
        &[],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("/does/not/exist is not a directory"),
        "{}",
        stderr(&missing)
    );
    // The sandbox binds the directory with a unit setting, which splits at whitespace.
    let spaced = host.path("my data");
    std::fs::create_dir_all(&spaced).unwrap();
    let refused = host.microvm(
        &[
            "up",
            "--runner",
            runner,
            "-v",
            &format!("{}:/mnt/x", spaced.display()),
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("cannot be bound into the VM's sandbox"),
        "{}",
        stderr(&refused)
    );
    // firecracker shares no directories: the capability table's refusal, with its hint.
    let share = format!("{}:/mnt/x", host.path("share").display());
    let refused = host.microvm(
        &[
            "up",
            "--runner",
            runner,
            "--hypervisor",
            "firecracker",
            "-v",
            &share,
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    let text = stderr(&refused);
    assert!(
        text.contains("microvm::capability::share_virtiofs"),
        "{text}"
    );
    assert!(
        text.contains("help: firecracker has no shared directories"),
        "{text}"
    );
    // A user network is qemu's (and kvmtool's and vfkit's), not cloud-hypervisor's.
    let ports = host.microvm(
        &[
            "up",
            "--runner",
            runner,
            "--hypervisor",
            "cloud-hypervisor",
            "-p",
            "1:2",
            "--forward-via",
            "user",
        ],
        &[],
    );
    assert_eq!(ports.status.code(), Some(1));
    assert!(
        stderr(&ports).contains("microvm::capability::"),
        "{}",
        stderr(&ports)
    );
    // Nothing was started and no VM directory was made for a refused up.
    assert!(host.calls("systemd-run").is_empty());
    assert!(
        std::fs::read_dir(host.path("state"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn a_name_in_use_is_refused_and_a_stopped_up_vm_starts_again_keeping_its_volumes() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json");
    let runner = runner.to_str().unwrap();
    let up = |env: &[(&str, &str)]| {
        host.microvm(
            &["up", "--runner", runner, "--name", "web", "--no-wait"],
            env,
        )
    };
    assert!(up(&[]).status.success());
    let image = host.path("data/kept.img");
    std::fs::write(&image, "data").unwrap();
    let running = up(&[("FAKE_ACTIVE", "active")]);
    assert_eq!(running.status.code(), Some(1));
    assert!(
        stderr(&running).contains("the name web is in use: a VM of that name is up"),
        "{}",
        stderr(&running)
    );
    let again = up(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(host.calls("systemd-run").len(), 2);
    assert_eq!(std::fs::read_to_string(&image).unwrap(), "data");

    // A VM that `microvm create` or the host installed is not taken over.
    let other = host.path("state/db");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::symlink(runner, other.join("current")).unwrap();
    let taken = host.microvm(&["up", "--runner", runner, "--name", "db"], &[]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        stderr(&taken).contains("the name db is in use"),
        "{}",
        stderr(&taken)
    );
    assert_eq!(
        std::fs::read_link(other.join("current")).unwrap(),
        PathBuf::from(runner)
    );
}

#[test]
fn ls_status_logs_and_down_work_on_an_up_vm() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json");
    let runner = runner.to_str().unwrap();
    let active = [("FAKE_ACTIVE", "active"), ("FAKE_SUB", "running")];
    assert!(
        host.microvm(
            &[
                "up",
                "--runner",
                runner,
                "--name",
                "web",
                "-p",
                "8080:80",
                "--no-wait"
            ],
            &[]
        )
        .status
        .success()
    );
    let list = host.microvm(&["ls", "--json"], &active);
    assert!(list.status.success(), "{}", stderr(&list));
    let entries: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(entries[0]["name"], "web");
    assert_eq!(entries[0]["up"], true);
    assert_eq!(entries[0]["state"], "running");
    assert!(
        host.calls("systemctl")
            .iter()
            .any(|c| c.starts_with("show microvm-up-web.service")),
        "{:?}",
        host.calls("systemctl")
    );
    let status = host.microvm(&["status", "web"], &active);
    assert!(
        stdout(&status).contains("web: active (running)"),
        "{}",
        stdout(&status)
    );
    assert!(
        stdout(&status).contains("started by  microvm up"),
        "{}",
        stdout(&status)
    );
    assert!(stdout(&status).contains("port        127.0.0.1:8080 → guest 80/tcp"));

    // mvmctl's `logs NAME -f`.
    let logs = host.microvm(&["logs", "web", "-f"], &[]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(
        host.calls("journalctl"),
        ["-u microvm-up-web.service -n 100 -f"]
    );

    // The guest never powers off here (the stand-in unit stays active): after the bounded
    // wait, down stops the unit.
    let down = host.microvm(&["down", "web", "--timeout", "1"], &active);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(
        stderr(&down).contains("did not power off within 1 s"),
        "{}",
        stderr(&down)
    );
    assert!(
        host.calls("systemctl")
            .contains(&"stop microvm-up-web.service".to_owned()),
        "{:?}",
        host.calls("systemctl")
    );
    let stopped = host.microvm(&["down", "web"], &[]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(stderr(&stopped).contains("web is not running"));
    // `down` and `forward` are for `up` VMs only.
    let declared = host.path("state/db");
    std::fs::create_dir_all(&declared).unwrap();
    std::os::unix::fs::symlink(runner, declared.join("current")).unwrap();
    let refused = host.microvm(&["down", "db"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("db was not started by `microvm up`"));
    let forward = host.microvm(&["forward", "web", "-p", "1:2"], &[]);
    assert_eq!(forward.status.code(), Some(1));
    assert!(stderr(&forward).contains("web is not running"));
}

#[test]
fn up_waits_for_a_guest_that_reports_readiness_and_gives_up_after_its_timeout() {
    let host = Host::new();
    let runner = host.runner("qemu-readiness.json");
    let runner = runner.to_str().unwrap();
    let active = [("FAKE_ACTIVE", "active"), ("FAKE_SUB", "running")];
    let dir = host.path("state/ready");
    std::fs::create_dir_all(&dir).unwrap();
    // What microvm-notify-bridge keeps: not ready yet.
    let health = |ready: bool| {
        std::fs::write(
            dir.join("health.json"),
            serde_json::json!({ "ready": ready, "readySince": null, "status": null, "checks": {} })
                .to_string(),
        )
        .unwrap();
    };
    health(false);
    let waiting = host.microvm(
        &[
            "up",
            "--runner",
            runner,
            "--name",
            "ready",
            "--timeout",
            "6",
        ],
        &active,
    );
    assert_eq!(waiting.status.code(), Some(1), "{}", stderr(&waiting));
    let text = stderr(&waiting);
    assert!(
        text.contains("waiting for ready to be ready (its guest reports readiness) (5 s)"),
        "{text}"
    );
    assert!(
        text.contains("ready did not become ready within 6 s; it keeps running"),
        "{text}"
    );
    // The unit is Type=notify, so the bridge's READY=1 reaches systemd too.
    assert!(
        host.calls("systemd-run")[0].contains("-p Type=notify -p NotifyAccess=all"),
        "{:?}",
        host.calls("systemd-run")
    );
    // A unit that does not stay up: `up` says so instead of waiting.
    let died = host.microvm(&["up", "--runner", runner, "--name", "ready"], &[]);
    assert_eq!(died.status.code(), Some(1));
    assert!(
        stderr(&died).contains("ready stopped while starting (it is inactive (dead))"),
        "{}",
        stderr(&died)
    );
    health(true);
    // systemd-run --no-block returns with the start job queued, the unit still inactive: that
    // is a unit about to start, not one that died.
    let state = host.path("unit-state");
    let queued = host.path("queued-polls");
    std::fs::write(&queued, "3").unwrap();
    let ready = host.microvm(
        &[
            "up",
            "--runner",
            runner,
            "--name",
            "ready",
            "--timeout",
            "6",
        ],
        &[
            ("FAKE_STATE", state.to_str().unwrap()),
            ("FAKE_QUEUED", queued.to_str().unwrap()),
        ],
    );
    assert!(ready.status.success(), "{}", stderr(&ready));
    assert!(
        stderr(&ready).contains("ready is ready after 0 s"),
        "{}",
        stderr(&ready)
    );
    assert_eq!(
        std::fs::read_to_string(&queued).unwrap().trim(),
        "0",
        "{:?}",
        host.calls("systemctl")
    );
}
