//! `berth version`: the version, as text or JSON.

use std::process::ExitCode;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Print JSON: {"version": ..., "arch": ..., "os": ...}
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &VersionArgs) -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    if args.json {
        let v = serde_json::json!({
            "version": version,
            "arch": std::env::consts::ARCH,
            "os": std::env::consts::OS,
        });
        outln!("{v}");
    } else {
        outln!("berth {version}");
    }
    ExitCode::from(exit::SUCCESS)
}
