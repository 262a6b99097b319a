//! `berth plan`: what the next pass would do, without doing it.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::{exit, fail, local, render};
use crate::backend::Backend;
use crate::daemon::{plan_in_process, plan_view};
use crate::desired::{LastValid, SpecSource};
use crate::status::PlanView;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &PlanArgs) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    crate::logging::init(cfg.log_format, "warn");
    let rt = local::tokio();
    let result: Result<PlanView, String> = rt.block_on(async {
        let local = match local::agent_or_local(&cfg).await? {
            local::Target::Agent(agent) => {
                return agent.get_json("/v1/plan").await.map_err(|e| e.to_string());
            }
            local::Target::Local(l) => l,
        };
        let mut source = local::source(&cfg, None)?;
        let observed = local.host.observe().map_err(|e| e.to_string())?;
        let desired =
            LastValid::load_read_only(&crate::layout::Layout::new(&cfg)).desired(&source.scan());
        Ok(plan_view(&plan_in_process(&cfg, &desired, &observed)))
    });
    match result {
        Ok(p) if args.json => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&p).expect("plan serialises")
            );
            ExitCode::from(exit::SUCCESS)
        }
        Ok(p) => {
            out!("{}", render::plan_diff(&p));
            ExitCode::from(exit::SUCCESS)
        }
        Err(e) => fail(&e),
    }
}
