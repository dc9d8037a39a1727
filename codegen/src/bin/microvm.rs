use std::process::ExitCode;

fn main() -> ExitCode {
    microvm_codegen::manage::main()
}
