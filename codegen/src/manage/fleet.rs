//! `microvm fleet`: commands over a fleet described by `lib.fleet`'s `description` (JSON: hosts
//! with their ssh targets and capacity, VMs with their host and what they take).
//!
//! `list` asks every host's `microvm list --json` over `ssh` (from PATH) at once, each with its
//! own deadline, so a host that hangs is reported as not answering and never hides the others.
//! `plan-move` prints the steps of moving a VM with its state directory and does none of them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::report::ErrorReport;

/// `microvm fleet …`.
#[derive(Debug, PartialEq, Subcommand)]
pub enum FleetCommand {
    /// List the VMs of every host of the fleet (`microvm list --json` over ssh, all hosts at
    /// once). A host that fails or does not answer within --timeout is shown as such; the exit
    /// status is then 1.
    List {
        /// The fleet description: `nix eval --json .#fleet.description > fleet.json`.
        #[arg(long, env = "MICROVM_FLEET", value_name = "FILE")]
        fleet: std::path::PathBuf,
        /// Print JSON: per host, its target and `status` ok (with `vms`), failed or not-answering.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for each host.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Print the steps of moving VM to another host with its state directory; does nothing.
    /// Refuses a move the target's capacity check would fail.
    PlanMove {
        vm: String,
        #[arg(long, value_name = "HOST")]
        to: String,
        /// The fleet description: `nix eval --json .#fleet.description > fleet.json`.
        #[arg(long, env = "MICROVM_FLEET", value_name = "FILE")]
        fleet: std::path::PathBuf,
    },
}

/// Runs a fleet command: exit 0, or 1 with the error on stderr (and as JSON with --json).
pub fn run(command: FleetCommand) -> std::process::ExitCode {
    let json = matches!(command, FleetCommand::List { json: true, .. });
    let result = match command {
        FleetCommand::List {
            fleet,
            json,
            timeout,
        } => list(&fleet, json, Duration::from_secs(timeout)),
        FleetCommand::PlanMove { vm, to, fleet } => plan_move(&fleet, &vm, &to),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The list itself is on stdout already; an error report would make it two documents.
            if json && !matches!(error, Error::HostsFailed(_)) {
                println!(
                    "{}",
                    ErrorReport::new(error.code(), error.to_string(), error.hint()).to_json()
                );
            }
            eprintln!("microvm: {error}");
            if let Some(hint) = error.hint() {
                eprintln!("  hint: {hint}");
            }
            std::process::ExitCode::from(1)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the fleet description {path}: {reason}")]
    Description { path: String, reason: String },
    #[error("the fleet has no VM {0:?}")]
    UnknownVm(String, Option<String>),
    #[error("the fleet has no host {0:?}")]
    UnknownHost(String, Option<String>),
    #[error("{vm} is already on {host}")]
    AlreadyThere { vm: String, host: String },
    #[error(
        "{} does not fit on {}: {} would be {} of {} ({})",
        .0.vm, .0.host, .0.what, .0.needed, .0.available, .0.detail
    )]
    DoesNotFit(Box<Shortfall>),
    #[error("{vm} cannot go to {host}: its {what} {value} is used there by {other}")]
    Collides {
        vm: String,
        host: String,
        what: &'static str,
        value: String,
        other: String,
    },
    #[error("{0} of the fleet's hosts did not answer or failed")]
    HostsFailed(usize),
}

/// What a move would need on its target host, and what the host has.
#[derive(Debug)]
pub struct Shortfall {
    vm: String,
    host: String,
    what: &'static str,
    needed: String,
    available: String,
    detail: String,
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Description { .. } => "microvm::fleet::description",
            Error::UnknownVm(..) => "microvm::fleet::unknown_vm",
            Error::UnknownHost(..) => "microvm::fleet::unknown_host",
            Error::AlreadyThere { .. } => "microvm::fleet::already_there",
            Error::DoesNotFit(_) => "microvm::fleet::does_not_fit",
            Error::Collides { .. } => "microvm::fleet::collides",
            Error::HostsFailed(..) => "microvm::fleet::hosts_failed",
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Description { .. } => Some(
                "write it with `nix eval --json .#fleet.description > fleet.json` (lib.fleet's description output)".to_owned(),
            ),
            Error::UnknownVm(_, Some(near)) | Error::UnknownHost(_, Some(near)) => {
                Some(format!("did you mean {near:?}?"))
            }
            Error::DoesNotFit(_) => Some(
                "the target's evaluation-time capacity check would fail too; pick another host or give the VM less (vms.<name>.overrides)".to_owned(),
            ),
            Error::Collides { .. } => Some(
                "give the VM another one on that host (vms.<name>.overrides.interfaces, or the guest's settings)".to_owned(),
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Description {
    pub hosts: BTreeMap<String, Host>,
    pub vms: BTreeMap<String, Vm>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub target_host: String,
    pub mem_mi_b: Option<u64>,
    #[serde(default)]
    pub reserve_mi_b: u64,
    pub vcpus: Option<u64>,
    #[serde(default = "one")]
    pub vcpu_ratio: f64,
    /// The host's `microvm.stateDir`.
    pub state_dir: Option<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vm {
    pub host: String,
    pub mem: u64,
    #[serde(default)]
    pub hotplug_mem: u64,
    pub vcpu: u64,
    pub state_dir: String,
    /// What no two VMs on one host may share (the host module's uniqueness checks).
    #[serde(default)]
    pub interface_ids: Vec<String>,
    #[serde(default)]
    pub macs: Vec<String>,
    #[serde(default)]
    pub vsock_cids: Vec<String>,
    #[serde(default)]
    pub forwarded_host_ports: Vec<String>,
}

pub fn read_description(path: &Path) -> Result<Description, Error> {
    let error = |reason: String| Error::Description {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| error(e.to_string()))
}

fn nearest<'a>(name: &str, names: impl Iterator<Item = &'a String>) -> Option<String> {
    crate::suggest::closest(name, names.map(String::as_str)).map(str::to_owned)
}

/// What one host said.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum HostAnswer {
    /// `microvm list --json`'s output.
    Ok { vms: serde_json::Value },
    /// ssh or `microvm list` failed.
    Failed { exit: Option<i32>, stderr: String },
    /// No answer within the per-host timeout.
    NotAnswering { timeout_secs: u64 },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    pub target_host: String,
    #[serde(flatten)]
    pub answer: HostAnswer,
}

fn ask(target: &str, timeout: Duration) -> HostAnswer {
    let child = Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "--",
            target,
            "microvm",
            "list",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            return HostAnswer::Failed {
                exit: None,
                stderr: format!("cannot run ssh: {e}"),
            };
        }
    };
    // Read both pipes on their own threads so a chatty host cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return HostAnswer::NotAnswering {
            timeout_secs: timeout.as_secs(),
        };
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return HostAnswer::Failed {
            exit: status.code(),
            stderr: stderr.trim().to_owned(),
        };
    }
    match serde_json::from_str(&stdout) {
        Ok(vms) => HostAnswer::Ok { vms },
        Err(e) => HostAnswer::Failed {
            exit: status.code(),
            stderr: format!("`microvm list --json` printed no JSON: {e}"),
        },
    }
}

/// Asks every host at once; each answer, in host order.
pub fn gather(description: &Description, timeout: Duration) -> BTreeMap<String, HostReport> {
    let handles: Vec<_> = description
        .hosts
        .iter()
        .map(|(name, host)| {
            let target = host.target_host.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                let answer = ask(&target, timeout);
                (
                    name,
                    HostReport {
                        target_host: target,
                        answer,
                    },
                )
            })
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

pub fn list(fleet: &Path, json: bool, timeout: Duration) -> Result<(), Error> {
    let description = read_description(fleet)?;
    let reports = gather(&description, timeout);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("serializes")
        );
    } else {
        for (name, report) in &reports {
            match &report.answer {
                HostAnswer::Ok { vms } => {
                    println!("{name} ({}):", report.target_host);
                    let vms = vms.as_array().map(Vec::as_slice).unwrap_or_default();
                    if vms.is_empty() {
                        println!("  (no VMs)");
                    }
                    for vm in vms {
                        let field = |f: &str| vm[f].as_str().unwrap_or("-").to_owned();
                        println!(
                            "  {:<16} {:<10} {}",
                            field("name"),
                            field("state"),
                            field("hypervisor")
                        );
                    }
                }
                HostAnswer::Failed { exit, stderr } => {
                    let exit = exit.map_or("a signal".to_owned(), |c| format!("status {c}"));
                    println!("{name} ({}): failed ({exit}): {stderr}", report.target_host);
                }
                HostAnswer::NotAnswering { timeout_secs } => println!(
                    "{name} ({}): not answering (no reply within {timeout_secs}s)",
                    report.target_host
                ),
            }
        }
    }
    let failed = reports
        .values()
        .filter(|r| !matches!(r.answer, HostAnswer::Ok { .. }))
        .count();
    if failed > 0 {
        Err(Error::HostsFailed(failed))
    } else {
        Ok(())
    }
}

fn shell_word(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| format!("{word:?}"), |q| q.into_owned())
}

/// The values of one kind that no two VMs on a host may share.
type UniqueValues = fn(&Vm) -> &Vec<String>;

/// Checks the target's capacity with the VM added, as the host module's assertion would.
fn check_fits(description: &Description, name: &str, to: &str) -> Result<(), Error> {
    let host = &description.hosts[to];
    let vm = &description.vms[name];
    let on_target: Vec<(&String, &Vm)> = description
        .vms
        .iter()
        .filter(|(_, v)| v.host == to)
        .collect();
    let listing = |f: &dyn Fn(&Vm) -> u64| {
        on_target
            .iter()
            .map(|(n, v)| format!("{n} {}", f(v)))
            .chain(std::iter::once(format!("{name} {}", f(vm))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unique: [(&'static str, UniqueValues); 4] = [
        ("tap id", |v| &v.interface_ids),
        ("MAC address", |v| &v.macs),
        ("vsock CID", |v| &v.vsock_cids),
        ("forwarded host port", |v| &v.forwarded_host_ports),
    ];
    for (what, values) in unique {
        for value in values(vm) {
            if let Some((other, _)) = on_target.iter().find(|(_, v)| values(v).contains(value)) {
                return Err(Error::Collides {
                    vm: name.to_owned(),
                    host: to.to_owned(),
                    what,
                    value: value.clone(),
                    other: (*other).clone(),
                });
            }
        }
    }
    let mem_of = |v: &Vm| v.mem + v.hotplug_mem;
    if let Some(mem) = host.mem_mi_b {
        let needed: u64 = on_target.iter().map(|(_, v)| mem_of(v)).sum::<u64>() + mem_of(vm);
        let available = mem.saturating_sub(host.reserve_mi_b);
        if needed > available {
            return Err(Error::DoesNotFit(Box::new(Shortfall {
                vm: name.to_owned(),
                host: to.to_owned(),
                what: "memory (MiB, with hotplug memory)",
                needed: needed.to_string(),
                available: available.to_string(),
                detail: format!(
                    "{}; {mem} MiB, {} MiB reserved",
                    listing(&mem_of),
                    host.reserve_mi_b
                ),
            })));
        }
    }
    if let Some(vcpus) = host.vcpus {
        let needed: u64 = on_target.iter().map(|(_, v)| v.vcpu).sum::<u64>() + vm.vcpu;
        let limit = vcpus as f64 * host.vcpu_ratio;
        if needed as f64 > limit {
            return Err(Error::DoesNotFit(Box::new(Shortfall {
                vm: name.to_owned(),
                host: to.to_owned(),
                what: "vCPUs",
                needed: needed.to_string(),
                available: format!("{limit}"),
                detail: format!(
                    "{}; {vcpus} CPUs × ratio {}",
                    listing(&|v: &Vm| v.vcpu),
                    host.vcpu_ratio
                ),
            })));
        }
    }
    Ok(())
}

/// The steps of moving `name` to `to`, refused when the VM or host is unknown or the target
/// has no room.
pub fn plan_move_steps(
    description: &Description,
    name: &str,
    to: &str,
) -> Result<Vec<String>, Error> {
    let vm = description
        .vms
        .get(name)
        .ok_or_else(|| Error::UnknownVm(name.to_owned(), nearest(name, description.vms.keys())))?;
    let target = description
        .hosts
        .get(to)
        .ok_or_else(|| Error::UnknownHost(to.to_owned(), nearest(to, description.hosts.keys())))?;
    if vm.host == to {
        return Err(Error::AlreadyThere {
            vm: name.to_owned(),
            host: to.to_owned(),
        });
    }
    check_fits(description, name, to)?;
    let source = &description.hosts[&vm.host];
    let from_ssh = shell_word(&source.target_host);
    let to_ssh = shell_word(&target.target_host);
    let dir = shell_word(&vm.state_dir);
    let target_dir = shell_word(
        &target
            .state_dir
            .as_ref()
            .map_or_else(|| vm.state_dir.clone(), |d| format!("{d}/{name}")),
    );
    let unit = shell_word(&format!("microvm@{name}.service"));
    Ok(vec![
        format!("ssh {from_ssh} systemctl stop {unit}"),
        // Plain mkdir: it fails where the directory exists, so nothing there is overwritten.
        format!("ssh {to_ssh} mkdir {target_dir}   (fails if {to} has one: look at it first)"),
        format!("ssh {from_ssh} tar -C {dir} -cf - . | ssh {to_ssh} tar -C {target_dir} -xpf -"),
        format!(
            "edit the fleet: vms.{name}.host = \"{to}\"; (was \"{}\")",
            vm.host
        ),
        format!(
            "deploy {to} ({}) and {} ({}), e.g. `colmena apply --on {to},{}`",
            target.target_host, vm.host, source.target_host, vm.host
        ),
        format!(
            "once {name} runs on {to}: ssh {from_ssh} rm -r {dir}   (the old copy; keep it until then)"
        ),
    ])
}

pub fn plan_move(fleet: &Path, name: &str, to: &str) -> Result<(), Error> {
    let description = read_description(fleet)?;
    let steps = plan_move_steps(&description, name, to)?;
    println!(
        "Moving {name} from {} to {to} (nothing was done; run these in order):",
        description.vms[name].host
    );
    for (i, step) in steps.iter().enumerate() {
        println!("{}. {step}", i + 1);
    }
    Ok(())
}
