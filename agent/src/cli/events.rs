//! `berth events`: the agent's event stream (recent events, then live ones).

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::{exit, fail, local, render};
use crate::status::EventRecord;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the recent events and exit instead of following
    #[arg(long)]
    pub no_follow: bool,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &EventsArgs) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let rt = local::tokio();
    let result = rt.block_on(async {
        let Some(agent) = local::agent(&cfg).await else {
            return Err("no agent is running: events come from a running agent".to_string());
        };
        let uri = if args.no_follow {
            "/v1/events"
        } else {
            "/v1/events?follow=true"
        };
        agent
            .stream_lines(uri, |line| {
                if args.json {
                    outln!("{line}");
                } else if let Ok(ev) = serde_json::from_str::<EventRecord>(line) {
                    outln!("{}", render::event_line(&ev));
                }
                true
            })
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(e) => fail(&e),
    }
}
