//! Every "no" cell of the capability table has an err/ fixture, and its report names the
//! option, the hypervisor and the table's hint. The fixtures are generated from the table (a
//! hypervisor's minimal ok/ spec with the feature turned on), so a new cell cannot go untested:
//! the test fails until `MICROVM_UPDATE_FIXTURES=1 cargo test --test capabilities` has written
//! its fixture (then review it and its snapshot like any other).
//!
//! The README's hypervisor × feature matrix is generated from the same table and checked here.

mod common;

use std::path::PathBuf;

use microvm_codegen::capabilities::{self, table};
use microvm_codegen::spec::Hypervisor;
use serde_json::{Value, json};

const NIX: &str = "/nix/store/00000000000000000000000000000000";

/// Turns a feature on, as a merge patch over a minimal spec (objects merge, the rest replaces).
fn enabling_patch(feature: &str) -> Value {
    let coreutils = |tool: &str| format!("{NIX}-coreutils-9.5/bin/{tool}");
    let virtiofs_tools = json!({
        "virtiofsd": format!("{NIX}-virtiofsd-1.13/bin/virtiofsd"),
        "rm": coreutils("rm"), "sleep": coreutils("sleep"), "nproc": coreutils("nproc"),
        "systemd-notify": format!("{NIX}-systemd-257/bin/systemd-notify"),
    });
    let ip = json!({ "ip": format!("{NIX}-iproute2-6.12/bin/ip"), "chown": coreutils("chown") });
    let interface = |kind: &str| {
        let mut i = json!({ "type": kind, "id": "vm-if0", "mac": "02:00:00:00:00:01" });
        match kind {
            "bridge" => i["bridge"] = json!("br0"),
            "macvtap" => i["macvtap"] = json!({ "link": "eth0", "mode": "bridge" }),
            _ => {}
        }
        json!({ "interfaces": [i], "tools": ip.clone() })
    };
    let volume = |extra: Value| {
        let mut v = json!({ "image": "data.img", "mountPoint": "/data", "autoCreate": false });
        merge(&mut v, extra);
        json!({ "volumes": [v] })
    };
    let share = |proto: &str, read_only: bool| {
        json!({
            "shares": [{ "tag": "data", "source": "/srv/data", "mountPoint": "/data",
                         "proto": proto, "socket": "data.sock", "readOnly": read_only }],
            "tools": virtiofs_tools.clone(),
        })
    };
    match feature {
        "share.9p" => share("9p", false),
        "share.9p.readOnly" => share("9p", true),
        "share.virtiofs" => share("virtiofs", false),
        "share.virtiofs.readOnly" => share("virtiofs", true),
        "interface.user" => interface("user"),
        "interface.tap" => interface("tap"),
        "interface.macvtap" => interface("macvtap"),
        "interface.bridge" => interface("bridge"),
        "interface.tap.vhost" => {
            let mut patch = interface("tap");
            patch["interfaces"][0]["tap"] = json!({ "vhost": true });
            patch
        }
        "forwardPorts" => {
            json!({ "forwardPorts": [{ "host": { "port": 2222 }, "guest": { "port": 22 } }] })
        }
        "controlSocket" => json!({ "socket": "vm.sock" }),
        "balloon" => json!({ "balloon": true }),
        "initialBalloonMem" => json!({ "balloon": true, "initialBalloonMem": 64 }),
        "hotplugMem" => json!({ "hotplugMem": 1024 }),
        "hugepageMem" => json!({ "hugepageMem": true }),
        "vsock" => json!({ "vsock": { "cid": 3 } }),
        "devices.pci" => json!({ "devices": [{ "bus": "pci", "path": "0000:01:00.0" }],
                                 "tools": { "modprobe": format!("{NIX}-kmod-33/bin/modprobe"), "chown": coreutils("chown") } }),
        "devices.usb" => {
            json!({ "devices": [{ "bus": "usb", "path": "vendorid=0x1234,productid=0x5678" }] })
        }
        "credentialFiles" => json!({ "credentialFiles": { "SECRET": "/etc/microvm/secret" } }),
        "graphics" => json!({ "graphics": { "enable": true } }),
        "user" => json!({ "user": "microvm" }),
        "cpu" => json!({ "cpu": "Westmere" }),
        "volume.serial" => volume(json!({ "serial": "data" })),
        "volume.direct" => volume(json!({ "direct": true })),
        "volume.readOnly" => volume(json!({ "readOnly": true })),
        "volume.imageType" => volume(json!({ "imageType": "qcow2" })),
        other => panic!("no enabling patch for feature {other}: add one here"),
    }
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// The (feature, hypervisor) pairs the table refuses, where the refusal is the feature's own.
fn no_cells() -> Vec<(String, Hypervisor)> {
    let mut cells = Vec::new();
    for (id, feature) in &table().features {
        for hv in Hypervisor::ALL {
            let parent_ok = feature
                .requires
                .as_ref()
                .is_none_or(|required| capabilities::supports(hv, required));
            if !feature.supports(hv) && parent_ok {
                cells.push((id.clone(), hv));
            }
        }
    }
    cells
}

fn fixture_path(feature: &str, hv: Hypervisor) -> PathBuf {
    common::fixtures()
        .join("err/capabilities")
        .join(format!("{feature}@{hv}.json"))
}

/// The fixture's text, or why it cannot be made (the hypervisor has no minimal spec yet).
fn expected_fixture(feature: &str, hv: Hypervisor) -> Result<String, String> {
    let base = common::fixtures().join(format!("ok/{hv}-minimal.json"));
    let text = std::fs::read_to_string(&base).map_err(|e| {
        format!(
            "{} is needed as the base of {hv}'s fixtures: {e}",
            base.display()
        )
    })?;
    let mut spec: Value = serde_json::from_str(&text).unwrap();
    merge(&mut spec, enabling_patch(feature));
    spec["hostName"] = json!(format!("no-{}", feature.replace('.', "-")));
    Ok(serde_json::to_string_pretty(&spec).unwrap() + "\n")
}

#[test]
fn every_no_cell_has_a_fixture_refused_with_the_tables_hint() {
    let update = std::env::var_os("MICROVM_UPDATE_FIXTURES").is_some();
    let mut stale = Vec::new();
    let cells = no_cells();
    assert!(cells.len() > 50, "the table lost its refusals?");
    for (feature, hv) in &cells {
        let path = fixture_path(feature, *hv);
        let expected = match expected_fixture(feature, *hv) {
            Ok(text) => text,
            Err(why) => {
                stale.push(why);
                continue;
            }
        };
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() != Some(expected.as_str()) {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &expected).unwrap();
            } else {
                stale.push(path.display().to_string());
                continue;
            }
        }
        let text = common::fixture_text(&path);
        let (_, findings) = common::check(&text);
        let code = format!("microvm::capability::{}", feature.replace('.', "_"));
        let entry = &table().features[feature];
        let refusal = findings
            .iter()
            .find(|d| d.code == code)
            .unwrap_or_else(|| panic!("{}: no {code} among {findings:?}", path.display()));
        assert!(refusal.is_error());
        assert!(
            refusal.message.contains(hv.name()),
            "{}: {}",
            path.display(),
            refusal.message
        );
        assert!(refusal.label.as_ref().unwrap().contains(&entry.option));
        assert_eq!(refusal.help.as_deref(), entry.hint(*hv));
    }
    assert!(
        stale.is_empty(),
        "missing or outdated capability fixtures (run MICROVM_UPDATE_FIXTURES=1 cargo test --test capabilities):\n{}",
        stale.join("\n")
    );
    // No fixture outlives its cell.
    for entry in std::fs::read_dir(common::fixtures().join("err/capabilities")).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            cells.iter().any(|(f, hv)| fixture_path(f, *hv) == path),
            "{} is not a no cell of the table any more: remove it",
            path.display()
        );
    }
}

#[test]
fn every_feature_of_the_table_is_detected_in_specs() {
    // The enabling patch of each feature makes feature_uses report exactly that feature.
    for id in table().features.keys() {
        let mut spec: Value = serde_json::from_str(
            &std::fs::read_to_string(common::fixtures().join("ok/qemu-minimal.json")).unwrap(),
        )
        .unwrap();
        spec["socket"] = Value::Null;
        merge(&mut spec, enabling_patch(id));
        let spec: microvm_codegen::spec::RunnerSpec = serde_json::from_value(spec).unwrap();
        let used: Vec<&str> = capabilities::feature_uses(&spec)
            .iter()
            .map(|(f, _)| *f)
            .collect();
        assert!(used.contains(&id.as_str()), "{id} not detected: {used:?}");
        for feature in &used {
            assert!(
                table().features.contains_key(*feature),
                "feature_uses reports {feature}, which the table lacks"
            );
        }
    }
}

#[test]
fn readme_matrix_is_generated_from_the_table() {
    let readme_path = common::repo_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (begin, end) = ("<!-- capabilities:begin -->\n", "<!-- capabilities:end -->");
    let start = readme
        .find(begin)
        .expect("README.md has the capabilities markers")
        + begin.len();
    let stop = readme.find(end).unwrap();
    let expected = capabilities::markdown_table();
    if readme[start..stop] != expected {
        if std::env::var_os("MICROVM_UPDATE_FIXTURES").is_some() {
            let updated = format!("{}{expected}{}", &readme[..start], &readme[stop..]);
            std::fs::write(&readme_path, updated).unwrap();
        } else {
            panic!(
                "README.md's matrix is stale: run MICROVM_UPDATE_FIXTURES=1 cargo test --test capabilities"
            );
        }
    }
}

/// The table's `hostOs` is the one source of where a runner starts: `microvm-run` refuses a
/// host OS the table does not list for its hypervisor (bash takes `$OSTYPE` from the
/// environment when it is set there, so each host OS can be tried here).
#[test]
fn microvm_run_starts_only_on_the_tables_host_oses() {
    let table = table();
    for hv in Hypervisor::ALL {
        let (_, tree) = common::ok_fixture(&format!("{hv}-minimal.json"));
        let Some(microvm_codegen::runner::Entry::File { contents, .. }) =
            tree.get("bin/microvm-run")
        else {
            panic!("{hv}: no bin/microvm-run");
        };
        let host_os = &table.hypervisors[hv.name()].host_os;
        for ostype in ["linux-gnu", "darwin23"] {
            let dir = tempfile::tempdir().unwrap();
            let output = std::process::Command::new("bash")
                .arg("-c")
                .arg(contents)
                .env("OSTYPE", ostype)
                .current_dir(dir.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let refused = stderr.contains(&format!("{hv} runs only on"));
            let listed = host_os.iter().any(|os| ostype.starts_with(os.as_str()));
            assert_eq!(refused, !listed, "{hv} on {ostype}: {stderr}");
            if refused {
                assert_eq!(output.status.code(), Some(1));
                assert!(
                    stderr.contains(&format!("not on {ostype}")),
                    "{hv}: {stderr}"
                );
            }
        }
    }
}
