//! Tier 4: `lib.fleet` (checks/eval/fleet.nix) — a fleet of 3 hosts and 6 VMs evaluated with
//! nixpkgs' lib, the NixOS stand-ins and colmena's typed `deployment.*` options: where each VM
//! lands, the outputs for nixos-rebuild, colmena and deploy-rs (the last validated against
//! deploy-rs's own JSON schema), the host's overrides reaching the guests, the Nomad jobs, and
//! one broken fleet per evaluation-time check.

mod common;
#[path = "common/nix.rs"]
mod nix;

use serde_json::{Value, json};

fn ok() -> Value {
    nix::eval("fleet.ok")
}

#[test]
fn vms_land_on_their_hosts_with_the_host_overrides_applied() {
    let fleet = ok();
    assert_eq!(
        fleet["placement"],
        json!({"arm": ["edge"], "big": ["cache", "db", "web"], "small": ["ci", "mail"]})
    );
    assert_eq!(fleet["failed"], json!({"arm": [], "big": [], "small": []}));
    // web's guest says 512 MiB, 1 vCPU, qemu; its host says otherwise.
    assert_eq!(
        fleet["web"],
        json!({"mem": 2048, "vcpu": 4, "hypervisor": "cloud-hypervisor"})
    );
    // An already evaluated guest is extended with the overrides, keeping its own settings.
    assert_eq!(fleet["cache"], json!({"mem": 768, "cid": 4}));
    assert_eq!(
        fleet["mail"]["interfaces"],
        json!([{"type": "tap", "id": "vm-mail", "mac": "02:00:00:00:00:05"}])
    );
    // ci has autostart = false.
    assert_eq!(fleet["autostart"]["small"], json!(["mail"]));
    // The host's own modules are kept, and its name defaults to the fleet's.
    assert!(
        fleet["hostModule"]
            .as_array()
            .unwrap()
            .contains(&json!("kvm-amd"))
    );
    assert_eq!(fleet["hostName"], "arm");
    // Guests are evaluated for their host's system.
    assert_eq!(fleet["runnerSystems"]["arm"]["edge"], "aarch64-linux");
    assert_eq!(fleet["runnerSystems"]["big"]["db"], "x86_64-linux");
    assert_eq!(fleet["toplevel"], "/stand-in/nixos-system-small");
}

#[test]
fn the_description_names_hosts_targets_and_what_each_vm_takes() {
    let description = &ok()["description"];
    assert_eq!(description["version"], 1);
    assert_eq!(
        description["hosts"]["big"]["targetHost"],
        "root@big.example.org"
    );
    assert_eq!(description["hosts"]["small"]["reserveMiB"], 1024);
    assert_eq!(description["hosts"]["arm"]["stateDir"], "/srv/vms");
    assert_eq!(description["vms"]["edge"]["stateDir"], "/srv/vms/edge");
    assert_eq!(description["hosts"]["big"]["vcpuRatio"], 2);
    assert_eq!(
        description["vms"]["db"],
        json!({"host": "big", "mem": 4096, "hotplugMem": 2048, "vcpu": 1, "hypervisor": "qemu",
               "stateDir": "/var/lib/microvms/db", "interfaceIds": ["vm-db"],
               "macs": ["02:00:00:00:00:02"], "vsockCids": ["3"], "forwardedHostPorts": []})
    );
    assert_eq!(description["vms"]["web"]["mem"], 2048, "overrides count");
    assert_eq!(
        description["vms"]["ci"]["forwardedHostPorts"],
        json!(["tcp/2222"])
    );
    assert_eq!(
        description["vms"]["mail"]["interfaceIds"],
        json!(["vm-mail"])
    );
}

#[test]
fn colmena_nodes_reach_each_host_and_are_tagged_with_its_vms() {
    let colmena = &ok()["colmena"];
    assert_eq!(
        colmena["big"],
        json!({"targetHost": "root@big.example.org", "targetUser": "root",
               "tags": ["vm-cache", "vm-db", "vm-web"], "vms": ["cache", "db", "web"]})
    );
    assert_eq!(colmena["small"]["tags"], json!(["vm-ci", "vm-mail"]));
    assert_eq!(colmena["arm"]["tags"], json!(["vm-edge"]));
    assert_eq!(ok()["colmenaHiveIsMadeFromColmena"], true);
}

#[test]
fn deploy_rs_nodes_match_deploy_rs_schema() {
    let deploy = &ok()["deploy"];
    let schema_text = std::fs::read_to_string(
        common::repo_root().join("codegen/tests/fixtures/deploy-rs/interface.json"),
    )
    .unwrap();
    let schema: Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(deploy)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{deploy:#}");
    // The schema is strict enough to catch a node without a hostname.
    let mut broken = deploy.clone();
    broken["nodes"]["big"]
        .as_object_mut()
        .unwrap()
        .remove("hostname");
    assert!(!validator.is_valid(&broken));

    assert_eq!(
        deploy["nodes"]["big"],
        json!({"hostname": "big.example.org", "sshUser": "root",
               "profiles": {"system": {"user": "root", "path": "/stand-in/nixos-system-big"}}})
    );
    assert_eq!(deploy["nodes"]["small"]["hostname"], "small.example.org");
}

#[test]
fn nomad_jobs_run_the_unchanged_runner() {
    let fleet = ok();
    let web = &fleet["nomadWeb"]["Job"];
    let tasks = web["TaskGroups"][0]["Tasks"].as_array().unwrap();
    // web has a tap: its setup runs first, as a prestart task, then the runner itself.
    assert_eq!(tasks[0]["Lifecycle"]["Hook"], "prestart");
    assert_eq!(
        tasks[0]["Config"]["args"][1],
        "/stand-in/microvm-cloud-hypervisor-web/bin/tap-up"
    );
    assert_eq!(tasks[1]["Driver"], "raw_exec");
    assert_eq!(
        tasks[1]["Config"]["args"][1],
        "cd /var/lib/microvms/web && exec /stand-in/microvm-cloud-hypervisor-web/bin/microvm-run"
    );
    // The host's overrides size it; it stays on its host.
    assert_eq!(
        tasks[1]["Resources"],
        json!({"CPU": 4000, "MemoryMB": 2048})
    );
    assert_eq!(web["Constraints"][0]["RTarget"], "big");
    assert_eq!(
        web["TaskGroups"][0]["Volumes"]["state"]["Source"],
        "microvm-web"
    );
    // cache has no tap, so no setup task.
    let cache_tasks = fleet["nomadCache"]["Job"]["TaskGroups"][0]["Tasks"]
        .as_array()
        .unwrap();
    assert_eq!(cache_tasks.len(), 1);
    assert_eq!(cache_tasks[0]["Name"], "vm");

    insta::assert_json_snapshot!("nomad_web", fleet["nomadWeb"]);
    insta::assert_json_snapshot!("nomad_cache", fleet["nomadCache"]);
}

fn failed(check: &str) -> Vec<String> {
    serde_json::from_value(nix::eval(&format!("fleet.err.{check}"))).unwrap()
}

#[test]
fn every_capacity_and_uniqueness_check_names_host_vms_and_numbers() {
    let cases = [
        (
            "memory",
            "microvm host small: the VMs need 3112 MiB (memory + hotplug memory: ci 512, mail 2600) but the host has 3072 MiB (4096 MiB, 1024 MiB reserved)",
        ),
        (
            "vcpus",
            "microvm host small: the VMs have 5 vCPUs (ci 4, mail 1) but the host allows 4 (4 CPUs × ratio 1)",
        ),
        (
            "tapId",
            "microvm host big: tap id used by more than one VM: vm-web by cache and web",
        ),
        (
            "mac",
            "microvm host small: MAC address used by more than one VM: 02:00:00:00:00:05 by ci and mail",
        ),
        (
            "vsockCid",
            "microvm host big: vsock CID used by more than one VM: 3 by db and web",
        ),
        (
            "forwardedPort",
            "microvm host small: forwarded host port used by more than one VM: tcp/2222 by ci and mail",
        ),
        (
            "system",
            "microvm host arm (aarch64-linux): VM edge's runner is for x86_64-linux",
        ),
    ];
    for (check, message) in cases {
        assert_eq!(failed(check), vec![message.to_owned()], "{check}");
    }
}

#[test]
fn a_vm_on_an_unknown_host_is_an_error_with_did_you_mean() {
    let error = nix::eval_with("fleet.err.unknownHost", &[]).unwrap_err();
    assert!(
        error.contains(
            "lib.fleet: vms.extra is placed on host `smal`, which the fleet does not declare; did you mean `small`?"
        ),
        "{error}"
    );
}

#[test]
fn the_fleet_commands_fixture_is_what_lib_fleet_writes() {
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::repo_root().join("codegen/tests/fixtures/fleet/description.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(ok()["description"], committed);
}

#[test]
fn colmenas_stand_in_options_are_typed_not_a_catch_all() {
    let misspelt = nix::eval_with("fleet.colmenaMisspelt", &[]).unwrap_err();
    assert!(
        misspelt.contains("The option `deployment.targetHots' does not exist"),
        "{misspelt}"
    );
    let mistyped = nix::eval_with("fleet.colmenaMistyped", &[]).unwrap_err();
    assert!(
        mistyped.contains("deployment.tags") && mistyped.contains("is not of type `list of string"),
        "{mistyped}"
    );
}
