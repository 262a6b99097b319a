//! `berth apply --once [--wait]`: converge now and report; through the agent when one runs,
//! otherwise in this process under the state dir's lock. The unattended-provisioning path.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{exit, fail, local, render};
use crate::api::server::ApplyOptions;
use crate::status::ApplyResult;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Converge once and exit (the only mode; accepted for clarity in scripts)
    #[arg(long)]
    pub once: bool,
    /// Wait until every container is where its spec wants it (running, healthy, ...)
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long ("90s", "5m"); exit code 3
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Apply updates even where an update lock file holds them
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    berth_spec::units::parse_duration(s)
}

pub fn run(config: Option<&Path>, args: &ApplyArgs) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    crate::logging::init(cfg.log_format, "warn");
    let options = ApplyOptions {
        wait: args.wait,
        timeout_ms: args.timeout.map(|t| t.as_millis() as u64),
        force: args.force,
    };
    let rt = local::tokio();
    let result: Result<ApplyResult, String> = rt.block_on(async {
        let local = match local::agent_or_local(&cfg).await? {
            local::Target::Agent(agent) => {
                return agent
                    .post_json("/v1/apply", &options)
                    .await
                    .map_err(|e| e.to_string());
            }
            local::Target::Local(l) => l,
        };
        if cfg.git_source.is_some() {
            // Provisioning without an agent: fetch and apply the repository first.
            let (c, metrics) = (cfg.clone(), local.metrics.clone());
            let lines = tokio::task::spawn_blocking(move || {
                let mut src = crate::source::git::GitSource::open(
                    &c,
                    crate::config::host_facts(&c),
                    Arc::new(crate::events::EventLog::default()),
                    metrics,
                )?;
                Ok::<_, String>(crate::source::git::service::sync_once(
                    &mut src,
                    &c.images_dir,
                ))
            })
            .await
            .map_err(|e| e.to_string())??;
            for l in lines {
                eprintln!("berth: {l}");
            }
        }
        let source = local::source(&cfg, None)?;
        crate::daemon::run_once(
            cfg.clone(),
            local.host.clone(),
            Box::new(source),
            local.metrics.clone(),
            options,
        )
        .await
        .map_err(|e| e.to_string())
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&result).expect("result serialises")
        );
    } else {
        out!("{}", render::status_table(&result.containers));
    }
    for p in &result.problems {
        eprintln!("berth: {p}");
    }
    let code = if result.converged {
        exit::SUCCESS
    } else if result.timed_out {
        eprintln!("berth: timed out before converging");
        exit::WAIT_TIMEOUT
    } else {
        exit::FAILURE
    };
    ExitCode::from(code)
}
