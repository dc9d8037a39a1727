use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    microvm_codegen::cli::run(microvm_codegen::cli::Cli::parse())
}
