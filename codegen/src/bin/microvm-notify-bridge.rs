use std::process::ExitCode;

fn main() -> ExitCode {
    microvm_codegen::notify_bridge::main()
}
