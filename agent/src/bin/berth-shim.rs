//! `berth-shim`: the per-container supervisor (see `berth_agent::runtime::shim`). A separate
//! binary so that its resident memory holds only what supervising needs.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // SAFETY: this program starts no thread before the shim does (its one relay thread, once
    // the container runs): the process is single-threaded.
    std::process::exit(unsafe { berth_agent::runtime::shim::main(&args) });
}
