//! The option tree read from `nixos-modules/` with rnix: complete (one option per `mkOption`
//! call), documented as committed (`doc/options.md`, `doc/options.json`), and in step with the
//! spec types the generator reads (the drift test).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use microvm_codegen::options::spec::{runner_spec_fields, schema_fields, spec_field_of};
use microvm_codegen::options::{self, OptionTree};
use microvm_codegen::spec::Hypervisor;

fn modules() -> PathBuf {
    common::repo_root().join("nixos-modules")
}

fn tree() -> OptionTree {
    let (tree, problems) = OptionTree::read(&[modules()]).expect("nixos-modules is readable");
    assert!(problems.is_empty(), "{problems:?}");
    tree
}

/// `mkOption {` and `mkEnableOption "…"` calls, counted over the text without a Nix parser:
/// comments are dropped, then the calls are found by name.
fn count_option_calls(text: &str) -> usize {
    let mut count = 0;
    for line in text.lines() {
        let code = match line.find('#') {
            Some(at) if at == 0 || line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        };
        for (name, openers) in [
            ("mkOption", &['{'][..]),
            ("mkEnableOption", &['"', '('][..]),
        ] {
            let mut rest = code;
            while let Some(at) = rest.find(name) {
                let before = rest[..at].chars().last();
                let after = rest[at + name.len()..].trim_start();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && after.starts_with(openers)
                {
                    count += 1;
                }
                rest = &rest[at + name.len()..];
            }
        }
    }
    count
}

/// One module knows the parser crates (DESIGN.md): the rest works on its syntax tree.
#[test]
fn only_nix_syntax_names_rnix_and_rowan() {
    let src = common::repo_root().join("codegen/src");
    let files = common::files_with_extension(&src, "rs");
    let wrapper = src.join("nix_syntax.rs");
    assert!(files.contains(&wrapper));
    for file in files.iter().filter(|f| **f != wrapper) {
        let text = std::fs::read_to_string(file).unwrap();
        for name in ["rnix::", "rowan::", "use rnix", "use rowan"] {
            assert!(
                !text.contains(name),
                "{} names {name}; only nix_syntax.rs may",
                file.display()
            );
        }
    }
}

#[test]
fn counting_finds_calls_not_mentions() {
    let text = "# a mkOption { in a comment\n\
                inherit (lib) mkOption mkEnableOption;\n\
                a = mkOption { };\n\
                b = lib.mkOption {\n\
                c = lib.mkEnableOption \"c\"; d = mkEnableOption (x);\n\
                e = mymkOption { };";
    assert_eq!(count_option_calls(text), 4);
}

#[test]
fn one_option_per_mk_option_call_including_submodules() {
    let files = common::files_with_extension(&modules(), "nix");
    let calls: usize = files
        .iter()
        .map(|f| count_option_calls(&std::fs::read_to_string(f).unwrap()))
        .sum();
    let tree = tree();
    assert_eq!(
        tree.options.len(),
        calls,
        "the option tree has {} options, the modules {calls} mkOption calls",
        tree.options.len()
    );
    // The ones inside submodules are there, with their paths.
    for name in [
        "microvm.shares.*.tag",
        "microvm.volumes.*.image",
        "microvm.interfaces.*.macvtap.mode",
        "microvm.forwardPorts.*.host.port",
        "microvm.qemu.pcieRootPorts.*.chassis",
        "microvm.vms.<name>.config",
        "microvm.vms.<name>.autostart",
    ] {
        assert!(tree.get(name).is_some(), "{name} is missing");
    }
    assert!(tree.options.iter().all(|o| o.name.starts_with("microvm.")));
    let names: BTreeSet<&str> = tree.options.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names.len(),
        tree.options.len(),
        "no option is declared twice"
    );
}

#[test]
fn what_the_tree_knows_about_an_option() {
    let tree = tree();
    let hypervisor = tree.get("microvm.hypervisor").unwrap();
    assert_eq!(
        hypervisor.file,
        modules().join("microvm/options.nix").display().to_string()
    );
    let text = std::fs::read_to_string(modules().join("microvm/options.nix")).unwrap();
    let line = text.lines().nth(hypervisor.line - 1).unwrap();
    assert!(
        line.trim_start().starts_with("hypervisor = mkOption"),
        "{line}"
    );
    // The enum's values come from lib/hypervisors.nix through `import`; they are the
    // generator's hypervisors, in the same order.
    let expected: Vec<String> = Hypervisor::ALL
        .iter()
        .map(|h| h.name().to_owned())
        .collect();
    assert_eq!(
        hypervisor.ty,
        options::OptionType::Enum {
            values: Some(expected),
            text: "microvmLib.hypervisors".into()
        }
    );
    assert_eq!(
        hypervisor.default,
        Some(options::DefaultValue::Literal("\"qemu\"".into()))
    );
    let kernel = tree.get("microvm.kernel").unwrap();
    assert_eq!(
        kernel.default,
        Some(options::DefaultValue::Documented(
            "config.boot.kernelPackages.kernel".into()
        ))
    );
    assert_eq!(kernel.ty.to_string(), "package");
    assert_eq!(
        tree.get("microvm.volumes").unwrap().ty.to_string(),
        "listOf submodule"
    );
    assert_eq!(
        tree.get("microvm.vms.<name>.config")
            .unwrap()
            .ty
            .to_string(),
        "nullOr deferredModule"
    );
    assert!(tree.get("microvm.runnerSpec").unwrap().read_only);
    // Writable, as in microvm.nix.
    assert!(!tree.get("microvm.runner").unwrap().read_only);
    assert!(
        tree.removed
            .iter()
            .any(|r| r.name == "microvm.balloonMem" && r.message.contains("microvm.balloon")),
        "{:?}",
        tree.removed
    );
}

fn codegen_in_repo(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_microvm-codegen"))
        .args(args)
        .current_dir(common::repo_root())
        .output()
        .expect("microvm-codegen runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn committed_reference_is_current() {
    for (format, file) in [("markdown", "doc/options.md"), ("json", "doc/options.json")] {
        let generated = codegen_in_repo(&["options", "--format", format, "nixos-modules"]);
        let committed = std::fs::read_to_string(common::repo_root().join(file)).unwrap_or_default();
        assert!(
            generated == committed,
            "{file} is stale: run `{}`",
            options::doc::REGENERATE
        );
    }
    // The reference lint embeds is that file, and it parses.
    assert_eq!(
        options::REFERENCE_JSON,
        std::fs::read_to_string(common::repo_root().join("doc/options.json")).unwrap()
    );
    assert!(options::reference().get("microvm.vcpu").is_some());
}

/// Options of the guest module that do not reach the runner spec as a field of their own.
const GUEST_ONLY: &[(&str, &str)] = &[
    (
        "ephemeral",
        "the default of volumes.*.ephemeral, which reaches each volume",
    ),
    // Packages reach the spec as program paths in `tools`.
    ("alioth.package", "a path in tools"),
    ("cloud-hypervisor.package", "a path in tools"),
    ("crosvm.package", "a path in tools"),
    ("firecracker.package", "a path in tools"),
    ("kvmtool.package", "a path in tools"),
    ("qemu.package", "a path in tools"),
    ("stratovirt.package", "a path in tools"),
    ("vfkit.package", "a path in tools"),
    ("virtiofsd.package", "a path in tools"),
    (
        "graphics.crosvmPackage",
        "a path in tools (crosvm, for graphics on cloud-hypervisor)",
    ),
    ("vmHostPackages", "where the tools come from"),
    ("codegen.package", "the generator that reads the spec"),
    // What is built from the spec, and the spec itself.
    ("runner", "built from the spec"),
    ("declaredRunner", "built from the spec"),
    ("runnerSpec", "the spec itself"),
    // The guest's own configuration.
    ("guest.enable", "guest modules on or off"),
    ("optimize.enable", "guest closure and boot settings"),
    ("registerClosure", "guest Nix database at boot"),
    ("writableStoreOverlay", "guest mount"),
    ("vsock.ssh.enable", "guest sshd on vsock"),
    ("services.<name>.command", "a guest systemd service"),
    ("services.<name>.preStart", "a guest systemd service"),
    ("services.<name>.env", "a guest systemd service"),
    ("services.<name>.user", "a guest systemd service"),
    ("services.<name>.restart", "a guest systemd service"),
    ("healthChecks.<name>.healthCmd", "a guest service and timer"),
    (
        "healthChecks.<name>.healthIntervalSecs",
        "a guest service and timer",
    ),
    (
        "healthChecks.<name>.healthTimeoutSecs",
        "a guest service and timer",
    ),
    (
        "healthChecks.<name>.startupGraceSecs",
        "a guest service and timer",
    ),
    (
        "healthChecks.<name>.critical",
        "the guest's microvm-ready.service",
    ),
    (
        "readiness.enable",
        "reaches the spec as vsock.notify (with readiness.port)",
    ),
    ("readiness.port", "reaches the spec as vsock.notify.port"),
    ("deploy.installOnHost", "deployment scripts"),
    ("deploy.rebuild", "deployment scripts"),
    ("deploy.sshSwitch", "deployment scripts"),
    // How the store disk is built; the spec gets the image (`storeDisk`), or null.
    ("storeDiskType", "store disk build"),
    ("storeDiskErofsFlags", "store disk build"),
    ("storeDiskSquashfsFlags", "store disk build"),
    ("storeOnDisk", "decides whether storeDisk is null"),
    ("bootDisk", "no runner boots from it yet"),
    (
        "registerWithMachined",
        "accepted for microvm.nix configurations; no effect yet",
    ),
];

/// Runner spec fields that no guest option fills directly.
const SPEC_ONLY: &[(&str, &str)] = &[
    ("specVersion", "the format's version"),
    ("hostName", "networking.hostName"),
    ("system", "the guest's platform"),
    ("tools", "program paths from the package options"),
    ("host", "the host module's user and group"),
    (
        "qemu.sandbox",
        "from the qemu build's seccomp support and bridge interfaces",
    ),
    ("vsock.notify", "microvm.readiness"),
];

/// Options that have no options below them (a list of submodules is not a field itself).
fn leaf_options<'t>(tree: &'t OptionTree, file_prefix: &str) -> BTreeSet<&'t str> {
    tree.options
        .iter()
        .filter(|o| {
            o.file.starts_with(file_prefix)
                && !tree
                    .options
                    .iter()
                    .any(|other| other.loc.len() > o.loc.len() && other.loc.starts_with(&o.loc))
        })
        .map(|o| o.name.as_str())
        .collect()
}

fn listed(list: &[(&str, &str)], field: &str) -> bool {
    list.iter()
        .any(|(name, _)| field == *name || field.starts_with(&format!("{name}.")))
}

/// Every leaf option maps to a spec field (`to_field`), every spec field to an option, except
/// the listed ones; and every listed entry is really one-sided.
fn assert_in_step(
    options: &BTreeSet<&str>,
    to_field: impl Fn(&str) -> String,
    fields: &BTreeSet<String>,
    option_only: &[(&str, &str)],
    spec_only: &[(&str, &str)],
    spec: &str,
) {
    let mapped: BTreeSet<String> = options.iter().map(|o| to_field(o)).collect();
    for option in options {
        let field = to_field(option);
        if listed(option_only, &field) {
            assert!(
                !fields.contains(&field),
                "{option} is listed as not reaching the {spec}, but the {spec} has `{field}`"
            );
        } else {
            assert!(
                fields.contains(&field),
                "{option} reaches no {spec} field `{field}`: add the field to the spec types, \
                 or list the option (with why) among the options that do not reach it"
            );
        }
    }
    for field in fields {
        if listed(spec_only, field) {
            assert!(
                !mapped.contains(field),
                "`{field}` is listed as {spec}-only, but an option fills it"
            );
        } else {
            assert!(
                mapped.contains(field),
                "the {spec} field `{field}` has no option: declare one, or list the field \
                 (with why) among the {spec}-only fields"
            );
        }
    }
    for (name, _) in option_only {
        assert!(
            mapped.contains(*name),
            "listed option {name} does not exist"
        );
    }
    for (name, _) in spec_only {
        assert!(
            fields.iter().any(|f| listed(&[(name, "")], f)),
            "listed {spec} field {name} does not exist"
        );
    }
}

#[test]
fn guest_options_and_runner_spec_fields_do_not_drift() {
    let tree = tree();
    let prefix = modules().join("microvm").display().to_string();
    let options = leaf_options(&tree, &prefix);
    assert!(options.len() > 50, "{options:?}");
    assert_in_step(
        &options,
        |o| spec_field_of(o).unwrap_or(o).to_owned(),
        &runner_spec_fields(),
        GUEST_ONLY,
        SPEC_ONLY,
        "runner spec",
    );
}

/// Host options that do not reach the host spec as a field of their own.
const HOST_ONLY: &[(&str, &str)] = &[
    ("enable", "host module on or off"),
    ("codegenPackage", "the generator that reads the host spec"),
    ("spec", "the host spec itself"),
    ("package", "built from the host spec"),
    ("evalGuest", "how a guest is evaluated"),
    (
        "evaluatorPlugin.enable",
        "the host's Nix settings (nix.settings.plugin-files)",
    ),
    (
        "evaluatorPlugin.package",
        "the host's Nix settings (nix.settings.plugin-files)",
    ),
    // A declared VM reaches the host spec as its runner and toplevel.
    ("vms.<name>.config", "evaluated into runner and toplevel"),
    (
        "vms.<name>.evaluatedConfig",
        "evaluated into runner and toplevel",
    ),
    (
        "vms.<name>.extraModules",
        "evaluated into runner and toplevel",
    ),
    ("vms.<name>.nixpkgs", "evaluated into runner and toplevel"),
    ("vms.<name>.pkgs", "evaluated into runner and toplevel"),
    (
        "vms.<name>.specialArgs",
        "evaluated into runner and toplevel",
    ),
    ("vms.<name>.autostart", "collected into autostart"),
    // A CI runner pool becomes declared VMs (ci-runners.nix) and their units' credentials.
    ("ciRunners.<name>.kind", "made into declared VMs"),
    ("ciRunners.<name>.url", "made into declared VMs"),
    ("ciRunners.<name>.tokenFile", "made into declared VMs"),
    ("ciRunners.<name>.count", "made into declared VMs"),
    ("ciRunners.<name>.labels", "made into declared VMs"),
    ("ciRunners.<name>.hypervisor", "made into declared VMs"),
    ("ciRunners.<name>.vcpu", "made into declared VMs"),
    ("ciRunners.<name>.mem", "made into declared VMs"),
    ("ciRunners.<name>.scratchSize", "made into declared VMs"),
    ("ciRunners.<name>.vsockCidBase", "made into declared VMs"),
    ("ciRunners.<name>.extraModules", "made into declared VMs"),
    // Issue 16: overrides are evaluated into the guest, capacity becomes assertions.
    (
        "vms.<name>.overrides.vcpu",
        "evaluated into runner and toplevel",
    ),
    (
        "vms.<name>.overrides.mem",
        "evaluated into runner and toplevel",
    ),
    (
        "vms.<name>.overrides.hypervisor",
        "evaluated into runner and toplevel",
    ),
    (
        "vms.<name>.overrides.interfaces",
        "evaluated into runner and toplevel",
    ),
    (
        "vms.<name>.overrides.volumes",
        "evaluated into runner and toplevel",
    ),
    (
        "vms.<name>.overrides.shares",
        "evaluated into runner and toplevel",
    ),
    ("capacity.memMiB", "an evaluation-time assertion"),
    ("capacity.reserveMiB", "an evaluation-time assertion"),
    ("capacity.vcpus", "an evaluation-time assertion"),
    ("capacity.vcpuRatio", "an evaluation-time assertion"),
    ("guests", "the evaluated guests the runners come from"),
    ("placement", "read by lib.fleet's description"),
];

/// Host spec fields no host option fills directly.
const HOST_SPEC_ONLY: &[(&str, &str)] = &[
    ("specVersion", "the format's version"),
    ("user", "the host module's fixed user"),
    ("group", "the host module's fixed group"),
    ("tools", "program paths"),
    ("vms.<name>.runner", "built from the guest's configuration"),
    (
        "vms.<name>.toplevel",
        "built from the guest's configuration",
    ),
    (
        "vms.<name>.notify",
        "from the guest's microvm.readiness.enable",
    ),
    (
        "vms.<name>.writablePaths",
        "from the guest's volumes and shares",
    ),
];

#[test]
fn host_options_and_host_spec_fields_do_not_drift() {
    let tree = tree();
    let prefix = modules().join("host").display().to_string();
    let options = leaf_options(&tree, &prefix);
    let schema =
        serde_json::to_value(schemars::schema_for!(microvm_codegen::host::HostSpec)).unwrap();
    assert_in_step(
        &options,
        |o| {
            let o = o.strip_prefix("microvm.").unwrap_or(o);
            o.strip_prefix("host.").unwrap_or(o).to_owned()
        },
        &schema_fields(&schema),
        HOST_ONLY,
        HOST_SPEC_ONLY,
        "host spec",
    );
}
