use std::process::ExitCode;

fn main() -> ExitCode {
    // Descriptors inherited from whoever started us (a shell's, a service manager's) must not
    // leak on into shims and containers: mark them all close-on-exec.
    // SAFETY: close_range only changes flags of this process's descriptors.
    unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    berth_agent::cli::main()
}
