//! `berth doctor [--fix]`: lists what a crash or a bug left behind (mounts, netns, links,
//! cgroups, nftables elements, leases, shims, store blobs) for this agent's instance only,
//! and with `--fix` removes it. Exits 0 when it finds nothing, 1 when it does.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::{exit, fail, local};
use crate::host::Host;
use crate::layout::Layout;
use crate::store::lock::StateLock;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Remove what is found (takes the state dir lock: stop the agent first)
    #[arg(long)]
    pub fix: bool,
    /// Print the findings as a JSON list
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &DoctorArgs) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    crate::logging::init(cfg.log_format, "warn");
    // Fixing needs the lock; looking does not, so doctor can inspect beside a live agent.
    let (_lock, host) = if args.fix {
        match local::Local::open(&cfg) {
            Ok(l) => (None::<StateLock>, l.host),
            Err(e) => return fail(&e),
        }
    } else {
        let lock = StateLock::try_acquire(&Layout::new(&cfg)).ok();
        match Host::open_read_only(&cfg) {
            Ok(h) => (lock, std::sync::Arc::new(h)),
            Err(e) => return fail(&e.to_string()),
        }
    };
    // Without the lock, an agent runs (it owns the bridge and table).
    let agent_running = !args.fix && _lock.is_none();
    let found = host.doctor(args.fix, agent_running);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).expect("findings serialise")
        );
    } else if found.is_empty() {
        println!("nothing found for instance {}", cfg.instance);
    } else {
        for f in &found {
            println!("{:<14} {}", f.kind, f.what);
        }
        if args.fix {
            println!("removed {} item(s)", found.len());
        }
    }
    ExitCode::from(if found.is_empty() {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}
