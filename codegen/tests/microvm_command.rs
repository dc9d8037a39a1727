//! The `microvm` command, every verb, with recording stand-ins for nix, systemctl, journalctl
//! and ssh first on PATH: each records its arguments (one call per line) and behaves just
//! enough like the real program (nix build links a prebuilt runner; systemctl reports the unit
//! state the test sets, and fails like systemd on a unit that is not loaded).

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Host {
    dir: tempfile::TempDir,
}

const STAND_INS: &[(&str, &str)] = &[
    (
        "nix",
        r#"#!/bin/bash
printf '%s\n' "$*" >>"$RECORD/nix"
if [ "$1" = build ]; then
  [ "$2" = -o ] || exit 2
  ln -sfn "$FAKE_RUNNER" "$3"
fi
"#,
    ),
    (
        "systemctl",
        r#"#!/bin/bash
printf '%s\n' "$*" >>"$RECORD/systemctl"
# Instances of the host package's templates always load; other units only when FAKE_UNITS
# names them, as systemd answers for a unit without a unit file: exit 5, "not loaded".
loaded() {
  case $1 in *@*.service) return 0 ;; esac
  [[ " ${FAKE_UNITS:-} " == *" $1 "* ]]
}
verb=$1
case $verb in
  is-active) echo "${FAKE_ACTIVE:-inactive}"; [ "${FAKE_ACTIVE:-inactive}" = active ] ;;
  show) printf 'ActiveState=%s\nSubState=%s\nMainPID=%s\n' "${FAKE_ACTIVE:-inactive}" "${FAKE_SUB:-dead}" "${FAKE_PID:-0}" ;;
  start | stop | restart | try-restart)
    shift
    for unit in "$@"; do
      if ! loaded "$unit"; then
        echo "Failed to $verb $unit: Unit $unit not loaded." >&2
        exit 5
      fi
      if [[ " ${FAKE_FAILING:-} " == *" $unit "* ]]; then
        echo "Job for $unit failed." >&2
        exit 1
      fi
    done
    ;;
esac
"#,
    ),
    (
        "journalctl",
        "#!/bin/bash\nprintf '%s\\n' \"$*\" >>\"$RECORD/journalctl\"\n",
    ),
    (
        "ssh",
        "#!/bin/bash\nprintf '%s\\n' \"$*\" >>\"$RECORD/ssh\"\n",
    ),
    (
        "chown",
        "#!/bin/bash\nprintf '%s\\n' \"$*\" >>\"$RECORD/chown\"\n",
    ),
];

impl Host {
    fn new() -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        for dir in ["bin", "record", "state", "gcroots"] {
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

    /// A runner generated from an ok fixture, with bash from this machine so it runs.
    fn runner(&self, fixture: &str, name: &str) -> PathBuf {
        let (mut spec, _) = common::ok_fixture(fixture);
        spec.tools.bash = Some("/bin/bash".to_owned());
        let out = self.path(&format!("runners/{name}"));
        let tree = common::build(&spec);
        microvm_codegen::output::write(&out, &tree, false).unwrap();
        // A runner that records where it was run instead of starting a hypervisor.
        std::fs::write(
            out.join("bin/microvm-run"),
            "#!/bin/bash\necho \"ran in $PWD\"\n",
        )
        .unwrap();
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
            .env("PATH", path)
            .env("RECORD", self.path("record"))
            .env("MICROVM_STATE_DIR", self.path("state"))
            .env("MICROVM_GCROOTS_DIR", self.path("gcroots"));
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

    /// Installs a VM directly (as the host module or an earlier create would have).
    fn install(
        &self,
        name: &str,
        runner: &Path,
        flake: Option<&str>,
        declarative: bool,
    ) -> PathBuf {
        let dir = self.path("state").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        symlink(runner, dir.join("current")).unwrap();
        if let Some(flake) = flake {
            std::fs::write(dir.join("flake"), format!("{flake}\n")).unwrap();
        }
        if declarative {
            symlink(
                "/nix/store/00000000000000000000000000000000-nixos-system",
                dir.join("toplevel"),
            )
            .unwrap();
        }
        dir
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn create_builds_from_a_flake_and_refuses_an_existing_name() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    let runner_str = runner.display().to_string();
    let env = [("FAKE_RUNNER", runner_str.as_str())];
    let created = host.microvm(&["-c", "web", "-f", "/etc/vms"], &env);
    assert!(created.status.success(), "{}", stderr(&created));
    assert_eq!(
        host.calls("nix"),
        vec![format!(
            "build -o {} /etc/vms#nixosConfigurations.web.config.microvm.declaredRunner",
            host.path("state/.web.creating/current").display()
        )]
    );
    let dir = host.path("state/web");
    assert_eq!(std::fs::read_link(dir.join("current")).unwrap(), runner);
    assert_eq!(
        std::fs::read_to_string(dir.join("flake")).unwrap(),
        "/etc/vms\n"
    );
    assert_eq!(
        std::fs::read_link(host.path("gcroots/current@web")).unwrap(),
        dir.join("current")
    );
    assert_eq!(
        std::fs::read_link(host.path("gcroots/booted@web")).unwrap(),
        dir.join("booted")
    );
    assert!(stdout(&created).contains("systemctl start microvm@web"));

    let again = host.microvm(&["create", "web"], &env);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("web already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(host.calls("nix").len(), 1, "refused before building");

    let bad = host.microvm(&["create", "../escape"], &env);
    assert_eq!(bad.status.code(), Some(1));
    assert!(!host.path("escape").exists());
}

#[test]
fn create_from_a_prebuilt_runner_skips_nix() {
    let host = Host::new();
    let runner = host.runner("cloud-hypervisor-minimal.json", "b");
    let output = host.microvm(
        &["create", "fast", "--runner", runner.to_str().unwrap()],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(host.calls("nix").is_empty());
    assert!(stdout(&output).contains("(cloud-hypervisor)"));
    let not_a_runner = host.microvm(&["create", "broken", "--runner", "/tmp"], &[]);
    assert_eq!(not_a_runner.status.code(), Some(1));
    assert!(
        !host.path("state/broken").exists(),
        "nothing is left behind"
    );
    assert!(!host.path("state/.broken.creating").exists());
}

#[test]
fn create_hands_the_vm_to_the_user_the_host_module_names() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: create hands a VM over only when run as root");
        return;
    }
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    let runner = runner.to_str().unwrap();
    let named = host.microvm(
        &["create", "web", "--runner", runner],
        &[("MICROVM_USER", "vmuser"), ("MICROVM_GROUP", "vmgroup")],
    );
    assert!(named.status.success(), "{}", stderr(&named));
    let dir = host.path("state/web");
    assert_eq!(
        host.calls("chown"),
        vec![format!(
            "-h vmuser:vmgroup {} {}",
            dir.display(),
            dir.join("current").display()
        )]
    );
    // No user of its own: nothing is guessed.
    let unnamed = host.microvm(&["create", "db", "--runner", runner], &[]);
    assert!(unnamed.status.success(), "{}", stderr(&unnamed));
    assert!(
        stderr(&unnamed).contains("MICROVM_USER or MICROVM_GROUP is not set"),
        "{}",
        stderr(&unnamed)
    );
    assert_eq!(host.calls("chown").len(), 1);
}

#[test]
fn update_rebuilds_from_the_recorded_flake_and_restarts_on_request() {
    let host = Host::new();
    let old = host.runner("qemu-minimal.json", "old");
    let new = host.runner("qemu-minimal.json", "new");
    let dir = host.install("web", &old, Some("/etc/vms"), false);
    symlink(&old, dir.join("booted")).unwrap();
    let new_str = new.display().to_string();
    let output = host.microvm(
        &["-Ru", "web"],
        &[("FAKE_RUNNER", &new_str), ("FAKE_ACTIVE", "active")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read_link(dir.join("current")).unwrap(), new);
    let nix = host.calls("nix");
    assert!(
        nix[0].ends_with("/etc/vms#nixosConfigurations.web.config.microvm.declaredRunner"),
        "{nix:?}"
    );
    assert_eq!(
        nix[1],
        format!("store diff-closures {} {}", old.display(), new.display())
    );
    assert!(
        host.calls("systemctl")
            .contains(&"try-restart microvm@web.service".to_owned()),
        "{:?}",
        host.calls("systemctl")
    );

    // -R never starts a stopped VM: it starts with the new version whenever it is started.
    let host = Host::new();
    let dir = host.install("web", &old, Some("/etc/vms"), false);
    let output = host.microvm(&["-Ru", "web"], &[("FAKE_RUNNER", &new_str)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read_link(dir.join("current")).unwrap(), new);
    assert_eq!(
        host.calls("systemctl"),
        vec!["is-active microvm@web.service"]
    );
    assert!(
        stdout(&output).contains("it starts with the new version"),
        "{}",
        stdout(&output)
    );

    // Without -R a running VM is left alone, with a hint.
    let host = Host::new();
    let dir = host.install("web", &old, Some("/etc/vms"), false);
    symlink(&old, dir.join("booted")).unwrap();
    let output = host.microvm(
        &["update", "web"],
        &[("FAKE_RUNNER", &new_str), ("FAKE_ACTIVE", "active")],
    );
    assert!(output.status.success());
    assert!(
        stdout(&output).contains("microvm update -R web"),
        "{}",
        stdout(&output)
    );
    assert!(
        !host
            .calls("systemctl")
            .iter()
            .any(|c| c.starts_with("restart"))
    );
}

#[test]
fn update_refuses_declarative_and_flakeless_vms() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    host.install("declared", &runner, None, true);
    host.install("prebuilt", &runner, None, false);
    let output = host.microvm(&["update", "declared", "prebuilt"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("declared is declared in the host configuration"),
        "{err}"
    );
    assert!(err.contains("prebuilt has no flake"), "{err}");
    assert!(host.calls("nix").is_empty());
    let missing = host.microvm(&["update", "nope"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("there is no VM nope"));
}

#[test]
fn run_starts_the_installed_runner_in_the_vm_directory() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    let dir = host.install("web", &runner, None, false);
    let output = host.microvm(&["-r", "web"], &[]);
    assert!(output.status.success());
    assert_eq!(stdout(&output).trim(), format!("ran in {}", dir.display()));
}

/// Checks `instance` against the committed schema doc/`schema_file` (itself checked to be the
/// one the code makes now).
fn validate_against(schema_file: &str, of: &str, generated: String, instance: &serde_json::Value) {
    let schema = common::committed_schema(schema_file, of, &generated);
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{instance:#}\ndoes not match {schema_file}: {errors:?}"
    );
}

#[test]
fn list_and_status_report_versions_and_match_their_schemas() {
    let host = Host::new();
    let old = host.runner("qemu-every-feature.json", "old");
    let new = host.runner("qemu-every-feature.json", "new");
    let dir = host.install("web", &new, Some("/etc/vms"), false);
    symlink(&old, dir.join("booted")).unwrap();
    host.install("declared", &new, None, true);

    let list = host.microvm(&["list", "--json"], &[("FAKE_ACTIVE", "active")]);
    assert!(list.status.success(), "{}", stderr(&list));
    let json: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    validate_against(
        "microvm-list.schema.json",
        "microvm-list",
        microvm_codegen::manage::list_schema_json(),
        &json,
    );
    assert_eq!(json[0]["name"], "declared");
    assert_eq!(json[0]["declarative"], true);
    assert_eq!(json[1]["name"], "web");
    assert_eq!(json[1]["state"], "outdated", "booted differs from current");
    assert_eq!(json[1]["hypervisor"], "qemu");

    let text = host.microvm(&["-l"], &[]);
    assert!(stdout(&text).contains("stopped"), "{}", stdout(&text));

    let status = host.microvm(
        &["status", "web", "--json"],
        &[
            ("FAKE_ACTIVE", "active"),
            ("FAKE_SUB", "running"),
            ("FAKE_PID", "4242"),
        ],
    );
    assert!(status.status.success(), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    validate_against(
        "microvm-status.schema.json",
        "microvm-status",
        microvm_codegen::manage::status_schema_json(),
        &json,
    );
    assert_eq!(json["restartNeeded"], true);
    assert_eq!(json["unit"]["mainPid"], 4242);
    assert_eq!(json["spec"]["vcpu"], 4);
    assert_eq!(json["flake"], "/etc/vms");
    let text = host.microvm(&["status", "web"], &[]);
    assert!(
        stdout(&text).contains("hypervisor  qemu"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn json_errors_are_objects_on_stdout_that_the_schemas_describe() {
    let host = Host::new();
    let not_a_dir = host.path("record/nix");
    std::fs::write(&not_a_dir, "").unwrap();
    let not_a_dir = not_a_dir.display().to_string();
    // (argv, env, exit status, code)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 4] = [
        (
            &["status", "nosuch", "--json"],
            &[],
            1,
            "microvm::manage::not_found",
        ),
        (
            &["status", "../x", "--json"],
            &[],
            1,
            "microvm::manage::bad_name",
        ),
        (
            &["list", "--json"],
            &[("MICROVM_STATE_DIR", not_a_dir.as_str())],
            1,
            "microvm::manage::io",
        ),
        (&["status", "--json"], &[], 2, "microvm::manage::usage"),
    ];
    let schema_of = |verb: &str| match verb {
        "list" => (
            "microvm-list.schema.json",
            "microvm-list",
            microvm_codegen::manage::list_schema_json(),
        ),
        _ => (
            "microvm-status.schema.json",
            "microvm-status",
            microvm_codegen::manage::status_schema_json(),
        ),
    };
    for (argv, env, status, code) in cases {
        let output = host.microvm(argv, env);
        assert_eq!(output.status.code(), Some(status), "{argv:?}: {output:?}");
        let json: serde_json::Value = serde_json::from_str(&stdout(&output))
            .unwrap_or_else(|e| panic!("{argv:?}: stdout is not JSON ({e}): {output:?}"));
        let (file, of, generated) = schema_of(argv[0]);
        validate_against(file, of, generated, &json);
        assert_eq!(json["error"]["code"], code, "{argv:?}: {json:#}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{argv:?}");
        if code.ends_with("not_found") || code.ends_with("usage") {
            assert!(
                json["error"]["help"].is_string(),
                "{argv:?}: says what to do: {json:#}"
            );
        }
        assert!(
            stderr(&output).contains(message.lines().next().unwrap()),
            "{argv:?}: the report for people stays on stderr: {}",
            stderr(&output)
        );
    }
    // Without --json, stdout stays empty.
    let plain = host.microvm(&["status", "nosuch"], &[]);
    assert_eq!(stdout(&plain), "");
    // A result never looks like an error: the schemas tell them apart.
    let list = host.microvm(&["list", "--json"], &[]);
    assert!(list.status.success(), "{}", stderr(&list));
    let entries: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert!(entries.is_array() && entries.get("error").is_none());
    let (file, of, generated) = schema_of("list");
    validate_against(file, of, generated, &entries);
}

#[test]
fn ssh_goes_over_vsock_and_refuses_without_a_cid_or_when_stopped() {
    let host = Host::new();
    let with_cid = host.runner("qemu-every-feature.json", "cid");
    let without = host.runner("qemu-minimal.json", "nocid");
    let ch = host.runner("cloud-hypervisor-every-feature.json", "ch");
    host.install("vm", &with_cid, None, false);
    host.install("plain", &without, None, false);
    let ch_dir = host.install("chvm", &ch, None, false);
    let active = [("FAKE_ACTIVE", "active")];

    assert!(
        host.microvm(&["-s", "vm", "uname", "-a"], &active)
            .status
            .success()
    );
    assert!(
        host.microvm(&["ssh", "vm", "--", "-l", "admin", "-i", "key"], &active)
            .status
            .success()
    );
    assert!(host.microvm(&["ssh", "chvm"], &active).status.success());
    let options = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";
    assert_eq!(
        host.calls("ssh"),
        vec![
            format!("{options} -l root vsock/42 uname -a"),
            format!("{options} -l admin -i key vsock/42"),
            format!(
                "{options} -l root vsock-mux/{}/notify.vsock",
                ch_dir.display()
            ),
        ]
    );

    let no_cid = host.microvm(&["ssh", "plain"], &active);
    assert_eq!(no_cid.status.code(), Some(1));
    assert!(
        stderr(&no_cid).contains("plain has no vsock cid"),
        "{}",
        stderr(&no_cid)
    );
    let stopped = host.microvm(&["ssh", "vm"], &[]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(stderr(&stopped).contains("vm is not running"));
    assert_eq!(host.calls("ssh").len(), 3, "refusals run no ssh");
}

#[test]
fn logs_show_the_vms_units() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    host.install("web", &runner, None, false);
    assert!(
        host.microvm(&["logs", "web", "-F", "-n", "20"], &[])
            .status
            .success()
    );
    assert_eq!(
        host.calls("journalctl"),
        vec![
            "-u microvm@web.service -u microvm-tap-interfaces@web.service \
             -u microvm-macvtap-interfaces@web.service -u microvm-pci-devices@web.service \
             -u microvm-virtiofsd@web.service -u microvm-set-booted@web.service \
             -u install-microvm-web.service -n 20 -f"
                .to_owned()
        ]
    );
}

#[test]
fn remove_needs_yes_and_keeps_volumes_unless_purged() {
    let host = Host::new();
    let runner = host.runner("qemu-every-feature.json", "a");
    let dir = host.install("web", &runner, None, false);
    // qemu-every-feature has the relative volume var.img and an absolute one elsewhere.
    std::fs::write(dir.join("var.img"), "precious").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("web.sock")).unwrap();

    let refused = host.microvm(&["remove", "web"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("without --yes"));
    assert!(stderr(&refused).contains("var.img"), "{}", stderr(&refused));
    assert!(
        dir.join("current").exists() && host.calls("systemctl").is_empty(),
        "nothing happened"
    );

    let removed = host.microvm(&["remove", "web", "--yes"], &[]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    // Only the VM's unit: an imperative VM has no install unit, and naming it fails the stop.
    assert_eq!(host.calls("systemctl"), vec!["stop microvm@web.service"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("var.img")).unwrap(),
        "precious"
    );
    assert!(!dir.join("current").exists() && !dir.join("web.sock").exists());
    assert!(
        runner.join("bin/microvm-run").exists(),
        "the runner behind current was not touched"
    );

    let purged = host.microvm(&["remove", "web", "--yes", "--purge"], &[]);
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert!(!dir.exists());
}

/// The path the command's own hints lead down: remove --yes keeps the image, create takes the
/// directory over, and a second remove --yes still keeps the image.
#[test]
fn remove_twice_keeps_the_image_and_create_takes_the_directory_over() {
    let host = Host::new();
    let runner = host.runner("qemu-every-feature.json", "a");
    let dir = host.install("web", &runner, None, false);
    std::fs::write(dir.join("var.img"), "precious").unwrap();
    std::fs::create_dir_all(dir.join("shares/empty")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/notes"), "mine").unwrap();

    let first = host.microvm(&["remove", "--yes", "web"], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("kept data/, var.img"),
        "{}",
        stdout(&first)
    );
    assert!(!dir.join("shares").exists(), "empty directories go");
    assert!(!dir.join("current").exists());

    let listed = host.microvm(&["list"], &[]);
    assert!(stdout(&listed).contains("no VMs"), "{}", stdout(&listed));
    let again = host.microvm(&["remove", "--yes", "web"], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(dir.join("var.img")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("data/notes")).unwrap(),
        "mine"
    );

    let created = host.microvm(
        &["create", "web", "--runner", runner.to_str().unwrap()],
        &[],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).contains("keeping what was already there"),
        "{}",
        stdout(&created)
    );
    assert_eq!(std::fs::read_link(dir.join("current")).unwrap(), runner);
    assert_eq!(
        std::fs::read_to_string(dir.join("var.img")).unwrap(),
        "precious"
    );
    assert!(!host.path("state/.web.creating").exists());
    let taken = host.microvm(
        &["create", "web", "--runner", runner.to_str().unwrap()],
        &[],
    );
    assert_eq!(taken.status.code(), Some(1), "now it is a VM again");
}

/// The keep-list does not depend on the runner's spec: a runner from another generator
/// version, or none at all behind `current`, loses nothing.
#[test]
fn remove_keeps_the_image_when_the_spec_is_unreadable() {
    let host = Host::new();
    let runner = host.runner("qemu-every-feature.json", "a");
    std::fs::write(
        runner.join("share/microvm/spec.json"),
        r#"{"aFieldOfANewerVersion": true}"#,
    )
    .unwrap();
    let dir = host.install("web", &runner, None, false);
    std::fs::write(dir.join("var.img"), "precious").unwrap();
    let dangling = host.install("gone", &host.path("nowhere"), None, false);
    std::fs::write(dangling.join("var.img"), "precious too").unwrap();

    let refused = host.microvm(&["remove", "web"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("keeps what else is there (var.img)"),
        "{}",
        stderr(&refused)
    );
    for name in ["web", "gone"] {
        let removed = host.microvm(&["remove", "--yes", name], &[]);
        assert!(removed.status.success(), "{}", stderr(&removed));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("var.img")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_to_string(dangling.join("var.img")).unwrap(),
        "precious too"
    );
    assert!(!dir.join("current").exists() && !dangling.join("current").exists());
}

#[test]
fn remove_deletes_nothing_through_a_linked_vm_directory() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    let elsewhere = host.path("elsewhere/web");
    std::fs::create_dir_all(&elsewhere).unwrap();
    symlink(&runner, elsewhere.join("current")).unwrap();
    symlink(&elsewhere, host.path("state/web")).unwrap();
    for args in [
        &["remove", "--yes", "web"][..],
        &["remove", "--yes", "--purge", "web"],
    ] {
        let refused = host.microvm(args, &[]);
        assert_eq!(refused.status.code(), Some(1));
        assert!(
            stderr(&refused).contains("is a symbolic link"),
            "{}",
            stderr(&refused)
        );
    }
    assert!(elsewhere.join("current").exists());
    assert!(host.calls("systemctl").is_empty());
}

#[test]
fn reconcile_stops_vms_removed_from_the_configuration() {
    let host = Host::new();
    let write = |name: &str, vms: &[&str]| {
        let path = host.path(name);
        let json = serde_json::json!({ "vms": vms });
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };
    // Earlier versions wrote the state directory into the list too; such a record still reads.
    let first = host.path("first.json");
    let json = serde_json::json!({ "stateDir": host.path("state"), "vms": ["a", "b", "c"] });
    std::fs::write(&first, json.to_string()).unwrap();
    let second = write("second.json", &["a"]);
    let reconcile = |declared: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["reconcile", "--declared", declared.to_str().unwrap()];
        args.extend(extra);
        host.microvm(&args, env)
    };
    assert!(reconcile(&first, &[], &[]).status.success());
    assert!(
        host.calls("systemctl").is_empty(),
        "nothing was declared before"
    );

    let dry = reconcile(&second, &["--dry-run"], &[]);
    assert!(stdout(&dry).contains("would stop b"), "{}", stdout(&dry));
    assert!(stdout(&dry).contains("would stop c"), "{}", stdout(&dry));
    assert!(host.calls("systemctl").is_empty());

    // b will not stop: c is stopped all the same, the command fails, and b stays on the record
    // so the next reconcile tries it again.
    let failing = reconcile(&second, &[], &[("FAKE_FAILING", "microvm@b.service")]);
    assert_eq!(failing.status.code(), Some(1), "{}", stderr(&failing));
    assert!(
        stderr(&failing).contains("not stopped: b"),
        "{}",
        stderr(&failing)
    );
    assert_eq!(
        host.calls("systemctl"),
        vec!["stop microvm@b.service", "stop microvm@c.service"],
        "only the VM's unit: a removed VM's install unit is gone with the host's package"
    );
    assert!(stdout(&failing).contains("its state stays"));

    let real = reconcile(&second, &[], &[]);
    assert!(real.status.success(), "{}", stderr(&real));
    assert_eq!(host.calls("systemctl")[2..], ["stop microvm@b.service"]);
    let again = reconcile(&second, &[], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("no declared VM was removed"));
    assert_eq!(host.calls("systemctl").len(), 3);
}

/// Names read from disk are checked as names typed by a user are: a record with `*` on it (a
/// pattern to systemctl, matching every VM), a path or a word with a space stops nothing.
#[test]
fn reconcile_stops_no_vm_by_a_name_that_is_not_valid() {
    let host = Host::new();
    let bad = ["*", "../../etc", "a b", "x\u{1b}[2J"];
    let mut previous = vec!["a", "c"];
    previous.extend(bad);
    std::fs::write(
        host.path("state/.declared.json"),
        serde_json::json!({ "vms": previous }).to_string(),
    )
    .unwrap();
    let declared = host.path("declared.json");
    std::fs::write(
        &declared,
        serde_json::json!({ "vms": ["a", "microvm@*"] }).to_string(),
    )
    .unwrap();
    let reconcile = |extra: &[&str]| {
        let mut args = vec!["reconcile", "--declared", declared.to_str().unwrap()];
        args.extend(extra);
        host.microvm(&args, &[])
    };

    let dry = reconcile(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", stderr(&dry));
    assert_eq!(
        stdout(&dry).matches("would stop").count(),
        1,
        "{}",
        stdout(&dry)
    );
    assert!(stdout(&dry).contains("would stop c"), "{}", stdout(&dry));
    assert!(host.calls("systemctl").is_empty());

    let refused = reconcile(&[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert_eq!(host.calls("systemctl"), vec!["stop microvm@c.service"]);
    let err = stderr(&refused);
    for shown in [
        r#""*""#,
        r#""../../etc""#,
        r#""a b""#,
        r#""x\u{1b}[2J""#,
        r#""microvm@*""#,
    ] {
        assert!(err.contains(shown), "{shown} in {err}");
    }
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(host.path("state/.declared.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["vms"],
        serde_json::json!(["a"]),
        "what is not a VM name is left out of the record"
    );

    let again = reconcile(&[]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "the declared list still names microvm@*"
    );
    assert_eq!(host.calls("systemctl").len(), 1);
}

/// `list` shows, and asks systemctl about, only directories whose names are VM names; what
/// `list`, `status` and `remove` print from disk (link targets, a runner's files, file names)
/// reaches the terminal with its control characters escaped.
#[test]
fn list_and_status_show_only_valid_names_and_no_raw_control_characters() {
    use std::os::unix::ffi::OsStrExt;
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    let odd = host.runner("qemu-minimal.json", "odd");
    std::fs::write(odd.join("share/microvm/hypervisor"), "qe\nmu\u{1b}[2J\n").unwrap();
    let dir = host.install("web", &runner, None, false);
    host.install("odd", &odd, None, false);
    for name in ["a b", "-dash", "x\u{1b}[2J", "new\nline"] {
        host.install(name, &runner, None, false);
    }
    let not_utf8 = host
        .path("state")
        .join(std::ffi::OsStr::from_bytes(b"\xffvm"));
    std::fs::create_dir(&not_utf8).unwrap();
    symlink(&runner, not_utf8.join("current")).unwrap();
    symlink(
        "/runners/old\n  running     /runners/new\u{1b}[2J",
        dir.join("booted"),
    )
    .unwrap();
    std::fs::write(dir.join("note\u{1b}[2J"), "mine").unwrap();

    let list = host.microvm(&["list", "--json"], &[]);
    assert!(list.status.success(), "{}", stderr(&list));
    let json: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["odd", "web"]);
    assert_eq!(
        host.calls("systemctl"),
        vec![
            "is-active microvm@odd.service",
            "is-active microvm@web.service"
        ]
    );

    let text = host.microvm(&["list"], &[]);
    let out = stdout(&text);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert_eq!(out.lines().count(), 3, "a heading and two VMs: {out:?}");
    assert!(out.contains(r"qe\nmu\u{1b}[2J"), "{out:?}");

    let status = host.microvm(&["status", "web"], &[("FAKE_ACTIVE", "active")]);
    assert!(status.status.success(), "{}", stderr(&status));
    let out = stdout(&status);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert_eq!(
        out.lines()
            .filter(|line| line.trim_start().starts_with("running"))
            .count(),
        1,
        "{out}"
    );
    assert!(
        out.contains(r"/runners/old\n  running     /runners/new\u{1b}[2J"),
        "{out}"
    );

    let refused = host.microvm(&["remove", "web"], &[]);
    let err = stderr(&refused);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(err.contains(r"note\u{1b}[2J"), "{err}");
}

/// A VM named after another's root of the old scheme (`booted-web` was web's `booted`) neither
/// takes that root over nor deletes it; the old roots go when they are the VM's own.
#[test]
fn gc_roots_of_two_vms_never_share_a_name() {
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "a");
    let runner_str = runner.display().to_string();
    let root = |name: &str| std::fs::read_link(host.path("gcroots").join(name)).ok();
    // web, installed with the roots of the old scheme.
    let web = host.install("web", &runner, Some("/etc/vms"), false);
    symlink(web.join("current"), host.path("gcroots/web")).unwrap();
    symlink(web.join("booted"), host.path("gcroots/booted-web")).unwrap();

    let created = host.microvm(&["create", "booted-web", "--runner", &runner_str], &[]);
    assert!(created.status.success(), "{}", stderr(&created));
    let other = host.path("state/booted-web");
    assert_eq!(root("current@booted-web"), Some(other.join("current")));
    assert_eq!(root("booted@booted-web"), Some(other.join("booted")));
    assert_eq!(root("booted-web"), Some(web.join("booted")), "web's");

    let removed = host.microvm(&["remove", "booted-web", "--yes"], &[]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(root("current@booted-web"), None);
    assert_eq!(root("booted@booted-web"), None);
    assert_eq!(root("booted-web"), Some(web.join("booted")), "web's");
    assert_eq!(root("web"), Some(web.join("current")));

    // An update gives web its new roots and drops the old ones, which point at its links.
    let updated = host.microvm(&["update", "web"], &[("FAKE_RUNNER", &runner_str)]);
    assert!(updated.status.success(), "{}", stderr(&updated));
    assert_eq!(root("current@web"), Some(web.join("current")));
    assert_eq!(root("booted@web"), Some(web.join("booted")));
    assert_eq!((root("web"), root("booted-web")), (None, None));

    // remove drops a VM's roots under either name.
    symlink(web.join("booted"), host.path("gcroots/booted-web")).unwrap();
    let removed = host.microvm(&["remove", "web", "--yes"], &[]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let left: Vec<_> = std::fs::read_dir(host.path("gcroots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn usage_errors_exit_2() {
    let host = Host::new();
    assert_eq!(host.microvm(&[], &[]).status.code(), Some(2));
    assert_eq!(
        host.microvm(&["remove", "x", "--purge"], &[]).status.code(),
        Some(2)
    );
    assert_eq!(host.microvm(&["frobnicate"], &[]).status.code(), Some(2));
}

#[test]
fn files_of_a_vm_state_are_read_within_a_bound() {
    // A corrupt or hostile state directory: its runner's files and its flake reference lead to
    // /dev/zero. microvm must stop reading at a bound instead of until memory runs out (run
    // under a 1 GiB address-space limit, so an unbounded read cannot take the machine down,
    // and the peak memory of the runs is checked below).
    let host = Host::new();
    let runner = host.runner("qemu-minimal.json", "zero");
    let share = runner.join("share/microvm");
    for file in ["spec.json", "hypervisor"] {
        std::fs::remove_file(share.join(file)).unwrap();
        symlink("/dev/zero", share.join(file)).unwrap();
    }
    let dir = host.install("zero", &runner, None, false);
    symlink("/dev/zero", dir.join("flake")).unwrap();
    for args in [&["status", "zero", "--json"][..], &["list", "--json"][..]] {
        let output = Command::new("prlimit")
            .arg("--as=1073741824")
            .arg(env!("CARGO_BIN_EXE_microvm"))
            .args(args)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    host.path("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("RECORD", host.path("record"))
            .env("MICROVM_STATE_DIR", host.path("state"))
            .env("MICROVM_GCROOTS_DIR", host.path("gcroots"))
            .output()
            .unwrap();
        let err = stderr(&output);
        assert!(
            !err.contains("memory allocation") && output.status.code().is_some(),
            "{args:?}: {err}"
        );
        let json: serde_json::Value = serde_json::from_str(&stdout(&output))
            .unwrap_or_else(|e| panic!("{args:?}: no JSON on stdout ({e}): {err}"));
        if args[0] == "list" {
            assert_eq!(json[0]["name"], "zero", "{json}");
            assert!(json[0]["hypervisor"].is_null(), "{json}");
        } else {
            assert!(json["flake"].is_null(), "{json}");
        }
    }
    // SAFETY: getrusage(2) fills the struct it is given.
    let peak_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    assert!(
        peak_kib < 128 * 1024,
        "microvm peaked at {peak_kib} KiB reading files that lead to /dev/zero"
    );
}

/// Issue 10: what the guest reported through microvm-notify-bridge (`health.json` in the VM's
/// directory) shows in `status` and `list`, while the VM runs.
#[test]
fn status_and_list_show_the_guests_readiness_and_checks() {
    let host = Host::new();
    let runner = host.runner("cloud-hypervisor-readiness.json", "ready");
    let dir = host.install("hello", &runner, Some("/etc/vms"), false);
    std::fs::write(
        dir.join("health.json"),
        r#"{ "ready": true, "readySince": 100, "status": null,
             "checks": { "hello": { "state": "failing", "since": 160, "output": "curl: (7) refused" } } }"#,
    )
    .unwrap();
    let active = [("FAKE_ACTIVE", "active"), ("FAKE_SUB", "running")];

    let status = host.microvm(&["status", "hello", "--json"], &active);
    assert!(status.status.success(), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    validate_against(
        "microvm-status.schema.json",
        "microvm-status",
        microvm_codegen::manage::status_schema_json(),
        &json,
    );
    assert_eq!(json["guest"]["ready"], true);
    assert_eq!(
        json["guest"]["checks"]["hello"],
        serde_json::json!({ "state": "failing", "since": 160, "output": "curl: (7) refused" })
    );
    let text = stdout(&host.microvm(&["status", "hello"], &active));
    assert!(text.contains("  guest       ready"), "{text}");
    assert!(
        text.contains("  check       hello failing since 160: curl: (7) refused"),
        "{text}"
    );

    let list = host.microvm(&["list", "--json"], &active);
    let json: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    validate_against(
        "microvm-list.schema.json",
        "microvm-list",
        microvm_codegen::manage::list_schema_json(),
        &json,
    );
    assert_eq!(json[0]["ready"], true);
    assert_eq!(json[0]["checks"], serde_json::json!({ "hello": "failing" }));
    let text = stdout(&host.microvm(&["list"], &active));
    assert!(text.contains("guest ready; failing: hello"), "{text}");

    // A stopped VM's file is from its last run: not shown.
    let stopped = host.microvm(&["status", "hello", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&stopped)).unwrap();
    assert_eq!(json["guest"], serde_json::Value::Null);
}
