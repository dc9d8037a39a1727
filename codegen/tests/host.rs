//! The host package (`microvm-codegen host`): every accepted host spec under
//! fixtures/host/ok is snapshotted as a whole tree, every refused one under fixtures/host/err
//! as its report.

mod common;

use microvm_codegen::diagnostic::{self, Diagnostic};
use microvm_codegen::host::{self, HostSpec};
use microvm_codegen::load;

fn check(path: &std::path::Path) -> (Option<HostSpec>, Vec<Diagnostic>, diagnostic::SpecText) {
    let text = common::fixture_text(path);
    match load::load_versioned::<HostSpec>(&text, host::spec::HOST_SPEC_VERSION) {
        Err(findings) => (None, findings, text),
        Ok(spec) => {
            let findings = host::validate::validate(&spec);
            (Some(spec), findings, text)
        }
    }
}

#[test]
fn ok_host_specs_generate_their_snapshotted_package() {
    insta::glob!("fixtures/host/ok", "*.json", |path| {
        let (spec, findings, text) = check(path);
        assert!(
            findings.is_empty(),
            "{}",
            diagnostic::render_plain(&findings, &text, 80)
        );
        let tree = host::units::build(
            &spec.unwrap(),
            "/nix/store/00000000000000000000000000000000-microvm-host",
            &microvm_codegen::render::Renderer::new(),
        )
        .unwrap();
        insta::assert_snapshot!(common::describe(&tree));
    });
}

#[test]
fn err_host_specs_are_refused_with_their_snapshotted_report() {
    insta::glob!("fixtures/host/err", "*.json", |path| {
        let (_, findings, text) = check(path);
        assert!(findings.iter().any(Diagnostic::is_error));
        insta::assert_snapshot!(diagnostic::render_plain(&findings, &text, 80));
    });
}

#[test]
fn declared_vms_restart_only_when_asked_and_get_their_install_unit() {
    let (spec, _, _) = check(&common::fixtures().join("host/ok/two-vms.json"));
    let tree = host::units::build(
        &spec.unwrap(),
        "/pkg",
        &microvm_codegen::render::Renderer::new(),
    )
    .unwrap();
    let text = |path: &str| match &tree[path] {
        microvm_codegen::runner::Entry::File { contents, .. } => contents.clone(),
        other => panic!("{other:?}"),
    };
    let router = text("lib/systemd/system/microvm@router.service.d/50-declared.conf");
    assert!(router.contains("X-RestartIfChanged=true"));
    assert!(router.contains("ReadWritePaths=-/srv/router"));
    assert!(
        router.contains("ProtectHome=no"),
        "a share under /home needs it"
    );
    let builder = text("lib/systemd/system/microvm@builder.service.d/50-declared.conf");
    assert!(builder.contains("X-RestartIfChanged=false"));
    // A VM whose guest reports readiness is Type=notify; the others keep the template's Type=
    // (microvm.host.useNotifySockets).
    assert!(builder.contains("\nType=notify\n"), "{builder}");
    assert!(!router.contains("Type="), "{router}");
    assert!(!builder.contains("ProtectHome"));
    assert!(
        text("lib/systemd/system/install-microvm-builder.service")
            .contains("ConditionPathExists=!/var/lib/microvms/builder/current\n"),
        "updateFlake installs once: while no runner is installed, whether or not the directory exists"
    );
    assert!(
        !text("lib/systemd/system/install-microvm-router.service").contains("ConditionPathExists")
    );
    let template = text("lib/systemd/system/microvm@.service");
    assert!(
        template.contains("X-RestartIfChanged=false"),
        "imperative VMs never restart on a switch"
    );
    assert!(template.contains("ExecStop=/pkg/libexec/microvm/stop %i"));
    assert!(
        template.contains("TimeoutStopSec=75"),
        "60 s of microvm-shutdown plus a bounded grace"
    );
    let target = text("lib/systemd/system/microvms.target");
    assert!(target.contains("Wants=microvm@router.service"));
    assert!(target.contains("Wants=microvm@imperative-vm.service"));
    assert!(
        !target.contains("Wants=microvm@builder.service"),
        "builder is not autostarted"
    );
}

/// `microvm logs` reads every unit the host package runs for a VM: the instances of its template
/// units and the install unit.
#[test]
fn the_units_of_a_vm_are_the_units_the_package_has_for_it() {
    let (spec, _, _) = check(&common::fixtures().join("host/ok/two-vms.json"));
    let tree = host::units::build(
        &spec.unwrap(),
        "/pkg",
        &microvm_codegen::render::Renderer::new(),
    )
    .unwrap();
    let mut in_package: Vec<String> = tree
        .keys()
        .filter_map(|path| path.strip_prefix("lib/systemd/system/"))
        .filter(|unit| unit.ends_with(".service") && !unit.contains(".d/"))
        .filter_map(|unit| match unit.strip_suffix("@.service") {
            Some(prefix) => Some(format!("{prefix}@builder.service")),
            None => unit.contains("-builder.").then(|| unit.to_owned()),
        })
        .collect();
    in_package.sort();
    let mut named = host::names::vm_units("builder");
    named.sort();
    assert_eq!(named, in_package);
}
