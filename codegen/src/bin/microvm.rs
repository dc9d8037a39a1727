use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    microvm_codegen::manage::run(microvm_codegen::manage::Cli::parse())
}
