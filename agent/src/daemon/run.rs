//! The two ways the loop runs: `berth agent` until told to stop, and `berth apply --once` (in
//! process, under the state dir's lock) until its answer is ready.

use std::sync::Arc;

use berth_spec::Config;
use tokio::sync::mpsc;

use super::{Event, Reconciler, Waiter};
use crate::api::server::ApplyOptions;
use crate::backend::Backend;
use crate::desired::SpecSource;
use crate::metrics::Metrics;
use crate::operations::Operations;
use crate::status::ApplyResult;

/// Where the agent's specs come from, and what says they (or the import dir) changed.
pub struct Inputs {
    pub specs: Box<dyn SpecSource>,
    pub specs_changed: mpsc::Receiver<()>,
    pub imports_changed: mpsc::Receiver<()>,
    /// `[source]`: the spec repository, started with the loop (it writes `specs_dir`).
    pub repo: Option<crate::source::git::GitSource>,
}

/// What `berth agent` runs until `shutdown` resolves.
pub async fn run_agent<H: Backend + Operations>(
    config: Config,
    host: Arc<H>,
    inputs: Inputs,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Inputs {
        specs: source,
        mut specs_changed,
        mut imports_changed,
        repo: git_source,
    } = inputs;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = Reconciler::start(config, host, source, metrics, tx.clone()).await?;
    r.git_source = git_source.map(|g| {
        crate::source::git::service::spawn(
            g.with_events(r.events.clone()),
            r.config.images_dir.clone(),
        )
    });
    let (req_tx, mut req_rx) = mpsc::channel(16);
    let servers = Servers::start(&r, req_tx);
    r.pass();
    r.start_import_scan();
    // Specs loaded and running containers adopted: ready, without waiting for pulls.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    r.events.emit(
        None,
        "agent",
        format!("agent {} started", r.config.instance),
    );

    let mut resync = tokio::time::interval(r.config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::pin!(shutdown);
    // When the heap is trimmed next: a moment after the last pass (see `heap`).
    let mut trim_at = Some(tokio::time::Instant::now() + super::heap::TRIM_AFTER);
    loop {
        let wake = r.next_wake();
        let ev = tokio::select! {
            Some(ev) = rx.recv() => ev,
            Some(()) = specs_changed.recv() => Event::SpecsChanged,
            Some(()) = imports_changed.recv() => Event::ImportsChanged,
            Some(req) = req_rx.recv() => Event::Api(req),
            _ = resync.tick() => Event::ResyncDue,
            _ = hup.recv() => Event::Hangup,
            _ = sleep_until(wake) => Event::Wake,
            _ = sleep_until(r.next_waiter_deadline()) => Event::Wake,
            _ = &mut shutdown => Event::Shutdown,
            _ = sleep_until(trim_at) => {
                trim_at = None;
                super::heap::trim();
                continue;
            }
        };
        if matches!(ev, Event::Shutdown) {
            break;
        }
        let mut dirty = r.handle(ev);
        // Coalesce a burst into one pass.
        while let Ok(ev) = rx.try_recv() {
            dirty |= r.handle(ev);
        }
        while let Ok(()) = specs_changed.try_recv() {
            dirty |= r.handle(Event::SpecsChanged);
        }
        if dirty {
            r.pass();
            trim_at = Some(tokio::time::Instant::now() + super::heap::TRIM_AFTER);
        }
        r.answer_waiters();
    }
    r.events
        .emit(None, "agent", "agent stopping; containers keep running");
    servers.stop().await;
    Ok(())
}

/// What serves the loop's state while it runs: the API socket, `/metrics`, the MQTT reporter.
struct Servers {
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_api: tokio::sync::oneshot::Sender<()>,
    metrics: Option<tokio::task::JoinHandle<()>>,
    reporter: Option<crate::report::Reporter>,
}

impl Servers {
    fn start(r: &Reconciler, requests: mpsc::Sender<crate::api::server::ApiRequest>) -> Self {
        let api_state = crate::api::server::ApiState {
            statuses: r.statuses(),
            events: r.events.clone(),
            metrics: r.metrics.clone(),
            requests,
            source: r.git_source.clone(),
        };
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let socket = r.layout.socket();
        let api = tokio::spawn(async move {
            crate::api::server::serve(&socket, api_state, async move {
                let _ = api_stopped.await;
            })
            .await
        });
        let metrics = r
            .config
            .metrics_listen
            .map(|addr| tokio::spawn(crate::api::server::serve_metrics(addr, r.metrics.clone())));
        Servers {
            api,
            stop_api,
            metrics,
            reporter: start_reporter(r),
        }
    }

    /// The reporter first (it says goodbye over MQTT), then the API, then `/metrics`.
    async fn stop(self) {
        if let Some(rep) = self.reporter {
            rep.stop(std::time::Duration::from_secs(3)).await;
        }
        let _ = self.stop_api.send(());
        let _ = self.api.await;
        if let Some(m) = self.metrics {
            m.abort();
        }
    }
}

/// Starts the MQTT reporter when the config has a `[report]`; a reporter that cannot start
/// (a missing certificate, no host id for its topic) is an error event, never a stop.
fn start_reporter(r: &Reconciler) -> Option<crate::report::Reporter> {
    let report = r.config.report.as_ref()?;
    let feeds = crate::report::Feeds {
        statuses: r.statuses(),
        events: r.events.live(),
        source: r.source_summaries(),
    };
    let id = crate::identity::HostIdentity::of(&r.config);
    match crate::report::Reporter::spawn(report, id, feeds, r.metrics.report.clone()) {
        Ok(rep) => Some(rep),
        Err(e) => {
            r.events.emit(
                None,
                "error",
                format!("not reporting to {}: {e}", report.mqtt),
            );
            None
        }
    }
}

/// `berth apply --once`: converge in-process (the caller holds the state lock), then report.
pub async fn run_once<H: Backend + Operations>(
    config: Config,
    host: Arc<H>,
    source: Box<dyn SpecSource>,
    metrics: Arc<Metrics>,
    options: ApplyOptions,
) -> anyhow::Result<ApplyResult> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = Reconciler::start(config, host, source, metrics, tx).await?;
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    r.add_waiter(Waiter::new(options, reply));
    r.pass();
    loop {
        r.answer_waiters();
        if let Ok(result) = answer.try_recv() {
            return Ok(result);
        }
        let wake = r.next_wake();
        let ev = tokio::select! {
            Some(ev) = rx.recv() => ev,
            _ = sleep_until(wake) => Event::Wake,
            _ = sleep_until(r.next_waiter_deadline()) => Event::Wake,
        };
        let mut dirty = r.handle(ev);
        while let Ok(ev) = rx.try_recv() {
            dirty |= r.handle(ev);
        }
        if dirty {
            r.pass();
        }
    }
}

pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
