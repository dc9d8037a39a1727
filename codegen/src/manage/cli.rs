//! The `microvm` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::fleet::{self, FleetCommand};
use super::report::ErrorReport;
use super::up::{self, EnvSetting, Overrides, PortMapping, UpRequest, VolumeMapping};
use super::verbs::{self, Context};
use crate::spec::Hypervisor;

#[derive(Debug, Parser)]
#[command(
    name = "microvm",
    version,
    about = "Manage the microVMs of this host.",
    long_about = "Manage the microVMs of this host: each lives in STATE_DIR/<name> and runs as \
                  microvm@<name>.service from its installed runner (`current`), or, started \
                  with `microvm up`, as a transient unit or a supervised process.\n\n\
                  microvm.nix's short flags still work: -c NAME (create), -u NAME… (update; -R \
                  restarts), -r NAME (run), -l (list), -s NAME (ssh), -f FLAKE.\n\n\
                  Exit status: 0 success, 1 refused or failed, 2 usage error.",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Where the VMs live (root: /var/lib/microvms; others: $XDG_STATE_HOME/microvm, or
    /// ~/.local/state/microvm).
    #[arg(
        long,
        global = true,
        env = "MICROVM_STATE_DIR",
        default_value_os_t = up::default_state_dir(),
        hide_default_value = true
    )]
    state_dir: PathBuf,
    /// Where `create` and `update` keep garbage-collector roots for the runners.
    #[arg(
        long,
        global = true,
        env = "MICROVM_GCROOTS_DIR",
        default_value = "/nix/var/nix/gcroots/microvm"
    )]
    gcroots_dir: PathBuf,
    /// Flake to build a new VM from (create, up), as `microvm -c NAME -f FLAKE`.
    #[arg(short = 'f', long, global = true, value_name = "FLAKE")]
    flake: Option<String>,
    /// Restart VMs that an update changed (update), as `microvm -Ru NAME`.
    #[arg(short = 'R', long, global = true)]
    restart: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, PartialEq, Subcommand)]
enum Command {
    /// Build a VM from a flake and install it (microvm -c NAME [-f FLAKE]).
    ///
    /// Builds `FLAKE#nixosConfigurations.NAME.config.microvm.declaredRunner` (FLAKE defaults to
    /// git+file:///etc/nixos), installs it as STATE_DIR/NAME/current and records FLAKE for
    /// later updates. Refuses a NAME that has a runner installed; a directory without one (what
    /// `remove --yes` leaves: volume images and the like) is taken over as it is. Does not start
    /// the VM.
    #[command(short_flag = 'c')]
    Create {
        name: String,
        /// Install this already built runner instead of building one with nix.
        #[arg(long, value_name = "PATH", conflicts_with = "flake")]
        runner: Option<PathBuf>,
    },
    /// Rebuild VMs from their recorded flake (microvm -u NAME…; -R restarts changed ones).
    ///
    /// Refuses VMs declared in the host configuration: those change with the host.
    #[command(short_flag = 'u')]
    Update {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a VM in the foreground, outside systemd (microvm -r NAME).
    ///
    /// Tap, macvtap and PCI setup and virtiofsd are not started for you: run the runner's
    /// bin/tap-up etc. first, as root, when the VM uses them.
    #[command(short_flag = 'r')]
    Run { name: String },
    /// List the VMs, declared, created and `up` alike, and whether they run the installed
    /// version (microvm -l).
    #[command(short_flag = 'l', visible_alias = "ls")]
    List {
        /// Print JSON (schema: doc/microvm-list.schema.json); on failure, an object whose
        /// one member `error` holds the code, message and help.
        #[arg(long)]
        json: bool,
    },
    /// Show one VM: hypervisor, spec, unit state, running vs installed version.
    Status {
        name: String,
        /// Print JSON (schema: doc/microvm-status.schema.json); on failure, an object whose
        /// one member `error` holds the code, message and help.
        #[arg(long)]
        json: bool,
    },
    /// ssh into a VM over vsock (microvm -s NAME [SSH_OPTIONS…] [COMMAND…]).
    ///
    /// Needs microvm.vsock.cid and sshd in the guest (microvm.vsock.ssh.enable). Leading words
    /// that start with `-` are ssh options (put `--` before them); the rest is the remote
    /// command. Logs in as root unless the options say -l.
    #[command(short_flag = 's')]
    Ssh {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show a VM's logs (journalctl of its units; an `up` VM's console without systemd).
    Logs {
        name: String,
        /// Keep printing new entries (`-f` after `logs` means this too, as in mvmctl).
        #[arg(short = 'F', long)]
        follow: bool,
        /// How many lines to show.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: u32,
    },
    /// Stop a VM and delete it (only with --yes; volume images only with --purge).
    ///
    /// --yes deletes what was made for the VM (its `current`, `booted`, `toplevel` and `flake`,
    /// sockets) and keeps everything else in its directory: volume images, share sources, files
    /// of your own. `create NAME` takes such a directory over.
    Remove {
        name: String,
        /// Delete the VM's runner links and sockets; keep the rest of its directory.
        #[arg(long)]
        yes: bool,
        /// Delete its whole directory, volume images included.
        #[arg(long, requires = "yes")]
        purge: bool,
    },
    /// Stop declared VMs that the host configuration no longer declares (run on switch).
    ///
    /// Compares the declared VMs (DECLARED, share/microvm/declared.json of the host package)
    /// with the previous list (STATE_DIR/.declared.json), stops the removed ones — which takes
    /// their taps down — and keeps their state directories.
    Reconcile {
        /// The declared VMs now.
        #[arg(long, value_name = "FILE")]
        declared: PathBuf,
        /// The declared VMs before (default: STATE_DIR/.declared.json).
        #[arg(long, value_name = "FILE")]
        previous: Option<PathBuf>,
        /// Only print which VMs would be stopped.
        #[arg(long)]
        dry_run: bool,
    },
    /// Start a VM from a flake or a built runner in the background, with ports, shares and
    /// volumes, and wait until it is up.
    ///
    /// Builds FLAKEREF's runner (default `.`: its default package; FLAKE#NAME: the NixOS
    /// configuration NAME's runner, else the package NAME), or takes --runner. The overrides
    /// are applied to the runner's spec, which is validated against the hypervisor's
    /// capabilities and rendered anew into STATE_DIR/NAME/runner: no NixOS rebuild. The guest
    /// mounts the shares and volumes, and gives its services the --env variables, from the
    /// kernel command line (the guest module's microvm-up.service).
    ///
    /// Runs as the transient unit microvm-up-NAME.service when systemd runs, else as a
    /// detached `microvm supervise NAME` writing STATE_DIR/NAME/console.log. Returns when the
    /// guest reports ready (guests with microvm.readiness), else when the hypervisor is up.
    /// Again for a stopped `up` VM: starts it with the new overrides; its volumes are kept.
    Up {
        /// A flake reference: FLAKE or FLAKE#NAME.
        #[arg(value_name = "FLAKEREF", conflicts_with = "runner")]
        flakeref: Option<String>,
        /// Use this built runner instead of building one.
        #[arg(long, value_name = "PATH")]
        runner: Option<PathBuf>,
        /// The VM's name (default: FLAKE#NAME's NAME, else the guest's host name).
        #[arg(long)]
        name: Option<String>,
        /// Forward [ADDRESS:]HOST:GUEST[/udp] (ADDRESS defaults to 127.0.0.1), through the
        /// hypervisor's user network or the proxy (see --forward-via).
        #[arg(short = 'p', long = "port", value_name = "[ADDR:]HOST:GUEST[/udp]")]
        ports: Vec<PortMapping>,
        /// HOSTDIR:GUESTPATH shares HOSTDIR read-only; HOSTDIR:GUESTPATH:SIZE_MIB makes (once)
        /// an ext4 volume of that size as a file in HOSTDIR, mounted read-write.
        #[arg(
            short = 'v',
            long = "volume",
            value_name = "HOSTDIR:GUESTPATH[:SIZE_MIB]"
        )]
        volumes: Vec<VolumeMapping>,
        /// vCPUs.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=512))]
        cpus: Option<u32>,
        /// Memory in MiB.
        #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(64..))]
        memory: Option<u64>,
        /// Run with another hypervisor than the runner's (its program comes from the runner's
        /// spec, else from PATH).
        #[arg(long, value_name = "HYPERVISOR", value_parser = parse_hypervisor)]
        hypervisor: Option<Hypervisor>,
        /// KEY=VALUE for the guest's microvm.services (overrides their `env`).
        #[arg(long, value_name = "KEY=VALUE")]
        env: Vec<EnvSetting>,
        /// How -p reaches the guest: `user` (the hypervisor's user network: qemu) or `proxy`
        /// (a tap of the VM's own and a forwarder in `microvm`; root only). Default: user
        /// where the hypervisor has it, else proxy.
        #[arg(long, value_name = "HOW")]
        forward_via: Option<up::ForwardVia>,
        /// How long to wait for the VM to be up, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        timeout: u64,
        /// Return once it is started, without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Power an `up` VM off: its power button, a bounded wait, then stop what is left.
    Down {
        name: String,
        /// Seconds to wait for the guest to power off before stopping it.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
    },
    /// Add port forwards to a running `up` VM (qemu: QMP hostfwd_add); they last until it stops.
    Forward {
        name: String,
        #[arg(
            short = 'p',
            long = "port",
            required = true,
            value_name = "[ADDR:]HOST:GUEST[/udp]"
        )]
        ports: Vec<PortMapping>,
    },
    /// Runs an `up` VM under this process (what `up` starts without systemd).
    #[command(hide = true)]
    Supervise {
        name: String,
        /// systemd runs virtiofsd in a unit of its own.
        #[arg(long)]
        without_virtiofsd: bool,
    },
    /// Commands over many hosts, described by `lib.fleet` (list, plan-move).
    #[command(subcommand)]
    Fleet(FleetCommand),
}

/// Stable code of each error, for `--json` (`microvm::manage::<name>`).
fn error_code(error: &verbs::Error) -> &'static str {
    use verbs::Error::*;
    match error {
        BadName(..) => "microvm::manage::bad_name",
        Exists { .. } => "microvm::manage::exists",
        NotFound { .. } => "microvm::manage::not_found",
        Declarative { .. } => "microvm::manage::declarative",
        NoFlake { .. } => "microvm::manage::no_flake",
        NotARunner(..) => "microvm::manage::not_a_runner",
        NoVsock { .. } => "microvm::manage::no_vsock",
        NotRunning { .. } => "microvm::manage::not_running",
        NeedsYes { .. } => "microvm::manage::needs_yes",
        NotADirectory(..) => "microvm::manage::not_a_directory",
        Program { .. } => "microvm::manage::program_failed",
        Spawn { .. } => "microvm::manage::spawn",
        Io { .. } => "microvm::manage::io",
        Several(..) => "microvm::manage::several",
        Up(e) => e.code(),
    }
}

fn parse_hypervisor(name: &str) -> Result<Hypervisor, String> {
    Hypervisor::from_name(name).ok_or_else(|| {
        format!(
            "unknown hypervisor {name:?}; one of: {}",
            Hypervisor::ALL
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// A verb's failure: its message, stable code and hint.
enum Failure {
    Verb(verbs::Error),
    Up(up::UpError),
}

impl Failure {
    fn code(&self) -> &'static str {
        match self {
            Failure::Verb(e) => error_code(e),
            Failure::Up(e) => e.code(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Failure::Verb(e) => e.hint(),
            Failure::Up(e) => e.hint(),
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Verb(e) => e.to_string(),
            Failure::Up(e) => e.to_string(),
        }
    }
}

/// `-f` after `logs` is mvmctl's follow; elsewhere it is microvm.nix's flake.
fn follow_after_logs(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(logs) = args.iter().position(|a| a == "logs") else {
        return args;
    };
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > logs && a == "-f" {
                "--follow".into()
            } else {
                a
            }
        })
        .collect()
}

/// Code of a command line that did not parse.
pub const USAGE_CODE: &str = "microvm::manage::usage";

/// Whether the command line asks for JSON output (before any `--`, which ends the options).
fn wants_json<I: AsRef<std::ffi::OsStr>>(args: &[I]) -> bool {
    args.iter()
        .skip(1)
        .map(AsRef::as_ref)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json")
}

/// The `microvm` program: parses the command line and runs it. A command line that does not
/// parse is reported by clap (exit status 2); with `--json` also as an error object on standard
/// output, as the verbs' own errors are.
pub fn main() -> ExitCode {
    let args = follow_after_logs(std::env::args_os().collect());
    match Cli::try_parse_from(&args) {
        Ok(cli) => run(cli),
        Err(error) => {
            use clap::error::ErrorKind;
            let informational = matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if !informational && wants_json(&args) {
                println!("{}", usage_error_report(&error).to_json());
            }
            error.exit()
        }
    }
}

fn usage_error_report(error: &clap::Error) -> ErrorReport {
    let rendered = error.render().to_string();
    // clap's text: "error: WHAT\n\nUsage: …\n\nFor more information, try '--help'."
    let message = rendered
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("error: ")
        .to_owned();
    let usage = rendered
        .split("\n\n")
        .find_map(|part| part.trim().strip_prefix("Usage: "))
        .map(|usage| format!("usage: {usage}; `microvm --help` explains every command"));
    ErrorReport::new(USAGE_CODE, message, usage)
}

pub fn run(cli: Cli) -> ExitCode {
    let json = matches!(
        cli.command,
        Command::List { json: true } | Command::Status { json: true, .. }
    );
    let context = Context {
        state_dir: cli.state_dir,
        gcroots_dir: cli.gcroots_dir,
    };
    let result = match cli.command {
        Command::Up {
            flakeref,
            runner,
            name,
            ports,
            volumes,
            cpus,
            memory,
            hypervisor,
            env,
            forward_via,
            timeout,
            no_wait,
        } => {
            let request = UpRequest {
                flake: flakeref.or(cli.flake),
                runner,
                name,
                overrides: Overrides {
                    cpus,
                    memory_mib: memory,
                    hypervisor,
                    ports,
                    volumes,
                    env,
                    forward_via,
                },
                timeout: std::time::Duration::from_secs(timeout),
                wait: !no_wait,
            };
            up::up(&context.state_dir, request).map_err(Failure::Up)
        }
        Command::Down { name, timeout } => up::down(
            &context.state_dir,
            &name,
            std::time::Duration::from_secs(timeout),
        )
        .map_err(Failure::Up),
        Command::Forward { name, ports } => {
            up::forward(&context.state_dir, &name, &ports).map_err(Failure::Up)
        }
        Command::Supervise {
            name,
            without_virtiofsd,
        } => up::supervise(&context.state_dir, &name, without_virtiofsd).map_err(Failure::Up),
        // Its own errors and exit codes (manage/fleet.rs).
        Command::Fleet(command) => return fleet::run(command),
        command => run_verb(&context, command, cli.flake, cli.restart).map_err(Failure::Verb),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let hint = failure.hint();
            if json {
                let report = ErrorReport::new(failure.code(), failure.message(), hint.clone());
                println!("{}", report.to_json());
            }
            eprintln!("microvm: {}", failure.message());
            if let Some(hint) = hint {
                eprintln!("  hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}

fn run_verb(
    context: &Context,
    command: Command,
    flake: Option<String>,
    restart: bool,
) -> Result<(), verbs::Error> {
    match command {
        Command::Create { name, runner } => verbs::create(context, &name, flake, runner),
        Command::Update { names } => verbs::update(context, &names, restart),
        Command::Run { name } => verbs::run(context, &name),
        Command::List { json } => verbs::list(context, json),
        Command::Status { name, json } => verbs::status(context, &name, json),
        Command::Ssh { name, args } => verbs::ssh(context, &name, &args),
        Command::Logs {
            name,
            follow,
            lines,
        } => verbs::logs(context, &name, follow, lines),
        Command::Remove { name, yes, purge } => verbs::remove(context, &name, yes, purge),
        Command::Reconcile {
            declared,
            previous,
            dry_run,
        } => verbs::reconcile(context, &declared, previous.as_deref(), dry_run),
        Command::Fleet(_)
        | Command::Up { .. }
        | Command::Down { .. }
        | Command::Forward { .. }
        | Command::Supervise { .. } => unreachable!("run handles these itself"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn microvm_nix_short_flags_parse() {
        use super::Command::*;
        use clap::Parser;
        let strings = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let create = || Create {
            name: "vm".into(),
            runner: None,
        };
        // (argv, command, flake, restart)
        let cases = [
            (
                &["microvm", "-c", "vm", "-f", "/flake"][..],
                create(),
                Some("/flake"),
                false,
            ),
            (
                &["microvm", "-f", "/flake", "-c", "vm"],
                create(),
                Some("/flake"),
                false,
            ),
            (&["microvm", "-c", "vm"], create(), None, false),
            (
                &["microvm", "-Ru", "a", "b"],
                Update {
                    names: strings(&["a", "b"]),
                },
                None,
                true,
            ),
            (
                &["microvm", "-u", "a", "-R"],
                Update {
                    names: strings(&["a"]),
                },
                None,
                true,
            ),
            (
                &["microvm", "-u", "a"],
                Update {
                    names: strings(&["a"]),
                },
                None,
                false,
            ),
            (
                &["microvm", "-r", "vm"],
                Run { name: "vm".into() },
                None,
                false,
            ),
            (&["microvm", "-l"], List { json: false }, None, false),
            (
                &["microvm", "-s", "vm", "--", "-i", "key"],
                Ssh {
                    name: "vm".into(),
                    args: strings(&["-i", "key"]),
                },
                None,
                false,
            ),
            (
                &["microvm", "-s", "vm", "uname", "-a"],
                Ssh {
                    name: "vm".into(),
                    args: strings(&["uname", "-a"]),
                },
                None,
                false,
            ),
        ];
        for (argv, command, flake, restart) in cases {
            let cli = super::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(cli.command, command, "{argv:?}");
            assert_eq!(cli.flake.as_deref(), flake, "{argv:?}");
            assert_eq!(cli.restart, restart, "{argv:?}");
        }
    }
}
