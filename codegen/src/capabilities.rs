//! The capability table (`lib/capabilities.json`): which hypervisor supports which feature, and
//! what to do instead where it does not. The Nix modules read the same file for their
//! assertions, so both refuse the same specs with the same hints.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::json_path::JsonPath;
use crate::path;
use crate::spec::{DeviceBus, Hypervisor, ImageType, InterfaceType, RunnerSpec, ShareProto};

/// The table's text, embedded so the generator needs no file at run time.
pub const CAPABILITY_TABLE_JSON: &str = include_str!("../../lib/capabilities.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilityTable {
    #[serde(rename = "$comment")]
    pub comment: String,
    pub version: u32,
    pub hypervisors: BTreeMap<String, HypervisorInfo>,
    pub features: BTreeMap<String, Feature>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HypervisorInfo {
    #[serde(rename = "$comment", default)]
    pub comment: Option<String>,
    /// The host OSes the hypervisor runs on, as bash's `$OSTYPE` starts ("linux", "darwin");
    /// `microvm-run` refuses to start elsewhere.
    pub host_os: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Feature {
    /// Noun phrase: "9p shares".
    pub title: String,
    /// The option that turns the feature on.
    pub option: String,
    /// When the option turns it on, in words.
    pub condition: String,
    /// A feature that only matters where this one is supported.
    #[serde(default)]
    pub requires: Option<String>,
    pub supported: Vec<Hypervisor>,
    /// What to do instead, per hypervisor; `*` for every other one.
    pub hints: BTreeMap<String, String>,
    /// What a supporting hypervisor needs for the feature (a build with some flag), per
    /// hypervisor.
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

impl Feature {
    pub fn supports(&self, hypervisor: Hypervisor) -> bool {
        self.supported.contains(&hypervisor)
    }

    pub fn hint(&self, hypervisor: Hypervisor) -> Option<&str> {
        self.hints
            .get(hypervisor.name())
            .or_else(|| self.hints.get("*"))
            .map(String::as_str)
    }

    /// What `hypervisor` needs for the feature, where the table says.
    pub fn note(&self, hypervisor: Hypervisor) -> Option<&str> {
        self.notes.get(hypervisor.name()).map(String::as_str)
    }
}

/// The embedded table. It is checked by tests, so a malformed table never ships.
pub fn table() -> &'static CapabilityTable {
    static TABLE: OnceLock<CapabilityTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(CAPABILITY_TABLE_JSON)
            .expect("lib/capabilities.json is valid; the capability tests parse it")
    })
}

/// The features a spec turns on, each with the place in the spec that turns it on.
pub fn feature_uses(spec: &RunnerSpec) -> Vec<(&'static str, JsonPath)> {
    let mut uses: Vec<(&'static str, JsonPath)> = Vec::new();
    for (i, share) in spec.shares.iter().enumerate() {
        match share.proto {
            ShareProto::NineP => {
                uses.push(("share.9p", path!["shares", i, "proto"]));
                if share.read_only {
                    uses.push(("share.9p.readOnly", path!["shares", i, "readOnly"]));
                }
            }
            ShareProto::Virtiofs => {
                uses.push(("share.virtiofs", path!["shares", i, "proto"]));
                if share.read_only {
                    uses.push(("share.virtiofs.readOnly", path!["shares", i, "readOnly"]));
                }
            }
        }
    }
    for (i, interface) in spec.interfaces.iter().enumerate() {
        let feature = match interface.kind {
            InterfaceType::User => "interface.user",
            InterfaceType::Tap => "interface.tap",
            InterfaceType::Macvtap => "interface.macvtap",
            InterfaceType::Bridge => "interface.bridge",
        };
        uses.push((feature, path!["interfaces", i, "type"]));
        if interface.tap.vhost {
            uses.push((
                "interface.tap.vhost",
                path!["interfaces", i, "tap", "vhost"],
            ));
        }
    }
    if !spec.forward_ports.is_empty() {
        uses.push(("forwardPorts", path!["forwardPorts"]));
    }
    if spec.socket.is_some() {
        uses.push(("controlSocket", path!["socket"]));
    }
    if spec.balloon {
        uses.push(("balloon", path!["balloon"]));
    }
    if spec.initial_balloon_mem > 0 {
        uses.push(("initialBalloonMem", path!["initialBalloonMem"]));
    }
    if spec.hotplug_mem > 0 {
        uses.push(("hotplugMem", path!["hotplugMem"]));
    }
    if spec.hugepage_mem {
        uses.push(("hugepageMem", path!["hugepageMem"]));
    }
    if spec.vsock.cid.is_some() {
        uses.push(("vsock", path!["vsock", "cid"]));
    }
    // Readiness travels over vsock: a hypervisor without it is refused for asking.
    if spec.vsock.notify.is_some() {
        uses.push(("vsock", path!["vsock", "notify"]));
    }
    for (i, device) in spec.devices.iter().enumerate() {
        let feature = match device.bus {
            DeviceBus::Pci => "devices.pci",
            DeviceBus::Usb => "devices.usb",
        };
        uses.push((feature, path!["devices", i, "bus"]));
    }
    if !spec.credential_files.is_empty() {
        uses.push(("credentialFiles", path!["credentialFiles"]));
    }
    if spec.graphics.enable {
        uses.push(("graphics", path!["graphics", "enable"]));
    }
    if spec.user.is_some() {
        uses.push(("user", path!["user"]));
    }
    if spec.cpu.is_some() {
        uses.push(("cpu", path!["cpu"]));
    }
    for (i, volume) in spec.volumes.iter().enumerate() {
        if volume.serial.is_some() {
            uses.push(("volume.serial", path!["volumes", i, "serial"]));
        }
        if volume.direct {
            uses.push(("volume.direct", path!["volumes", i, "direct"]));
        }
        if volume.read_only {
            uses.push(("volume.readOnly", path!["volumes", i, "readOnly"]));
        }
        if volume.image_type != ImageType::Raw {
            uses.push(("volume.imageType", path!["volumes", i, "imageType"]));
        }
    }
    uses
}

/// One use of a feature the spec's hypervisor does not have, as both the generator and `lint`
/// report it: the same code, message, label and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The feature's id in the table: `share.9p`.
    pub feature: &'static str,
    /// Where the spec turns it on.
    pub path: JsonPath,
    /// Stable: `microvm::capability::share_9p`.
    pub code: String,
    /// "firecracker does not support 9p shares".
    pub message: String,
    /// The option and the condition that turn the feature on.
    pub label: String,
    /// What to do instead.
    pub help: Option<String>,
}

/// The uses of features the spec's hypervisor does not support. A use whose feature requires
/// another the hypervisor does not support either is left out: that refusal covers it.
pub fn refusals(spec: &RunnerSpec) -> Vec<Refusal> {
    let hv = spec.hypervisor;
    let table = table();
    feature_uses(spec)
        .into_iter()
        .filter_map(|(id, path)| {
            let feature = table.features.get(id)?;
            if feature.supports(hv) {
                return None;
            }
            if let Some(required) = &feature.requires
                && !supports(hv, required)
            {
                return None;
            }
            Some(Refusal {
                feature: id,
                path,
                code: format!("microvm::capability::{}", id.replace('.', "_")),
                message: format!("{hv} does not support {}", feature.title),
                label: format!("{} ({})", feature.option, feature.condition),
                help: feature.hint(hv).map(str::to_owned),
            })
        })
        .collect()
}

impl From<Refusal> for Diagnostic {
    fn from(refusal: Refusal) -> Diagnostic {
        let diagnostic = Diagnostic::error(refusal.code, refusal.message)
            .at(refusal.path)
            .label(refusal.label);
        match refusal.help {
            Some(help) => diagnostic.help(help),
            None => diagnostic,
        }
    }
}

/// Whether `hypervisor` supports `feature` per the table (unknown features: no).
pub fn supports(hypervisor: Hypervisor, feature: &str) -> bool {
    table()
        .features
        .get(feature)
        .is_some_and(|f| f.supports(hypervisor))
}

/// A note's number as superscript digits.
fn superscript(number: usize) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    number
        .to_string()
        .chars()
        .map(|d| DIGITS[d.to_digit(10).unwrap_or(0) as usize])
        .collect()
}

/// The table as a Markdown hypervisor × feature matrix (README.md embeds it); a cell with a
/// note is numbered, and the notes follow the matrix.
pub fn markdown_table() -> String {
    let table = table();
    let mut notes: Vec<String> = Vec::new();
    let mut out = String::from("| feature | option |");
    for hv in Hypervisor::ALL {
        out.push_str(&format!(" {hv} |"));
    }
    out.push_str("\n|---|---|");
    for _ in Hypervisor::ALL {
        out.push_str(":-:|");
    }
    out.push('\n');
    for feature in table.features.values() {
        out.push_str(&format!(
            "| {} | `{}` ({}) |",
            feature.title,
            feature.option,
            feature.condition.replace('|', "\\|")
        ));
        for hv in Hypervisor::ALL {
            let supported_parent = feature
                .requires
                .as_ref()
                .is_none_or(|required| supports(hv, required));
            out.push_str(match (feature.supports(hv), supported_parent) {
                (true, _) => " ✓",
                (false, true) => " ✗",
                (false, false) => " –",
            });
            if let Some(note) = feature.note(hv) {
                notes.push(format!("{} on {hv}: {note}.", feature.title));
                out.push_str(&superscript(notes.len()));
            }
            out.push_str(" |");
        }
        out.push('\n');
    }
    for (i, note) in notes.iter().enumerate() {
        out.push_str(&format!("\n{} {note}\n", superscript(i + 1)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_names_only_known_hypervisors() {
        let table = table();
        let names: Vec<&str> = Hypervisor::ALL.iter().map(|hv| hv.name()).collect();
        assert_eq!(
            table
                .hypervisors
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            {
                let mut sorted = names.clone();
                sorted.sort_unstable();
                sorted
            }
        );
        for (id, feature) in &table.features {
            for key in feature.hints.keys() {
                assert!(
                    key == "*" || names.contains(&key.as_str()),
                    "{id}: hint for unknown hypervisor {key}"
                );
            }
            if let Some(required) = &feature.requires {
                assert!(
                    table.features.contains_key(required),
                    "{id} requires unknown {required}"
                );
            }
        }
    }

    #[test]
    fn notes_are_for_hypervisors_that_support_the_feature() {
        for (id, feature) in &table().features {
            for key in feature.notes.keys() {
                let hv = Hypervisor::ALL.iter().find(|hv| hv.name() == key);
                assert!(
                    hv.is_some_and(|hv| feature.supports(*hv)),
                    "{id}: a note for {key}, which does not support it (say it in a hint)"
                );
            }
        }
    }

    #[test]
    fn notes_are_numbered_in_the_matrix_and_follow_it() {
        assert_eq!(superscript(1), "¹");
        assert_eq!(superscript(12), "¹²");
        let markdown = markdown_table();
        let graphics = markdown
            .lines()
            .find(|l| l.starts_with("| graphics |"))
            .unwrap();
        let cloud_hypervisor = Hypervisor::ALL
            .iter()
            .position(|hv| *hv == Hypervisor::CloudHypervisor)
            .unwrap();
        let cells: Vec<&str> = graphics.split('|').map(str::trim).collect();
        // Cells: "", feature, option, then one per hypervisor.
        assert_eq!(cells[3 + cloud_hypervisor], "✓¹");
        let note = markdown
            .lines()
            .find(|l| l.starts_with("¹ "))
            .expect("the note follows the matrix");
        assert!(
            note.contains("graphics on cloud-hypervisor") && note.contains("--gpu"),
            "{note}"
        );
    }

    #[test]
    fn every_refusal_has_a_hint() {
        for (id, feature) in &table().features {
            for hv in Hypervisor::ALL {
                if !feature.supports(hv) {
                    let hint = feature.hint(hv);
                    assert!(hint.is_some_and(|h| !h.is_empty()), "{id} on {hv}: no hint");
                }
            }
        }
    }
}
