//! The composition: the spec source, the reconcile loop and the API, wired with channels.
//!
//! One closed [`Event`] enum and one `match` drive everything: a spec change, a container
//! exit, an action finishing, a timer, an API request. Events only say *when* to run a pass;
//! every pass plans from the whole desired and observed sets.

mod apply;
mod exec;
pub mod heap;
mod policy;
mod run;
mod specs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use berth_spec::{Config, ImageSource};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::api::server::ApiRequest;
use crate::backend::{ActionError, Backend, Keep, Notice, RemoteImage};
use crate::clock;
use crate::desired::SpecSource;
use crate::events::EventLog;
use crate::layout::Layout;
use crate::metrics::{Metrics, StateLabel};
use crate::names::IncarnationId;
use crate::operations::Operations;
use crate::reconcile::model::Millis;
use crate::reconcile::model::{Failures, ObservedContainer};
use crate::reconcile::plan::Plan;
use crate::reconcile::report::{self, InFlight};
use crate::reconcile::{Desired, Observed, plan_pass};
use crate::status::{
    ApplyResult, ContainerStatus, InProgressView, PlanView, PlannedAction, SourceSummary,
    WaitingView,
};

pub use apply::Waiter;
pub use policy::plan_in_process;

/// Actions run at once across containers: enough to start 100 containers quickly, few enough
/// that a burst doesn't starve the machine.
const MAX_PARALLEL: usize = 16;
/// A file that failed to parse and changed this recently may be half-written: look again.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Everything that can wake the loop.
pub enum Event {
    /// The spec source changed (or may have).
    SpecsChanged,
    /// A spec job finished (the store comes back to the loop), with its read if it made one.
    SpecsRead(Box<specs::SpecStore>, Option<Box<specs::Read>>),
    /// A container's process exited.
    Exited(String),
    /// A fresh observation of one container.
    Observed(String, Option<Box<ObservedContainer>>),
    /// A container's actions finished.
    Done(Box<exec::Done>),
    /// A tag check finished.
    Checked(ImageSource, Result<RemoteImage, ActionError>),
    /// A health check finished.
    Health {
        name: String,
        id: IncarnationId,
        run: crate::reconcile::health::CheckRun,
    },
    /// A pull finished.
    Pulled(ImageSource, Result<berth_spec::Digest, ActionError>),
    /// The backend put back something changed behind berth's back.
    Repaired(String),
    /// Archives may have been dropped in the import dir.
    ImportsChanged,
    /// An import scan finished: one line per archive.
    Imported(Vec<String>),
    /// A full observation (with drift repair) finished, with the host's warnings.
    Resynced(Result<Box<Observed>, ActionError>, Vec<String>),
    /// Time for a full observation.
    ResyncDue,
    /// A backoff ended.
    Wake,
    Api(ApiRequest),
    /// SIGHUP: rescan and re-check everything now.
    Hangup,
    /// `berth apply` after the spec repository was fetched (with a `[source]`).
    ApplyFetched {
        options: crate::api::server::ApplyOptions,
        reply: tokio::sync::oneshot::Sender<ApplyResult>,
    },
    Shutdown,
}

/// The reconcile loop's state.
pub struct Reconciler {
    pub config: Config,
    pub layout: Layout,
    backend: Arc<dyn Backend>,
    /// The same host, for what operators ask through the API (image commands, prune).
    operations: Arc<dyn Operations>,
    /// The spec source and the last valid specs, read and written off the loop.
    specs: specs::SpecJobs,
    desired: Desired,
    observed: Observed,
    /// What failed and when: the planner's backoffs (one place for pulls, creates, starts).
    failures: Failures,
    in_flight: BTreeMap<String, InFlight>,
    /// Containers whose exit was heard while an action held them: observed again after it.
    exited_while_busy: BTreeSet<String>,
    pulls_in_flight: BTreeSet<ImageSource>,
    plan: Plan,
    /// Containers whose planned actions the last pass skipped because an earlier action still
    /// held them: planned again when it ends.
    left_for_busy: BTreeSet<String>,
    rescan_at: Option<tokio::time::Instant>,
    tx: mpsc::UnboundedSender<Event>,
    statuses: watch::Sender<Arc<Vec<ContainerStatus>>>,
    pub events: Arc<EventLog>,
    pub metrics: Arc<Metrics>,
    semaphore: Arc<Semaphore>,
    waiters: Vec<Waiter>,
    resync: Resync,
    health: policy::HealthBook,
    health_wake: Option<Millis>,
    checks_in_flight: BTreeSet<ImageSource>,
    /// Spreads tag checks of this host over time (a fleet must not hit its registry at once).
    jitter_seed: u64,
    /// Host problems containers on the bridge suffer from, shown on their status.
    warnings: Vec<String>,
    /// The spec repository (`[source]`): fetched at once on SIGHUP and `berth apply`.
    pub git_source: Option<crate::source::git::service::SourceHandle>,
}

/// The periodic repair ([`Backend::resync`]), which runs on a blocking thread: one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    Idle,
    Running,
}

impl Reconciler {
    /// Observes the world (adopting live containers) and reads the spec source once, fully,
    /// before anything is planned: nothing is pruned on a partial view.
    pub async fn start<H: Backend + Operations>(
        config: Config,
        host: Arc<H>,
        source: Box<dyn SpecSource>,
        metrics: Arc<Metrics>,
        tx: mpsc::UnboundedSender<Event>,
    ) -> Result<Self, ActionError> {
        let layout = Layout::new(&config);
        let (backend, operations): (Arc<dyn Backend>, Arc<dyn Operations>) = (host.clone(), host);
        let (b, l) = (backend.clone(), layout.clone());
        let (observed, warnings, store, first) = tokio::task::spawn_blocking(move || {
            b.startup()?;
            let (observed, warnings) = (b.observe()?, b.warnings());
            let mut store = specs::SpecStore::open(source, &l);
            let first = store.run(specs::Job::read(1)).expect("a read job reads");
            Ok::<_, ActionError>((observed, warnings, store, first))
        })
        .await
        .map_err(|e| ActionError::permanent(format!("startup panicked: {e}")))??;
        let (statuses, _) = watch::channel(Arc::new(Vec::new()));
        let jitter_seed = policy::jitter_seed(&config);
        let mut r = Reconciler {
            specs: specs::SpecJobs::new(store, &first),
            config,
            layout,
            backend,
            operations,
            desired: Desired::default(),
            observed,
            failures: Failures::default(),
            in_flight: BTreeMap::new(),
            exited_while_busy: BTreeSet::new(),
            pulls_in_flight: BTreeSet::new(),
            plan: Plan::default(),
            left_for_busy: BTreeSet::new(),
            rescan_at: None,
            tx,
            statuses,
            events: Arc::new(EventLog::default()),
            metrics,
            semaphore: Arc::new(Semaphore::new(MAX_PARALLEL)),
            waiters: Vec::new(),
            resync: Resync::Idle,
            health: policy::HealthBook::default(),
            health_wake: None,
            checks_in_flight: BTreeSet::new(),
            warnings,
            git_source: None,
            jitter_seed,
        };
        r.take_read(first);
        let events = r.tx.clone();
        let (notice_tx, mut notices) = mpsc::unbounded_channel();
        r.backend.watch(notice_tx);
        tokio::spawn(async move {
            while let Some(n) = notices.recv().await {
                let ev = match n {
                    Notice::Exited(name) => Event::Exited(name),
                    Notice::Repaired(what) => Event::Repaired(what),
                };
                if events.send(ev).is_err() {
                    break;
                }
            }
        });
        Ok(r)
    }

    pub fn statuses(&self) -> watch::Receiver<Arc<Vec<ContainerStatus>>> {
        self.statuses.subscribe()
    }

    pub fn source_summaries(&self) -> watch::Receiver<Option<SourceSummary>> {
        self.metrics.source_summaries()
    }

    /// The hook for the spec source: its applied commit and rollout membership, for
    /// `/metrics` and the MQTT status. Never waits.
    pub fn set_source_summary(&self, summary: Option<SourceSummary>) {
        self.metrics.set_source_summary(summary.as_ref());
    }

    /// Asks for a fresh read of the spec source (it comes back as [`Event::SpecsRead`]).
    fn rescan(&mut self) {
        self.specs.ask_read();
        self.run_spec_job();
    }

    /// Starts the next spec job on a blocking thread, when there is one and none runs.
    fn run_spec_job(&mut self) {
        let Some((mut store, job)) = self.specs.next_job() else {
            return;
        };
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let read = store.run(job).map(Box::new);
            let _ = tx.send(Event::SpecsRead(store, read));
        });
    }

    fn take_read(&mut self, read: specs::Read) {
        self.rescan_at = read.unsettled.then(|| tokio::time::Instant::now() + SETTLE);
        if let Some(e) = &read.error {
            tracing::warn!("spec source unreadable, nothing will be pruned: {e}");
        }
        self.desired = read.desired;
    }

    /// Handles one event; returns whether a pass should follow.
    pub fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::SpecsChanged => {
                self.backend.prepare_for_changes();
                self.rescan();
                // The pass follows the read.
                false
            }
            Event::SpecsRead(store, read) => self.spec_job_done(store, read),
            Event::Hangup => {
                if let Some(g) = &self.git_source {
                    // The swap it may bring wakes the loop through the spec watcher.
                    g.fetch_soon();
                    g.scan_imports();
                }
                self.rescan();
                self.recheck_now();
                self.start_resync();
                self.start_import_scan();
                true
            }
            Event::Exited(name) => {
                if self.in_flight.contains_key(&name) {
                    // The action's own observation may be from before the exit.
                    self.exited_while_busy.insert(name);
                } else {
                    self.refresh_one(name);
                }
                false
            }
            Event::Observed(name, obs) => {
                if !self.in_flight.contains_key(&name) {
                    self.set_observed(&name, obs.map(|b| *b));
                }
                true
            }
            Event::Done(done) => {
                self.finish(*done);
                true
            }
            Event::Checked(image, result) => {
                self.finish_check(image, result);
                true
            }
            Event::Health { name, id, run } => self.finish_health(name, id, run),
            Event::Pulled(image, result) => {
                self.pulls_in_flight.remove(&image);
                self.finish_pull(image, result);
                true
            }
            Event::Resynced(result, warnings) => {
                self.resync_done(result, warnings);
                true
            }
            Event::Repaired(what) => {
                self.events.emit(None, "repaired", what);
                false
            }
            Event::ImportsChanged => {
                if let Some(g) = &self.git_source {
                    g.scan_imports();
                }
                self.start_import_scan();
                false
            }
            Event::Imported(lines) => {
                for l in &lines {
                    self.events.emit(None, "import", l.clone());
                }
                // New images may be what a waiting container needs.
                !lines.is_empty()
            }
            Event::ResyncDue => {
                self.start_resync();
                self.start_import_scan();
                false
            }
            Event::Wake => {
                if self
                    .rescan_at
                    .is_some_and(|at| at <= tokio::time::Instant::now())
                {
                    // A refused file that was still changing: read it again now it settled.
                    self.rescan_at = None;
                    self.rescan();
                }
                true
            }
            Event::ApplyFetched { options, reply } => {
                self.begin_apply(options, reply);
                true
            }
            Event::Api(request) => self.answer_operator(request),
            Event::Shutdown => false,
        }
    }

    /// `berth apply`: read the specs and look at the host afresh, then answer once the
    /// condition holds.
    fn begin_apply(
        &mut self,
        options: crate::api::server::ApplyOptions,
        reply: tokio::sync::oneshot::Sender<ApplyResult>,
    ) {
        self.rescan();
        self.recheck_now();
        // Answer from a fresh look at the host, not from what the loop last heard (an exit
        // may still be on its way).
        self.start_resync();
        self.waiters.push(Waiter::new(options, reply));
    }

    /// A spec job came back: its read (if it made one) becomes the desired set, and the
    /// plan questions it answers get their answer. Returns whether a pass should follow.
    fn spec_job_done(
        &mut self,
        store: Box<specs::SpecStore>,
        mut read: Option<Box<specs::Read>>,
    ) -> bool {
        let replies = self.specs.finished(store, read.as_deref_mut());
        let fresh = read.is_some();
        if let Some(read) = read {
            self.take_read(*read);
        }
        if !replies.is_empty() {
            let view = self.plan_view();
            for reply in replies {
                let _ = reply.send(view.clone());
            }
        }
        self.run_spec_job();
        fresh
    }

    fn resync_done(&mut self, result: Result<Box<Observed>, ActionError>, warnings: Vec<String>) {
        self.resync = Resync::Idle;
        for w in warnings.iter().filter(|w| !self.warnings.contains(w)) {
            self.events.emit(None, "warning", w.clone());
        }
        self.warnings = warnings;
        match result {
            Ok(fresh) => self.merge_observation(*fresh),
            Err(e) => self
                .events
                .emit(None, "error", format!("resync failed: {e}")),
        }
    }

    /// `berth apply` with a spec repository: fetch first, so that the answer covers what the
    /// remote holds now.
    fn apply_after_fetch(
        &mut self,
        options: crate::api::server::ApplyOptions,
        reply: tokio::sync::oneshot::Sender<ApplyResult>,
    ) {
        let done = self.git_source.as_ref().expect("checked").fetch_now();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = done.await;
            let _ = tx.send(Event::ApplyFetched { options, reply });
        });
    }

    /// What operators ask: a plan, image commands, a prune, an apply. Returns whether a pass
    /// should follow.
    fn answer_operator(&mut self, request: ApiRequest) -> bool {
        match request {
            ApiRequest::Plan { reply } => {
                // Answered from a read of the source that begins after the question.
                self.specs.reply_after_read(reply);
                self.run_spec_job();
            }
            ApiRequest::Image { op, reply } => {
                let (operations, tx) = (self.operations.clone(), self.tx.clone());
                tokio::task::spawn_blocking(move || {
                    let result = operations.image_op(&op).map_err(|e| e.message);
                    if result.is_ok() {
                        // New or unpinned images: look again at what the store holds.
                        let _ = tx.send(Event::ResyncDue);
                    }
                    let _ = reply.send(result);
                });
            }
            ApiRequest::Prune { prune, reply } => {
                let (operations, keep) = (self.operations.clone(), self.keep());
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(operations.prune(&keep, prune).map_err(|e| e.message));
                });
            }
            ApiRequest::Apply { options, reply } if self.git_source.is_some() => {
                self.apply_after_fetch(options, reply);
            }
            ApiRequest::Apply { options, reply } => {
                self.begin_apply(options, reply);
                return true;
            }
        }
        false
    }

    pub(super) fn refresh_one(&self, name: String) {
        let backend = self.backend.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let obs = backend.observe_one(&name).map(Box::new);
            let _ = tx.send(Event::Observed(name, obs));
        });
    }

    fn set_observed(&mut self, name: &str, obs: Option<ObservedContainer>) {
        let before = self.observed.containers.get(name).map(|o| o.run);
        match obs {
            Some(o) => {
                if before != Some(o.run)
                    && let crate::reconcile::model::RunState::Exited(e) = o.run
                {
                    let how = if e.oom { " (out of memory)" } else { "" };
                    self.events.emit(
                        Some(name),
                        "exited",
                        format!("exited with code {}{how}", e.code),
                    );
                }
                self.observed.containers.insert(name.to_string(), o);
            }
            None => {
                self.observed.containers.remove(name);
            }
        }
    }

    fn start_resync(&mut self) {
        if self.resync == Resync::Running {
            return;
        }
        self.resync = Resync::Running;
        let backend = self.backend.clone();
        let tx = self.tx.clone();
        let keep = self.keep();
        tokio::task::spawn_blocking(move || {
            let result = backend
                .resync(&keep)
                .and_then(|_| backend.observe())
                .map(Box::new);
            let warnings = backend.warnings();
            let _ = tx.send(Event::Resynced(result, warnings));
        });
    }

    fn start_import_scan(&self) {
        let backend = self.backend.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let lines = backend.scan_imports();
            let _ = tx.send(Event::Imported(lines));
        });
    }

    /// What resyncs and prunes must leave alone: the specs' images (last valid ones too), what
    /// containers run and would roll back to, the volumes specs mount.
    pub(super) fn keep(&self) -> Keep {
        Keep::of(&self.desired, &self.observed)
    }

    /// Takes a full observation, except for containers an action is changing right now.
    fn merge_observation(&mut self, fresh: Observed) {
        let mut next = fresh.containers;
        for name in self.in_flight.keys() {
            match self.observed.containers.get(name) {
                Some(o) => next.insert(name.clone(), o.clone()),
                None => next.remove(name),
            };
        }
        let gone: Vec<String> = self
            .observed
            .containers
            .keys()
            .filter(|n| !next.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.set_observed(&name, None);
        }
        for (name, o) in next {
            self.set_observed(&name, Some(o));
        }
        self.observed.images = fresh.images;
    }

    /// What the planner sees: the observation plus the failures the loop remembers.
    fn planning_view(&self) -> Observed {
        let mut o = self.observed.clone();
        self.add_policy_view(&mut o);
        o
    }

    /// One pass: plan from everything, dispatch what is not already in flight, publish.
    pub fn pass(&mut self) {
        let started = std::time::Instant::now();
        crate::runtime::sys::mark("agent-pass");
        let ctx = self.ctx();
        let view = self.planning_view();
        self.plan = plan_pass(&self.desired, &view, &self.failures, &ctx);
        self.health_wake = self.schedule_health(ctx.now);
        self.left_for_busy.clear();
        let actions = std::mem::take(&mut self.plan.actions);
        self.dispatch(&actions);
        self.plan.actions = actions;
        self.forget_deleted_specs();
        self.publish();
        // The waiting list (one entry per waiting container, 10,000 at times) is read only
        // by the status report just made: not kept until the next pass.
        self.plan.waiting = BTreeMap::new();
        if self.desired.trustworthy {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.metrics.last_pass.set(now.as_secs_f64());
        }
        self.metrics.passes.inc();
        self.metrics
            .pass_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// A spec file deleted before its container existed never gets a prune, which is what
    /// forgets a last valid spec: forget it here, or it stays in memory and in
    /// `containers/<name>/spec.json` for good.
    fn forget_deleted_specs(&mut self) {
        if !self.desired.trustworthy {
            return;
        }
        let stale: Vec<String> = self
            .specs
            .orphans
            .iter()
            .filter(|n| {
                !self.desired.specs.contains_key(*n)
                    && !self.observed.containers.contains_key(*n)
                    && !self.in_flight.contains_key(*n)
            })
            .cloned()
            .collect();
        for name in stale {
            self.specs.forget(specs::Forget::Deleted(name));
        }
        self.run_spec_job();
    }

    fn publish(&mut self) {
        let view = self.planning_view();
        let mut statuses = report::report(
            &self.desired,
            &view,
            &self.failures,
            &self.plan,
            &self.in_flight,
        );
        if let Some(w) = self.warnings.first() {
            // Containers on the bridge (those with an address) are the ones it hurts.
            for s in statuses
                .iter_mut()
                .filter(|s| s.ip.is_some() && s.reason.is_none())
            {
                s.reason = Some(w.clone());
            }
        }
        self.metrics.containers.clear();
        for s in &statuses {
            self.metrics
                .containers
                .get_or_create(&StateLabel {
                    state: s.status.as_str().into(),
                })
                .inc();
        }
        let statuses = Arc::new(statuses);
        self.metrics.set_containers(statuses.clone());
        self.statuses.send_replace(statuses);
    }

    /// When the loop should wake by itself: the earliest backoff end or settle rescan.
    pub fn next_wake(&self) -> Option<tokio::time::Instant> {
        let backoff = [self.plan.wake_at, self.health_wake]
            .into_iter()
            .flatten()
            .min()
            .map(clock::instant_of);
        match (backoff, self.rescan_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether nothing is running and nothing runnable was left for later (a removal begun
    /// and not finished is not done: it waits for its backoff).
    pub fn quiescent(&self) -> bool {
        self.specs.idle()
            && self.observed.removing.is_empty()
            && self.in_flight.is_empty()
            && self.pulls_in_flight.is_empty()
            && self.checks_in_flight.is_empty()
            && self.resync == Resync::Idle
            && self.left_for_busy.is_empty()
            && self.plan.actions.is_empty()
    }

    fn plan_view(&self) -> PlanView {
        let mut v = plan_view(&plan_pass(
            &self.desired,
            &self.planning_view(),
            &self.failures,
            &self.ctx(),
        ));
        v.in_progress = self
            .pulls_in_flight
            .iter()
            .map(|image| InProgressView {
                action: "pull".into(),
                container: None,
                image: Some(image.to_string()),
            })
            .chain(self.in_flight.iter().map(|(name, kind)| InProgressView {
                action: kind.verb().into(),
                container: Some(name.clone()),
                image: None,
            }))
            .collect();
        v
    }

    /// Answers the apply requests whose condition holds; returns the answered results.
    pub fn answer_waiters(&mut self) -> Vec<ApplyResult> {
        let statuses = self.statuses.borrow().clone();
        let quiescent = self.quiescent();
        let mut answered = Vec::new();
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            match w.check(&statuses, quiescent) {
                Some(result) => {
                    answered.push(result.clone());
                    w.answer(result);
                }
                None => keep.push(w),
            }
        }
        self.waiters = keep;
        answered
    }

    pub fn next_waiter_deadline(&self) -> Option<tokio::time::Instant> {
        self.waiters.iter().filter_map(|w| w.deadline).min()
    }

    pub fn add_waiter(&mut self, w: Waiter) {
        self.waiters.push(w);
    }
}

/// A plan as `berth plan` shows it.
pub fn plan_view(p: &Plan) -> PlanView {
    PlanView {
        actions: p
            .actions
            .iter()
            .map(|a| PlannedAction {
                action: a.kind().into(),
                container: a.container().map(str::to_string),
                description: a.to_string(),
            })
            .collect(),
        waiting: p
            .waiting
            .iter()
            .map(|(name, w)| WaitingView {
                container: name.clone(),
                reason: w.to_string(),
            })
            .collect(),
        in_progress: Vec::new(),
    }
}

pub use run::{Inputs, run_agent, run_once};

#[cfg(test)]
mod tests;
