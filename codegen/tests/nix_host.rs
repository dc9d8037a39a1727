//! Tier 4: the host module (`nixosModules.host`) evaluated with nixpkgs' lib and the stand-ins
//! (checks/eval/host.nix), and the host spec it writes turned into units by
//! `microvm-codegen host`, as the module's derivation would: two declared VMs, one autostarted,
//! and the same host with one VM removed, which reconciliation must stop.

mod common;
#[path = "common/nix.rs"]
mod nix;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Generates the host package of an evaluated host spec.
fn generate(spec: &Value, dir: &Path) -> PathBuf {
    common::generate_host(spec, dir)
}

fn read(package: &Path, file: &str) -> String {
    std::fs::read_to_string(package.join(file)).unwrap()
}

#[test]
fn two_vms_one_autostarted_generate_units_that_want_exactly_that_one() {
    let evaluated = nix::eval("host.twoVms");
    assert_eq!(evaluated["autostart"], serde_json::json!(["alpha"]));
    assert_eq!(evaluated["user"]["group"], "kvm");
    assert_eq!(evaluated["packages"], serde_json::json!(["microvm-host"]));
    assert_eq!(evaluated["commands"], serde_json::json!(["microvm"]));
    let wrapper = evaluated["commandText"].as_str().unwrap();
    assert!(
        wrapper.contains("export MICROVM_USER=microvm MICROVM_GROUP=kvm"),
        "microvm create hands new VMs to the user of the units: {wrapper}"
    );
    assert_eq!(evaluated["spec"]["group"], evaluated["user"]["group"]);
    let tmpfiles: Vec<&str> = evaluated["tmpfiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(tmpfiles.contains(&"d /var/lib/microvms 0775 microvm kvm - -"));
    assert!(
        tmpfiles.contains(&"d /srv/beta :0775 :microvm :kvm - -"),
        "{tmpfiles:?}"
    );

    let spec = &evaluated["spec"];
    assert_eq!(
        spec["vms"]["beta"]["restartIfChanged"], true,
        "fully declarative VMs restart"
    );
    assert_eq!(spec["vms"]["alpha"]["restartIfChanged"], false);
    assert_eq!(
        spec["vms"]["beta"]["toplevel"],
        "/stand-in/nixos-system-beta"
    );
    assert_eq!(
        spec["vms"]["beta"]["writablePaths"],
        serde_json::json!(["/srv/beta"])
    );

    let dir = tempfile::tempdir().unwrap();
    let package = generate(spec, dir.path());
    let target = read(&package, "lib/systemd/system/microvms.target");
    let wanted_vms: Vec<&str> = target
        .lines()
        .filter_map(|l| l.strip_prefix("Wants=microvm@"))
        .collect();
    assert_eq!(wanted_vms, vec!["alpha.service"], "{target}");
    for vm in ["alpha", "beta"] {
        assert!(target.contains(&format!("Wants=install-microvm-{vm}.service")));
        let drop_in = read(
            &package,
            &format!("lib/systemd/system/microvm@{vm}.service.d/50-declared.conf"),
        );
        assert!(drop_in.contains(&format!(
            "Environment=MICROVM_RUNNER=/stand-in/microvm-qemu-{vm}"
        )));
    }
    let install_beta = read(&package, "libexec/microvm/install-beta");
    assert!(
        install_beta.contains("/stand-in/nixos-system-beta toplevel"),
        "{install_beta}"
    );
}

#[test]
fn a_vm_removed_between_two_evaluations_is_on_the_reconciliation_list() {
    let before = nix::eval("host.twoVms");
    let after = nix::eval("host.oneVm");
    let dir = tempfile::tempdir().unwrap();
    let first = generate(&before["spec"], &dir.path().join("before"));
    let second = generate(&after["spec"], &dir.path().join("after"));
    assert_eq!(
        read(&second, "share/microvm/declared.json")
            .parse::<Value>()
            .unwrap()["vms"],
        serde_json::json!(["alpha"])
    );
    let output = Command::new(env!("CARGO_BIN_EXE_microvm"))
        .args(["reconcile", "--dry-run", "--declared"])
        .arg(second.join("share/microvm/declared.json"))
        .arg("--previous")
        .arg(first.join("share/microvm/declared.json"))
        .env("MICROVM_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("would stop beta"), "{stdout}");
    assert!(!stdout.contains("alpha"), "{stdout}");
    // The reconcile unit runs exactly that, against this package's list.
    let unit = read(&second, "lib/systemd/system/microvm-reconcile.service");
    assert!(unit.contains(&format!(
        "reconcile --declared {}/share/microvm/declared.json --state-dir /var/lib/microvms",
        second.display()
    )));
}

/// The host module's NixOS settings have NixOS's types (the host's toplevel, which needs every
/// NixOS option's value, evaluates) and a misspelt NixOS path next to it fails, as in NixOS.
#[test]
fn the_host_modules_nixos_settings_have_nixos_types() {
    let evaluated = nix::eval("host.twoVms");
    assert_eq!(evaluated["toplevel"], "/stand-in/nixos-system-nixos");
    assert_eq!(evaluated["user"]["isSystemUser"], true);
    assert_eq!(evaluated["user"]["name"], "microvm");
    assert_eq!(
        evaluated["kernelModules"],
        serde_json::json!(["tap", "vhost_net"])
    );
    assert_eq!(
        evaluated["loginLimits"],
        serde_json::json!([{ "domain": "microvm", "type": "-", "item": "memlock", "value": "infinity" }])
    );
    assert_eq!(
        evaluated["targetWantedBy"],
        serde_json::json!(["multi-user.target"])
    );
    assert_eq!(
        evaluated["reconcileWantedBy"],
        serde_json::json!(["multi-user.target"])
    );

    let error = nix::eval_with("host.mistyped", &[]).expect_err("users.user does not exist");
    assert!(
        error.contains("The option `users.user' does not exist"),
        "{error}"
    );
}

/// `microvm.host.evaluatorPlugin.enable` loads the plugin into the host's Nix
/// (`nix.settings.plugin-files`, a NixOS freeform setting); a Nix older than 2.24 (no C API)
/// is a failed assertion, and without the option nothing is added.
#[test]
fn the_evaluator_plugin_option_sets_the_hosts_plugin_files() {
    let evaluated = nix::eval("host.evaluatorPlugin");
    assert_eq!(
        evaluated["pluginFiles"],
        serde_json::json!(["/usr/lib/libmicrovm_nix_plugin.so"])
    );
    assert_eq!(evaluated["failed"], serde_json::json!([]));
    assert_eq!(evaluated["toplevel"], "/stand-in/nixos-system-nixos");
    let too_old = evaluated["tooOld"].as_array().unwrap();
    assert_eq!(too_old.len(), 1, "{too_old:?}");
    assert!(
        too_old[0].as_str().unwrap().contains("needs a Nix >= 2.24")
            && too_old[0].as_str().unwrap().contains("2.18.9"),
        "{too_old:?}"
    );
    assert_eq!(evaluated["off"], false);
}

/// Issue 10: a declared VM whose guest describes services (and so reports readiness) gets a
/// `Type=notify` unit; the others keep the template's type.
#[test]
fn a_guest_with_services_gets_a_notify_unit_on_the_host() {
    let evaluated = nix::eval("host.readiness");
    let spec = &evaluated["spec"];
    assert_eq!(spec["vms"]["hello"]["notify"], Value::Bool(true));
    assert_eq!(spec["vms"]["alpha"]["notify"], Value::Bool(false));
    let dir = tempfile::tempdir().unwrap();
    let package = generate(spec, dir.path());
    let hello = read(
        &package,
        "lib/systemd/system/microvm@hello.service.d/50-declared.conf",
    );
    assert!(hello.contains("\nType=notify\n"), "{hello}");
    let alpha = read(
        &package,
        "lib/systemd/system/microvm@alpha.service.d/50-declared.conf",
    );
    assert!(!alpha.contains("Type="), "{alpha}");
    // The template lets the bridge, a child of microvm-run, notify.
    assert!(read(&package, "lib/systemd/system/microvm@.service").contains("NotifyAccess=all"));
}
