//! The names of the host's units, in one place: the generator writes them, `microvm` stops,
//! restarts and reads the logs of them.

use crate::templates;

/// The unit that runs VM `name`.
pub fn vm_unit(name: &str) -> String {
    format!("microvm@{name}.service")
}

/// The unit that installs declared VM `name` into its directory (declared VMs only).
pub fn install_unit(name: &str) -> String {
    format!("install-microvm-{name}.service")
}

/// The drop-in of declared VM `name`, relative to the unit directory.
pub fn declared_drop_in(name: &str) -> String {
    format!("{}.d/50-declared.conf", vm_unit(name))
}

/// The template units every host gets, one instance of each per VM (`microvm@.service`,
/// `microvm-tap-interfaces@.service`, …): the unit templates whose names are systemd template
/// names.
pub fn templates() -> impl Iterator<Item = &'static str> {
    templates::UNIT_TEMPLATES
        .iter()
        .map(|(template, _)| *template)
        .filter(|template| template.ends_with("@.service"))
}

/// What comes before the `@` of each template unit besides `microvm@.service` itself: the units
/// that set up around a VM (taps, macvtaps, PCI devices, virtiofsd, the booted record).
pub fn helper_prefixes() -> Vec<&'static str> {
    templates()
        .filter_map(|template| template.strip_suffix("@.service"))
        .filter(|prefix| *prefix != "microvm")
        .collect()
}

/// Every unit of VM `name`: its instance of each template unit, and its install unit (which
/// only declared VMs have).
pub fn vm_units(name: &str) -> Vec<String> {
    templates()
        .map(|template| template.replace("@.", &format!("@{name}.")))
        .chain([install_unit(name)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_of_a_vm() {
        assert_eq!(
            vm_units("web"),
            [
                "microvm@web.service",
                "microvm-tap-interfaces@web.service",
                "microvm-macvtap-interfaces@web.service",
                "microvm-pci-devices@web.service",
                "microvm-virtiofsd@web.service",
                "microvm-set-booted@web.service",
                "install-microvm-web.service",
            ]
        );
        assert_eq!(vm_units("web")[0], vm_unit("web"));
    }
}
