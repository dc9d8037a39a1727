//! What each `microvm` verb does.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::report::{CheckState, ListEntry, SpecSummary, Status, UnitStatus, VmState};
use super::state::{self, VmDir};
use super::up::{self, UpRecord};
use crate::host::names;
use crate::host::units::DeclaredList;
use crate::host::validate::is_vm_name;
use crate::spec::Hypervisor;

/// microvm.nix's default: the host's own flake.
pub const DEFAULT_FLAKE: &str = "git+file:///etc/nixos";

pub struct Context {
    pub state_dir: PathBuf,
    pub gcroots_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a valid VM name")]
    BadName(String),
    #[error("{name} already exists in {dir}")]
    Exists { name: String, dir: PathBuf },
    #[error("there is no VM {name} in {state_dir}")]
    NotFound { name: String, state_dir: PathBuf },
    #[error("{name} is declared in the host configuration, so it changes with the host")]
    Declarative { name: String },
    #[error("{name} has no flake to update from ({dir}/flake is missing)")]
    NoFlake { name: String, dir: PathBuf },
    #[error("{0} is not a runner (it has no bin/microvm-run)")]
    NotARunner(PathBuf),
    #[error("{name} has no vsock cid, and ssh reaches the guest over vsock")]
    NoVsock { name: String },
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("refusing to delete {dir} without --yes")]
    NeedsYes {
        dir: PathBuf,
        name: String,
        /// What --yes keeps: everything not made for the VM.
        kept: Vec<String>,
    },
    #[error("{0} is a symbolic link, not a VM's own directory")]
    NotADirectory(PathBuf),
    #[error("{program} failed ({status})")]
    Program { program: String, status: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Several(String),
    #[error(transparent)]
    Up(#[from] up::UpError),
}

impl Error {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Exists { name, .. } => format!("update it with `microvm update {name}`, or pick another name"),
            Error::NotFound { .. } => "`microvm list` shows the VMs; --state-dir or MICROVM_STATE_DIR picks another state directory".to_owned(),
            Error::Declarative { .. } => "change it in the host configuration and run nixos-rebuild switch".to_owned(),
            Error::NoFlake { name, .. } => format!("it was installed from a prebuilt runner; recreate it with `microvm remove --yes {name}` and `microvm create -f FLAKE {name}`"),
            Error::NoVsock { .. } => "set microvm.vsock.cid and microvm.vsock.ssh.enable in the VM's configuration".to_owned(),
            Error::NotRunning { name } => format!("start it with `systemctl start {}`", names::vm_unit(name)),
            Error::NeedsYes { name, kept, .. } => {
                let mut hint = format!("`microvm remove --yes {name}` stops it and deletes its installed runner and sockets");
                if kept.is_empty() {
                    hint.push_str(" and its directory");
                } else {
                    hint.push_str(&format!(" but keeps what else is there ({}); add --purge to delete those too", kept.join(", ")));
                }
                hint
            }
            Error::NotADirectory(..) => "microvm deletes nothing through a link; remove the link, or what it points to, yourself".to_owned(),
            Error::Up(e) => return e.hint(),
            _ => return None,
        })
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs a program from PATH and fails unless it succeeds.
fn run_program(program: &str, args: &[&str]) -> Result<(), Error> {
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|source| Error::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Program {
            program: format!("{program} {}", args.join(" ")),
            status: status.to_string(),
        })
    }
}

/// Runs a program from PATH and returns its standard output, whatever its exit status.
fn output_of(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            program: program.to_owned(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn exec(mut command: Command, program: &str) -> Result<(), Error> {
    let source = command.exec();
    Err(Error::Spawn {
        program: program.to_owned(),
        source,
    })
}

/// Stops a VM. Only its `microvm@` unit: the units around it (taps, virtiofsd, the install unit
/// of a declared VM) are `PartOf=` it and stop with it, and naming one that has no unit file — an
/// imperative VM's install unit, or a declared VM's once the host dropped it — would make
/// systemctl fail with "not loaded".
fn stop(name: &str) -> Result<(), Error> {
    run_program("systemctl", &["stop", &names::vm_unit(name)])
}

/// Whether the VM runs: its `microvm@` unit, or what `microvm up` started it under.
fn unit_active_state(vm: &VmDir) -> Result<String, Error> {
    match UpRecord::read(vm) {
        Some(record) => Ok(up::unit_status(vm, &record).active_state),
        None => output_of("systemctl", &["is-active", &names::vm_unit(&vm.name)]),
    }
}

fn existing(context: &Context, name: &str) -> Result<VmDir, Error> {
    if !is_vm_name(name) {
        return Err(Error::BadName(name.to_owned()));
    }
    let vm = VmDir::new(&context.state_dir, name);
    if !vm.exists() {
        return Err(Error::NotFound {
            name: name.to_owned(),
            state_dir: context.state_dir.clone(),
        });
    }
    Ok(vm)
}

fn runner_attr(flake: &str, name: &str) -> String {
    format!("{flake}#nixosConfigurations.{name}.config.microvm.declaredRunner")
}

/// Keeps the runners from garbage collection; a host without Nix's gcroots just goes without.
/// The root of each link under its old name goes once the new one is there.
fn add_gcroots(context: &Context, vm: &VmDir) {
    if let Err(e) = fs::create_dir_all(&context.gcroots_dir) {
        eprintln!(
            "microvm: no garbage-collector roots in {}: {e}",
            context.gcroots_dir.display()
        );
        return;
    }
    for link in ["current", "booted"] {
        let root = context.gcroots_dir.join(state::gc_root(link, &vm.name));
        let _ = fs::remove_file(&root);
        if let Err(e) = symlink(vm.dir.join(link), &root) {
            eprintln!("microvm: cannot add the root {}: {e}", root.display());
        } else {
            remove_legacy_gc_root(context, vm, link);
        }
    }
}

/// Removes the root of `link` under its name before `LINK@NAME`, when it is this VM's: when it
/// points at this VM's link. (`booted-web` was web's `booted`, or VM booted-web's `current`.)
fn remove_legacy_gc_root(context: &Context, vm: &VmDir, link: &str) {
    let root = context
        .gcroots_dir
        .join(state::legacy_gc_root(link, &vm.name));
    if fs::read_link(&root).is_ok_and(|target| target == vm.dir.join(link)) {
        let _ = fs::remove_file(&root);
    }
}

/// Removes the roots of the VM's links that are gone, under both names.
fn remove_gcroots(context: &Context, vm: &VmDir) {
    for link in state::ROOTED_LINKS {
        if fs::symlink_metadata(vm.dir.join(link)).is_ok() {
            continue;
        }
        let _ = fs::remove_file(context.gcroots_dir.join(state::gc_root(link, &vm.name)));
        remove_legacy_gc_root(context, vm, link);
    }
}

/// Hands the VM's directory to the user that runs the VMs (MICROVM_USER and MICROVM_GROUP,
/// which the host module's `microvm` sets), when we are root.
fn hand_over(dir: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let (Ok(user), Ok(group)) = (
        std::env::var("MICROVM_USER"),
        std::env::var("MICROVM_GROUP"),
    ) else {
        eprintln!(
            "microvm: MICROVM_USER or MICROVM_GROUP is not set, so {} stays root's; the host module's `microvm` sets them",
            dir.display()
        );
        return;
    };
    let status = Command::new("chown")
        .arg("-h")
        .arg(format!("{user}:{group}"))
        .arg(dir)
        .arg(dir.join("current"))
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!(
            "microvm: could not hand {} to {user}:{group}",
            dir.display()
        );
    }
}

pub fn create(
    context: &Context,
    name: &str,
    flake: Option<String>,
    runner: Option<PathBuf>,
) -> Result<(), Error> {
    if !is_vm_name(name) {
        return Err(Error::BadName(name.to_owned()));
    }
    let vm = VmDir::new(&context.state_dir, name);
    // A directory without a runner (what `remove --yes` leaves: volumes and the like) is taken
    // over, keeping what is in it; one with a runner is a VM. Checked before building: a long
    // build for a name that is taken helps nobody.
    let taken = |vm: &VmDir| vm.exists() && (vm.installed() || !vm.is_real_dir());
    if taken(&vm) {
        return Err(Error::Exists {
            name: name.to_owned(),
            dir: vm.dir,
        });
    }
    let take_over = vm.exists();
    fs::create_dir_all(&context.state_dir).map_err(io_error(&context.state_dir))?;
    let staging = context.state_dir.join(format!(".{name}.creating"));
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    fs::create_dir(&staging).map_err(io_error(&staging))?;
    let current = staging.join("current");
    let result = (|| {
        match runner {
            Some(path) => {
                let target = fs::canonicalize(&path).map_err(io_error(&path))?;
                symlink(&target, &current).map_err(io_error(&current))?;
            }
            None => {
                let flake = flake.clone().unwrap_or_else(|| DEFAULT_FLAKE.to_owned());
                eprintln!("microvm: building {}", runner_attr(&flake, name));
                let out = current.display().to_string();
                run_program("nix", &["build", "-o", &out, &runner_attr(&flake, name)])?;
                fs::write(staging.join("flake"), format!("{flake}\n"))
                    .map_err(io_error(&staging))?;
            }
        }
        if !current.join("bin/microvm-run").is_file() {
            return Err(Error::NotARunner(
                fs::read_link(&current).unwrap_or(current.clone()),
            ));
        }
        if taken(&vm) || vm.exists() != take_over {
            return Err(Error::Exists {
                name: name.to_owned(),
                dir: vm.dir.clone(),
            });
        }
        if !take_over {
            return fs::rename(&staging, &vm.dir).map_err(io_error(&vm.dir));
        }
        // `flake` first (or a stale one out of the way): `current` is what makes it a VM.
        let flake = vm.dir.join("flake");
        if staging.join("flake").exists() {
            fs::rename(staging.join("flake"), &flake).map_err(io_error(&flake))?;
        } else if fs::symlink_metadata(&flake).is_ok() {
            fs::remove_file(&flake).map_err(io_error(&flake))?;
        }
        let installed = vm.dir.join("current");
        fs::rename(&current, &installed).map_err(io_error(&installed))?;
        fs::remove_dir(&staging).map_err(io_error(&staging))
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    hand_over(&vm.dir);
    add_gcroots(context, &vm);
    println!(
        "microvm: created {name} ({}) in {}{}",
        vm.hypervisor()
            .map(|hypervisor| state::printable(&hypervisor))
            .unwrap_or_else(|| "unknown hypervisor".to_owned()),
        vm.dir.display(),
        if take_over {
            ", keeping what was already there"
        } else {
            ""
        }
    );
    println!(
        "microvm: start it with: systemctl start {}",
        names::vm_unit(name)
    );
    Ok(())
}

pub fn update(context: &Context, names: &[String], restart: bool) -> Result<(), Error> {
    let mut failures = Vec::new();
    for name in names {
        if let Err(e) = update_one(context, name, restart) {
            eprintln!("microvm: {name}: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("  hint: {hint}");
            }
            failures.push(name.clone());
        }
    }
    match failures.len() {
        0 => Ok(()),
        _ => Err(Error::Several(format!(
            "not updated: {}",
            failures.join(", ")
        ))),
    }
}

fn update_one(context: &Context, name: &str, restart: bool) -> Result<(), Error> {
    let vm = existing(context, name)?;
    if vm.declarative() {
        return Err(Error::Declarative {
            name: name.to_owned(),
        });
    }
    let flake = vm.flake().ok_or_else(|| Error::NoFlake {
        name: name.to_owned(),
        dir: vm.dir.clone(),
    })?;
    let old = vm.current();
    let staging = vm.dir.join(".current.new");
    let _ = fs::remove_file(&staging);
    eprintln!("microvm: building {}", runner_attr(&flake, name));
    run_program(
        "nix",
        &[
            "build",
            "-o",
            &staging.display().to_string(),
            &runner_attr(&flake, name),
        ],
    )?;
    let new = fs::read_link(&staging).map_err(io_error(&staging))?;
    if !new.join("bin/microvm-run").is_file() {
        let _ = fs::remove_file(&staging);
        return Err(Error::NotARunner(new));
    }
    fs::rename(&staging, vm.dir.join("current")).map_err(io_error(&vm.dir))?;
    if let Some(old) = &old
        && old != &new
    {
        let _ = Command::new("nix")
            .args(["store", "diff-closures"])
            .arg(old)
            .arg(&new)
            .status();
    }
    add_gcroots(context, &vm);
    let active = output_of("systemctl", &["is-active", &names::vm_unit(name)])? == "active";
    match vm.booted() {
        Some(booted) if booted == new => println!("microvm: {name} already runs this version"),
        // try-restart: a VM that stopped meanwhile stays stopped; -R never starts one.
        _ if restart && active => {
            println!("microvm: restarting {name}");
            run_program("systemctl", &["try-restart", &names::vm_unit(name)])?;
        }
        Some(_) if active => {
            println!("microvm: {name} was updated; restart it to apply: microvm update -R {name}");
        }
        _ => println!("microvm: {name} was updated; it starts with the new version"),
    }
    Ok(())
}

pub fn run(context: &Context, name: &str) -> Result<(), Error> {
    let vm = existing(context, name)?;
    if !vm.has_runner() {
        return Err(Error::NotARunner(vm.dir.join("current")));
    }
    let mut command = Command::new(vm.dir.join("current/bin/microvm-run"));
    command.current_dir(&vm.dir);
    exec(command, "microvm-run")
}

fn list_entries(context: &Context) -> Result<Vec<ListEntry>, Error> {
    let mut entries = Vec::new();
    for vm in state::all(&context.state_dir).map_err(io_error(&context.state_dir))? {
        let unit_state = unit_active_state(&vm)?;
        let active = unit_state == "active";
        let state = if vm.outdated(active) {
            VmState::Outdated
        } else if active {
            VmState::Running
        } else {
            VmState::Stopped
        };
        let health = active.then(|| vm.guest_health()).flatten();
        entries.push(ListEntry {
            up: UpRecord::read(&vm).is_some(),
            hypervisor: vm.hypervisor(),
            declarative: vm.declarative(),
            ready: health.as_ref().map(|h| h.ready),
            checks: health
                .map(|h| h.checks.into_iter().map(|(n, c)| (n, c.state)).collect())
                .unwrap_or_default(),
            name: vm.name,
            unit: if unit_state.is_empty() {
                "unknown".to_owned()
            } else {
                unit_state
            },
            state,
        });
    }
    Ok(entries)
}

pub fn list(context: &Context, json: bool) -> Result<(), Error> {
    let entries = list_entries(context)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("serializes")
        );
        return Ok(());
    }
    if entries.is_empty() {
        println!("no VMs in {}", context.state_dir.display());
        return Ok(());
    }
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:16}  {:8}  NOTE",
        "NAME", "HYPERVISOR", "STATE"
    );
    for e in &entries {
        let mut note = match (e.state, e.declarative) {
            (VmState::Outdated, true) => {
                "runs an older version; restart to apply the host's".to_owned()
            }
            (VmState::Outdated, false) => {
                format!("runs an older version: microvm update -R {}", e.name)
            }
            (_, true) => "declared in the host configuration".to_owned(),
            _ if e.up => "started by microvm up".to_owned(),
            _ => String::new(),
        };
        if let Some(ready) = e.ready {
            let failing: Vec<&str> = e
                .checks
                .iter()
                .filter(|(_, s)| **s == CheckState::Failing)
                .map(|(n, _)| n.as_str())
                .collect();
            let guest = match (ready, failing.is_empty()) {
                (false, _) => "guest not ready yet".to_owned(),
                (true, true) => "guest ready".to_owned(),
                (true, false) => format!("guest ready; failing: {}", failing.join(", ")),
            };
            note = if note.is_empty() {
                guest
            } else {
                format!("{guest}; {note}")
            };
        }
        let state = match e.state {
            VmState::Running => "running",
            VmState::Outdated => "outdated",
            VmState::Stopped => "stopped",
        };
        println!(
            "{:width$}  {:16}  {:8}  {note}",
            e.name,
            state::printable(e.hypervisor.as_deref().unwrap_or("?")),
            state
        );
    }
    Ok(())
}

fn unit_status(name: &str) -> Result<UnitStatus, Error> {
    let shown = output_of(
        "systemctl",
        &[
            "show",
            &names::vm_unit(name),
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "MainPID",
        ],
    )?;
    Ok(UnitStatus::from_show(names::vm_unit(name), &shown))
}

pub fn status(context: &Context, name: &str, json: bool) -> Result<(), Error> {
    let vm = existing(context, name)?;
    let current = vm.current();
    let booted = vm.booted();
    let record = UpRecord::read(&vm);
    let unit = match &record {
        Some(record) => up::unit_status(&vm, record),
        None => unit_status(name)?,
    };
    let status = Status {
        name: name.to_owned(),
        state_dir: vm.dir.display().to_string(),
        hypervisor: vm.hypervisor(),
        declarative: vm.declarative(),
        flake: vm.flake(),
        restart_needed: vm.outdated(unit.active_state == "active"),
        current: current.map(|p| p.display().to_string()),
        booted: booted.map(|p| p.display().to_string()),
        guest: (unit.active_state == "active")
            .then(|| vm.guest_health())
            .flatten(),
        unit,
        spec: vm.spec().as_ref().map(SpecSummary::of),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("serializes")
        );
        return Ok(());
    }
    // Everything below but the name was read from disk or from systemctl.
    let or_none = |v: &Option<String>| state::printable(v.as_deref().unwrap_or("-"));
    println!(
        "{name}: {} ({})",
        state::printable(&status.unit.active_state),
        state::printable(&status.unit.sub_state)
    );
    println!("  hypervisor  {}", or_none(&status.hypervisor));
    println!("  directory   {}", state::printable(&status.state_dir));
    println!("  installed   {}", or_none(&status.current));
    println!("  running     {}", or_none(&status.booted));
    if status.restart_needed {
        println!("  note        runs an older version than the installed one; restart to apply");
    }
    if status.declarative {
        println!("  declared    in the host configuration");
    } else if let Some(record) = &record {
        println!(
            "  started by  microvm up, from {}",
            state::printable(&record.source.display().to_string())
        );
        for port in record.overrides.ports.iter().chain(&record.forwards) {
            println!("  port        {port}");
        }
    } else {
        println!("  flake       {}", or_none(&status.flake));
    }
    if let Some(spec) = &status.spec {
        println!("  vcpu, mem   {}, {} MiB", spec.vcpu, spec.mem_mib);
        for (what, items) in [
            ("interface", &spec.interfaces),
            ("volume", &spec.volumes),
            ("share", &spec.shares),
        ] {
            for item in items {
                println!("  {what:<11} {}", state::printable(item));
            }
        }
        if let Some(cid) = spec.vsock_cid {
            println!("  vsock cid   {cid}");
        }
    }
    if let Some(guest) = &status.guest {
        println!(
            "  guest       {}",
            if guest.ready {
                "ready"
            } else {
                "not ready yet"
            }
        );
        for (name, check) in &guest.checks {
            let state = match check.state {
                CheckState::Passing => "passing",
                CheckState::Failing => "failing",
            };
            println!(
                "  check       {} {state} since {}: {}",
                state::printable(name),
                check.since,
                state::printable(&check.output)
            );
        }
    }
    Ok(())
}

pub fn ssh(context: &Context, name: &str, args: &[String]) -> Result<(), Error> {
    let vm = existing(context, name)?;
    let cid = vm.vsock_cid().ok_or_else(|| Error::NoVsock {
        name: name.to_owned(),
    })?;
    if unit_active_state(&vm)? != "active" {
        return Err(Error::NotRunning {
            name: name.to_owned(),
        });
    }
    // Some hypervisors expose the guest's vsock as a Unix socket with a CONNECT handshake
    // (systemd's ssh proxy calls that vsock-mux); the others use the host's vsock, by cid.
    let mux_socket = vm
        .hypervisor()
        .as_deref()
        .and_then(Hypervisor::from_name)
        .and_then(|hv| crate::hypervisor::backend(hv).vsock_mux_socket());
    let target = match mux_socket {
        Some(socket) => format!("vsock-mux/{}/{socket}", vm.dir.display()),
        None => format!("vsock/{cid}"),
    };
    let (options, remote) = split_ssh_options(args);
    let mut command = Command::new("ssh");
    command.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ]);
    command.args(options);
    if !options.iter().any(|o| o.starts_with("-l")) {
        command.args(["-l", "root"]);
    }
    command.arg(target);
    command.args(remote);
    exec(command, "ssh")
}

/// ssh's options that take a value (its getopt string), to tell leading ssh options from the
/// remote command: `microvm ssh vm -i key -l admin uname -a`.
const SSH_OPTIONS_WITH_VALUE: &str = "bceilmopBDEFIJLOPQRSwW";

fn split_ssh_options(args: &[String]) -> (&[String], &[String]) {
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') && args[i] != "-" {
        let option = &args[i];
        let letter = option.chars().nth(1);
        i += 1;
        if option.len() == 2 && letter.is_some_and(|l| SSH_OPTIONS_WITH_VALUE.contains(l)) {
            i += 1;
        }
    }
    let split = i.min(args.len());
    (&args[..split], &args[split..])
}

pub fn logs(context: &Context, name: &str, follow: bool, lines: u32) -> Result<(), Error> {
    let vm = existing(context, name)?;
    if let Some(record) = UpRecord::read(&vm) {
        return Ok(up::logs(&vm, &record, follow, lines)?);
    }
    let mut command = Command::new("journalctl");
    for unit in names::vm_units(name) {
        command.arg("-u").arg(unit);
    }
    command.arg("-n").arg(lines.to_string());
    if follow {
        command.arg("-f");
    }
    exec(command, "journalctl")
}

/// Sorts a VM's directory for `remove --yes`: what was made for the VM (`MADE_FOR_THE_VM` at
/// the top, sockets anywhere) goes, with directories that end up empty; everything else stays.
/// Returns the top-level entries that stay. With `delete` false nothing is touched: the listing
/// the refusal without --yes shows. Never follows a symlink.
fn sweep(dir: &Path, top: bool, delete: bool) -> Result<Vec<String>, Error> {
    let mut entries = fs::read_dir(dir)
        .map_err(io_error(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error(dir))?;
    entries.sort_by_key(|e| e.file_name());
    let mut kept = Vec::new();
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = fs::symlink_metadata(&path)
            .map_err(io_error(&path))?
            .file_type();
        let made =
            (top && state::MADE_FOR_THE_VM.contains(&name.as_str())) || file_type.is_socket();
        if made {
            if delete {
                if file_type.is_dir() {
                    fs::remove_dir_all(&path).map_err(io_error(&path))?;
                } else {
                    fs::remove_file(&path).map_err(io_error(&path))?;
                }
            }
        } else if file_type.is_dir() {
            if sweep(&path, false, delete)?.is_empty() {
                if delete {
                    fs::remove_dir(&path).map_err(io_error(&path))?;
                }
            } else {
                kept.push(format!("{}/", state::printable(&name)));
            }
        } else {
            kept.push(state::printable(&name));
        }
    }
    Ok(kept)
}

pub fn remove(context: &Context, name: &str, yes: bool, purge: bool) -> Result<(), Error> {
    let vm = existing(context, name)?;
    if !vm.is_real_dir() {
        return Err(Error::NotADirectory(vm.dir));
    }
    if !yes {
        return Err(Error::NeedsYes {
            dir: vm.dir.clone(),
            name: name.to_owned(),
            kept: sweep(&vm.dir, true, false)?,
        });
    }
    if vm.declarative() {
        eprintln!(
            "microvm: warning: {name} is declared in the host configuration; the next switch installs it again unless you remove it there"
        );
    }
    match UpRecord::read(&vm) {
        Some(record) => up::stop_supervisor(&vm, &record)?,
        None => stop(name)?,
    }
    let kept = if purge {
        fs::remove_dir_all(&vm.dir).map_err(io_error(&vm.dir))?;
        Vec::new()
    } else {
        let kept = sweep(&vm.dir, true, true)?;
        if kept.is_empty() {
            fs::remove_dir(&vm.dir).map_err(io_error(&vm.dir))?;
        }
        kept
    };
    remove_gcroots(context, &vm);
    if kept.is_empty() {
        println!("microvm: removed {name} and {}", vm.dir.display());
    } else {
        println!(
            "microvm: removed {name}; kept {} in {} (`microvm create {name}` uses them again; `microvm remove --yes --purge {name}` deletes them)",
            kept.join(", "),
            vm.dir.display(),
        );
    }
    Ok(())
}

fn read_declared(path: &Path) -> Result<Option<DeclaredList>, Error> {
    match crate::input_file::read_to_string(path, crate::input_file::STATE) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Io {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// The valid VM names of a list read from `path`; each other one is reported and left out. Such
/// a name came from neither `microvm` nor the host module, and it must reach no command line:
/// to `systemctl stop`, `*` is a pattern that matches every VM.
fn valid_names(path: &Path, names: Vec<String>, refused: &mut Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| {
            if is_vm_name(name) {
                return true;
            }
            eprintln!(
                "microvm: reconcile: {}: {}; left alone, and left out of the record",
                path.display(),
                Error::BadName(name.clone())
            );
            refused.push(format!("{name:?}"));
            false
        })
        .collect()
}

pub fn reconcile(
    context: &Context,
    declared_path: &Path,
    previous_path: Option<&Path>,
    dry_run: bool,
) -> Result<(), Error> {
    let mut declared = read_declared(declared_path)?.ok_or_else(|| Error::Io {
        path: declared_path.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
    })?;
    // Names read from a file are checked as a name typed on the command line is.
    let mut refused = Vec::new();
    declared.vms = valid_names(declared_path, declared.vms, &mut refused);
    let record = context.state_dir.join(".declared.json");
    let previous_path = previous_path
        .map(Path::to_owned)
        .unwrap_or_else(|| record.clone());
    let previous = read_declared(&previous_path)?
        .map(|p| valid_names(&previous_path, p.vms, &mut refused))
        .unwrap_or_default();
    let now: BTreeSet<&String> = declared.vms.iter().collect();
    let removed: Vec<&String> = previous.iter().filter(|vm| !now.contains(vm)).collect();
    if removed.is_empty() {
        println!("microvm: reconcile: no declared VM was removed");
    }
    let mut failed = Vec::new();
    for name in &removed {
        let dir = context.state_dir.join(name);
        if dry_run {
            println!("microvm: reconcile: would stop {name} (removed from the configuration)");
            continue;
        }
        println!(
            "microvm: reconcile: stopping {name} (removed from the configuration); its state stays in {} until `microvm remove --yes {name}`",
            dir.display()
        );
        // One VM that will not stop must not keep the others running.
        if let Err(e) = stop(name) {
            eprintln!("microvm: reconcile: {name}: {e}");
            failed.push((*name).clone());
        }
    }
    let refusal = (!refused.is_empty())
        .then(|| format!("not valid VM names, left alone: {}", refused.join(", ")));
    if dry_run {
        return refusal.map_or(Ok(()), |refusal| Err(Error::Several(refusal)));
    }
    // The record is written even when a stop failed, so the VMs that did stop are not stopped
    // again; the ones that failed stay on it, so the next reconcile tries them again.
    let mut record_list = declared;
    record_list.vms.extend(failed.iter().cloned());
    fs::create_dir_all(&context.state_dir).map_err(io_error(&context.state_dir))?;
    let temporary = record.with_extension("json.new");
    let text = serde_json::to_string_pretty(&record_list).expect("serializes") + "\n";
    fs::write(&temporary, text).map_err(io_error(&temporary))?;
    fs::rename(&temporary, &record).map_err(io_error(&record))?;
    let problems: Vec<String> = (!failed.is_empty())
        .then(|| format!("not stopped: {}", failed.join(", ")))
        .into_iter()
        .chain(refusal)
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Several(problems.join("; ")))
    }
}
