//! `berth-shim`: the per-container supervisor (see `berth_agent::runtime::shim`). A separate
//! binary so that its resident memory holds only what supervising needs.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(berth_agent::runtime::shim::main(&args));
}
