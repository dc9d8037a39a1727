//! `microvm fleet list` and `microvm fleet plan-move` (issue 16), run as users run them.
//!
//! `list` gets a stand-in `ssh` first on PATH that answers as a host would: two hosts print
//! `microvm list --json`, one hangs, one refuses the login. `plan-move` reads the fleet
//! description of checks/eval/fleet.nix (codegen/tests/fixtures/fleet/description.json, which
//! `nix_fleet` proves equal to what `lib.fleet` writes).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn microvm(args: &[&str], path: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_microvm"));
    command.args(args).env_remove("MICROVM_FLEET");
    if let Some(dir) = path {
        let old = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{old}", dir.display()));
    }
    command.output().expect("microvm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SSH: &str = r#"#!/bin/bash
# Stand-in ssh: the target follows `--`; records each call.
while [ "$1" != "--" ]; do shift; done
shift
target=$1
shift
printf '%s %s\n' "$target" "$*" >>"$(dirname "$0")/calls"
case "$target" in
  hang.example) exec sleep 30 ;;
  fail.example) echo "fail.example: Permission denied (publickey)." >&2; exit 255 ;;
  one.example) echo '[{"name":"web","hypervisor":"qemu","unit":"active","state":"running","declarative":true}]' ;;
  two.example) echo '[{"name":"db","hypervisor":"cloud-hypervisor","unit":"inactive","state":"stopped","declarative":true}]' ;;
  *) exit 1 ;;
esac
"#;

fn four_hosts(dir: &Path) -> std::path::PathBuf {
    let host = |target: &str| {
        json!({"system": "x86_64-linux", "targetHost": target, "memMiB": null, "vcpus": null,
               "vcpuRatio": 1, "reserveMiB": 0})
    };
    let description = json!({
        "version": 1,
        "hosts": {"a-one": host("one.example"), "b-hang": host("hang.example"),
                  "c-fail": host("fail.example"), "d-two": host("two.example")},
        "vms": {},
    });
    let path = dir.join("fleet.json");
    std::fs::write(&path, description.to_string()).unwrap();
    path
}

fn stand_in_ssh(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let ssh = dir.join("ssh");
    std::fs::write(&ssh, SSH).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn fleet_list_shows_every_host_even_when_one_hangs_and_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    stand_in_ssh(dir.path());
    let fleet = four_hosts(dir.path());
    let fleet = fleet.to_str().unwrap();

    let started = Instant::now();
    let output = microvm(
        &["fleet", "list", "--fleet", fleet, "--timeout", "2"],
        Some(dir.path()),
    );
    let took = started.elapsed();
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "a host failed: {output:?}");
    assert!(
        took < Duration::from_secs(12),
        "hosts are asked at once, each with its own 2s deadline, not one after another ({took:?})"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "a-one (one.example):",
            "  web              running    qemu",
            "b-hang (hang.example): not answering (no reply within 2s)",
            "c-fail (fail.example): failed (status 255): fail.example: Permission denied (publickey).",
            "d-two (two.example):",
            "  db               stopped    cloud-hypervisor",
        ],
        "{stdout}"
    );
    assert!(
        text(&output.stderr).contains("2 of the fleet's hosts did not answer or failed"),
        "{output:?}"
    );
    let mut calls: Vec<String> = std::fs::read_to_string(dir.path().join("calls"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        vec![
            "fail.example microvm list --json",
            "hang.example microvm list --json",
            "one.example microvm list --json",
            "two.example microvm list --json",
        ]
    );
}

#[test]
fn fleet_list_json_gives_each_hosts_status() {
    let dir = tempfile::tempdir().unwrap();
    stand_in_ssh(dir.path());
    let fleet = four_hosts(dir.path());
    let output = microvm(
        &[
            "fleet",
            "list",
            "--json",
            "--fleet",
            fleet.to_str().unwrap(),
            "--timeout",
            "1",
        ],
        Some(dir.path()),
    );
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["a-one"]["status"], "ok");
    assert_eq!(report["a-one"]["vms"][0]["name"], "web");
    assert_eq!(report["d-two"]["vms"][0]["state"], "stopped");
    assert_eq!(
        report["b-hang"],
        json!({"targetHost": "hang.example", "status": "not-answering", "timeout_secs": 1})
    );
    assert_eq!(report["c-fail"]["status"], "failed");
    assert_eq!(report["c-fail"]["exit"], 255);
}

#[test]
fn fleet_list_of_answering_hosts_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    stand_in_ssh(dir.path());
    let description = json!({"hosts": {"one": {"targetHost": "one.example", "system": "x86_64-linux"}}, "vms": {}});
    let fleet = dir.path().join("fleet.json");
    std::fs::write(&fleet, description.to_string()).unwrap();
    let output = microvm(
        &["fleet", "list", "--fleet", fleet.to_str().unwrap()],
        Some(dir.path()),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(text(&output.stdout).contains("  web              running    qemu"));
}

fn description() -> String {
    common::repo_root()
        .join("codegen/tests/fixtures/fleet/description.json")
        .display()
        .to_string()
}

#[test]
fn plan_move_prints_the_steps_and_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    stand_in_ssh(dir.path());
    let output = microvm(
        &[
            "fleet",
            "plan-move",
            "mail",
            "--to",
            "arm",
            "--fleet",
            &description(),
        ],
        Some(dir.path()),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        text(&output.stdout),
        "Moving mail from small to arm (nothing was done; run these in order):\n\
         1. ssh small.example.org systemctl stop microvm@mail.service\n\
         2. ssh arm.example.org mkdir /srv/vms/mail   (fails if arm has one: look at it first)\n\
         3. ssh small.example.org tar -C /var/lib/microvms/mail -cf - . | ssh arm.example.org tar -C /srv/vms/mail -xpf -\n\
         4. edit the fleet: vms.mail.host = \"arm\"; (was \"small\")\n\
         5. deploy arm (arm.example.org) and small (small.example.org), e.g. `colmena apply --on arm,small`\n\
         6. once mail runs on arm: ssh small.example.org rm -r /var/lib/microvms/mail   (the old copy; keep it until then)\n"
    );
    assert!(
        !dir.path().join("calls").exists(),
        "plan-move runs nothing on any host"
    );
}

#[test]
fn plan_move_refuses_what_the_targets_capacity_check_would_fail() {
    // db takes 4096 MiB + 2048 MiB hotplug; small has 3072 MiB free and 1024 MiB used.
    let output = microvm(
        &[
            "fleet",
            "plan-move",
            "db",
            "--to",
            "small",
            "--fleet",
            &description(),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "db does not fit on small: memory (MiB, with hotplug memory) would be 7168 of 3072 (ci 512, mail 512, db 6144; 4096 MiB, 1024 MiB reserved)"
        ),
        "{stderr}"
    );
    // web fits small's memory exactly (3072 of 3072) but not its 4 CPUs at ratio 1.
    let output = microvm(
        &[
            "fleet",
            "plan-move",
            "web",
            "--to",
            "small",
            "--fleet",
            &description(),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("web does not fit on small: vCPUs would be 6 of 4 (ci 1, mail 1, web 4; 4 CPUs × ratio 1)"),
        "{stderr}"
    );
}

#[test]
fn plan_move_refuses_unknown_names_with_did_you_mean() {
    let cases = [
        (
            &["mail", "--to", "smal"][..],
            "the fleet has no host \"smal\"",
            "did you mean \"small\"?",
        ),
        (
            &["mial", "--to", "arm"][..],
            "the fleet has no VM \"mial\"",
            "did you mean \"mail\"?",
        ),
        (
            &["mail", "--to", "small"][..],
            "mail is already on small",
            "",
        ),
    ];
    for (args, error, hint) in cases {
        let mut argv = vec!["fleet", "plan-move"];
        argv.extend_from_slice(args);
        let fleet = description();
        argv.extend_from_slice(&["--fleet", &fleet]);
        let output = microvm(&argv, None);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(error) && stderr.contains(hint),
            "{args:?}: {stderr}"
        );
    }
    let missing = microvm(
        &[
            "fleet",
            "plan-move",
            "mail",
            "--to",
            "arm",
            "--fleet",
            "/nonexistent/fleet.json",
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("cannot read the fleet description /nonexistent/fleet.json")
    );
}

#[test]
fn plan_move_refuses_a_tap_mac_cid_or_port_the_target_already_uses() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(description()).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "interfaceIds",
            json!(["vm-mail"]),
            "its tap id vm-mail is used there by edge",
        ),
        (
            "macs",
            json!(["02:00:00:00:00:05"]),
            "its MAC address 02:00:00:00:00:05 is used there by edge",
        ),
        (
            "forwardedHostPorts",
            json!(["tcp/2222"]),
            "its forwarded host port tcp/2222 is used there by edge",
        ),
    ];
    for (field, value, message) in cases {
        // edge (on arm) is given what mail or ci already has; moving that one to arm collides.
        let mut fleet = fixture.clone();
        fleet["vms"]["edge"][field] = value;
        let path = dir.path().join(format!("{field}.json"));
        std::fs::write(&path, fleet.to_string()).unwrap();
        let vm = if field == "forwardedHostPorts" {
            "ci"
        } else {
            "mail"
        };
        let output = microvm(
            &[
                "fleet",
                "plan-move",
                vm,
                "--to",
                "arm",
                "--fleet",
                path.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(output.status.code(), Some(1), "{field}");
        assert!(output.stdout.is_empty());
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!("{vm} cannot go to arm: {message}")),
            "{field}: {stderr}"
        );
    }
    // db's vsock CID 3 is free on arm.
    let output = microvm(
        &[
            "fleet",
            "plan-move",
            "db",
            "--to",
            "arm",
            "--fleet",
            &description(),
        ],
        None,
    );
    assert!(output.status.success(), "{output:?}");
}
