//! `berth prune [--dry-run]`: removes images nothing protects, and every layer and blob no
//! remaining image uses.
//!
//! Without the agent, the store alone decides: an image is kept when pinned (by an operator,
//! an import, or the agent for a running container or a rollback); everything else goes, with
//! no grace period (an operator asked). Reading the spec dir for the images specs name is the
//! agent's job and is not done here yet.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::store::GcRoots;

use super::exit;
use super::store_ctx::{self, fail, human_size};

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &PruneArgs) -> ExitCode {
    store_ctx::init_logging();
    let cfg = match store_ctx::config(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (store, _lock) = match store_ctx::writable(&cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let roots = GcRoots::default();
    let result = if args.dry_run {
        store.gc_plan(&roots, Duration::ZERO)
    } else {
        store.gc(&roots, Duration::ZERO)
    };
    let plan = match result {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan).expect("json"));
        return ExitCode::from(exit::SUCCESS);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for i in &plan.remove_images {
        println!("{verb} image {i}");
    }
    println!(
        "{verb} {} images, {} layers, {} blobs ({})",
        plan.remove_images.len(),
        plan.remove_layers.len(),
        plan.remove_blobs.len(),
        human_size(plan.freed)
    );
    ExitCode::from(exit::SUCCESS)
}
