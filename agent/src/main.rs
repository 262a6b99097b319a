use std::process::ExitCode;

fn main() -> ExitCode {
    // Descriptors inherited from whoever started us (a shell's, a service manager's) must not
    // leak on into shims and containers: mark them all close-on-exec.
    if let Err(e) = berth_agent::runtime::sys::cloexec_from(3) {
        eprintln!("berth: cannot mark inherited fds close-on-exec: {e}");
        return ExitCode::from(1);
    }
    berth_agent::cli::main()
}
