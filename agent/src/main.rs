use std::process::ExitCode;

fn main() -> ExitCode {
    berth_agent::cli::main()
}
