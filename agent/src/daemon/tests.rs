//! The loop against an in-memory backend: ordering, coalescing, failures, apply answers.
//! The kernel edges are tested against the real kernel elsewhere; this is the loop's logic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_spec::model::{Dependency, DependencyCondition, Resources};
use berth_spec::{Config, ContainerSpec, Digest, ImageSource};
use tokio::sync::mpsc;

use super::*;
use crate::api::server::ApplyOptions;
use crate::names::IncarnationId;
use crate::reconcile::desired_set::Scan;
use crate::reconcile::model::{ContainerInfo, Ending, HealthState, RunState};
use crate::reconcile::plan::{Create, RemoveReason, StopCause, UpdateMark};
use crate::status::Status;

#[derive(Default)]
struct World {
    images: BTreeMap<ImageSource, Digest>,
    containers: BTreeMap<String, ObservedContainer>,
    /// Every call, in order, as "verb name".
    log: Vec<String>,
    fail_pull: Option<ActionError>,
    fail_create: BTreeMap<String, ActionError>,
    fail_remove: BTreeMap<String, ActionError>,
    /// Removals that failed: their records say `removing`.
    removing: BTreeMap<String, IncarnationId>,
    exits: Option<mpsc::UnboundedSender<crate::backend::Notice>>,
    /// What the "registry" says each tag points to (defaults to a digest of the name).
    remote: BTreeMap<ImageSource, Digest>,
    /// Health check results by container (passing when absent).
    healthy: BTreeMap<String, bool>,
    /// Digests whose containers die at once (a bad release).
    crashing: std::collections::BTreeSet<Digest>,
    updates: BTreeMap<String, crate::reconcile::model::UpdateState>,
    /// How often the loop asked the backend to prepare for changes.
    prepared: usize,
}

fn default_digest(image: &ImageSource) -> Digest {
    crate::reconcile::model::test_digest(&format!("sha256:{}", image.to_string().len()))
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn log(&self) -> Vec<String> {
        self.0.lock().unwrap().log.clone()
    }
    /// Simulates a container's process dying.
    fn kill(&self, name: &str, code: i32) {
        let mut w = self.0.lock().unwrap();
        let c = w.containers.get_mut(name).unwrap();
        c.run = RunState::Exited(crate::reconcile::model::Exit {
            code,
            oom: false,
            at: clock::now(),
            ending: Ending::OnItsOwn,
        });
        let tx = w.exits.clone().unwrap();
        tx.send(crate::backend::Notice::Exited(name.into()))
            .unwrap();
    }
}

impl Backend for Fake {
    fn startup(&self) -> Result<(), ActionError> {
        Ok(())
    }
    fn observe(&self) -> Result<Observed, ActionError> {
        let w = self.0.lock().unwrap();
        Ok(Observed {
            containers: w.containers.clone(),
            images: w.images.clone(),
            updates: w.updates.clone(),
            removing: w.removing.clone(),
            ..Observed::default()
        })
    }
    fn observe_one(&self, name: &str) -> Option<ObservedContainer> {
        self.0.lock().unwrap().containers.get(name).cloned()
    }
    fn pull(&self, image: &ImageSource, _keep: Option<&Keep>) -> Result<Digest, ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("pull {image}"));
        if let Some(e) = &w.fail_pull {
            return Err(e.clone());
        }
        let digest = w
            .remote
            .get(image)
            .cloned()
            .unwrap_or_else(|| default_digest(image));
        w.images.insert(image.clone(), digest.clone());
        Ok(digest)
    }
    fn check(&self, image: &ImageSource) -> Result<crate::backend::RemoteImage, ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("check {image}"));
        let digest = w
            .remote
            .get(image)
            .cloned()
            .unwrap_or_else(|| default_digest(image));
        Ok(crate::backend::RemoteImage {
            digest,
            created: None,
        })
    }
    fn create(&self, req: &Create) -> Result<(), ActionError> {
        let (name, spec) = (req.name.as_str(), &*req.spec);
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("create {name} {}", req.image_digest));
        if let Some(e) = w.fail_create.get(name) {
            return Err(e.clone());
        }
        let crashing = w.crashing.contains(&req.image_digest);
        let now = clock::now();
        let run = if crashing {
            RunState::Exited(crate::reconcile::model::Exit {
                code: 1,
                oom: false,
                at: now,
                ending: Ending::OnItsOwn,
            })
        } else {
            RunState::Running
        };
        w.containers.insert(
            name.into(),
            ObservedContainer {
                id: IncarnationId::random(),
                spec_hash: req.hash.clone(),
                image_digest: req.image_digest.clone(),
                run,
                restarts: 0,
                crash_streak: 0,
                started_at: Some(now),
                health: HealthState::None,
                resources: spec.extra.resources,
                info: ContainerInfo {
                    pid: Some(100),
                    ..ContainerInfo::default()
                },
                image_health: None,
            },
        );
        let st = w.updates.entry(name.to_string()).or_default();
        match &req.update {
            UpdateMark::None => st.verifying = None,
            UpdateMark::Update { from } => {
                st.previous = Some(from.clone());
                st.rejected.clear();
                st.verifying = Some(crate::reconcile::model::Verifying {
                    digest: req.image_digest.clone(),
                    since: now,
                    boot_id: String::new(),
                });
            }
            UpdateMark::Rollback { rejected } => {
                st.rejected.insert(rejected.clone());
                st.verifying = None;
            }
        }
        st.last_digest = Some(req.image_digest.clone());
        st.last_hash = Some(req.hash.clone());
        Ok(())
    }
    fn mark_verified(&self, name: &str) -> Result<(), ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("verified {name}"));
        if let Some(st) = w.updates.get_mut(name) {
            st.verifying = None;
        }
        Ok(())
    }
    fn update_state(&self, name: &str) -> crate::reconcile::model::UpdateState {
        self.0
            .lock()
            .unwrap()
            .updates
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
    fn health_check(
        &self,
        name: &str,
        _check: &berth_spec::model::HealthCheck,
    ) -> crate::reconcile::health::CheckRun {
        let w = self.0.lock().unwrap();
        match w.healthy.get(name).copied().unwrap_or(true) {
            true => crate::reconcile::health::CheckRun::passed(String::new()),
            false => crate::reconcile::health::CheckRun::failed(String::new()),
        }
    }
    fn start(&self, name: &str, _id: &IncarnationId, crash_streak: u32) -> Result<(), ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("start {name}"));
        let c = w.containers.get_mut(name).unwrap();
        c.run = RunState::Running;
        c.restarts += 1;
        c.crash_streak = crash_streak;
        c.started_at = Some(clock::now());
        Ok(())
    }
    fn pause(&self, name: &str, _id: &IncarnationId) -> Result<(), ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("pause {name}"));
        w.containers.get_mut(name).unwrap().run = RunState::Paused;
        Ok(())
    }
    fn resume(&self, name: &str, _id: &IncarnationId) -> Result<(), ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("resume {name}"));
        w.containers.get_mut(name).unwrap().run = RunState::Running;
        Ok(())
    }
    fn stop(&self, name: &str, _id: &IncarnationId, cause: StopCause) -> Result<(), ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("stop {name}"));
        w.containers.get_mut(name).unwrap().run = RunState::Exited(crate::reconcile::model::Exit {
            code: 143,
            oom: false,
            at: clock::now(),
            ending: match cause {
                StopCause::Asked => Ending::StoppedByBerth,
                StopCause::Unhealthy => Ending::OnItsOwn,
            },
        });
        Ok(())
    }
    fn remove(
        &self,
        name: &str,
        id: &IncarnationId,
        _why: RemoveReason,
    ) -> Result<(), ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("remove {name}"));
        w.containers.remove(name);
        if let Some(e) = w.fail_remove.get(name).cloned() {
            w.removing.insert(name.into(), id.clone());
            return Err(e);
        }
        w.removing.remove(name);
        Ok(())
    }
    fn update_resources(
        &self,
        name: &str,
        _id: &IncarnationId,
        r: &Resources,
    ) -> Result<(), ActionError> {
        let mut w = self.0.lock().unwrap();
        w.log.push(format!("resources {name}"));
        w.containers.get_mut(name).unwrap().resources = *r;
        Ok(())
    }
    fn watch(&self, tx: mpsc::UnboundedSender<crate::backend::Notice>) {
        self.0.lock().unwrap().exits = Some(tx);
    }
    fn resync(&self, _keep: &crate::backend::Keep) -> Result<(), ActionError> {
        Ok(())
    }
    fn prepare_for_changes(&self) {
        self.0.lock().unwrap().prepared += 1;
    }
    fn scan_imports(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Operations for Fake {
    fn image_op(
        &self,
        op: &crate::operations::ImageOp,
    ) -> Result<crate::operations::ImageReply, ActionError> {
        Err(ActionError::permanent(format!(
            "the fake host has no image store for {op:?}"
        )))
    }
    fn prune(
        &self,
        _keep: &crate::backend::Keep,
        prune: crate::operations::Prune,
    ) -> Result<crate::status::PruneReport, ActionError> {
        self.0.lock().unwrap().log.push(format!("prune {prune:?}"));
        Ok(crate::status::PruneReport {
            dry_run: prune.mode == crate::operations::PruneMode::DryRun,
            ..Default::default()
        })
    }
}

#[derive(Clone, Default)]
struct Source(Arc<Mutex<Scan>>, Gate);

/// Holds a source's reads while closed (for at most 30 s, so that a loop that waits on it
/// still ends), and counts the reads that finished.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<(bool, u32)>, std::sync::Condvar)>);

impl Gate {
    fn close(&self) {
        self.0.0.lock().unwrap().0 = true;
    }
    fn open(&self) {
        self.0.0.lock().unwrap().0 = false;
        self.0.1.notify_all();
    }
    fn reads(&self) -> u32 {
        self.0.0.lock().unwrap().1
    }
    fn pass(&self) {
        let (lock, cv) = &*self.0;
        let (mut g, _) = cv
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(30), |g| g.0)
            .unwrap();
        g.1 += 1;
    }
}

impl Source {
    fn set(&self, specs: Vec<ContainerSpec>) {
        let mut s = self.0.lock().unwrap();
        s.specs = specs
            .into_iter()
            .map(|s| (s.name.clone(), Ok(Arc::new(s))))
            .collect();
    }
}

impl SpecSource for Source {
    fn scan(&mut self) -> Scan {
        self.1.pass();
        self.0.lock().unwrap().clone()
    }
}

fn spec(name: &str) -> ContainerSpec {
    ContainerSpec::with_defaults(
        name,
        ImageSource::parse(&format!("127.0.0.1:1/{name}:1")).unwrap(),
    )
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        state_dir: dir.join("state"),
        run_dir: dir.join("run"),
        ..Config::default()
    }
}

/// One in-process `berth apply` over the fake host with these specs.
async fn apply_once(
    dir: &std::path::Path,
    fake: &Fake,
    specs: Vec<ContainerSpec>,
    opts: ApplyOptions,
) -> ApplyResult {
    let source = Source::default();
    source.set(specs);
    run_once(
        config(dir),
        Arc::new(fake.clone()),
        Box::new(source),
        Arc::new(Metrics::new()),
        opts,
    )
    .await
    .unwrap()
}

/// `berth apply --wait` (answered once converged or stuck, or after 10 s).
fn until_settled() -> ApplyOptions {
    ApplyOptions {
        wait: true,
        ..after_one_pass()
    }
}

/// `berth apply` without `--wait` (answered once nothing runnable is left).
fn after_one_pass() -> ApplyOptions {
    ApplyOptions {
        wait: false,
        timeout_ms: Some(10_000),
        force: false,
    }
}

#[tokio::test]
async fn once_pulls_creates_and_reports_converged() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let result = apply_once(
        dir.path(),
        &fake,
        vec![spec("a"), spec("b")],
        until_settled(),
    )
    .await;
    assert!(result.converged, "{:?}", result.problems);
    assert!(
        result
            .containers
            .iter()
            .all(|c| c.status == Status::Running)
    );
    let log = fake.log();
    assert_eq!(log.iter().filter(|l| l.starts_with("pull")).count(), 2);
    assert_eq!(log.iter().filter(|l| l.starts_with("create")).count(), 2);
}

#[tokio::test]
async fn dependencies_start_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut web = spec("web");
    web.extra.depends_on = vec![Dependency {
        name: "db".into(),
        condition: DependencyCondition::Started,
    }];
    let mut proxy = spec("proxy");
    proxy.extra.depends_on = vec![Dependency {
        name: "web".into(),
        condition: DependencyCondition::Started,
    }];
    let result = apply_once(
        dir.path(),
        &fake,
        vec![proxy, web, spec("db")],
        until_settled(),
    )
    .await;
    assert!(result.converged, "{:?}", result.problems);
    let creates: Vec<String> = fake
        .log()
        .into_iter()
        .filter(|l| l.starts_with("create"))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    assert_eq!(creates, ["create db", "create web", "create proxy"]);
}

#[tokio::test]
async fn permanent_pull_failure_is_reported_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.0.lock().unwrap().fail_pull = Some(ActionError::permanent("manifest unknown"));
    let result = apply_once(dir.path(), &fake, vec![spec("a")], until_settled()).await;
    assert!(!result.converged);
    assert!(!result.timed_out);
    assert!(
        result.problems[0].contains("manifest unknown"),
        "{:?}",
        result.problems
    );
    assert_eq!(result.containers[0].status, Status::Failed);
}

#[tokio::test]
async fn transient_failure_times_out_with_wait() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.0
        .lock()
        .unwrap()
        .fail_create
        .insert("a".into(), ActionError::transient("port 80 in use"));
    let opts = ApplyOptions {
        wait: true,
        timeout_ms: Some(300),
        force: false,
    };
    let result = apply_once(dir.path(), &fake, vec![spec("a")], opts).await;
    assert!(result.timed_out && !result.converged);
    assert!(
        result.problems[0].contains("port 80 in use"),
        "{:?}",
        result.problems
    );
    // Without --wait, one round is enough to report it.
    let result = apply_once(dir.path(), &fake, vec![spec("a")], after_one_pass()).await;
    assert!(!result.converged && !result.timed_out);
}

/// A removal that fails (a cgroup still busy) is not converged: `apply --wait` waits for it
/// (here: times out), and a later run finishes it from its `removing` record.
#[tokio::test]
async fn an_unfinished_removal_is_not_converged_and_is_finished_later() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let mut w = fake.0.lock().unwrap();
        w.containers.insert(
            "a".into(),
            ObservedContainer {
                id: IncarnationId::random(),
                spec_hash: "h".into(),
                image_digest: crate::reconcile::model::test_digest("sha256:a"),
                run: RunState::Running,
                restarts: 0,
                crash_streak: 0,
                started_at: Some(clock::now()),
                health: HealthState::None,
                resources: Resources::default(),
                info: ContainerInfo::default(),
                image_health: None,
            },
        );
        w.fail_remove
            .insert("a".into(), ActionError::transient("cgroup still busy"));
    }
    let opts = ApplyOptions {
        wait: true,
        timeout_ms: Some(300),
        force: false,
    };
    let result = apply_once(dir.path(), &fake, vec![], opts).await;
    assert!(
        result.timed_out && !result.converged,
        "a failed removal counted as converged: {result:?} {:?}",
        fake.log()
    );
    assert!(fake.0.lock().unwrap().removing.contains_key("a"));
    fake.0.lock().unwrap().fail_remove.clear();
    let result = apply_once(dir.path(), &fake, vec![], until_settled()).await;
    assert!(result.converged, "{result:?}");
    assert!(fake.0.lock().unwrap().removing.is_empty());
    assert_eq!(
        fake.log().iter().filter(|l| *l == "remove a").count(),
        2,
        "{:?}",
        fake.log()
    );
}

/// The agent loop: spec changes, exits, pruning, and the status snapshot.
#[tokio::test]
async fn agent_follows_specs_and_restarts_exited_containers() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let source = Source::default();
    source.set(vec![spec("a")]);
    let (specs_tx, specs_rx) = mpsc::channel(1);
    let (_imports_tx, imports_rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = config(dir.path());
    let socket = Layout::new(&cfg).socket();
    let agent = tokio::spawn(run_agent(
        cfg,
        Arc::new(fake.clone()),
        super::Inputs {
            specs: Box::new(source.clone()),
            specs_changed: specs_rx,
            imports_changed: imports_rx,
            repo: None,
        },
        Arc::new(Metrics::new()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let client = crate::api::client::Client::new(&socket);
    type Cond = Box<dyn Fn(&[ContainerStatus]) -> bool + Send>;
    let wait_for = |what: &'static str, cond: Cond| {
        let client = &client;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(s) = client
                    .get_json::<Vec<ContainerStatus>>("/v1/containers")
                    .await
                    && cond(&s)
                {
                    return s;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(
        "a running",
        Box::new(|s| s.len() == 1 && s[0].status == Status::Running),
    )
    .await;

    source.set(vec![spec("a"), spec("b")]);
    specs_tx.send(()).await.unwrap();
    wait_for(
        "b running",
        Box::new(|s| s.len() == 2 && s.iter().all(|c| c.status == Status::Running)),
    )
    .await;

    // A crash: restarted after the first backoff step (1 s), counted.
    fake.kill("a", 1);
    let s = wait_for(
        "a restarted",
        Box::new(|s| {
            s.iter()
                .any(|c| c.name == "a" && c.status == Status::Running && c.restarts == 1)
        }),
    )
    .await;
    assert_eq!(s.len(), 2);

    // Deleting a spec prunes its container; statuses no longer list it.
    source.set(vec![spec("b")]);
    specs_tx.send(()).await.unwrap();
    wait_for(
        "a gone from status",
        Box::new(|s| s.len() == 1 && s[0].name == "b"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !fake.log().contains(&"remove a".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a was never removed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // An unreadable source prunes nothing.
    fake.0.lock().unwrap().log.clear();
    source.0.lock().unwrap().error = Some("no such dir".into());
    source.0.lock().unwrap().specs.clear();
    specs_tx.send(()).await.unwrap();
    let p: PlanView = client.get_json("/v1/plan").await.unwrap();
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(fake.log().iter().all(|l| !l.starts_with("remove")));

    // What operators ask goes to the host's operations, the flags and replies as they were.
    let prune = crate::operations::Prune {
        volumes: crate::operations::Volumes::RemoveUnmounted,
        mode: crate::operations::PruneMode::DryRun,
    };
    let report: crate::status::PruneReport = client.post_json("/v1/prune", &prune).await.unwrap();
    assert!(report.dry_run);
    assert!(
        fake.log().contains(&format!("prune {prune:?}")),
        "{:?}",
        fake.log()
    );
    let pin = crate::operations::ImageOp::Pin {
        image: "x:1".into(),
    };
    let refused = client
        .post_json::<crate::operations::ImageReply>("/v1/images", &pin)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no image store"), "{refused}");

    stop_tx.send(()).unwrap();
    agent.await.unwrap().unwrap();
    // Stopping the agent leaves containers alone.
    assert!(fake.0.lock().unwrap().containers.contains_key("b"));
}

#[tokio::test]
async fn the_waiting_list_makes_the_statuses_and_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::default();
    let mut absent = spec("absent");
    absent.pull = berth_spec::model::PullPolicy::Never;
    source.set(vec![absent]);
    let (r, _rx) = started(dir.path(), &Fake::default(), &source).await;
    let statuses = r.statuses().borrow().clone();
    assert_eq!(statuses[0].status, Status::Failed);
    assert!(
        statuses[0]
            .reason
            .as_deref()
            .is_some_and(|w| w.contains("not in the store")),
        "{statuses:?}"
    );
    // With 10,000 waiting specs the list is megabytes: gone once the statuses are made.
    assert!(r.plan.waiting.is_empty());
    // `berth plan` still shows it (it plans afresh).
    assert_eq!(r.plan_view().waiting.len(), 1);
}

/// A loop over the fake host, started and past its first pass, with its event receiver.
async fn started(
    dir: &std::path::Path,
    fake: &Fake,
    source: &Source,
) -> (Reconciler, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut r = Reconciler::start(
        config(dir),
        Arc::new(fake.clone()),
        Box::new(source.clone()),
        Arc::new(Metrics::new()),
        tx,
    )
    .await
    .unwrap();
    r.pass();
    (r, rx)
}

/// Handles events (and timers) until `done` holds, or fails at the deadline.
async fn pump_until(
    r: &mut Reconciler,
    rx: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    done: impl Fn(&Reconciler) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(r) {
        let wake = r.next_wake();
        let ev = tokio::select! {
            Some(ev) = rx.recv() => ev,
            _ = super::run::sleep_until(wake) => Event::Wake,
            _ = tokio::time::sleep_until(deadline) => panic!("timed out waiting for {what}"),
        };
        if r.handle(ev) {
            r.pass();
        }
    }
}

/// Reading the spec dir is disk I/O: while a read hangs, the loop still restarts a crashed
/// container, and the read's result arrives as an event later.
#[tokio::test]
async fn a_slow_spec_source_never_holds_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let source = Source::default();
    source.set(vec![spec("a")]);
    let (mut r, mut rx) = started(dir.path(), &fake, &source).await;
    let running = |name: &'static str| {
        let fake = fake.clone();
        move |_: &Reconciler| {
            fake.0
                .lock()
                .unwrap()
                .containers
                .get(name)
                .is_some_and(|c| c.run == RunState::Running)
        }
    };
    pump_until(&mut r, &mut rx, "a running", running("a")).await;

    source.1.close();
    let reads = source.1.reads();
    let prepared = fake.0.lock().unwrap().prepared;
    source.set(vec![spec("a"), spec("b")]);
    r.handle(Event::SpecsChanged);
    assert_eq!(source.1.reads(), reads, "the loop waited for the read");
    assert!(!r.quiescent(), "a read asked for is pending work");
    // The spec event began the kernel's waits of a create beside the hanging read.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.0.lock().unwrap().prepared == prepared {
        assert!(tokio::time::Instant::now() < deadline, "never prepared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fake.kill("a", 1);
    let restarted = {
        let fake = fake.clone();
        move |_: &Reconciler| {
            let log = fake.log();
            log.contains(&"start a".to_string())
        }
    };
    pump_until(
        &mut r,
        &mut rx,
        "a restarted while the read hangs",
        restarted,
    )
    .await;
    assert_eq!(source.1.reads(), reads, "the read still hangs");

    source.1.open();
    pump_until(&mut r, &mut rx, "b created from the read", running("b")).await;
    assert_eq!(source.1.reads(), reads + 1);
}

/// An exit heard while an action holds the container (its start has just returned, its
/// result not yet handled) is not lost: the container is observed again after the action.
#[tokio::test]
async fn an_exit_heard_during_an_action_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let source = Source::default();
    source.set(vec![spec("a")]);
    let (mut r, mut rx) = started(dir.path(), &fake, &source).await;
    // Pull, then the create (which starts it here): hold the create's result back.
    let done = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Event::Done(d))) if d.succeeded.iter().any(|a| a.kind() == "create") => {
                break d;
            }
            Ok(Some(ev)) => {
                if r.handle(ev) {
                    r.pass();
                }
            }
            _ => panic!("no action finished"),
        }
    };
    fake.kill("a", 1);
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(ev @ Event::Exited(_))) => {
            r.handle(ev);
        }
        _ => panic!("the exit was not heard"),
    }
    r.handle(Event::Done(done));
    r.pass();
    let fake2 = fake.clone();
    pump_until(&mut r, &mut rx, "a restarted", move |_| {
        fake2.log().contains(&"start a".to_string())
    })
    .await;
}
