//! `berth prune [--volumes] [--dry-run]`: removes images no spec names (current or last valid),
//! that no container runs or would roll back to, and that nobody pinned; every layer and blob no
//! remaining image uses; and with `--volumes` every named volume no spec mounts. No grace period:
//! an operator asked. Through the agent when one runs, else in-process under the lock.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::store_ctx::{fail, human_size};
use super::{exit, local};
use crate::backend::{Backend, Keep};
use crate::desired::{LastValid, SpecSource};
use crate::operations::{Operations, Prune, PruneFlags};
use crate::status::PruneReport;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove named volumes no spec mounts (their data is lost)
    #[arg(long)]
    pub volumes: bool,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &PruneArgs) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    crate::logging::init(cfg.log_format, "warn");
    let prune = Prune::from(PruneFlags {
        volumes: args.volumes,
        dry_run: args.dry_run,
    });
    let rt = local::tokio();
    let result: Result<PruneReport, String> = rt.block_on(async {
        let local = match local::agent_or_local(&cfg).await? {
            local::Target::Agent(agent) => {
                return agent
                    .post_json("/v1/prune", &prune)
                    .await
                    .map_err(|e| e.to_string());
            }
            local::Target::Local(l) => l,
        };
        let mut source = local::source(&cfg, None)?;
        let observed = local.host.observe().map_err(|e| e.to_string())?;
        let desired =
            LastValid::load_read_only(&crate::layout::Layout::new(&cfg)).desired(&source.scan());
        // An unreadable spec dir still protects every container's last valid spec's image.
        let keep = Keep::of(&desired, &observed);
        local.host.prune(&keep, prune).map_err(|e| e.to_string())
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
        return ExitCode::from(exit::SUCCESS);
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for i in &report.images {
        outln!("{verb} image {i}");
    }
    for v in &report.volumes {
        outln!("{verb} volume {v}");
    }
    outln!(
        "{verb} {} images, {} layers, {} blobs ({}), {} volumes",
        report.images.len(),
        report.layers,
        report.blobs,
        human_size(report.freed),
        report.volumes.len()
    );
    ExitCode::from(exit::SUCCESS)
}
