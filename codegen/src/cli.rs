//! The `microvm-codegen` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::diagnostic::{self, Diagnostic, SpecText};
use crate::exit_code::{EXIT_INTERNAL, EXIT_REFUSED, EXIT_USAGE};
use crate::{load, output, render, runner, schema, validate};

#[derive(Debug, Parser)]
#[command(
    name = "microvm-codegen",
    version,
    about = "Turns a microVM runner spec (JSON) into a runner: the scripts that start, stop and \
             resize the VM and set up its host side.",
    long_about = "Turns a microVM runner spec (JSON) into a runner: the scripts that start, stop \
                  and resize the VM and set up its host side.\n\nThe Nix modules write the spec \
                  from a NixOS configuration's microvm.* options; it can also be written by hand. \
                  Every command checks the spec against the hypervisor's capabilities first and \
                  reports every problem with its place in the file.\n\nExit status: 0 success, \
                  1 the spec was refused, 2 usage or I/O error, 3 internal error (a valid spec \
                  that could not be rendered: please report it)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a spec and write its runner directory.
    ///
    /// Writes bin/microvm-run (starts the VM in the foreground), bin/microvm-shutdown and
    /// bin/microvm-balloon where the hypervisor can do them, tap/macvtap/PCI/virtiofsd helper
    /// scripts where the spec needs them, and share/microvm/ metadata including the validated
    /// spec.json. Run the scripts from the VM's working directory: relative paths in the spec
    /// (volumes, sockets) are resolved there.
    Generate {
        /// The runner spec (JSON).
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Directory to write; it must not exist, be empty, or (with --force) hold a runner
        /// generated earlier.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Update DIR when it holds a runner generated earlier: replace or delete only the
        /// files generate wrote there (share/microvm/generated-files lists them) and keep every
        /// other file, such as the VM's volume images, so a state directory is never
        /// overwritten. A file it did not write where a new one goes stops it, and any other
        /// non-empty directory is refused.
        #[arg(long)]
        force: bool,
    },
    /// Check a spec and print every problem found, without writing anything.
    Validate {
        /// The runner spec (JSON).
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
    },
    /// Print the JSON Schema of the runner spec (or of another document, with --of).
    Schema {
        /// Which document's schema.
        #[arg(long, value_enum, default_value_t = SchemaOf::RunnerSpec)]
        of: SchemaOf,
    },
    /// Validate a host spec and write the host package: systemd units, helper scripts and the
    /// list of declared VMs.
    ///
    /// The host module writes the host spec from microvm.host.* and microvm.vms; the units run
    /// every VM in stateDir/<name> from its `current` runner. DIR must be the package's final,
    /// absolute location: the units refer to the helper scripts inside it.
    Host {
        /// The host spec (JSON).
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Directory to write (as for `generate`).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Update DIR when it holds output generated earlier, as for `generate`: only the
        /// files this command wrote there are replaced or deleted.
        #[arg(long)]
        force: bool,
    },
    /// Print which hypervisor supports which feature (the capability table).
    Capabilities {
        /// markdown: a hypervisor × feature matrix; json: the table itself.
        #[arg(long, value_enum, default_value_t = TableFormat::Markdown)]
        format: TableFormat,
    },
    /// Print the reference of every microvm.* option, read from the NixOS modules' option
    /// declarations (doc/options.md and doc/options.json are its output).
    Options {
        /// markdown: for people; json: the option tree `lint` checks against.
        #[arg(long, value_enum, default_value_t = TableFormat::Markdown)]
        format: TableFormat,
        /// Module files, or directories whose .nix files are read.
        #[arg(value_name = "PATH", default_value = "nixos-modules")]
        paths: Vec<PathBuf>,
    },
    /// Check the microvm.* settings in Nix files (flakes, NixOS modules) without evaluating
    /// them: unknown, removed and renamed options, literal values of the wrong type or outside
    /// an enum, capability conflicts and duplicate tags or ids, each at its line.
    ///
    /// Values that are not literals are skipped, never guessed. Exit status: 0 no errors
    /// (warnings allowed), 1 an error was found, 2 usage or I/O error.
    Lint {
        /// Nix files, or directories whose .nix files are linted.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// human: reports with the offending lines; json: an array of findings for editors.
        #[arg(long, value_enum, default_value_t = crate::lint::Format::Human)]
        format: crate::lint::Format,
        /// Read the known options from these module files or directories instead of the
        /// reference built into this program.
        #[arg(long = "options", value_name = "PATH")]
        options: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SchemaOf {
    /// The runner spec (doc/runner-spec.schema.json).
    RunnerSpec,
    /// The host spec (doc/host-spec.schema.json).
    HostSpec,
    /// `microvm list --json` (doc/microvm-list.schema.json).
    MicrovmList,
    /// `microvm status --json` (doc/microvm-status.schema.json).
    MicrovmStatus,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TableFormat {
    Markdown,
    Json,
}

fn report_handler() -> GraphicalReportHandler {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    GraphicalReportHandler::new_themed(theme).with_width(100)
}

fn print_diagnostics(diagnostics: &[Diagnostic], text: &SpecText) {
    if !diagnostics.is_empty() {
        eprint!(
            "{}",
            diagnostic::render_with(report_handler(), diagnostics, text)
        );
    }
}

/// Reads a spec of version `version` (`what` it is, for the refusal) and validates it with
/// `validate`; prints every finding. `Err` carries the exit status.
fn checked<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    version: u32,
    validate: impl Fn(&T) -> Vec<Diagnostic>,
) -> Result<T, u8> {
    let text = crate::input_file::read_to_string(path, crate::input_file::SPEC).map_err(|e| {
        eprintln!("microvm-codegen: cannot read {}: {e}", path.display());
        EXIT_USAGE
    })?;
    let text = SpecText::new(path.display().to_string(), text);
    let spec = match load::load_versioned(&text, version) {
        Ok(spec) => spec,
        Err(findings) => {
            print_diagnostics(&findings, &text);
            eprintln!("microvm-codegen: {} refused: it is not {what}", text.name());
            return Err(EXIT_REFUSED);
        }
    };
    let findings = validate(&spec);
    print_diagnostics(&findings, &text);
    let errors = findings.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        eprintln!(
            "microvm-codegen: {} refused: {errors} error{}",
            text.name(),
            if errors == 1 { "" } else { "s" }
        );
        return Err(EXIT_REFUSED);
    }
    Ok(spec)
}

/// A valid spec that did not render: validation let through what a template cannot take.
fn internal_error(error: &render::RenderError) -> ExitCode {
    eprintln!("microvm-codegen: internal error (please report it): {error}");
    ExitCode::from(EXIT_INTERNAL)
}

fn checked_spec(path: &Path) -> Result<crate::spec::RunnerSpec, u8> {
    checked(
        path,
        "a runner spec",
        crate::spec::SPEC_VERSION,
        validate::validate,
    )
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Schema { of } => {
            let schema = match of {
                SchemaOf::RunnerSpec => schema::runner_spec_schema_json(),
                SchemaOf::HostSpec => {
                    serde_json::to_string_pretty(&schemars::schema_for!(crate::host::HostSpec))
                        .expect("a schema always serializes")
                }
                SchemaOf::MicrovmList => crate::manage::list_schema_json(),
                SchemaOf::MicrovmStatus => crate::manage::status_schema_json(),
            };
            println!("{schema}");
            ExitCode::SUCCESS
        }
        Command::Host { spec, out, force } => run_host(&spec, &out, force),
        Command::Capabilities { format } => {
            match format {
                TableFormat::Markdown => print!("{}", crate::capabilities::markdown_table()),
                TableFormat::Json => print!("{}", crate::capabilities::CAPABILITY_TABLE_JSON),
            }
            ExitCode::SUCCESS
        }
        Command::Lint {
            files,
            format,
            options,
        } => crate::lint::command(&files, format, &options),
        Command::Options { format, paths } => {
            crate::options::command(&paths, matches!(format, TableFormat::Json))
        }
        Command::Validate { spec } => match checked_spec(&spec) {
            Ok(spec) => {
                eprintln!(
                    "microvm-codegen: the spec of {} ({}) is valid",
                    spec.host_name, spec.hypervisor
                );
                ExitCode::SUCCESS
            }
            Err(status) => ExitCode::from(status),
        },
        Command::Generate { spec, out, force } => {
            let spec = match checked_spec(&spec) {
                Ok(checked) => checked,
                Err(status) => return ExitCode::from(status),
            };
            let tree = match runner::build(&spec, &render::Renderer::new()) {
                Ok(tree) => tree,
                Err(e) => {
                    return internal_error(&e);
                }
            };
            if let Err(e) = output::write(&out, &tree, force) {
                eprintln!("microvm-codegen: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            let scripts: Vec<&str> = tree.keys().filter_map(|k| k.strip_prefix("bin/")).collect();
            eprintln!(
                "microvm-codegen: wrote the {} runner of {} to {} ({} files; bin: {})",
                spec.hypervisor,
                spec.host_name,
                out.display(),
                tree.len(),
                scripts.join(", ")
            );
            ExitCode::SUCCESS
        }
    }
}

fn run_host(spec_path: &Path, out: &Path, force: bool) -> ExitCode {
    let spec: crate::host::HostSpec = match checked(
        spec_path,
        "a host spec",
        crate::host::spec::HOST_SPEC_VERSION,
        crate::host::validate::validate,
    ) {
        Ok(spec) => spec,
        Err(status) => return ExitCode::from(status),
    };
    let package = if out.is_absolute() {
        out.to_owned()
    } else {
        match std::env::current_dir() {
            Ok(dir) => dir.join(out),
            Err(e) => {
                eprintln!("microvm-codegen: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    };
    let Some(package_str) = package
        .to_str()
        .filter(|p| crate::host::validate::is_plain_path(p))
    else {
        eprintln!(
            "microvm-codegen: --out {} must be a plain path (no whitespace, quotes, '$' or '%'): the units name it",
            package.display()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let tree = match crate::host::units::build(&spec, package_str, &render::Renderer::new()) {
        Ok(tree) => tree,
        Err(e) => {
            return internal_error(&e);
        }
    };
    if let Err(e) = output::write_marked(&package, &tree, force, output::HOST_MARKER) {
        eprintln!("microvm-codegen: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    eprintln!(
        "microvm-codegen: wrote the host package to {} ({} declared VMs, {} files)",
        package.display(),
        spec.vms.len(),
        tree.len()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn a_render_failure_has_its_own_documented_exit_status() {
        use super::*;
        let error = render::RenderError::Template {
            template: "t".into(),
            message: "m".into(),
        };
        assert_eq!(internal_error(&error), ExitCode::from(EXIT_INTERNAL));
        assert!(![EXIT_REFUSED, EXIT_USAGE].contains(&EXIT_INTERNAL));
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains(&format!("{EXIT_INTERNAL} internal error")),
            "{help}"
        );
    }
}
