//! `berth agent`: the long-running agent (what systemd starts), and `--stop-all`, the
//! graceful stop of every container at host shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{exit, fail, local};
use crate::backend::Backend;
use crate::desired::LastValid;
use crate::reconcile::model::RunState;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Stop every container gracefully (its own stop signal and timeout, dependants first)
    /// and exit; for the unit that runs at host shutdown
    #[arg(long)]
    pub stop_all: bool,
}

pub fn run(config: Option<&Path>, args: &AgentArgs) -> ExitCode {
    // Before any thread: malloc's arenas are chosen per thread at its first allocation.
    crate::daemon::heap::tune();
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    crate::logging::init(cfg.log_format, &cfg.log_level);
    // A CLI command may hold the lock for a moment; another agent holds it for good.
    let local = match local::Local::open_patiently(&cfg, std::time::Duration::from_secs(30)) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    if args.stop_all {
        return stop_all(&cfg, local.host.as_ref());
    }
    let rt = local::tokio();
    let result = rt.block_on(async {
        let (wake_tx, wake_rx) = mpsc::channel(1);
        let source = local::source(&cfg, Some(wake_tx))?;
        let (import_tx, import_rx) = mpsc::channel(1);
        // Archives dropped here are imported; the dir is made so there is something to watch.
        let _import_watch = std::fs::create_dir_all(&cfg.images_dir)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                crate::source::watch::watch_dir(&cfg.images_dir, import_tx)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| tracing::warn!("not watching {}: {e}", cfg.images_dir.display()))
            .ok();
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let git_source = match &cfg.git_source {
            Some(_) => Some(crate::source::git::GitSource::open(
                &cfg,
                crate::config::host_facts(&cfg),
                Arc::new(crate::events::EventLog::default()),
                local.metrics.clone(),
            )?),
            None => None,
        };
        crate::daemon::run_agent(
            cfg.clone(),
            local.host.clone(),
            crate::daemon::Inputs {
                specs: Box::new(source),
                specs_changed: wake_rx,
                imports_changed: import_rx,
                repo: git_source,
            },
            local.metrics.clone(),
            shutdown,
        )
        .await
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(e) => fail(&e),
    }
}

/// Stops every running or paused container, dependants before what they depend on, each
/// layer in parallel. Containers stay (state is kept); the next boot starts them again.
fn stop_all(cfg: &berth_spec::Config, host: &crate::host::Host) -> ExitCode {
    let observed = match host.observe() {
        Ok(o) => o,
        Err(e) => return fail(&e.to_string()),
    };
    let live: BTreeMap<String, _> = observed
        .containers
        .into_iter()
        .filter(|(_, c)| matches!(c.run, RunState::Running | RunState::Paused))
        .collect();
    let lv = LastValid::load_read_only(&crate::layout::Layout::new(cfg));
    let deps = lv.dependencies();
    let mut left: BTreeSet<String> = live.keys().cloned().collect();
    let mut failed = false;
    while !left.is_empty() {
        // Those nothing left depends on go first.
        let layer: Vec<String> = left
            .iter()
            .filter(|n| {
                !left
                    .iter()
                    .any(|m| deps.get(m).is_some_and(|d| d.contains(*n)))
            })
            .cloned()
            .collect();
        let layer = if layer.is_empty() {
            left.iter().cloned().collect()
        } else {
            layer
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = layer
                .iter()
                .map(|name| {
                    let id = live[name].id.clone();
                    s.spawn(move || {
                        (
                            name,
                            host.stop(name, &id, crate::reconcile::plan::StopCause::Asked),
                        )
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok((name, Ok(()))) => eprintln!("stopped {name}"),
                    Ok((name, Err(e))) => {
                        eprintln!("berth: cannot stop {name}: {e}");
                        failed = true;
                    }
                    Err(_) => failed = true,
                }
            }
        });
        for n in &layer {
            left.remove(n);
        }
    }
    ExitCode::from(if failed { exit::FAILURE } else { exit::SUCCESS })
}
