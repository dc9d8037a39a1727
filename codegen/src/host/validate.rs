//! Checks on a host spec. Every value ends up in a systemd unit or a host script; unit settings
//! have no quoting for most keys, so names and paths keep to characters that mean themselves.

use crate::diagnostic::Diagnostic;
use crate::host::spec::{HOST_SPEC_VERSION, HostSpec, HostTool};
use crate::path;
use crate::render::is_special_in_units;

fn code(name: &str) -> String {
    format!("microvm::host::{name}")
}

/// A VM name: it becomes a systemd instance name, a directory name and a unit name.
pub fn is_vm_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 64
}

/// A path that means itself in a unit file and a shell word: absolute, and no character
/// [`is_special_in_units`].
pub fn is_plain_path(path: &str) -> bool {
    path.starts_with('/') && !path.chars().any(is_special_in_units)
}

/// A path as systemd's `path_is_normalized` wants it: no `.` or `..` component and no `//`.
/// systemd refuses a `WorkingDirectory=` with `..` (the unit does not start) and ignores such a
/// `ReadWritePaths=` entry; it tidies `.` and `//` itself, but one spelling per path is what a
/// reader (and a comparison of paths) expects.
pub fn is_normalized_path(path: &str) -> bool {
    !path.contains("//") && !path.split('/').any(|part| part == "." || part == "..")
}

/// What a path reads as with `.`, `..` and empty components taken by their text, for a hint:
/// `/var/../etc` reads as `/etc` (unless `/var` is a link, which is why it is only a hint).
fn as_read(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The state directory: VM directories are `<stateDir>/<name>` in units and scripts, so besides
/// being normalised it has no trailing `/` (which would make `//`) and is not `/` itself.
fn is_state_dir(path: &str) -> bool {
    is_normalized_path(path) && !path.ends_with('/')
}

pub fn validate(spec: &HostSpec) -> Vec<Diagnostic> {
    let mut findings = Vec::new();
    if spec.spec_version != HOST_SPEC_VERSION {
        findings.push(
            Diagnostic::error(
                code("version"),
                format!("host spec version {} is not supported", spec.spec_version),
            )
            .at(path!["specVersion"])
            .help("build the host spec and the generator from the same microvm flake revision"),
        );
    }
    if !is_plain_path(&spec.state_dir) {
        findings.push(
            Diagnostic::error(code("state_dir"), format!("stateDir {:?} is not a plain absolute path", spec.state_dir))
                .at(path!["stateDir"])
                .help("use an absolute path without whitespace, quotes, '$', '%' or '\\': it appears in unit files"),
        );
    } else if !is_state_dir(&spec.state_dir) {
        findings.push(
            Diagnostic::error(code("state_dir"), format!("stateDir {:?} is not a normalised path", spec.state_dir))
                .at(path!["stateDir"])
                .help(format!(
                    "write it without `.` or `..` components, `//` or a trailing `/` (perhaps {:?}): it begins WorkingDirectory= and other paths of the VMs' units, and systemd refuses a `..` there, so no VM would start",
                    as_read(&spec.state_dir)
                )),
        );
    }
    for (field, value) in [("user", &spec.user), ("group", &spec.group)] {
        if !is_vm_name(value) {
            findings.push(
                Diagnostic::error(
                    code("owner"),
                    format!("{field} {value:?} is not a valid user or group name"),
                )
                .at(path![field]),
            );
        }
    }
    if spec.startup_timeout == 0 || spec.shutdown_timeout == 0 {
        findings.push(
            Diagnostic::error(code("timeout"), "timeouts must be at least one second").at(path![
                if spec.startup_timeout == 0 {
                    "startupTimeout"
                } else {
                    "shutdownTimeout"
                }
            ]),
        );
    }
    for (i, name) in spec.autostart.iter().enumerate() {
        if !is_vm_name(name) {
            findings.push(
                Diagnostic::error(code("vm_name"), format!("{name:?} is not a valid VM name"))
                    .at(path!["autostart", i])
                    .help("VM names take letters, digits, '-', '_' and '.', and start with a letter or digit"),
            );
        }
    }
    for (name, vm) in &spec.vms {
        if !is_vm_name(name) {
            findings.push(
                Diagnostic::error(code("vm_name"), format!("{name:?} is not a valid VM name"))
                    .at_key(path!["vms", name])
                    .help("VM names take letters, digits, '-', '_' and '.', and start with a letter or digit"),
            );
        }
        for (field, value) in [
            ("runner", Some(&vm.runner)),
            ("toplevel", vm.toplevel.as_ref()),
        ] {
            if let Some(value) = value
                && !is_plain_path(value)
            {
                findings.push(
                    Diagnostic::error(
                        code("path"),
                        format!("vms.{name}.{field} is not a plain absolute path"),
                    )
                    .at(path!["vms", name, field]),
                );
            }
        }
        for (i, value) in vm.writable_paths.iter().enumerate() {
            if !is_plain_path(value) {
                findings.push(
                    Diagnostic::error(
                        code("path"),
                        format!("{value:?} is not a plain absolute path"),
                    )
                    .at(path!["vms", name, "writablePaths", i])
                    .help("it becomes a ReadWritePaths= entry of the VM's unit"),
                );
            } else if !is_normalized_path(value) {
                findings.push(
                    Diagnostic::error(code("path"), format!("{value:?} is not a normalised path"))
                        .at(path!["vms", name, "writablePaths", i])
                        .help(format!(
                            "write it without `.` or `..` components or `//` (perhaps {:?}): it becomes a ReadWritePaths= entry of the VM's unit, and systemd ignores one with `..`, so the VM could not write there",
                            as_read(value)
                        )),
                );
            }
        }
        if vm.toplevel.is_some() && (vm.flake.is_some() || vm.update_flake.is_some()) {
            findings.push(
                Diagnostic::error(
                    code("vm_source"),
                    format!("vms.{name} is both fully declarative and from a flake"),
                )
                .at(path!["vms", name])
                .help("set microvm.vms.<name>.config, or .flake (with .updateFlake), not both"),
            );
        }
    }
    for &tool in HostTool::ALL {
        match spec.tools.get(tool) {
            None => findings.push(
                Diagnostic::error(
                    code("missing_tool"),
                    format!("tools.{} is missing", tool.name()),
                )
                .at(path!["tools"])
                .help("the host scripts call every host tool by absolute path"),
            ),
            Some(value) if !is_plain_path(value) => findings.push(
                Diagnostic::error(
                    code("tool_path"),
                    format!("tools.{} is not a plain absolute path", tool.name()),
                )
                .at(path!["tools", tool.name()]),
            ),
            Some(_) => {}
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Renderer;

    #[test]
    fn state_dirs_and_paths_are_taken_only_normalised() {
        for (path, state_dir, normalized) in [
            ("/var/lib/microvms", true, true),
            ("/var/lib/microvms.d/..x", true, true),
            ("/var/lib/microvms/", false, true),
            ("/", false, true),
            ("/var/../etc", false, false),
            ("/var/lib/..", false, false),
            ("/var//lib", false, false),
            ("/var/./lib", false, false),
            ("/var/lib/.", false, false),
        ] {
            assert_eq!(is_state_dir(path), state_dir, "{path}");
            assert_eq!(is_normalized_path(path), normalized, "{path}");
        }
        assert_eq!(as_read("/var/../etc"), "/etc");
        assert_eq!(as_read("/var/./lib//microvms/"), "/var/lib/microvms");
        assert_eq!(as_read("/.."), "/");
    }

    /// What validation lets into a unit, rendering takes, and the other way round.
    #[test]
    fn validation_and_unit_rendering_refuse_the_same_characters() {
        let renderer = Renderer::new();
        for c in (0..=0x7f_u8)
            .map(char::from)
            .chain(['\u{a0}', '\u{2028}', 'é'])
        {
            let value = format!("/a{c}b");
            let rendered =
                renderer.render_unit("microvms.target", &serde_json::json!({ "wants": [value] }));
            assert_eq!(
                rendered.is_ok(),
                is_plain_path(&value),
                "{c:?}: rendered {rendered:?}"
            );
        }
    }
}
