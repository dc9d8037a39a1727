//! Every template by name: the constants the generator's modules render by, and the embedded
//! text the renderer loads. A module names a template here, never by its path, so neither the
//! hypervisors nor the unit builders depend on the renderer for a name.

macro_rules! templates {
    ($( $(#[doc = $doc:literal])* $name:ident = $path:literal; )*) => {
        $( $(#[doc = $doc])* pub const $name: &str = $path; )*
        /// Every template, by name, with its embedded text.
        pub const TEMPLATES: &[(&str, &str)] = &[
            $( ($path, include_str!(concat!("../../templates/", $path))), )*
        ];
    };
}

templates! {
    /// Shared first lines of every generated script.
    HEADER = "common/header.sh";
    HOST_STOP = "host/stop.sh";
    HOST_RUN_BOOTED = "host/run-booted.sh";
    HOST_SET_BOOTED = "host/set-booted.sh";
    HOST_UNSET_BOOTED = "host/unset-booted.sh";
    HOST_INSTALL = "host/install.sh";
    MICROVM_RUN = "runner/microvm-run.sh";
    /// Removes a stopped VM's ephemeral volume images.
    MICROVM_DISCARD = "runner/microvm-discard.sh";
    BIN_SCRIPT = "runner/bin-script.sh";
    VIRTIOFSD_RUN = "runner/virtiofsd-run.sh";
    TAP_UP = "net/tap-up.sh";
    TAP_DOWN = "net/tap-down.sh";
    MACVTAP_UP = "net/macvtap-up.sh";
    MACVTAP_DOWN = "net/macvtap-down.sh";
    PCI_SETUP = "net/pci-setup.sh";
    SHUTDOWN_OPTIONS = "common/shutdown-options.sh";
    BALLOON_OPTIONS = "common/balloon-options.sh";
    WAIT_UNTIL_GONE = "common/wait-until-gone.sh";
    /// `api`: curl on the VMM's HTTP socket (cloud-hypervisor, firecracker, vfkit).
    HTTP_API = "common/api.sh";
    CROSVM_SOCKET = "common/crosvm-socket.sh";
    QEMU_SHUTDOWN = "shutdown/qemu.sh";
    /// qemu and stratovirt: QMP `balloon`.
    QMP_BALLOON = "balloon/qmp.sh";
    CLOUD_HYPERVISOR_SHUTDOWN = "shutdown/cloud-hypervisor.sh";
    CLOUD_HYPERVISOR_BALLOON = "balloon/cloud-hypervisor.sh";
    CROSVM_SHUTDOWN = "shutdown/crosvm.sh";
    CROSVM_BALLOON = "balloon/crosvm.sh";
    FIRECRACKER_SHUTDOWN = "shutdown/firecracker.sh";
    FIRECRACKER_BALLOON = "balloon/firecracker.sh";
    KVMTOOL_BALLOON = "balloon/kvmtool.sh";
    VFKIT_SHUTDOWN = "shutdown/vfkit.sh";
}

/// systemd unit templates, named by the unit file they render to.
pub const UNIT_TEMPLATES: &[(&str, &str)] = &[
    (
        "microvm@.service",
        include_str!("../../templates/units/microvm@.service"),
    ),
    (
        "microvm-tap-interfaces@.service",
        include_str!("../../templates/units/microvm-tap-interfaces@.service"),
    ),
    (
        "microvm-macvtap-interfaces@.service",
        include_str!("../../templates/units/microvm-macvtap-interfaces@.service"),
    ),
    (
        "microvm-pci-devices@.service",
        include_str!("../../templates/units/microvm-pci-devices@.service"),
    ),
    (
        "microvm-virtiofsd@.service",
        include_str!("../../templates/units/microvm-virtiofsd@.service"),
    ),
    (
        "microvm-set-booted@.service",
        include_str!("../../templates/units/microvm-set-booted@.service"),
    ),
    (
        "microvms.target",
        include_str!("../../templates/units/microvms.target"),
    ),
    (
        "microvm-reconcile.service",
        include_str!("../../templates/units/microvm-reconcile.service"),
    ),
    (
        INSTALL_UNIT,
        include_str!("../../templates/units/install-microvm.service"),
    ),
    (
        DECLARED_DROP_IN,
        include_str!("../../templates/units/declared.conf"),
    ),
];
/// The per-VM install unit, rendered as `install-microvm-<name>.service`.
pub const INSTALL_UNIT: &str = "install-microvm.service";
/// The per-VM drop-in of declared VMs, rendered as `microvm@<name>.service.d/50-declared.conf`.
pub const DECLARED_DROP_IN: &str = "declared.conf";
