//! `berth doctor [--fix]`: lists what a crash or a bug left behind (mounts, netns, links,
//! cgroups, nftables elements, leases, shims, store blobs) for this agent's instance only,
//! and with `--fix` removes it, then looks again. Exit codes follow fsck's convention (see
//! [`code`]), so a script tells "fixed" from "could not fix".

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::local;
use crate::host::Host;
use crate::host::doctor::{Agent, Repair};
use crate::layout::Layout;
use crate::store::lock::StateLock;

/// Exit codes, as fsck's: each a bit, so a script can test them.
pub mod code {
    /// Nothing found.
    pub const CLEAN: u8 = 0;
    /// Without `--fix`: leftovers found (listed). With `--fix`: all of them removed.
    pub const FOUND_OR_FIXED: u8 = 1;
    /// `--fix`: some could not be removed (listed).
    pub const LEFT: u8 = 4;
    /// Could not look at all (config, lock, permissions).
    pub const ERROR: u8 = 8;
}

const EXIT_CODES: &str = "\
Exit codes (as fsck's):
  0  nothing found
  1  without --fix: leftovers found (listed); with --fix: all of them removed
  4  with --fix: some could not be removed (listed after \"could not remove\")
  8  could not look (unreadable config, the state dir locked by a running agent, not root)
  2  usage error";

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct DoctorArgs {
    /// Remove what is found (takes the state dir lock: stop the agent first)
    #[arg(long)]
    pub fix: bool,
    /// Print the findings as a JSON list
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &DoctorArgs) -> ExitCode {
    let failed = |e: &str| {
        eprintln!("berth: {e}");
        ExitCode::from(code::ERROR)
    };
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return failed(&e.to_string()),
    };
    crate::logging::init(cfg.log_format, "warn");
    // Fixing needs the lock; looking does not, so doctor can inspect beside a live agent.
    let (_lock, host) = if args.fix {
        match local::Local::open(&cfg) {
            Ok(l) => (None::<StateLock>, l.host),
            Err(e) => return failed(&e),
        }
    } else {
        let lock = StateLock::try_acquire(&Layout::new(&cfg)).ok();
        match Host::open_read_only(&cfg) {
            Ok(h) => (lock, std::sync::Arc::new(h)),
            Err(e) => return failed(&e.to_string()),
        }
    };
    // Without the lock, an agent runs (it owns the bridge and table).
    let agent = if !args.fix && _lock.is_none() {
        Agent::Running
    } else {
        Agent::NotRunning
    };
    let repair = if args.fix {
        Repair::Fix
    } else {
        Repair::ReportOnly
    };
    let found = host.doctor(repair, agent);
    // What a fix could not remove: whatever a second look still finds.
    let left = if args.fix && !found.is_empty() {
        host.doctor(Repair::ReportOnly, Agent::NotRunning)
    } else {
        Vec::new()
    };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&found).expect("findings serialise")
        );
    } else if found.is_empty() {
        outln!("nothing found for instance {}", cfg.instance);
    } else {
        for f in &found {
            outln!("{:<14} {}", f.kind, f.what);
        }
        if args.fix {
            outln!(
                "removed {} item(s)",
                found.len() - left.len().min(found.len())
            );
            if !left.is_empty() {
                outln!("could not remove {} item(s):", left.len());
                for f in &left {
                    outln!("{:<14} {}", f.kind, f.what);
                }
            }
        }
    }
    ExitCode::from(match (found.is_empty(), left.is_empty()) {
        (true, _) => code::CLEAN,
        (false, true) => code::FOUND_OR_FIXED,
        (false, false) => code::LEFT,
    })
}
