//! Tier 4: the Nix side, evaluated. `nixosModules.microvm` goes through nixpkgs' real module
//! system (`lib.evalModules`, from `NIXPKGS_LIB`) with Debian's Nix 2.8; NixOS and nixpkgs are
//! replaced by the stand-ins of checks/eval/stand-ins.nix, so nothing is built and no nixpkgs is
//! needed. The expressions are in checks/eval/default.nix.

mod common;
#[path = "common/nix.rs"]
mod nix;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use microvm_codegen::diagnostic::SpecText;
use microvm_codegen::spec::Tool;
use microvm_codegen::{load, runner, validate};
use serde_json::{Value, json};

const HYPERVISORS: [&str; 8] = [
    "qemu",
    "cloud-hypervisor",
    "firecracker",
    "crosvm",
    "kvmtool",
    "stratovirt",
    "alioth",
    "vfkit",
];

enum Verdict {
    Accepted,
    Refused(String),
}

/// What `microvm-codegen validate` says about a spec, with the error codes behind a refusal.
fn validate_spec(name: &str, spec: &Value) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(spec).unwrap();
    std::fs::write(&path, &text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
        .arg("validate")
        .arg("--spec")
        .arg(&path)
        .output()
        .unwrap();
    if output.status.success() {
        return Verdict::Accepted;
    }
    let report = String::from_utf8_lossy(&output.stderr).into_owned();
    let codes: BTreeSet<String> = match load::load(&SpecText::new(name, text)) {
        Err(findings) => findings.into_iter().map(|d| d.code).collect(),
        Ok(spec) => validate::validate(&spec)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| d.code)
            .collect(),
    };
    Verdict::Refused(format!("error codes {codes:?}\n{report}"))
}

fn capability_table() -> Value {
    let text = std::fs::read_to_string(common::repo_root().join("lib/capabilities.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_example_spec_is_accepted_by_microvm_codegen_validate() {
    let specs = nix::eval("exampleSpecs");
    let specs = specs.as_object().unwrap();
    let names: BTreeSet<&str> = specs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(HYPERVISORS),
        "one example per hypervisor"
    );

    let mut refused = Vec::new();
    for hypervisor in HYPERVISORS {
        let spec = &specs[hypervisor];
        assert_eq!(spec["hypervisor"], json!(hypervisor));
        assert_eq!(spec["hostName"], json!(format!("{hypervisor}-microvm")));
        match validate_spec(hypervisor, spec) {
            Verdict::Accepted => {}
            Verdict::Refused(why) => refused.push(format!("{hypervisor}: {why}")),
        }
    }
    assert!(
        refused.is_empty(),
        "example specs refused:\n{}",
        refused.join("\n")
    );
}

#[test]
fn firecracker_with_a_9p_share_fails_evaluation_naming_the_option_the_hypervisor_and_the_hint() {
    let table = capability_table();
    let hint = table["features"]["share.9p"]["hints"]["firecracker"]
        .as_str()
        .or_else(|| table["features"]["share.9p"]["hints"]["*"].as_str())
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    let option = table["features"]["share.9p"]["option"].as_str().unwrap();
    assert_eq!(option, "microvm.shares");
    let names_everything = |text: &str| {
        text.contains("microvm.shares")
            && text.contains("\"firecracker\"")
            && text.contains("9p")
            && text.contains(&hint)
    };

    // As NixOS assertions…
    let messages = strings(&nix::eval("firecracker9p.assertionMessages"));
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(names_everything(&messages[0]), "{}", messages[0]);

    // …which make the system's toplevel fail to evaluate, as NixOS does…
    let error = nix::eval_with("firecracker9p.toplevel", &[])
        .expect_err("the toplevel of a refused VM must not evaluate");
    assert!(error.contains("Failed assertions"), "{error}");
    assert!(names_everything(&error), "{error}");

    // …and the runner's spec itself refuses to evaluate, so `nix eval` of the runner fails too.
    let error = nix::eval_with("firecracker9p.spec", &[])
        .expect_err("the spec of a refused VM must not evaluate");
    assert!(names_everything(&error), "{error}");
}

#[test]
fn option_defaults_match_microvm_nix() {
    let defaults = nix::eval("defaults");
    let microvm = &defaults["microvm"];
    let expect = |path: &str, value: Value| {
        let actual = path.split('.').fold(microvm, |v, key| &v[key]);
        assert_eq!(actual, &value, "microvm.{path}");
    };
    expect("hypervisor", json!("qemu"));
    expect("vcpu", json!(1));
    expect("mem", json!(512));
    expect("interfaces", json!([]));
    expect("volumes", json!([]));
    expect("shares", json!([]));
    expect("forwardPorts", json!([]));
    expect("devices", json!([]));
    expect("socket", json!("bare.sock"));
    expect("user", Value::Null);
    expect("cpu", Value::Null);
    expect("balloon", json!(false));
    expect("initialBalloonMem", json!(0));
    expect("deflateOnOOM", json!(true));
    expect("hugepageMem", json!(false));
    expect("hotplugMem", json!(0));
    expect("hotpluggedMem", json!(0));
    expect("storeOnDisk", json!(true));
    expect("storeDiskType", json!("erofs"));
    // The stand-in kernel is 6.12: tail packing (5.16+) and fragments (6.1+) are on.
    expect(
        "storeDiskErofsFlags",
        json!(["-zlz4hc", "-Eztailpacking", "-Efragments"]),
    );
    expect(
        "storeDiskSquashfsFlags",
        json!(["-c", "zstd", "-j", "$NIX_BUILD_CORES"]),
    );
    expect("systemSymlink", json!(false));
    expect("registerClosure", json!(true));
    expect("writableStoreOverlay", Value::Null);
    expect("prettyProcnames", json!(true));
    expect("preStart", json!(""));
    expect("extraArgsScript", Value::Null);
    expect("registerWithMachined", json!(false));
    expect("credentialFiles", json!({}));
    expect("binScripts", json!({}));
    expect("guest.enable", json!(true));
    expect("optimize.enable", json!(true));
    expect("vsock.cid", Value::Null);
    expect(
        "graphics",
        json!({ "enable": false, "backend": "gtk", "socket": "bare-gpu.sock", "vulkan": null, "hostmem": "256M" }),
    );
    expect(
        "qemu",
        json!({ "machine": "microvm", "machineOpts": null, "extraArgs": [], "serialConsole": true, "pcieRootPorts": [] }),
    );
    expect(
        "firecracker",
        json!({ "driveIoEngine": "Async", "cpu": null, "extraArgs": [], "extraConfig": {} }),
    );
    expect(
        "vfkit",
        json!({ "logLevel": "info", "extraArgs": [], "rosetta": { "enable": false, "install": false, "ignoreIfMissing": false } }),
    );
    expect(
        "virtiofsd",
        json!({ "inodeFileHandles": "prefer", "threadPoolSize": "`nproc`", "group": "kvm", "extraArgs": [] }),
    );
    expect("declaredRunner", json!("microvm-qemu-bare"));
    let runners: BTreeMap<String, String> =
        serde_json::from_value(microvm["runners"].clone()).unwrap();
    let expected: BTreeMap<String, String> = HYPERVISORS
        .iter()
        .map(|hv| (hv.to_string(), format!("microvm-{hv}-bare")))
        .collect();
    assert_eq!(
        runners, expected,
        "microvm.runner has one runner per hypervisor"
    );

    // machineId: sha256 of "microvm.nix:<hostName>" cut 8-4-4-4-12, computed here independently.
    let sha = Command::new("sh")
        .args(["-c", "printf %s 'microvm.nix:bare' | sha256sum"])
        .output()
        .unwrap();
    let hash = String::from_utf8_lossy(&sha.stdout)[..64].to_owned();
    let machine_id = format!(
        "{}-{}-{}-{}-{}",
        &hash[0..8],
        &hash[8..12],
        &hash[12..16],
        &hash[16..20],
        &hash[20..32]
    );
    expect("machineId", json!(machine_id));
    assert_eq!(
        defaults["machineIdFile"],
        json!(format!("{}\n", machine_id.replace('-', "")))
    );
    assert_eq!(defaults["hostId"], json!(&hash[0..8]));

    // List entries.
    assert_eq!(
        defaults["volume"],
        json!({
            "image": "var.img", "mountPoint": "/var", "size": 64,
            "serial": null, "direct": false, "readOnly": false, "label": null,
            "autoCreate": true, "mkfsExtraArgs": [], "fsType": "ext4", "imageType": "raw",
            // Ours, not microvm.nix's: off unless asked.
            "ephemeral": false, "contentsFile": null
        })
    );
    assert_eq!(
        defaults["share9p"],
        json!({
            "tag": "data", "source": "/srv/data", "mountPoint": "/data",
            "socket": null, "securityModel": "none", "proto": "9p", "readOnly": false,
            "cache": "auto", "posixAcl": true, "extraArgs": []
        })
    );
    assert_eq!(
        defaults["shareVirtiofs"]["socket"],
        json!("entries-virtiofs-fs.sock")
    );
    assert_eq!(
        defaults["interface"],
        json!({ "type": "tap", "id": "vm-tap", "mac": "02:00:00:00:00:01", "bridge": null, "tap": { "vhost": false } })
    );
    assert_eq!(
        defaults["forwardPort"],
        json!({ "from": "host", "proto": "tcp", "host": { "address": "", "port": 2222 }, "guest": { "address": "", "port": 22 } })
    );
}

#[test]
fn guest_mounts_the_store_volumes_and_shares_and_configures_interfaces_by_mac() {
    let defaults = nix::eval("defaults");
    let fs = &defaults["fileSystems"];
    assert_eq!(fs["/"]["fsType"], json!("tmpfs"));
    // Entries as NixOS's fileSystems submodule gives them: what the module sets, over the
    // submodule's defaults.
    let entry = |mount: &str| {
        let value = &fs[mount];
        json!({
            "device": value["device"], "fsType": value["fsType"], "options": value["options"],
            "neededForBoot": value["neededForBoot"], "noCheck": value["noCheck"]
        })
    };
    assert_eq!(
        entry("/nix/store"),
        json!({
            "device": "/dev/disk/by-label/nix-store", "fsType": "erofs", "neededForBoot": true,
            "noCheck": true, "options": ["x-systemd.after=systemd-modules-load.service"]
        })
    );
    // The store disk is vda, so the first volume without label or serial is vdb.
    assert_eq!(
        entry("/var"),
        json!({
            "device": "/dev/vdb", "fsType": "ext4", "neededForBoot": false, "noCheck": false,
            "options": ["defaults"]
        })
    );
    assert_eq!(fs["/data"]["device"], json!("data"));
    assert_eq!(fs["/data"]["fsType"], json!("9p"));
    assert!(strings(&fs["/data"]["options"]).contains(&"trans=virtio".to_owned()));
    assert_eq!(fs["/fs"]["fsType"], json!("virtiofs"));
    assert_eq!(
        defaults["networks"]["80-microvm-vm-tap"],
        json!({ "matchConfig": { "MACAddress": "02:00:00:00:00:01" }, "networkConfig": { "DHCP": "yes" } })
    );
    let modules = strings(&defaults["initrdKernelModules"]);
    for module in [
        "virtio_mmio",
        "virtio_pci",
        "virtio_blk",
        "9pnet_virtio",
        "9p",
        "virtiofs",
    ] {
        assert!(
            modules.contains(&module.to_owned()),
            "{module} in {modules:?}"
        );
    }
    assert!(!modules.contains(&"i8042".to_owned()));
    let firecracker = strings(&defaults["firecrackerInitrdKernelModules"]);
    assert!(
        firecracker.contains(&"i8042".to_owned()),
        "firecracker's Ctrl-Alt-Del needs i8042: {firecracker:?}"
    );
    let params = strings(&defaults["microvm"]["kernelParams"]);
    assert!(
        params
            .iter()
            .any(|p| p.starts_with("init=") && p.ends_with("/init")),
        "{params:?}"
    );
    assert!(
        params.iter().any(|p| p.starts_with("regInfo=")),
        "{params:?}"
    );
}

#[test]
fn nix_refuses_exactly_the_features_the_generator_refuses() {
    let checks = nix::eval("capabilityCrossCheck");
    for hypervisor in HYPERVISORS {
        let entry = &checks[hypervisor];
        let nix_refused: BTreeSet<String> = strings(&entry["refused"]).into_iter().collect();
        let text = serde_json::to_string_pretty(&entry["spec"]).unwrap();
        let spec = load::load(&SpecText::new(hypervisor, text))
            .unwrap_or_else(|e| panic!("{hypervisor}: the spec does not load: {e:?}"));
        let generator_refused: BTreeSet<String> = validate::validate(&spec)
            .into_iter()
            .filter_map(|d| {
                d.code
                    .strip_prefix("microvm::capability::")
                    .map(str::to_owned)
            })
            .collect();
        let nix_codes: BTreeSet<String> =
            nix_refused.iter().map(|id| id.replace('.', "_")).collect();
        assert!(
            !nix_codes.is_empty(),
            "{hypervisor}: the VM uses features it lacks"
        );
        assert_eq!(
            nix_codes, generator_refused,
            "{hypervisor}: Nix and the generator refuse different features"
        );
    }
}

/// Every program Nix puts in `tools` is a build input of the runner, so Nix gives none the
/// generator does not run: the reverse of `validate`'s check that each one it runs is given.
#[test]
fn nix_gives_only_the_programs_the_generator_runs() {
    // coreutils is one package, given whole so scripts always find theirs; chattr is used when
    // given (no-copy-on-write volume images) and its absence is not an error.
    const GIVEN_WHOLE: &[&str] = &[
        "mkdir", "ln", "rm", "truncate", "chown", "sleep", "nproc", "chattr",
    ];
    let mut specs: Vec<(String, Value)> = Vec::new();
    for (hypervisor, spec) in nix::eval("exampleSpecs").as_object().unwrap() {
        specs.push((format!("example {hypervisor}"), spec.clone()));
    }
    for (hypervisor, entry) in nix::eval("capabilityCrossCheck").as_object().unwrap() {
        specs.push((
            format!("everyFeature on {hypervisor}"),
            entry["spec"].clone(),
        ));
    }
    let mut unused = Vec::new();
    for (name, value) in &specs {
        let text = serde_json::to_string_pretty(value).unwrap();
        let spec = load::load(&SpecText::new(name.as_str(), text))
            .unwrap_or_else(|e| panic!("{name}: the spec does not load: {e:?}"));
        let runs: BTreeSet<&str> = runner::required_tools(&spec)
            .into_iter()
            .map(|(tool, _)| tool.name())
            .collect();
        for tool in Tool::ALL.iter().filter(|t| spec.tools.get(**t).is_some()) {
            let name_of = tool.name();
            if !runs.contains(name_of) && !GIVEN_WHOLE.contains(&name_of) {
                unused.push(format!("{name}: {name_of}"));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "lib/runner-spec.nix gives programs no generated script runs:\n{}",
        unused.join("\n")
    );
}

#[test]
fn every_capability_table_feature_and_hypervisor_is_known_to_the_nix_side() {
    let coverage = nix::eval("coverage");
    let table: BTreeSet<String> = strings(&coverage["tableFeatures"]).into_iter().collect();
    let nix: BTreeSet<String> = strings(&coverage["nixFeatures"]).into_iter().collect();
    assert_eq!(
        table, nix,
        "lib/capabilities.nix must map every feature of lib/capabilities.json to the options that use it"
    );
    assert_eq!(strings(&coverage["hypervisors"]), HYPERVISORS.to_vec());
    let table_hypervisors: BTreeSet<String> =
        strings(&coverage["tableHypervisors"]).into_iter().collect();
    let examples: BTreeSet<String> = strings(&coverage["examples"]).into_iter().collect();
    let all: BTreeSet<String> = HYPERVISORS.iter().map(|s| s.to_string()).collect();
    assert_eq!(table_hypervisors, all);
    assert_eq!(examples, all);
    assert_eq!(
        strings(&coverage["unusedByEveryFeature"]),
        Vec::<String>::new(),
        "checks/eval's everyFeature VM must use every feature, or the cross-check misses it"
    );
}

/// `guest.enable = false` leaves the guest alone, yet its runners are still declared: the spec
/// evaluates, boots the system's init and is accepted.
#[test]
fn a_vm_without_guest_integration_still_has_a_runner() {
    let spec = nix::eval("guestDisabledSpec");
    assert!(
        strings(&spec["kernelParams"])
            .iter()
            .any(|p| p.starts_with("init=") && p.ends_with("/init")),
        "the runner boots the system: {}",
        spec["kernelParams"]
    );
    assert!(
        spec["storeDisk"].is_string(),
        "storeOnDisk is on by default"
    );
    if let Verdict::Refused(why) = validate_spec("noguest", &spec) {
        panic!("refused: {why}");
    }
}

/// microvm.nix declares `runner` and `declaredRunner` writable, and its users replace them
/// (a wrapper as the declared runner, under `mkIf`; one hypervisor's runner forced): such a
/// configuration evaluates here unchanged, and what it defines is the runner that comes out.
#[test]
fn runners_replaced_as_microvm_nix_users_do_are_the_runners_that_come_out() {
    let overrides = nix::eval("runnerOverrides");
    let own_runners: BTreeMap<String, String> = HYPERVISORS
        .iter()
        .map(|hv| (hv.to_string(), format!("microvm-{hv}-ovr")))
        .collect();
    let runners = |case: &str| -> BTreeMap<String, String> {
        serde_json::from_value(overrides[case]["runners"].clone()).unwrap()
    };

    // Nothing defined: the module's own runners.
    assert_eq!(
        overrides["untouched"]["declaredRunner"],
        json!("microvm-qemu-ovr")
    );
    assert_eq!(runners("untouched"), own_runners);

    // The declared runner replaced by a wrapper of the module's runner, however it is written;
    // the wrapper runs the runner it wraps, and `runner.<hypervisor>` is left alone.
    for case in ["declaredPlain", "declaredMkIf", "declaredMkForce"] {
        let case_value = &overrides[case];
        assert_eq!(case_value["declaredRunner"], json!("wrapped"), "{case}");
        assert_eq!(
            case_value["declaredRunnerText"],
            json!("exec /stand-in/microvm-qemu-ovr/bin/microvm-run \"$@\"\n"),
            "{case}"
        );
        assert_eq!(runners(case), own_runners, "{case}");
    }
    // A false condition defines nothing: the module's default stays.
    assert_eq!(
        overrides["declaredMkIfFalse"]["declaredRunner"],
        json!("microvm-qemu-ovr")
    );

    // One hypervisor's runner forced: it is the declared runner of a VM on that hypervisor.
    assert_eq!(
        overrides["runnerMkForce"]["declaredRunner"],
        json!("my-ch-runner")
    );
    let mut expected = own_runners.clone();
    expected.insert("cloud-hypervisor".into(), "my-ch-runner".into());
    assert_eq!(runners("runnerMkForce"), expected);

    // The host module installs the replacement.
    let host = nix::eval("host.wrappedRunner.spec");
    assert_eq!(host["vms"]["wrapped"]["runner"], json!("/stand-in/wrapped"));
}

#[test]
fn the_template_flake_parses_and_its_vm_evaluates_to_an_accepted_spec() {
    nix::nixpkgs_lib();
    let flake = common::repo_root().join("flake-template/flake.nix");
    let parse = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&flake)
        .output()
        .unwrap();
    assert!(
        parse.status.success(),
        "{}",
        String::from_utf8_lossy(&parse.stderr)
    );

    let template = nix::eval("template");
    assert_eq!(template["runner"], json!("microvm-qemu-my-microvm"));
    assert_eq!(template["default"], template["runner"]);
    let spec = &template["spec"];
    assert_eq!(spec["hostName"], json!("my-microvm"));
    assert_eq!(spec["hypervisor"], json!("qemu"));
    assert_eq!(spec["socket"], json!("control.socket"));
    assert_eq!(spec["volumes"][0]["image"], json!("var.img"));
    assert_eq!(spec["volumes"][0]["size"], json!(256));
    assert_eq!(spec["shares"][0]["source"], json!("/nix/store"));
    assert_eq!(spec["shares"][0]["proto"], json!("9p"));
    assert_eq!(spec["interfaces"][0]["type"], json!("user"));
    // The host's store is shared, so there is no store disk.
    assert_eq!(spec["storeDisk"], Value::Null);
    match validate_spec("template", spec) {
        Verdict::Accepted => {}
        Verdict::Refused(why) => panic!("the template's spec is refused: {why}"),
    }
}

#[test]
fn flake_outputs_are_wired_for_every_hypervisor() {
    let flake = nix::eval("flake");
    let names = |value: &Value| -> BTreeSet<String> {
        value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_else(|| strings(value).into_iter().collect())
    };
    assert_eq!(
        names(&flake["nixosModules"]),
        BTreeSet::from(["default", "host", "microvm"].map(String::from))
    );
    let configurations: BTreeSet<String> = HYPERVISORS
        .iter()
        .map(|hv| format!("{hv}-example"))
        .collect();
    assert_eq!(names(&flake["nixosConfigurations"]), configurations);

    let linux = &flake["packages"]["x86_64-linux"];
    for hypervisor in HYPERVISORS.iter().filter(|hv| **hv != "vfkit") {
        assert_eq!(
            linux[format!("{hypervisor}-example")],
            json!(format!("microvm-{hypervisor}-{hypervisor}-microvm"))
        );
    }
    assert!(linux.get("microvm-codegen").is_some());
    assert_eq!(
        flake["packages"]["aarch64-darwin"]["vfkit-example"],
        json!("microvm-vfkit-vfkit-microvm")
    );

    let checks = names(&flake["checks"]["x86_64-linux"]);
    for hypervisor in [
        "qemu",
        "cloud-hypervisor",
        "firecracker",
        "crosvm",
        "kvmtool",
        "alioth",
    ] {
        assert!(
            checks.contains(&format!("{hypervisor}-boots")),
            "{checks:?}"
        );
    }
    for hypervisor in ["qemu", "cloud-hypervisor", "firecracker", "crosvm"] {
        assert!(
            checks.contains(&format!("{hypervisor}-shutdown")),
            "{checks:?}"
        );
    }
    assert_eq!(
        flake["templates"],
        json!({ "default": "flake-template", "microvm": "flake-template", "guest": "guest-template" })
    );
    assert_eq!(
        flake["mkGuest"],
        json!({
            "top": "microvm-qemu-flake-guest",
            "perSystem": "microvm-qemu-flake-guest",
            "systems": ["aarch64-darwin", "aarch64-linux", "x86_64-linux"]
        })
    );
    assert_eq!(flake["hypervisors"], json!(HYPERVISORS));
    assert_eq!(
        names(&flake["formatter"]),
        BTreeSet::from(["aarch64-darwin", "aarch64-linux", "x86_64-linux"].map(String::from))
    );
}

/// The stand-ins declare NixOS's options with NixOS's types and no catch-all, so a misspelt
/// path or a value of the wrong type set next to the guest module fails to evaluate, as in
/// NixOS, even where nothing of ours reads it.
#[test]
fn misused_nixos_options_fail_to_evaluate_as_in_nixos() {
    let fails = |attr: &str, expected: &[&str]| {
        let error = nix::eval_with(&format!("mistyped.{attr}"), &[])
            .expect_err(&format!("mistyped.{attr} must not evaluate"));
        for text in expected {
            assert!(
                error.contains(text),
                "mistyped.{attr}: no {text:?} in\n{error}"
            );
        }
    };
    fails(
        "kernelParam",
        &["The option `boot.kernelParam' does not exist"],
    );
    fails(
        "hostname",
        &[
            "The option `networking.hostname' does not exist",
            "networking.hostName",
        ],
    );
    fails(
        "fileSystemDevices",
        &["The option `fileSystems.\"/data\".devices' does not exist"],
    );
    fails(
        "kernelParamsString",
        &["`boot.kernelParams' is not of type", "list of"],
    );
    fails(
        "autologinUserInt",
        &["`services.getty.autologinUser' is not of type `null or string'"],
    );
    fails(
        "unitKeyConflict",
        &["`systemd.services.nix-daemon.serviceConfig.Nice' has conflicting definition values"],
    );
}

/// Issue 13 (11): microvm.nix runs graphics on cloud-hypervisor (crosvm's GPU device, and
/// spectrum-os's cloud-hypervisor with `--gpu`); such a configuration evaluates here unchanged,
/// to a spec with graphics on that the generator accepts. The GPU device is
/// `graphics.crosvmPackage`'s, and the cloud-hypervisor is the package set's
/// `cloud-hypervisor-graphics` where it has one, as in microvm.nix.
#[test]
fn cloud_hypervisor_graphics_as_microvm_nix_writes_them_evaluate_to_a_spec_with_graphics() {
    let graphics = nix::eval("cloudHypervisorGraphics");
    assert_eq!(graphics["assertionMessages"], json!([]));
    assert!(graphics["toplevel"].is_string(), "{}", graphics["toplevel"]);
    let spec = &graphics["spec"];
    assert_eq!(spec["hypervisor"], json!("cloud-hypervisor"));
    assert_eq!(spec["graphics"]["enable"], json!(true));
    assert_eq!(spec["graphics"]["socket"], json!("ch-graphics-gpu.sock"));
    assert!(
        spec["tools"]["crosvm"]
            .as_str()
            .is_some_and(|p| p.ends_with("/bin/crosvm")),
        "the GPU device's crosvm: {}",
        spec["tools"]
    );
    if let Verdict::Refused(why) = validate_spec("ch-graphics", spec) {
        panic!("refused: {why}");
    }

    let tools = &graphics["chosenTools"];
    assert_eq!(
        tools["crosvm"],
        json!("/stand-in/crosvm-gpu/bin/crosvm"),
        "graphics.crosvmPackage runs the GPU device"
    );
    assert_eq!(
        tools["cloud-hypervisor"],
        json!("/stand-in/cloud-hypervisor-graphics/bin/cloud-hypervisor"),
        "the package set's cloud-hypervisor-graphics is the default with graphics"
    );
}

/// microvm.nix reads a share's `securityModel` only on 9p shares, and so does the runner spec:
/// a value outside the enum on a virtiofs share evaluates unchanged (lint warns about it), and
/// on a 9p share fails as the option's type says.
#[test]
fn security_model_outside_its_enum_fails_only_on_9p_shares() {
    let shares = nix::eval("securityModelOutsideItsEnum.virtiofs");
    assert_eq!(shares[0]["proto"], json!("virtiofs"), "{shares}");
    assert!(shares[0].get("securityModel").is_none(), "{shares}");
    let error = nix::eval_with("securityModelOutsideItsEnum.ninep", &[])
        .expect_err("a 9p share reads its securityModel");
    assert!(
        error.contains("securityModel' is not of type"),
        "no type error in\n{error}"
    );
}

/// `boot.initrd.availableKernelModules` (system.nix and store-disk.nix) and
/// `boot.kernelModules` (system.nix and graphics.nix) are defined by two of our modules each;
/// NixOS concatenates list definitions, and so must the stand-ins.
#[test]
fn kernel_module_lists_defined_by_several_modules_merge() {
    let lists = nix::eval("kernelModuleLists");
    assert_eq!(lists["storeOnDisk"], json!(true));
    let store_disk_type = lists["storeDiskType"].as_str().unwrap().to_owned();
    let available = strings(&lists["available"]);
    for module in ["vmw_vsock_virtio_transport", store_disk_type.as_str()] {
        assert!(
            available.iter().any(|m| m == module),
            "boot.initrd.availableKernelModules has {module}: {available:?}"
        );
    }
    let kernel = strings(&lists["kernel"]);
    for module in ["button", "drm", "virtio_gpu"] {
        assert!(
            kernel.iter().any(|m| m == module),
            "boot.kernelModules has {module}: {kernel:?}"
        );
    }
    assert!(strings(&lists["initrd"]).contains(&"virtio_blk".to_owned()));
    assert_eq!(lists["toplevel"], json!("/stand-in/nixos-system-graphics"));
}

/// The NixOS settings the guest module makes beyond the default guest (writable store overlay,
/// the host's store shared with a systemd initrd, Rosetta on vfkit) have NixOS's types: each
/// guest's toplevel evaluates, and the settings hold what the modules set.
#[test]
fn the_guest_modules_nixos_settings_have_nixos_types() {
    let settings = nix::eval("nixosSettings");

    let overlay = &settings["overlay"];
    assert_eq!(overlay["toplevel"], json!("/stand-in/nixos-system-overlay"));
    assert_eq!(
        overlay["store"],
        json!({
            "neededForBoot": true,
            "overlay": {
                "lowerdir": ["/nix/.ro-store"],
                "upperdir": "/nix/.rw-store/store",
                "workdir": "/nix/.rw-store/work"
            }
        })
    );
    assert_eq!(overlay["roStore"]["fsType"], json!("erofs"));
    assert_eq!(overlay["rwStore"]["neededForBoot"], json!(true));
    assert!(strings(&overlay["initrdKernelModules"]).contains(&"overlay".to_owned()));
    assert_eq!(
        overlay["nixDaemon"],
        json!(true),
        "Nix builds on a writable store"
    );

    let host_store = &settings["hostStore"];
    assert_eq!(
        host_store["toplevel"],
        json!("/stand-in/nixos-system-hoststore")
    );
    assert_eq!(host_store["store"]["device"], json!("/nix/.ro-store"));
    assert_eq!(host_store["store"]["options"], json!(["ro", "bind"]));
    assert_eq!(host_store["initrdSystemd"], json!(true));
    assert_eq!(
        host_store["mounts"],
        json!([{
            "what": "store", "where": "/nix/store", "overrideStrategy": "asDropin",
            "unitConfig": { "DefaultDependencies": false }
        }])
    );
    assert_eq!(
        host_store["switch"],
        json!(true),
        "sshd on and the host's store shared"
    );
    assert_eq!(
        host_store["networks"]["80-microvm-usernet"]["matchConfig"],
        json!({ "MACAddress": "02:00:00:00:02:01" })
    );
    assert_eq!(host_store["powerKey"], json!("poweroff"));
    let blacklisted = strings(&host_store["blacklisted"]);
    assert!(
        blacklisted.contains(&"rfkill".to_owned()),
        "{blacklisted:?}"
    );
    assert_eq!(
        host_store["generators"],
        json!({ "systemd-gpt-auto-generator": "/dev/null" })
    );
    assert_eq!(host_store["documentation"], json!(false));

    let rosetta = &settings["rosetta"];
    assert_eq!(rosetta["toplevel"], json!("/stand-in/nixos-system-rosetta"));
    assert_eq!(rosetta["enable"], json!(true));
}

/// Issue 10: mvm's hello example, written with `microvm.services`/`microvm.healthChecks`, is
/// ordinary systemd units in the guest and a runner that waits for the guest's readiness.
#[test]
fn mvm_hello_example_becomes_guest_units_and_a_runner_with_readiness() {
    let services = nix::eval("guestServices.services");
    let hello = &services["hello"];
    assert_eq!(hello["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(hello["environment"], json!({ "PORT": "8080" }));
    let config = &hello["serviceConfig"];
    // Not root: a user of its own; preStart as root (`+`); `microvm up --env` overrides.
    assert_eq!(config["User"], json!("svc-hello"));
    assert!(
        config["ExecStartPre"]
            .as_str()
            .unwrap()
            .starts_with("+/stand-in/"),
        "{config}"
    );
    assert_eq!(config["EnvironmentFile"], json!("-/run/microvm/env"));
    assert_eq!(config["Restart"], json!("always"));
    assert_eq!(config["RestartMaxDelaySec"], json!("60s"));
    assert_eq!(hello["unitConfig"]["StartLimitIntervalSec"], json!(0));
    let check = &services["health-hello"]["serviceConfig"];
    assert_eq!(check["Type"], json!("oneshot"));
    assert_eq!(check["User"], json!("svc-hello"));
    assert_eq!(services["microvm-ready"]["after"], json!(["hello.service"]));

    let scripts = nix::eval("guestServices.scripts");
    assert_eq!(
        scripts["start"],
        json!("/usr/bin/python3 -m http.server 8080 --directory /tmp/www")
    );
    let check = scripts["check"].as_str().unwrap();
    assert!(
        check.contains(
            "/usr/bin/timeout 10 /usr/bin/sh -c '/usr/bin/curl -sf http://localhost:8080/'"
        ),
        "{check}"
    );
    assert!(
        check.contains(
            r#"NOTIFY_SOCKET=vsock-stream:2:8888 /usr/bin/systemd-notify "X_MICROVM_HEALTH=hello $state $line""#
        ),
        "{check}"
    );
    let ready = scripts["ready"].as_str().unwrap();
    assert!(
        ready.contains("systemctl start health-hello.service"),
        "{ready}"
    );

    let timers = nix::eval("guestServices.timers");
    assert_eq!(
        timers["health-hello"]["timerConfig"]["OnUnitActiveSec"],
        json!("5s")
    );
    assert_eq!(timers["health-hello"]["wantedBy"], json!(["timers.target"]));
    assert_eq!(
        nix::eval("guestServices.users"),
        json!({ "svc-hello": { "isSystemUser": true, "group": "svc-hello" } })
    );
    assert_eq!(nix::eval("guestServices.groups"), json!(["svc-hello"]));

    // The runner: readiness on vsock port 8888 and the bridge that carries it.
    let spec = nix::eval("guestServices.spec");
    assert_eq!(
        spec["vsock"],
        json!({ "cid": 3, "notify": { "port": 8888 } })
    );
    assert_eq!(spec["bridge"], json!("/usr/bin/microvm-notify-bridge"));
    // The whole guest evaluates: every NixOS option our units set has NixOS's type.
    nix::eval("guestServices.toplevel");
}

#[test]
fn a_health_check_of_no_service_and_readiness_without_vsock_fail_evaluation() {
    let typo = nix::eval_with("guestServices.typo", &[]).unwrap_err();
    assert!(
        typo.contains(
            "microvm.healthChecks.helo: there is no microvm.services.helo. Did you mean \"hello\"?"
        ),
        "{typo}"
    );
    let no_vsock = nix::eval_with("guestServices.noVsock", &[]).unwrap_err();
    assert!(
        no_vsock.contains("microvm.readiness.enable needs microvm.vsock.cid"),
        "{no_vsock}"
    );
    let vfkit = nix::eval_with("guestServices.vfkit", &[]).unwrap_err();
    assert!(
        vfkit.contains(
            r#"hypervisor "vfkit" does not support vsock, used by readiness.enable = true"#
        ),
        "{vfkit}"
    );
}

/// Issue 10: `templates.guest`, mvm's hello example through `lib.<system>.mkGuest`, evaluates to
/// a runner (with the NixOS configuration beside it) whose spec the generator accepts.
#[test]
fn the_guest_template_is_a_runner_made_by_mk_guest() {
    let evaluated = nix::eval("guestTemplate");
    assert_eq!(evaluated["runner"], json!("microvm-qemu-hello"));
    assert_eq!(evaluated["passthruIsTheConfiguration"], json!("hello"));
    assert_eq!(evaluated["systemPackages"], json!(["python3", "curl"]));
    assert_eq!(evaluated["helloUser"], json!("svc-hello"));
    assert_eq!(evaluated["checkTimer"]["OnUnitActiveSec"], json!("5s"));
    let spec = &evaluated["spec"];
    assert_eq!(spec["vsock"]["notify"], json!({ "port": 8888 }));
    // Forwarded ports got the user network they need.
    assert_eq!(spec["interfaces"][0]["type"], json!("user"));
    match validate_spec("guest-template", spec) {
        Verdict::Accepted => {}
        Verdict::Refused(report) => panic!("the generator refused the template's spec: {report}"),
    }
}

/// Issue 11: `microvm up` announces shares, volumes and `--env` on the kernel command line, and
/// the guest module's microvm-up.service acts on them: part of sysinit (so every ordinary unit
/// starts after it), before each unit that reads the env file it writes, running the script the
/// busybox test guest runs too, and skipped on a boot without such parameters.
#[test]
fn the_guest_mounts_what_microvm_up_announces_before_its_services_start() {
    let up = nix::eval("guestUp");
    let unit = &up["unit"];
    assert_eq!(unit["wantedBy"], json!(["sysinit.target"]));
    assert_eq!(unit["unitConfig"]["DefaultDependencies"], json!(false));
    let before = strings(&unit["before"]);
    assert!(before.contains(&"sysinit.target".to_owned()), "{before:?}");
    // Every unit that reads /run/microvm/env, and readiness, starts after the file is written.
    let readers = strings(&up["envReaders"]);
    assert_eq!(readers, ["health-hello", "hello"]);
    for reader in readers.iter().map(String::as_str).chain(["microvm-ready"]) {
        assert!(
            before.contains(&format!("{reader}.service")),
            "microvm-up.service is not before {reader}.service: {before:?}"
        );
    }
    let after = strings(&unit["after"]);
    assert!(
        after.contains(&"systemd-modules-load.service".to_owned())
            && after.contains(&"local-fs.target".to_owned()),
        "{after:?}"
    );
    assert_eq!(unit["conflicts"], json!(["shutdown.target"]));
    assert_eq!(
        unit["unitConfig"]["ConditionKernelCommandLine"],
        json!(["|microvm.up.mount", "|microvm.up.env", "|microvm.up.net"])
    );
    let config = &unit["serviceConfig"];
    assert_eq!(config["Type"], json!("oneshot"));
    assert_eq!(config["RemainAfterExit"], json!(true));
    // mount from util-linux; mkdir, base64, cat, chmod and sleep from coreutils; ip (the
    // proxy's address) from iproute2.
    assert_eq!(unit["path"], json!(["util-linux", "coreutils", "iproute2"]));
    // The unit runs the very script the busybox guest runs (checks/boot-env.sh packs it).
    let shared = std::fs::read_to_string(
        common::repo_root().join("nixos-modules/microvm/up-announcements.sh"),
    )
    .unwrap();
    assert_eq!(up["script"], json!(shared));
    assert_eq!(up["bare"], json!(true));
    assert_eq!(up["notAGuest"], json!(false));
}
