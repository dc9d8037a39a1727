//! Values that must differ between the elements of a spec's lists: images, tags, interface ids
//! and MAC addresses, mount points, forwarded host ports, virtiofsd sockets, passed-through PCI
//! devices and PCIe root port ids. The generator refuses a spec with a duplicate
//! ([`crate::validate`]); `lint` reports the duplicates among a VM's literals by the same rules.

use std::collections::BTreeMap;

use crate::json_path::JsonPath;
use crate::path;
use crate::spec::{DeviceBus, ForwardFrom, RunnerSpec, ShareProto};

/// What must be unique, and how a duplicate is reported.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// The generator's code, after `microvm::validate::`.
    pub code: &'static str,
    /// The message, with `{}` for the value.
    message: &'static str,
    /// "also `verb` <the first use>".
    pub verb: &'static str,
    pub help: &'static str,
}

impl Rule {
    pub fn message(&self, shown: &str) -> String {
        self.message.replace("{}", shown)
    }
}

pub const IMAGE: Rule = Rule {
    code: "duplicate_image",
    message: "two volumes use the image {}",
    verb: "used by",
    help: "each volume needs its own image file; two writers would corrupt it",
};
pub const TAG: Rule = Rule {
    code: "duplicate_tag",
    message: "two shares use the tag {}",
    verb: "used by",
    help: "give every share its own tag; the guest could not tell them apart",
};
pub const INTERFACE_ID: Rule = Rule {
    code: "duplicate_interface_id",
    message: "two interfaces use the id {}",
    verb: "used by",
    help: "give every interface its own id",
};
pub const MAC: Rule = Rule {
    code: "duplicate_mac",
    message: "two interfaces use the MAC {}",
    verb: "used by",
    help: "give every interface its own MAC address",
};
pub const MOUNT_POINT: Rule = Rule {
    code: "duplicate_mount_point",
    message: "{} is mounted twice",
    verb: "mounted by",
    help: "mount each volume and share at its own place",
};
pub const FORWARD: Rule = Rule {
    code: "duplicate_forward",
    message: "host port {} is forwarded twice",
    verb: "forwarded by",
    help: "forward each host port once",
};
pub const SOCKET: Rule = Rule {
    code: "duplicate_socket",
    message: "two shares use the socket {}",
    verb: "used by",
    help: "each virtiofsd needs its own socket",
};
pub const PCI_DEVICE: Rule = Rule {
    code: "duplicate_device",
    message: "the PCI device {} is passed through twice",
    verb: "passed through by",
    help: "a host device can be given to a VM once; remove the second entry",
};
pub const PCIE_ROOT_PORT: Rule = Rule {
    code: "duplicate_pcie_root_port",
    message: "two PCIe root ports use the id {}",
    verb: "used by",
    help: "give every root port its own id; qemu refuses two devices with one id",
};

/// One value that must be unique under its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueValue {
    pub rule: &'static Rule,
    /// What is compared: MAC addresses and PCI addresses in lower case, mount points without
    /// a trailing `/`.
    pub key: String,
    /// The value as a message shows it.
    pub shown: String,
    /// Where it is reported.
    pub path: JsonPath,
    /// Every field the key is made of.
    pub from: Vec<JsonPath>,
}

/// A value used a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub rule: &'static Rule,
    pub message: String,
    pub path: JsonPath,
    /// The value's first use.
    pub first: JsonPath,
}

/// The values of a spec that must be unique. Empty values are left out: each list's own check
/// reports those.
pub fn values(spec: &RunnerSpec) -> Vec<UniqueValue> {
    let mut values = Vec::new();
    let mut push = |rule: &'static Rule, key: String, shown: String, from: Vec<JsonPath>| {
        if !key.is_empty() {
            values.push(UniqueValue {
                rule,
                key,
                shown,
                path: from[0].clone(),
                from,
            });
        }
    };
    let mount_key = |mount_point: &str| match mount_point.trim_end_matches('/') {
        "" if !mount_point.is_empty() => "/".to_owned(),
        trimmed => trimmed.to_owned(),
    };
    for (i, volume) in spec.volumes.iter().enumerate() {
        let image = &volume.image;
        push(
            &IMAGE,
            image.clone(),
            format!("{image:?}"),
            vec![path!["volumes", i, "image"]],
        );
        if let Some(mount_point) = &volume.mount_point {
            push(
                &MOUNT_POINT,
                mount_key(mount_point),
                format!("{mount_point:?}"),
                vec![path!["volumes", i, "mountPoint"]],
            );
        }
    }
    for (i, share) in spec.shares.iter().enumerate() {
        let tag = &share.tag;
        push(
            &TAG,
            tag.clone(),
            format!("{tag:?}"),
            vec![path!["shares", i, "tag"]],
        );
        let mount_point = &share.mount_point;
        push(
            &MOUNT_POINT,
            mount_key(mount_point),
            format!("{mount_point:?}"),
            vec![path!["shares", i, "mountPoint"]],
        );
        if share.proto == ShareProto::Virtiofs
            && let Some(socket) = &share.socket
        {
            push(
                &SOCKET,
                socket.clone(),
                format!("{socket:?}"),
                vec![path!["shares", i, "socket"], path!["shares", i, "proto"]],
            );
        }
    }
    for (i, interface) in spec.interfaces.iter().enumerate() {
        let (id, mac) = (&interface.id, &interface.mac);
        push(
            &INTERFACE_ID,
            id.clone(),
            format!("{id:?}"),
            vec![path!["interfaces", i, "id"]],
        );
        push(
            &MAC,
            mac.to_ascii_lowercase(),
            mac.clone(),
            vec![path!["interfaces", i, "mac"]],
        );
    }
    for (i, forward) in spec.forward_ports.iter().enumerate() {
        if forward.from == ForwardFrom::Host {
            let host = &forward.host;
            push(
                &FORWARD,
                format!("{} {}:{}", forward.proto.name(), host.address, host.port),
                host.port.to_string(),
                vec![
                    path!["forwardPorts", i, "host", "port"],
                    path!["forwardPorts", i, "host", "address"],
                    path!["forwardPorts", i, "proto"],
                    path!["forwardPorts", i, "from"],
                ],
            );
        }
    }
    for (i, device) in spec.devices.iter().enumerate() {
        // Two USB devices of one model have the same usb-host spec: only PCI addresses name
        // one device.
        if device.bus == DeviceBus::Pci {
            let address = &device.path;
            push(
                &PCI_DEVICE,
                address.to_ascii_lowercase(),
                format!("{address:?}"),
                vec![path!["devices", i, "path"], path!["devices", i, "bus"]],
            );
        }
    }
    for (i, port) in spec.qemu.pcie_root_ports.iter().enumerate() {
        let id = &port.id;
        push(
            &PCIE_ROOT_PORT,
            id.clone(),
            format!("{id:?}"),
            vec![path!["qemu", "pcieRootPorts", i, "id"]],
        );
    }
    values
}

/// The second and later uses of each value, in the order given.
pub fn duplicates(values: impl IntoIterator<Item = UniqueValue>) -> Vec<Duplicate> {
    let mut first: BTreeMap<(&'static str, String), JsonPath> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for value in values {
        match first.get(&(value.rule.code, value.key.clone())) {
            Some(first) => duplicates.push(Duplicate {
                rule: value.rule,
                message: value.rule.message(&value.shown),
                path: value.path,
                first: first.clone(),
            }),
            None => {
                first.insert((value.rule.code, value.key), value.path);
            }
        }
    }
    duplicates
}
