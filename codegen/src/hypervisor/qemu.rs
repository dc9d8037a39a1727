//! qemu: `qemu-system-<arch>` with direct kernel boot, virtio devices on the `microvm` machine
//! (virtio-mmio) where that suffices and PCI where a feature needs it, QMP as control socket.

use std::collections::BTreeMap;

use super::{Backend, Launch, MacvtapFdNumbers, Requirement, Word, kv, on_off, qemu_opt};
use crate::diagnostic::Diagnostic;
use crate::path;
use crate::spec::{
    DeviceBus, ForwardFrom, GraphicsBackend, ImageType, InterfaceType, RunnerSpec, ShareProto,
    System, Tool,
};
use crate::templates;

pub struct Qemu;

/// virtio-mmio transports of qemu's `microvm` machine: qemu 7.2 accepts 24 `virtio-*-device`s
/// and refuses the 25th ("No 'virtio-bus' bus found"). More devices than this need PCI.
pub const MICROVM_MMIO_TRANSPORTS: usize = 24;

/// The machine type: the spec's, or the default for the guest and its features.
pub fn machine(spec: &RunnerSpec) -> String {
    if let Some(machine) = &spec.qemu.machine {
        return machine.clone();
    }
    match spec.system {
        System::Aarch64Linux => "virt".to_owned(),
        // virtio-mem and a VGA device need a PC chipset.
        System::X86_64Linux if spec.hotplug_mem > 0 || spec.graphics.enable => "q35".to_owned(),
        System::X86_64Linux => "microvm".to_owned(),
    }
}

fn is_microvm_machine(machine: &str) -> bool {
    machine == "microvm" || machine.starts_with("microvm-")
}

fn virtio_device_count(spec: &RunnerSpec) -> usize {
    1 + usize::from(spec.store_disk.is_some())
        + spec.volumes.len()
        + spec.shares.len()
        + spec.interfaces.len()
        + usize::from(spec.balloon)
        + usize::from(spec.vsock.cid.is_some())
}

/// Whether virtio devices go on PCI (`-pci`) rather than virtio-mmio (`-device`).
pub fn uses_pci(spec: &RunnerSpec) -> bool {
    let machine = machine(spec);
    if !is_microvm_machine(&machine) {
        return true;
    }
    spec.graphics.enable
        || spec.hotplug_mem > 0
        || spec.devices.iter().any(|d| d.bus == DeviceBus::Pci)
        || virtio_device_count(spec) > MICROVM_MMIO_TRANSPORTS
}

fn dev(spec: &RunnerSpec, kind: &str) -> String {
    let suffix = if uses_pci(spec) { "pci" } else { "device" };
    format!("{kind}-{suffix}")
}

fn uses_kvm(spec: &RunnerSpec) -> bool {
    spec.cpu.is_none()
}

/// What backs guest memory: the main memory and the virtio-mem region alike, so that a
/// vhost-user daemon (virtiofsd) can map all of it and huge pages back all of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// qemu's default anonymous memory.
    Ram,
    /// A memfd shared with vhost-user daemons.
    Shared,
    /// Files in the hugetlbfs mount, shared too.
    Hugepages,
}

fn memory_kind(spec: &RunnerSpec) -> Memory {
    if spec.hugepage_mem {
        Memory::Hugepages
    } else if spec.shares.iter().any(|s| s.proto == ShareProto::Virtiofs) {
        Memory::Shared
    } else {
        Memory::Ram
    }
}

/// The memory backend object `id` of `size_mib`. The virtio-mem region (`hotplug`) is neither
/// preallocated nor reserved up front: virtio-mem discards preallocated memory again, and its
/// device preallocates each block it plugs instead (`prealloc=on` there).
fn memory_backend(spec: &RunnerSpec, id: &str, size_mib: u64, hotplug: bool) -> String {
    let size = format!("{size_mib}M");
    match memory_kind(spec) {
        Memory::Ram => opts(&format!("memory-backend-ram,id={id}"), [("size", size)]),
        Memory::Shared => opts(
            &format!("memory-backend-memfd,id={id}"),
            [("size", size), ("share", "on".to_owned())],
        ),
        Memory::Hugepages => {
            let mut o = vec![
                ("size", size),
                ("mem-path", "/dev/hugepages".to_owned()),
                ("share", "on".to_owned()),
            ];
            if hotplug {
                o.push(("reserve", "off".to_owned()));
            } else {
                o.push(("prealloc", "on".to_owned()));
            }
            opts(&format!("memory-backend-file,id={id}"), o)
        }
    }
}

fn tap_multi_queue(spec: &RunnerSpec) -> bool {
    spec.vcpu > 1 && uses_pci(spec)
}

/// Joins `key=value` pairs into qemu option syntax, escaping values.
fn opts<'a>(head: &str, pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    kv(
        head,
        pairs
            .into_iter()
            .map(|(key, value)| (key, qemu_opt(&value))),
    )
}

fn machine_opts(spec: &RunnerSpec, machine: &str) -> BTreeMap<String, String> {
    if let Some(custom) = &spec.qemu.machine_opts {
        return custom.clone();
    }
    let mut o = BTreeMap::new();
    let accel = if uses_kvm(spec) { "kvm" } else { "tcg" };
    o.insert("accel".to_owned(), accel.to_owned());
    match spec.system {
        System::X86_64Linux => {
            // ACPI carries the power button that `microvm-shutdown` presses.
            o.insert("acpi".to_owned(), "on".to_owned());
            o.insert("mem-merge".to_owned(), "on".to_owned());
            if is_microvm_machine(machine) {
                o.insert("pcie".to_owned(), on_off(uses_pci(spec)));
                o.insert("rtc".to_owned(), "on".to_owned());
                let usb =
                    spec.graphics.enable || spec.devices.iter().any(|d| d.bus == DeviceBus::Usb);
                o.insert("usb".to_owned(), on_off(usb));
                if uses_kvm(spec) {
                    // Under KVM the guest has kvm-clock; the legacy timers only cost exits.
                    // Emulated CPUs calibrate against the PIT, so TCG keeps them.
                    o.insert("pic".to_owned(), "off".to_owned());
                    o.insert("pit".to_owned(), "off".to_owned());
                }
            }
        }
        System::Aarch64Linux => {
            o.insert("gic-version".to_owned(), "max".to_owned());
        }
    }
    if memory_kind(spec) != Memory::Ram {
        o.insert("memory-backend".to_owned(), "mem".to_owned());
    }
    o
}

fn kernel_cmdline(spec: &RunnerSpec) -> String {
    let mut own: Vec<&str> = Vec::new();
    if spec.qemu.serial_console {
        own.push(super::uart_console(spec.system));
    }
    // reboot=t triple-faults instead of resetting, and -no-reboot turns that into an exit.
    own.extend(["reboot=t", "panic=-1"]);
    super::kernel_cmdline(spec, &own)
}

struct Args(Vec<Word>);

impl Args {
    fn push(&mut self, flag: &str, value: impl Into<String>) {
        self.0.push(Word::from(flag));
        self.0.push(Word::from(value.into()));
    }

    fn flag(&mut self, flag: &str) {
        self.0.push(Word::from(flag));
    }
}

/// Where systemd in the guest looks for credentials in qemu's fw_cfg.
const CREDENTIAL_PREFIX: &str = "opt/io.systemd.credentials/";
/// The longest fw_cfg file name qemu takes (FW_CFG_MAX_FILE_PATH without its NUL).
const FW_CFG_MAX_NAME: usize = 55;

impl Backend for Qemu {
    fn check(&self, spec: &RunnerSpec) -> Vec<Diagnostic> {
        let mut findings = Vec::new();
        let machine = machine(spec);
        if spec.hotplug_mem > 0 && is_microvm_machine(&machine) {
            findings.push(
                Diagnostic::error(
                    "microvm::qemu::hotplug_machine",
                    "qemu's microvm machine has no virtio-mem memory hotplug",
                )
                .at(path!["qemu", "machine"])
                .help("set qemu.machine = \"q35\" (or leave it unset), or hotplugMem = 0"),
            );
        }
        if spec.mem == 2048 {
            findings.push(
                Diagnostic::warning(
                    "microvm::qemu::mem_2048",
                    "qemu has been seen to hang with exactly 2048 MiB",
                )
                .at(path!["mem"])
                .help("use 2047 or 2049 if the guest hangs at boot"),
            );
        }
        // qemu refuses an -fw_cfg name longer than FW_CFG_MAX_FILE_PATH - 1 = 55 characters
        // ("name too long (max. 55 char)", qemu 7.2: softmmu/vl.c parse_fw_cfg), and a
        // credential's name follows the 27 of CREDENTIAL_PREFIX.
        for name in spec.credential_files.keys() {
            let length = CREDENTIAL_PREFIX.len() + name.len();
            if length > FW_CFG_MAX_NAME {
                findings.push(
                    Diagnostic::error(
                        "microvm::qemu::credential_name_length",
                        format!(
                            "the credential name {name:?} is too long for qemu: \
                             {CREDENTIAL_PREFIX}{name} has {length} characters, qemu takes \
                             {FW_CFG_MAX_NAME}"
                        ),
                    )
                    .at_key(path!["credentialFiles", name])
                    .help(format!(
                        "give it a name of at most {} characters",
                        FW_CFG_MAX_NAME - CREDENTIAL_PREFIX.len()
                    )),
                );
            }
        }
        if spec.graphics.vulkan.is_some() && spec.graphics.backend == GraphicsBackend::Cocoa {
            findings.push(
                Diagnostic::error(
                    "microvm::qemu::vulkan_backend",
                    "Vulkan translation needs the gtk or headless backend",
                )
                .at(path!["graphics", "vulkan"])
                .help("set graphics.backend = \"gtk\" or \"headless\", or graphics.vulkan = null"),
            );
        }
        findings
    }

    fn tools(&self, spec: &RunnerSpec) -> Vec<(Tool, String)> {
        let mut tools = vec![(Tool::Qemu, "hypervisor = \"qemu\" runs it".to_owned())];
        if spec.socket.is_some() {
            tools.push((
                Tool::Socat,
                "microvm-shutdown talks QMP through it".to_owned(),
            ));
        }
        if spec
            .forward_ports
            .iter()
            .any(|f| f.from == ForwardFrom::Guest)
        {
            tools.push((
                Tool::Socat,
                "forwardPorts from the guest connect to the host through it".to_owned(),
            ));
        }
        if spec
            .interfaces
            .iter()
            .any(|i| i.kind == InterfaceType::Bridge)
        {
            tools.push((
                Tool::QemuBridgeHelper,
                "bridge interfaces attach through it".to_owned(),
            ));
        }
        tools
    }

    fn launch(&self, spec: &RunnerSpec) -> Launch {
        let machine = machine(spec);
        let pci = uses_pci(spec);
        let mut a = Args(Vec::new());
        let mut requirements = Vec::new();
        let mut macvtap_fds = MacvtapFdNumbers::default();

        a.push("-name", opts("", [("guest", spec.host_name.clone())]));
        let mopts = machine_opts(spec, &machine);
        a.push(
            "-M",
            opts(
                &qemu_opt(&machine),
                mopts.iter().map(|(k, v)| (k.as_str(), v.clone())),
            ),
        );
        let mut memory = format!("{}M", spec.mem);
        if spec.hotplug_mem > 0 {
            memory.push_str(&format!(
                ",maxmem={}M",
                spec.mem.saturating_add(spec.hotplug_mem)
            ));
        }
        a.push("-m", memory);
        a.push("-smp", spec.vcpu.to_string());
        a.flag("-nodefaults");
        a.flag("-no-user-config");
        // The guest's reboot becomes an exit: the service manager restarts the VM if wanted.
        a.flag("-no-reboot");
        a.push("-kernel", spec.kernel.clone());
        a.push("-initrd", spec.initrd_path.clone());
        a.push("-append", kernel_cmdline(spec));
        if spec.qemu.serial_console {
            a.push("-chardev", "stdio,id=stdio,signal=off");
            a.push("-serial", "chardev:stdio");
        }
        a.push("-device", dev(spec, "virtio-rng"));

        if uses_kvm(spec) {
            requirements.push(Requirement::new(
                "/dev/kvm",
                true,
                "qemu needs read-write access to /dev/kvm because microvm.cpu is null (use KVM). Enable virtualisation and join the kvm group, or set microvm.cpu to emulate a CPU.".to_owned(),
            ));
            a.push(
                "-cpu",
                match spec.system {
                    // qemu crashes with SGX exposed on the microvm machine.
                    System::X86_64Linux => "host,+x2apic,-sgx",
                    System::Aarch64Linux => "host",
                },
            );
        } else if let Some(cpu) = &spec.cpu {
            a.push("-cpu", cpu.clone());
        }

        let machine_id = crate::machine_id::machine_id(spec);
        a.push("-smbios", opts("type=1", [("uuid", machine_id)]));

        if spec.qemu.sandbox
            && !spec
                .interfaces
                .iter()
                .any(|i| i.kind == InterfaceType::Bridge)
        {
            // The bridge helper is setuid and cannot run under qemu's seccomp filter.
            a.push("-sandbox", "on");
        }
        if let Some(user) = &spec.user {
            a.push("-run-with", opts("", [("user", user.clone())]));
        }

        if memory_kind(spec) == Memory::Hugepages {
            requirements.push(Requirement::hugepages());
        }
        if memory_kind(spec) != Memory::Ram {
            a.push("-object", memory_backend(spec, "mem", spec.mem, false));
        }

        if let Some(store) = &spec.store_disk {
            a.push(
                "-drive",
                opts(
                    "id=store,format=raw,read-only=on,if=none,aio=io_uring",
                    [("file", store.clone())],
                ),
            );
            a.push(
                "-device",
                format!("{},drive=store", dev(spec, "virtio-blk")),
            );
        }

        if let Some(socket) = &spec.socket {
            a.push(
                "-qmp",
                format!("unix:{},server=on,wait=off", qemu_opt(socket)),
            );
        }

        if spec.balloon {
            a.push(
                "-device",
                opts(
                    &format!("{},id=balloon0", dev(spec, "virtio-balloon")),
                    [
                        ("deflate-on-oom", on_off(spec.deflate_on_oom)),
                        ("free-page-reporting", "on".to_owned()),
                    ],
                ),
            );
        }

        if spec.hotplug_mem > 0 {
            a.push(
                "-object",
                memory_backend(spec, "vmem0", spec.hotplug_mem, true),
            );
            let mut device = format!(
                "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size={}M",
                spec.hotplugged_mem()
            );
            if memory_kind(spec) == Memory::Hugepages {
                // Plugging fails cleanly when huge pages run out, instead of the guest
                // faulting on memory that was never there.
                device.push_str(",prealloc=on");
            }
            a.push("-device", device);
        }

        for (i, volume) in spec.volumes.iter().enumerate() {
            let id = format!("vol{i}");
            let format = match volume.image_type {
                ImageType::Raw => "raw",
                ImageType::Qcow2 => "qcow2",
                ImageType::Vhd => "vpc",
                ImageType::Vhdx => "vhdx",
            };
            let mut drive = vec![
                ("format", format.to_owned()),
                ("file", volume.image.clone()),
                ("if", "none".to_owned()),
                ("aio", "io_uring".to_owned()),
                ("discard", "unmap".to_owned()),
                ("read-only", on_off(volume.read_only)),
            ];
            if volume.direct {
                drive.push(("cache", "none".to_owned()));
            }
            a.push("-drive", opts(&format!("id={id}"), drive));
            let mut device = vec![("drive", id)];
            if let Some(serial) = &volume.serial {
                device.push(("serial", serial.clone()));
            }
            a.push("-device", opts(&dev(spec, "virtio-blk"), device));
        }

        for (i, share) in spec.shares.iter().enumerate() {
            let id = format!("fs{i}");
            match share.proto {
                ShareProto::NineP => {
                    let mut fsdev = vec![
                        ("id", id.clone()),
                        ("path", share.source.clone()),
                        ("security_model", share.security_model.name().to_owned()),
                    ];
                    if share.read_only {
                        fsdev.push(("readonly", "on".to_owned()));
                    }
                    a.push("-fsdev", opts("local", fsdev));
                    a.push(
                        "-device",
                        opts(
                            &dev(spec, "virtio-9p"),
                            [("fsdev", id), ("mount_tag", share.tag.clone())],
                        ),
                    );
                }
                ShareProto::Virtiofs => {
                    let socket = share.socket.clone().unwrap_or_default();
                    a.push(
                        "-chardev",
                        opts("socket", [("id", id.clone()), ("path", socket)]),
                    );
                    a.push(
                        "-device",
                        opts(
                            &dev(spec, "vhost-user-fs"),
                            [("chardev", id), ("tag", share.tag.clone())],
                        ),
                    );
                }
            }
        }

        let multi_queue = tap_multi_queue(spec);
        let queues = if multi_queue { spec.vcpu } else { 1 };
        // A macvtap interface arrives as an open /dev/tapN descriptor; only taps need tun.
        if spec.tap_interfaces().next().is_some() {
            requirements.push(Requirement::tun());
        }
        // forwardPorts go to the first user interface: a second netdev with the same hostfwd
        // would fail to bind the host port.
        let forwarding = spec
            .interfaces
            .iter()
            .position(|i| i.kind == InterfaceType::User);
        for (i, interface) in spec.interfaces.iter().enumerate() {
            // qemu ids are letters, digits and `-._`, starting with a letter; an interface id
            // need only be an interface name (`1vm`, `vm@x`), so the netdev gets its own.
            let netdev_id = netdev_id(i);
            let mut netdev: Vec<(&str, String)> = vec![("id", netdev_id.clone())];
            let head = match interface.kind {
                InterfaceType::User => {
                    let forwards = if forwarding == Some(i) {
                        spec.forward_ports.as_slice()
                    } else {
                        &[]
                    };
                    for forward in forwards {
                        let proto = forward.proto.name();
                        match forward.from {
                            ForwardFrom::Host => netdev.push((
                                "hostfwd",
                                format!(
                                    "{proto}:{}:{}-{}:{}",
                                    forward.host.address,
                                    forward.host.port,
                                    forward.guest.address,
                                    forward.guest.port
                                ),
                            )),
                            // A command per connection: a chardev would connect only once, at
                            // start, and fail when the host service is not up yet.
                            ForwardFrom::Guest => netdev.push((
                                "guestfwd",
                                format!(
                                    "{proto}:{}:{}-cmd:{} - TCP:{}:{}",
                                    forward.guest.address,
                                    forward.guest.port,
                                    spec.tools.get(Tool::Socat).unwrap_or_default(),
                                    if forward.host.address.is_empty() {
                                        "127.0.0.1"
                                    } else {
                                        &forward.host.address
                                    },
                                    forward.host.port
                                ),
                            )),
                        }
                    }
                    "user"
                }
                InterfaceType::Bridge => {
                    netdev.push(("br", interface.bridge.clone().unwrap_or_default()));
                    netdev.push((
                        "helper",
                        spec.tools
                            .get(Tool::QemuBridgeHelper)
                            .unwrap_or_default()
                            .to_owned(),
                    ));
                    "bridge"
                }
                InterfaceType::Tap => {
                    netdev.push(("ifname", interface.id.clone()));
                    netdev.push(("script", "no".to_owned()));
                    netdev.push(("downscript", "no".to_owned()));
                    if multi_queue {
                        netdev.push(("queues", queues.to_string()));
                    }
                    "tap"
                }
                InterfaceType::Macvtap => {
                    let fds: Vec<String> = macvtap_fds
                        .open(&interface.id, queues)
                        .iter()
                        .map(u32::to_string)
                        .collect();
                    if fds.len() == 1 {
                        netdev.push(("fd", fds[0].clone()));
                    } else {
                        netdev.push(("fds", fds.join(":")));
                    }
                    "tap"
                }
            };
            if interface.tap.vhost {
                netdev.push(("vhost", "on".to_owned()));
                requirements.push(Requirement::vhost_net(i));
            }
            a.push("-netdev", opts(head, netdev));
            let mut device = vec![("netdev", netdev_id), ("mac", interface.mac.clone())];
            if pci {
                // No NIC boot ROM: the kernel is loaded directly.
                device.push(("romfile", String::new()));
            }
            if multi_queue && matches!(interface.kind, InterfaceType::Tap | InterfaceType::Macvtap)
            {
                device.push(("mq", "on".to_owned()));
                device.push((
                    "vectors",
                    spec.vcpu.saturating_mul(2).saturating_add(2).to_string(),
                ));
            }
            a.push("-device", opts(&dev(spec, "virtio-net"), device));
        }

        if let Some(cid) = spec.vsock.cid {
            requirements.push(Requirement::vhost_vsock());
            a.push(
                "-device",
                format!("{},guest-cid={cid}", dev(spec, "vhost-vsock")),
            );
        }

        for port in &spec.qemu.pcie_root_ports {
            let mut o = vec![("id", port.id.clone())];
            if let Some(bus) = &port.bus {
                o.push(("bus", bus.clone()));
            }
            if let Some(chassis) = port.chassis {
                o.push(("chassis", chassis.to_string()));
            }
            if let Some(slot) = &port.slot {
                o.push(("slot", slot.clone()));
            }
            if let Some(addr) = &port.addr {
                o.push(("addr", addr.clone()));
            }
            a.push("-device", opts("pcie-root-port", o));
        }
        let has_usb = spec.devices.iter().any(|d| d.bus == DeviceBus::Usb);
        let usb_controller = (has_usb || spec.graphics.enable) && !is_microvm_machine(&machine);
        if usb_controller {
            a.push("-device", "qemu-xhci");
        }
        for device in &spec.devices {
            match device.bus {
                DeviceBus::Pci => {
                    let mut text = opts(
                        "vfio-pci",
                        [
                            ("host", device.path.clone()),
                            ("multifunction", "on".to_owned()),
                        ],
                    );
                    let mut extra = Vec::new();
                    if let Some(id) = &device.qemu.id {
                        extra.push(("id", id.clone()));
                    }
                    if let Some(bus) = &device.qemu.bus {
                        extra.push(("bus", bus.clone()));
                    }
                    text = opts(&text, extra);
                    if let Some(raw) = &device.qemu.device_extra_args {
                        // Raw qemu option text by definition; commas separate options.
                        text.push(',');
                        text.push_str(raw);
                    }
                    a.push("-device", text);
                }
                DeviceBus::Usb => {
                    // The path is itself a list of usb-host options (vendorid=…,productid=…).
                    a.push("-device", format!("usb-host,{}", device.path));
                }
            }
        }

        for (name, file) in &spec.credential_files {
            a.push(
                "-fw_cfg",
                opts(
                    "",
                    [
                        ("name", format!("{CREDENTIAL_PREFIX}{name}")),
                        ("file", file.clone()),
                    ],
                ),
            );
        }

        if spec.graphics.enable {
            let g = &spec.graphics;
            let mut gpu = String::new();
            match g.backend {
                GraphicsBackend::Cocoa => {
                    a.push("-display", "cocoa");
                    gpu.push_str("virtio-gpu");
                }
                GraphicsBackend::Gtk => {
                    a.push("-display", "gtk,gl=on");
                    gpu.push_str("virtio-vga-gl");
                }
                GraphicsBackend::Headless => {
                    a.push("-display", "egl-headless");
                    gpu.push_str("virtio-gpu-gl");
                }
            }
            if let Some(vulkan) = g.vulkan {
                gpu = opts(
                    &gpu,
                    [
                        ("blob", "true".to_owned()),
                        ("hostmem", g.hostmem.clone()),
                        (vulkan.name(), "on".to_owned()),
                    ],
                );
            }
            a.push("-device", gpu);
            a.push("-device", "usb-tablet");
            a.push("-device", "usb-kbd");
        } else {
            a.push("-display", "none");
        }

        for arg in &spec.qemu.extra_args {
            a.0.push(Word::from(arg.clone()));
        }

        Launch {
            after_extra_args: Vec::new(),
            program: Tool::Qemu,
            args: a.0,
            requirements,
            macvtap_fds: macvtap_fds.opened(),
            steps: Vec::new(),
        }
    }

    fn tap_multi_queue(&self, spec: &RunnerSpec) -> bool {
        tap_multi_queue(spec)
    }

    fn shutdown_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        spec.socket.as_ref().map(|_| templates::QEMU_SHUTDOWN)
    }

    fn balloon_template(&self, spec: &RunnerSpec) -> Option<&'static str> {
        (spec.socket.is_some() && spec.balloon).then_some(templates::QMP_BALLOON)
    }
}

/// The id of the netdev of the `index`th interface: `microvm forward` names it to QMP's
/// `hostfwd_add`.
pub fn netdev_id(index: usize) -> String {
    format!("net{index}")
}
