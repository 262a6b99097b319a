//! `berth source [--json]`: where specs come from (`[source]`), which commit this host runs
//! and why; `berth source import FILE.bundle`: an offline update, judged like a fetch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{exit, fail, local};
use crate::status::{ImportResult, SourceStatus};

#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub command: Option<SourceCommand>,
    /// Print the status as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Import a `git bundle` of the source's branch (offline hosts): verified like a fetch
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle (`git bundle create fleet.bundle main`, or an incremental one)
    #[arg(value_name = "FILE.bundle")]
    pub bundle: PathBuf,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &SourceArgs) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    crate::logging::init(cfg.log_format, "warn");
    if cfg.git_source.is_none() {
        return fail("the agent config has no [source]: specs come from specs_dir as it is");
    }
    match &args.command {
        Some(SourceCommand::Import(a)) => import(&cfg, a),
        None => show(&cfg, args.json),
    }
}

fn show(cfg: &berth_spec::Config, json: bool) -> ExitCode {
    let rt = local::tokio();
    let status: Result<SourceStatus, String> = rt.block_on(async {
        match local::agent(cfg).await {
            Some(agent) => agent
                .get_json("/v1/source")
                .await
                .map_err(|e| e.to_string()),
            None => crate::source::git::read_status(cfg, &crate::config::host_facts(cfg))
                .ok_or_else(|| "no [source]".to_string()),
        }
    });
    let status = match status {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serialises")
        );
    } else {
        out!("{}", super::render::source_details(&status));
    }
    ExitCode::from(exit::SUCCESS)
}

fn import(cfg: &berth_spec::Config, a: &ImportArgs) -> ExitCode {
    let bundle = match std::fs::canonicalize(&a.bundle) {
        Ok(p) => p,
        Err(e) => return fail(&format!("cannot read {}: {e}", a.bundle.display())),
    };
    let rt = local::tokio();
    let result: Result<ImportResult, String> = rt.block_on(async {
        match local::agent_or_local(cfg).await? {
            local::Target::Agent(agent) => agent
                .post_json(
                    "/v1/source/import",
                    &crate::api::server::ImportRequest {
                        bundle: bundle.clone(),
                    },
                )
                .await
                .map_err(|e| e.to_string()),
            local::Target::Local(l) => {
                let cfg = cfg.clone();
                let metrics = l.metrics.clone();
                tokio::task::spawn_blocking(move || {
                    let mut src = crate::source::git::GitSource::open(
                        &cfg,
                        crate::config::host_facts(&cfg),
                        std::sync::Arc::new(crate::events::EventLog::default()),
                        metrics,
                    )?;
                    let outcome = src.import_bundle(&bundle, crate::source::git::clock_now());
                    let _lock = l;
                    Ok(crate::source::git::import_result(
                        &bundle,
                        &outcome,
                        src.state().tip.clone(),
                    ))
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    });
    let r = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&r).expect("result serialises")
        );
    } else {
        outln!("{}: {}", r.bundle, r.message);
    }
    let ok = matches!(r.outcome.as_str(), "applied" | "up-to-date");
    ExitCode::from(if ok { exit::SUCCESS } else { exit::FAILURE })
}
