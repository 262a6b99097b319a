//! `berth status [NAME]`: containers, as the agent sees them (or, with no agent running, as
//! this process observes them).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::{exit, fail, local, render};
use crate::backend::Backend;
use crate::desired::{LastValid, SpecSource};
use crate::status::ContainerStatus;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this container
    pub name: Option<String>,
    /// Print a JSON list of objects (always a list, also for one name)
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &StatusArgs) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    crate::logging::init(cfg.log_format, "warn");
    let rt = local::tokio();
    let result: Result<Vec<ContainerStatus>, String> = rt.block_on(async {
        let local = match local::agent_or_local(&cfg).await? {
            local::Target::Agent(agent) => {
                return agent
                    .get_json("/v1/containers")
                    .await
                    .map_err(|e| e.to_string());
            }
            local::Target::Local(l) => l,
        };
        let mut source = local::source(&cfg, None)?;
        let observed = local.host.observe().map_err(|e| e.to_string())?;
        let desired =
            LastValid::load_read_only(&crate::layout::Layout::new(&cfg)).desired(&source.scan());
        let plan = crate::daemon::plan_in_process(&cfg, &desired, &observed);
        Ok(crate::reconcile::report::report(
            &desired,
            &observed,
            &Default::default(),
            &plan,
            &BTreeMap::new(),
        ))
    });
    let mut statuses = match result {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Some(name) = &args.name {
        statuses.retain(|s| s.name == *name);
        if statuses.is_empty() {
            return fail(&format!("no container named {name:?}"));
        }
    }
    if !args.json
        && cfg.git_source.is_some()
        && let Some(s) = source_status(&cfg)
    {
        out!("{}", render::source_header(&s));
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&statuses).expect("statuses serialise")
        );
    } else {
        out!("{}", render::status_table(&statuses));
    }
    ExitCode::from(exit::SUCCESS)
}

/// The source's status: the agent's, else what the state dir holds.
fn source_status(cfg: &berth_spec::Config) -> Option<crate::status::SourceStatus> {
    let rt = local::tokio();
    rt.block_on(async {
        match local::agent(cfg).await {
            Some(a) => a.get_json("/v1/source").await.ok(),
            None => crate::source::git::read_status(cfg, &crate::config::host_facts(cfg)),
        }
    })
}
