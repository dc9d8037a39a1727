//! Everything a spec must satisfy beyond its JSON shape: the capability table, the mistakes
//! users make with names, paths, addresses and sizes, and the tools the runner will call.
//! Every finding is reported at once.

use crate::capabilities;
use crate::diagnostic::Diagnostic;
use crate::hypervisor::{self, VirtiofsServer};
use crate::json_path::JsonPath;
use crate::path;
use crate::runner;
use crate::spec::{
    DeviceBus, ForwardFrom, InterfaceType, MAX_MEM_MIB, MAX_VCPUS, RunnerSpec, Share, ShareProto,
    Tool, volume,
};
use crate::unique;

/// Linux interface names hold at most 15 bytes (IFNAMSIZ is 16 with the NUL).
pub const MAX_IFNAME_BYTES: usize = 15;
/// `sun_path` is 108 bytes with the NUL.
pub const MAX_UNIX_SOCKET_PATH_BYTES: usize = 107;
/// qemu's virtio-9p limit on `mount_tag` (MAX_TAG_LEN 32 with the NUL).
pub const MAX_9P_TAG_BYTES: usize = 31;
/// The virtio-fs device's `tag` field is 36 bytes.
pub const MAX_VIRTIOFS_TAG_BYTES: usize = 36;
/// virtio-blk carries a disk id (serial) of at most 20 bytes (VIRTIO_BLK_ID_BYTES): qemu cuts a
/// longer serial short without a word, crosvm and Virtualization.framework refuse it.
pub const MAX_DISK_SERIAL_BYTES: usize = 20;

pub fn validate(spec: &RunnerSpec) -> Vec<Diagnostic> {
    let mut findings = Vec::new();
    check_capabilities(spec, &mut findings);
    check_basics(spec, &mut findings);
    check_memory(spec, &mut findings);
    check_volumes(spec, &mut findings);
    check_disk_serials(spec, &mut findings);
    check_shares(spec, &mut findings);
    check_mount_points(spec, &mut findings);
    check_interfaces(spec, &mut findings);
    check_forward_ports(spec, &mut findings);
    check_sockets(spec, &mut findings);
    check_devices(spec, &mut findings);
    check_unique(spec, &mut findings);
    check_names(spec, &mut findings);
    check_argument_lengths(spec, &mut findings);
    findings.extend(hypervisor::backend(spec.hypervisor).check(spec));
    check_tools(spec, &mut findings);
    crate::diagnostic::sort(&mut findings);
    findings
}

fn code(name: &str) -> String {
    format!("microvm::validate::{name}")
}

fn check_capabilities(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    findings.extend(
        capabilities::refusals(spec)
            .into_iter()
            .map(Diagnostic::from),
    );
}

fn check_basics(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    if spec.host_name.is_empty() {
        findings.push(
            Diagnostic::error(code("host_name"), "the host name is empty")
                .at(path!["hostName"])
                .help("set networking.hostName in the guest configuration"),
        );
    }
    if spec.vcpu > MAX_VCPUS {
        findings.push(
            Diagnostic::error(
                code("vcpu"),
                format!("{} vCPUs is more than any hypervisor runs", spec.vcpu),
            )
            .at(path!["vcpu"])
            .help(format!("use at most {MAX_VCPUS}")),
        );
    }
    if spec.vcpu == 0 {
        findings.push(
            Diagnostic::error(code("vcpu"), "a VM needs at least one vCPU")
                .at(path!["vcpu"])
                .help("set vcpu = 1 or more"),
        );
    }
    for (field, value) in [("kernel", &spec.kernel), ("initrdPath", &spec.initrd_path)] {
        if value.is_empty() {
            findings.push(
                Diagnostic::error(code("empty_path"), format!("`{field}` is empty"))
                    .at(path![field])
                    .help("give the path of the file to boot"),
            );
        }
    }
    if let Some(machine_id) = &spec.machine_id
        && uuid::Uuid::try_parse(machine_id).is_err()
    {
        findings.push(
            Diagnostic::error(code("machine_id"), "machineId is not a UUID")
                .at(path!["machineId"])
                .label("expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
                .help("set machineId to a UUID, or to null to derive one from the host name"),
        );
    }
    if let Some(cid) = spec.vsock.cid {
        if cid < 3 {
            findings.push(
                Diagnostic::error(
                    code("vsock_cid_reserved"),
                    format!("vsock cid {cid} is reserved"),
                )
                .at(path!["vsock", "cid"])
                .label("0, 1 and 2 are reserved (2 is the host)")
                .help("pick a cid of 3 or more that no other VM on this host uses"),
            );
        } else if cid >= u64::from(u32::MAX) {
            findings.push(
                Diagnostic::error(
                    code("vsock_cid_range"),
                    format!("vsock cid {cid} is too large"),
                )
                .at(path!["vsock", "cid"])
                .help("vsock cids are 32-bit and 4294967295 is reserved"),
            );
        }
    }
    if let Some(notify) = &spec.vsock.notify {
        if spec.vsock.cid.is_none() {
            findings.push(
                Diagnostic::error(
                    code("vsock_notify_needs_cid"),
                    "guest readiness is sent over vsock, and this VM has no vsock device",
                )
                .at(path!["vsock", "notify"])
                .help("set microvm.vsock.cid (3 or more, unique on the host), or microvm.readiness.enable = false"),
            );
        }
        if notify.port == u32::MAX {
            findings.push(
                Diagnostic::error(
                    code("vsock_notify_port"),
                    "vsock port 4294967295 is reserved (VMADDR_PORT_ANY)",
                )
                .at(path!["vsock", "notify", "port"])
                .help("pick another port, such as 8888"),
            );
        }
    }
    for (field, value) in [("user", &spec.host.user), ("group", &spec.host.group)] {
        if value.is_empty() {
            findings.push(
                Diagnostic::error(code("host_owner"), format!("host.{field} is empty"))
                    .at(path!["host", field]),
            );
        }
    }
    let hostmem = &spec.graphics.hostmem;
    let digits = hostmem.trim_end_matches(['M', 'G']);
    if spec.graphics.enable
        && (digits.is_empty()
            || digits.len() + 1 != hostmem.len()
            || !digits.bytes().all(|b| b.is_ascii_digit()))
    {
        findings.push(
            Diagnostic::error(code("graphics_hostmem"), "graphics.hostmem is not a size")
                .at(path!["graphics", "hostmem"])
                .help("write a number with an M or G suffix, such as \"256M\""),
        );
    }
}

fn check_memory(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for (field, value) in [
        ("mem", spec.mem),
        ("hotplugMem", spec.hotplug_mem),
        ("hotpluggedMem", spec.hotplugged_mem.unwrap_or(0)),
        ("initialBalloonMem", spec.initial_balloon_mem),
    ] {
        if value > MAX_MEM_MIB {
            findings.push(
                Diagnostic::error(
                    code("mem_range"),
                    format!("{field} = {value} MiB is out of range"),
                )
                .at(path![field])
                .help(format!("sizes are in MiB; at most {MAX_MEM_MIB} (16 TiB)")),
            );
        }
    }
    if spec.mem == 0 {
        findings.push(
            Diagnostic::error(code("mem"), "a VM needs memory")
                .at(path!["mem"])
                .help("set mem to the guest's RAM in MiB, such as 512"),
        );
    } else if spec.mem < 32 {
        findings.push(
            Diagnostic::warning(
                code("mem_small"),
                format!("{} MiB is too little for NixOS", spec.mem),
            )
            .at(path!["mem"])
            .help("a NixOS guest needs at least 32 MiB, usually much more"),
        );
    }
    if let Some(plugged) = spec.hotplugged_mem
        && plugged > spec.hotplug_mem
    {
        findings.push(
            Diagnostic::error(
                code("hotplugged_mem"),
                format!(
                    "hotpluggedMem ({plugged} MiB) is larger than hotplugMem ({} MiB)",
                    spec.hotplug_mem
                ),
            )
            .at(path!["hotpluggedMem"])
            .help("plug at most the whole hotplug region: hotpluggedMem <= hotplugMem"),
        );
    }
    if spec.initial_balloon_mem > 0 && !spec.balloon {
        findings.push(
            Diagnostic::error(
                code("initial_balloon_without_balloon"),
                "initialBalloonMem is set but there is no balloon",
            )
            .at(path!["initialBalloonMem"])
            .help("set balloon = true, or initialBalloonMem = 0"),
        );
    }
    if spec.initial_balloon_mem > 0 && spec.initial_balloon_mem >= spec.mem {
        findings.push(
            Diagnostic::error(
                code("initial_balloon_too_large"),
                format!(
                    "initialBalloonMem ({} MiB) would take all of the guest's {} MiB",
                    spec.initial_balloon_mem, spec.mem
                ),
            )
            .at(path!["initialBalloonMem"])
            .help("keep initialBalloonMem below mem"),
        );
    }
}

fn check_volumes(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for (i, volume) in spec.volumes.iter().enumerate() {
        let at = |field: &str| path!["volumes", i, field];
        if volume.image.is_empty() {
            findings.push(
                Diagnostic::error(code("empty_path"), "a volume has an empty image path")
                    .at(at("image"))
                    .help("give the image file, relative to the VM's state directory or absolute"),
            );
        }
        if volume.ephemeral && !volume.auto_create && volume.contents_file.is_none() {
            findings.push(
                Diagnostic::error(
                    code("ephemeral_without_auto_create"),
                    "an ephemeral volume is made anew at every start, but autoCreate is false",
                )
                .at(at("ephemeral"))
                .help("set autoCreate = true (and a size), or ephemeral = false to keep the image"),
            );
        }
        if volume.contents_file.is_some() && !(volume.ephemeral && volume.read_only) {
            findings.push(
                Diagnostic::error(
                    code("contents_file_not_ephemeral"),
                    "a volume copied from contentsFile must be ephemeral and read-only",
                )
                .at(at("contentsFile"))
                .help("set ephemeral = true and readOnly = true on it: its copy is remade at every start and removed at stop"),
            );
        }
        if let Some(file) = &volume.contents_file
            && file.starts_with("/nix/store/")
        {
            findings.push(
                Diagnostic::error(
                    code("contents_file_in_store"),
                    "contentsFile is in the Nix store, which every local user can read",
                )
                .at(at("contentsFile"))
                .help("keep the secret outside the store, e.g. a systemd credential (/run/credentials/…) or /run/secrets/…"),
            );
        }
        if volume.gets_filesystem() {
            let known = volume::AUTO_CREATE_FILESYSTEMS
                .iter()
                .any(|(fs, _)| *fs == volume.fs_type);
            if !known {
                let names: Vec<&str> = volume::AUTO_CREATE_FILESYSTEMS
                    .iter()
                    .map(|(fs, _)| *fs)
                    .collect();
                findings.push(
                    Diagnostic::error(
                        code("volume_fs_type"),
                        format!(
                            "microvm-run cannot create a {:?} filesystem",
                            volume.fs_type
                        ),
                    )
                    .at(at("fsType"))
                    .help(format!(
                        "use one of {}, or create the image yourself and set autoCreate = false",
                        names.join(", ")
                    )),
                );
            }
            if volume.size.unwrap_or(0) == 0 {
                findings.push(
                    Diagnostic::error(code("volume_size"), "a volume to be created needs a size")
                        .at(at("size"))
                        .help("set size in MiB, or autoCreate = false for an existing image"),
                );
            }
        }
        if let (Some(label), Some(max)) = (&volume.label, volume::max_label_len(&volume.fs_type))
            && label.len() > max
        {
            findings.push(
                Diagnostic::error(
                    code("label_too_long"),
                    format!(
                        "label {label:?} is {} bytes; {} allows {max}",
                        label.len(),
                        volume.fs_type
                    ),
                )
                .at(at("label"))
                .help(format!("shorten the label to {max} bytes")),
            );
        }
    }
}

fn check_disk_serials(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    // Where the hypervisor has no serials at all, the capability table refuses them.
    if !capabilities::supports(spec.hypervisor, "volume.serial") {
        return;
    }
    for (i, volume) in spec.volumes.iter().enumerate() {
        if let Some(serial) = &volume.serial
            && serial.len() > MAX_DISK_SERIAL_BYTES
        {
            findings.push(
                Diagnostic::error(
                    code("serial_too_long"),
                    format!(
                        "disk serial {serial:?} is {} bytes; virtio-blk ids hold {MAX_DISK_SERIAL_BYTES}",
                        serial.len()
                    ),
                )
                .at(path!["volumes", i, "serial"])
                .help(format!("shorten the serial to {MAX_DISK_SERIAL_BYTES} bytes")),
            );
        }
    }
}

fn check_shares(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for (i, share) in spec.shares.iter().enumerate() {
        let at = |field: &str| path!["shares", i, field];
        if share.tag.is_empty() {
            findings.push(
                Diagnostic::error(code("share_tag"), "a share has an empty tag")
                    .at(at("tag"))
                    .help("give the share a short tag; the guest mounts it by that name"),
            );
        } else if share.tag == "." || share.tag == ".." || share.tag.contains('/') {
            findings.push(
                Diagnostic::error(
                    code("share_tag"),
                    format!("share tag {:?} is not a name", share.tag),
                )
                .at(at("tag"))
                .help(
                    "a tag is a short name without '/'; it names the share's files in the runner",
                ),
            );
        }
        let limit = match share.proto {
            ShareProto::NineP => MAX_9P_TAG_BYTES,
            ShareProto::Virtiofs => MAX_VIRTIOFS_TAG_BYTES,
        };
        if share.tag.len() > limit {
            findings.push(
                Diagnostic::error(
                    code("tag_too_long"),
                    format!(
                        "the {} tag {:?} is {} bytes; at most {limit} fit",
                        share.proto.name(),
                        share.tag,
                        share.tag.len()
                    ),
                )
                .at(at("tag"))
                .help(format!("shorten the tag to {limit} bytes")),
            );
        }
        if share.source.is_empty() {
            findings.push(
                Diagnostic::error(code("empty_path"), "a share has an empty source")
                    .at(at("source"))
                    .help("give the host directory to share"),
            );
        }
        if share.proto == ShareProto::Virtiofs
            && hypervisor::backend(spec.hypervisor).virtiofs_server() != VirtiofsServer::BuiltIn
            && share.socket.as_deref().is_none_or(str::is_empty)
        {
            findings.push(
                Diagnostic::error(code("share_socket"), "a virtiofs share needs a socket")
                    .at(at("socket"))
                    .help("set socket to a path for virtiofsd's vhost-user socket, such as \"<hostName>-virtiofs-<tag>.sock\""),
            );
        }
        check_posix_acl(spec, i, share, findings);
    }
}

/// virtiofsd refuses to translate ids (`--translate-uid`, `--translate-gid`) with POSIX ACLs on
/// ("Cannot use --translate-uid or --translate-gid with --posix-acl=always", virtiofsd 1.14's
/// `src/main.rs`), and `posixAcl` (the default) passes `--posix-acl`. The virtiofsd would exit
/// at every start. The Nix module asserts the same (nixos-modules/microvm/asserts.nix).
fn check_posix_acl(spec: &RunnerSpec, i: usize, share: &Share, findings: &mut Vec<Diagnostic>) {
    if share.proto != ShareProto::Virtiofs
        || !share.posix_acl
        || hypervisor::backend(spec.hypervisor).virtiofs_server() == VirtiofsServer::BuiltIn
    {
        return;
    }
    let everywhere = spec
        .virtiofsd
        .extra_args
        .iter()
        .enumerate()
        .map(|(j, arg)| (arg, path!["virtiofsd", "extraArgs", j]));
    let here = share
        .extra_args
        .iter()
        .enumerate()
        .map(|(j, arg)| (arg, path!["shares", i, "extraArgs", j]));
    for (arg, at) in everywhere.chain(here) {
        let Some(flag) = hypervisor::flag_name(arg, &[])
            .filter(|f| ["--translate-uid", "--translate-gid"].contains(f))
        else {
            continue;
        };
        findings.push(
            Diagnostic::error(
                code("share_posix_acl"),
                format!(
                    "the virtiofs share {:?} has posixAcl = true and {flag}, which virtiofsd refuses together",
                    share.tag
                ),
            )
            .at(at)
            .label("virtiofsd cannot translate ids and keep POSIX ACLs")
            .help(format!(
                "set shares[{i}].posixAcl = false to remap ids, or remove {flag} to keep ACLs"
            )),
        );
    }
}

fn check_mount_points(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    let volumes =
        spec.volumes.iter().enumerate().filter_map(|(i, v)| {
            Some((v.mount_point.as_deref()?, path!["volumes", i, "mountPoint"]))
        });
    let shares = spec
        .shares
        .iter()
        .enumerate()
        .map(|(i, s)| (s.mount_point.as_str(), path!["shares", i, "mountPoint"]));
    for (mount_point, at) in volumes.chain(shares) {
        if !mount_point.starts_with('/') {
            findings.push(
                Diagnostic::error(
                    code("mount_point"),
                    format!("mount point {mount_point:?} is not an absolute path"),
                )
                .at(at)
                .help("guest mount points are absolute, such as \"/var\""),
            );
        }
    }
}

/// Linux `dev_valid_name`: no `/`, `:` or whitespace, not `.` or `..`.
fn ifname_problem(name: &str) -> Option<String> {
    if name.len() > MAX_IFNAME_BYTES {
        return Some(format!(
            "is {} bytes; Linux allows {MAX_IFNAME_BYTES}",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Some("is not a valid Linux interface name".to_owned());
    }
    None
}

fn check_interfaces(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for (i, interface) in spec.interfaces.iter().enumerate() {
        let at = |field: &str| path!["interfaces", i, field];
        if interface.id.is_empty() {
            findings.push(
                Diagnostic::error(code("interface_id"), "an interface has an empty id")
                    .at(at("id"))
                    .help("give the interface an id; for taps it is the host interface name"),
            );
        }
        if matches!(interface.kind, InterfaceType::Tap | InterfaceType::Macvtap)
            && let Some(problem) = ifname_problem(&interface.id)
        {
            let long = interface.id.len() > MAX_IFNAME_BYTES;
            findings.push(
                Diagnostic::error(
                    code(if long {
                        "ifname_too_long"
                    } else {
                        "ifname_invalid"
                    }),
                    format!("interface id {:?} {problem}", interface.id),
                )
                .at(at("id"))
                .label("becomes the host interface name")
                .help(if long {
                    "shorten the id to 15 bytes, such as \"vm-<short name>\""
                } else {
                    "use letters, digits, '-' and '_' only"
                }),
            );
        }
        match parse_mac(&interface.mac) {
            None => findings.push(
                Diagnostic::error(
                    code("mac_malformed"),
                    format!("{:?} is not a MAC address", interface.mac),
                )
                .at(at("mac"))
                .label("expected six hex octets like 02:00:00:00:00:01")
                .help("use a locally administered address: first octet 02, 06, 0a or 0e"),
            ),
            Some(octets) => {
                if octets[0] & 1 == 1 {
                    findings.push(
                        Diagnostic::error(
                            code("mac_multicast"),
                            format!("{} is a multicast address", interface.mac),
                        )
                        .at(at("mac"))
                        .label("the low bit of the first octet is set")
                        .help(
                            "a NIC needs a unicast address: make the first octet even, such as 02",
                        ),
                    );
                } else if octets == [0; 6] {
                    findings.push(
                        Diagnostic::error(
                            code("mac_zero"),
                            "00:00:00:00:00:00 is not a usable address",
                        )
                        .at(at("mac"))
                        .help("use a locally administered address such as 02:00:00:00:00:01"),
                    );
                }
            }
        }
        match (interface.kind, &interface.bridge) {
            (InterfaceType::Bridge, None) => findings.push(
                Diagnostic::error(
                    code("interface_bridge"),
                    "a bridge interface needs `bridge`",
                )
                .at(path!["interfaces", i])
                .help("set bridge to the host bridge to attach to, such as \"br0\""),
            ),
            (InterfaceType::Bridge, Some(bridge)) if bridge.is_empty() => findings.push(
                Diagnostic::error(code("interface_bridge"), "`bridge` is empty")
                    .at(at("bridge"))
                    .help("set bridge to the host bridge to attach to, such as \"br0\""),
            ),
            (kind, Some(_)) if kind != InterfaceType::Bridge => findings.push(
                Diagnostic::error(
                    code("interface_bridge"),
                    format!("`bridge` is set on an interface of type {:?}", kind.name()),
                )
                .at(at("bridge"))
                .help("set type = \"bridge\", or remove bridge"),
            ),
            _ => {}
        }
        // vhost-net drives a tap or macvtap file descriptor; a user-mode or bridge-helper NIC
        // has none (qemu refuses vhost=on there). Hypervisors without vhost are refused by the
        // capability table instead.
        if interface.tap.vhost
            && !matches!(interface.kind, InterfaceType::Tap | InterfaceType::Macvtap)
            && capabilities::supports(spec.hypervisor, "interface.tap.vhost")
        {
            findings.push(
                Diagnostic::error(
                    code("interface_vhost"),
                    format!(
                        "tap.vhost is set on an interface of type {:?}",
                        interface.kind.name()
                    ),
                )
                .at(path!["interfaces", i, "tap", "vhost"])
                .label("vhost-net accelerates tap and macvtap interfaces only")
                .help("set tap.vhost = false, or type = \"tap\""),
            );
        }
        if interface.kind == InterfaceType::Macvtap {
            match &interface.macvtap {
                None => findings.push(
                    Diagnostic::error(
                        code("interface_macvtap"),
                        "a macvtap interface needs `macvtap.link` and `macvtap.mode`",
                    )
                    .at(path!["interfaces", i])
                    .help("set macvtap = { link = \"<host interface>\"; mode = \"bridge\"; }"),
                ),
                Some(macvtap) => {
                    if macvtap.link.is_empty() || ifname_problem(&macvtap.link).is_some() {
                        findings.push(
                            Diagnostic::error(
                                code("interface_macvtap"),
                                format!("macvtap link {:?} is not an interface name", macvtap.link),
                            )
                            .at(path!["interfaces", i, "macvtap", "link"])
                            .help("name the host interface the macvtap sits on, such as \"eth0\""),
                        );
                    }
                }
            }
        }
    }
}

/// Six colon-separated hex octets.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut octets = [0u8; 6];
    let mut parts = mac.split(':');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *octet = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(octets)
}

fn check_forward_ports(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    if spec.forward_ports.is_empty() {
        return;
    }
    let has_user = spec
        .interfaces
        .iter()
        .any(|i| i.kind == InterfaceType::User);
    if !has_user && capabilities::supports(spec.hypervisor, "forwardPorts") {
        findings.push(
            Diagnostic::error(
                code("forward_ports_without_user"),
                "forwardPorts needs a user-mode network interface",
            )
            .at(path!["forwardPorts"])
            .label("forwarded by qemu's user-mode network stack")
            .help("add an interface with type = \"user\", or forward on the host to a tap"),
        );
    }
    for (i, forward) in spec.forward_ports.iter().enumerate() {
        for (side, endpoint) in [("host", &forward.host), ("guest", &forward.guest)] {
            if endpoint.port == 0 || endpoint.port > 65535 {
                findings.push(
                    Diagnostic::error(
                        code("port_range"),
                        format!("port {} is not a TCP/UDP port", endpoint.port),
                    )
                    .at(path!["forwardPorts", i, side, "port"])
                    .help("ports are 1 to 65535"),
                );
            }
            if !endpoint.address.is_empty()
                && endpoint.address.parse::<std::net::Ipv4Addr>().is_err()
            {
                findings.push(
                    Diagnostic::error(
                        code("forward_address"),
                        format!("{:?} is not an IPv4 address", endpoint.address),
                    )
                    .at(path!["forwardPorts", i, side, "address"])
                    .help("user-mode forwarding is IPv4 only; use an address like 127.0.0.1, or \"\" for any"),
                );
            }
        }
        if forward.from == ForwardFrom::Guest && forward.guest.address.is_empty() {
            findings.push(
                Diagnostic::error(
                    code("forward_address"),
                    "a guest forward needs guest.address",
                )
                .at(path!["forwardPorts", i, "guest", "address"])
                .help("set the address in the user network the guest connects to, such as \"10.0.2.100\""),
            );
        }
    }
}

/// Socket paths end up in several address syntaxes (qemu `unix:`, socat `UNIX-CONNECT:`,
/// cloud-hypervisor `path=`) that have no common escaping, so they keep to a safe set.
fn is_socket_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '@' | '/' | '-')
}

fn check_socket_path(value: &str, at: JsonPath, findings: &mut Vec<Diagnostic>) {
    if value.is_empty() {
        findings.push(
            Diagnostic::error(code("empty_path"), "a socket path is empty")
                .at(at)
                .help("give a path, or null where the option allows it"),
        );
    } else if let Some(bad) = value.chars().find(|&c| !is_socket_path_char(c)) {
        findings.push(
            Diagnostic::error(
                code("socket_path_chars"),
                format!("socket path contains {bad:?}"),
            )
            .at(at)
            .label("socket paths take letters, digits and . _ + @ / - only")
            .help("the hypervisors' and socat's address syntaxes cannot carry other characters; rename the socket"),
        );
    } else if value.len() > MAX_UNIX_SOCKET_PATH_BYTES {
        findings.push(
            Diagnostic::error(
                code("socket_path_too_long"),
                format!(
                    "socket path is {} bytes; a unix socket path holds at most {MAX_UNIX_SOCKET_PATH_BYTES}",
                    value.len()
                ),
            )
            .at(at)
            .help("use a shorter path; a relative path is resolved in the VM's state directory"),
        );
    }
}

fn check_sockets(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    if let Some(socket) = &spec.socket {
        check_socket_path(socket, path!["socket"], findings);
    }
    for (i, share) in spec.shares.iter().enumerate() {
        let Some(socket) = &share.socket else {
            continue;
        };
        if share.proto != ShareProto::Virtiofs {
            continue;
        }
        check_socket_path(socket, path!["shares", i, "socket"], findings);
    }
    if spec.graphics.enable
        && let Some(socket) = &spec.graphics.socket
    {
        check_socket_path(socket, path!["graphics", "socket"], findings);
    }
}

fn is_pci_address(path: &str) -> bool {
    let bytes = path.as_bytes();
    let hex = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_hexdigit);
    bytes.len() == 12
        && hex(0..4)
        && bytes[4] == b':'
        && hex(5..7)
        && bytes[7] == b':'
        && hex(8..10)
        && bytes[10] == b'.'
        && (b'0'..=b'7').contains(&bytes[11])
}

fn check_devices(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for (i, device) in spec.devices.iter().enumerate() {
        match device.bus {
            DeviceBus::Pci if !is_pci_address(&device.path) => findings.push(
                Diagnostic::error(
                    code("pci_address"),
                    format!("{:?} is not a PCI address", device.path),
                )
                .at(path!["devices", i, "path"])
                .label("expected domain:bus:device.function")
                .help("write the full address as lspci -D prints it, such as \"0000:01:00.0\""),
            ),
            DeviceBus::Usb if device.path.is_empty() => findings.push(
                Diagnostic::error(code("usb_device"), "a USB device has an empty path")
                    .at(path!["devices", i, "path"])
                    .help(
                        "write a qemu usb-host spec such as \"vendorid=0x1234,productid=0x5678\"",
                    ),
            ),
            _ => {}
        }
    }
}

/// Values two elements must not share: the rules are [`unique`]'s, which `lint` follows too.
fn check_unique(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for duplicate in unique::duplicates(unique::values(spec)) {
        let rule = duplicate.rule;
        findings.push(
            Diagnostic::error(code(rule.code), duplicate.message)
                .at(duplicate.path)
                .label(format!("also {} {}", rule.verb, duplicate.first))
                .help(rule.help),
        );
    }
}

fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// A bin script is run by its name from a shell or a unit's `ExecStart=`: whitespace splits the
/// name there, and control characters (a newline) make a file nobody can type.
fn is_bin_script_name(name: &str) -> bool {
    is_file_name(name) && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// systemd looks credentials up by file name, and the ways to hand one to a guest separate
/// fields with `=` (`io.systemd.credential:NAME=…`), `:` (`systemd.set_credential=NAME:…`), `,`
/// (option lists) and whitespace (the kernel command line). Names keep to the characters all of
/// them carry.
fn is_credential_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+')
}

fn is_credential_name(name: &str) -> bool {
    is_file_name(name) && name.chars().all(is_credential_name_char)
}

fn check_names(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for (name, file) in &spec.credential_files {
        if !is_credential_name(name) {
            findings.push(
                Diagnostic::error(
                    code("credential_name"),
                    format!("{name:?} is not a valid credential name"),
                )
                .at_key(path!["credentialFiles", name])
                .label("credential names take letters, digits and . _ - @ + only")
                .help("rename the credential, such as \"ssh.authorized_keys.root\": spaces, newlines, '/', ':', '=' and ',' separate fields where credentials are passed"),
            );
        }
        if file.is_empty() {
            findings.push(
                Diagnostic::error(
                    code("empty_path"),
                    format!("credential {name:?} has no file"),
                )
                .at(path!["credentialFiles", name]),
            );
        }
    }
    let generated = runner::GENERATED_BIN_NAMES;
    for name in spec.bin_scripts.keys() {
        if !is_bin_script_name(name) {
            findings.push(
                Diagnostic::error(
                    code("bin_script_name"),
                    format!("{name:?} is not a command name"),
                )
                .at_key(path!["binScripts", name])
                .help("a bin script is installed as bin/<name> and run by that name: no '/', whitespace or control characters, not empty"),
            );
        } else if generated.contains(&name.as_str()) {
            findings.push(
                Diagnostic::error(
                    code("bin_script_collision"),
                    format!("binScripts.{name} would replace the generated bin/{name}"),
                )
                .at_key(path!["binScripts", name])
                .help("rename the script; extend generated scripts with preStart instead"),
            );
        }
    }
}

/// Every string in the spec with its path, for placing a finding about text built from them.
fn spec_strings(value: &serde_json::Value, path: JsonPath, out: &mut Vec<(JsonPath, String)>) {
    match value {
        serde_json::Value::String(s) => out.push((path, s.clone())),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                spec_strings(item, path.index(i), out);
            }
        }
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                spec_strings(member, path.key(key), out);
            }
        }
        _ => {}
    }
}

/// Linux refuses to start a program (`E2BIG`, "Argument list too long") when one argument or
/// environment string is longer than this: MAX_ARG_STRLEN, 32 pages of 4 KiB, the NUL included.
pub const MAX_ARG_BYTES: usize = 32 * 4096 - 1;

fn check_argument_lengths(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    let mut strings: Option<Vec<(JsonPath, String)>> = None;
    for word in runner::argument_words(spec) {
        let text: String = word
            .0
            .iter()
            .filter_map(|part| match part {
                hypervisor::Part::Lit(text) => Some(text.as_str()),
                hypervisor::Part::Var(_) => None,
            })
            .collect();
        if text.len() <= MAX_ARG_BYTES {
            continue;
        }
        let strings = strings.get_or_insert_with(|| {
            let mut out = Vec::new();
            if let Ok(value) = serde_json::to_value(spec) {
                spec_strings(&value, JsonPath::root(), &mut out);
            }
            out
        });
        // The longest value the argument is built from says where to shorten it.
        let source = strings
            .iter()
            .filter(|(_, s)| !s.is_empty() && text.contains(s.as_str()))
            .max_by_key(|(_, s)| s.len());
        let mut finding = Diagnostic::error(
            code("argument_too_long"),
            format!(
                "an argument of {} bytes would be passed to a program; Linux passes at most {MAX_ARG_BYTES} (MAX_ARG_STRLEN)",
                text.len()
            ),
        )
        .help("shorten the value, or split it: one list element is one argument (kernel parameters are all one)");
        finding = match source {
            Some((path, value)) => finding
                .at(path.clone())
                .label(format!("{} bytes of it come from here", value.len())),
            None => finding.at(JsonPath::root()),
        };
        if !findings.contains(&finding) {
            findings.push(finding);
        }
    }
}

fn check_tools(spec: &RunnerSpec, findings: &mut Vec<Diagnostic>) {
    for &tool in Tool::ALL {
        let Some(value) = spec.tools.get(tool) else {
            continue;
        };
        if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "'\"\\".contains(c))
        {
            findings.push(
                Diagnostic::error(
                    code("tool_path"),
                    format!("tools.{} contains whitespace, a quote or a control character", tool.name()),
                )
                .at(path!["tools", tool.name()])
                .help("tool paths appear in #! lines and command strings; install the program under a plain path"),
            );
        } else if !value.starts_with('/') {
            findings.push(
                Diagnostic::error(
                    code("tool_path"),
                    format!("tools.{} is not an absolute path", tool.name()),
                )
                .at(path!["tools", tool.name()])
                .help("generated scripts never search PATH: give the absolute path of the program"),
            );
        }
    }
    let mut missing: Vec<(Tool, String)> = Vec::new();
    for (tool, reason) in runner::required_tools(spec) {
        if spec.tools.get(tool).is_none() && !missing.iter().any(|(t, _)| *t == tool) {
            missing.push((tool, reason));
        }
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(t, _)| t.name()).collect();
        let why: Vec<String> = missing
            .iter()
            .map(|(t, reason)| format!("{}: {reason}", t.name()))
            .collect();
        findings.push(
            Diagnostic::error(
                code("missing_tool"),
                format!(
                    "tools lacks {} program{} this spec needs",
                    missing.len(),
                    if missing.len() == 1 { "" } else { "s" }
                ),
            )
            .at(path!["tools"])
            .label(format!("missing: {}", names.join(", ")))
            .help(format!(
                "add the absolute path of each (the Nix side adds them itself):\n{}",
                why.join("\n")
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:00:00:00:00:01"), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(parse_mac("02:00:00:00:00:0G"), None);
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
        assert_eq!(parse_mac("2:00:00:00:00:01"), None);
        assert_eq!(parse_mac("+2:00:00:00:00:01"), None);
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:01:00.0"));
        assert!(!is_pci_address("01:00.0"));
        assert!(!is_pci_address("0000:01:00.8"));
    }

    #[test]
    fn interface_names() {
        assert!(ifname_problem("vm-abcdefghijkl").is_none());
        assert!(ifname_problem("vm-abcdefghijklm").is_some());
        assert!(ifname_problem("a b").is_some());
        assert!(ifname_problem("a/b").is_some());
    }
}
