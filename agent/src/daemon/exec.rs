//! Dispatching actions: per container in order, across containers concurrently (bounded), on
//! blocking threads; each container's result comes back to the loop as an event.

use std::collections::BTreeMap;

use berth_spec::ImageSource;

use super::{Event, Reconciler};
use crate::backend::{ActionError, Backend};
use crate::clock;
use crate::reconcile::model::{FailedAt, Failures, ObservedContainer};
use crate::reconcile::plan::{Action, Create, RemoveReason, UpdateMark};
use crate::reconcile::report::InFlight;

/// A container's actions finished (all of them, or up to the first failure).
pub struct Done {
    name: String,
    /// The action that failed (`None` if the worker itself died), with its error.
    failed: Option<(Option<Action>, ActionError)>,
    /// The actions that succeeded, in order.
    pub(super) succeeded: Vec<Action>,
    observed: Option<ObservedContainer>,
    update: crate::reconcile::model::UpdateState,
}

fn in_flight_kind(a: &Action) -> InFlight {
    match a {
        Action::Pull { .. } | Action::Check { .. } => InFlight::Pulling,
        Action::Create(_) => InFlight::Creating,
        Action::Start { .. } | Action::Resume { .. } => InFlight::Starting,
        Action::Stop { .. } | Action::Pause { .. } => InFlight::Stopping,
        Action::Remove { .. } => InFlight::Removing,
        Action::UpdateResources { .. } | Action::MarkVerified { .. } => InFlight::Other,
    }
}

fn run(backend: &dyn Backend, a: &Action) -> Result<(), ActionError> {
    match a {
        Action::Check { image } => backend.check(image).map(|_| ()),
        // (Pulls are dispatched on their own, with the GC roots: see `spawn_pull`.)
        Action::Pull { image } => backend.pull(image, None).map(|_| ()),
        Action::Create(c) => backend.create(c),
        Action::Start {
            name,
            id,
            crash_streak,
        } => backend.start(name, id, *crash_streak),
        Action::Pause { name, id } => backend.pause(name, id),
        Action::Resume { name, id } => backend.resume(name, id),
        Action::Stop { name, id, cause } => backend.stop(name, id, *cause),
        Action::Remove { name, id, why } => backend.remove(name, id, *why),
        Action::UpdateResources {
            name,
            id,
            resources,
        } => backend.update_resources(name, id, resources),
        Action::MarkVerified { name } => backend.mark_verified(name),
    }
}

impl Reconciler {
    /// Starts what the plan asks, skipping containers whose earlier actions still run (their
    /// next pass re-plans them) and images already being pulled.
    pub(super) fn dispatch(&mut self, actions: &[Action]) {
        let mut per_container: BTreeMap<&str, Vec<Action>> = BTreeMap::new();
        for a in actions {
            match (a, a.container()) {
                (Action::Pull { image }, _) => self.spawn_pull(image.clone()),
                (Action::Check { image }, _) => self.spawn_check(image.clone()),
                (_, Some(name)) => per_container.entry(name).or_default().push(a.clone()),
                (_, None) => {}
            }
        }
        for (name, list) in per_container {
            if self.in_flight.contains_key(name) {
                self.left_for_busy.insert(name.to_string());
                continue;
            }
            self.in_flight
                .insert(name.to_string(), in_flight_kind(&list[0]));
            let backend = self.backend.clone();
            let tx = self.tx.clone();
            let semaphore = self.semaphore.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                let _permit = semaphore
                    .acquire_owned()
                    .await
                    .expect("semaphore never closes");
                let n = name.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let span = tracing::info_span!("container", name = %n);
                    let _enter = span.enter();
                    let mut succeeded = Vec::new();
                    let mut failed = None;
                    for a in list {
                        tracing::debug!("{a}");
                        match run(backend.as_ref(), &a) {
                            Ok(()) => succeeded.push(a),
                            Err(e) => {
                                failed = Some((Some(a), e));
                                break;
                            }
                        }
                    }
                    let observed = backend.observe_one(&n);
                    let update = backend.update_state(&n);
                    Done {
                        name: n,
                        failed,
                        succeeded,
                        observed,
                        update,
                    }
                })
                .await;
                let done = done.unwrap_or_else(|e| Done {
                    name: name.clone(),
                    failed: Some((
                        None,
                        ActionError::transient(format!("action panicked: {e}")),
                    )),
                    succeeded: Vec::new(),
                    observed: None,
                    update: Default::default(),
                });
                let _ = tx.send(Event::Done(Box::new(done)));
            });
        }
    }

    fn spawn_pull(&mut self, image: ImageSource) {
        if !self.pulls_in_flight.insert(image.clone()) {
            return;
        }
        let backend = self.backend.clone();
        let tx = self.tx.clone();
        let semaphore = self.semaphore.clone();
        // What must survive if the store has to make room for this image.
        let keep = self.keep();
        tokio::spawn(async move {
            let _permit = semaphore
                .acquire_owned()
                .await
                .expect("semaphore never closes");
            let i = image.clone();
            let result = tokio::task::spawn_blocking(move || backend.pull(&i, Some(&keep)))
                .await
                .unwrap_or_else(|e| Err(ActionError::transient(format!("pull panicked: {e}"))));
            let _ = tx.send(Event::Pulled(image, result));
        });
    }

    pub(super) fn finish(&mut self, done: Done) {
        self.in_flight.remove(&done.name);
        let name = done.name.as_str();
        for a in &done.succeeded {
            match a {
                Action::Create(Create { update, .. }) => {
                    self.failures.create.remove(name);
                    // Its record replaced any unfinished removal's.
                    self.observed.removing.remove(name);
                    let label = crate::metrics::ContainerLabel {
                        container: name.to_string(),
                    };
                    let kind = match update {
                        UpdateMark::Rollback { .. } => {
                            self.metrics.rollbacks.get_or_create(&label).inc();
                            "rollback"
                        }
                        UpdateMark::Update { .. } => {
                            self.metrics.updates.get_or_create(&label).inc();
                            "created"
                        }
                        UpdateMark::None => "created",
                    };
                    self.events.emit(Some(name), kind, format!("{a}: started"));
                }
                Action::Start { .. } => {
                    self.failures.start.remove(name);
                    self.events.emit(Some(name), "started", "started");
                }
                Action::Remove { .. } if self.observed.removing.contains_key(name) => {
                    self.failures.remove.remove(name);
                    self.observed.removing.remove(name);
                    self.events.emit(
                        Some(name),
                        "removed",
                        "removed: an unfinished removal finished",
                    );
                }
                Action::Remove {
                    why: RemoveReason::Pruned,
                    ..
                } => {
                    self.specs
                        .forget(super::specs::Forget::Pruned(name.to_string()));
                    self.run_spec_job();
                    self.events
                        .emit(Some(name), "removed", "removed: its spec was deleted");
                }
                other => self
                    .events
                    .emit(Some(name), other.kind(), other.to_string()),
            }
        }
        if let Some((action, error)) = &done.failed {
            let failed_at = match action {
                Some(Action::Create(_)) => Some(FailedAt::Create),
                Some(Action::Start { .. }) => Some(FailedAt::Start),
                Some(Action::Remove { id, .. }) => {
                    // Its record now says `removing`: the planner finishes it (with a backoff).
                    self.observed.removing.insert(name.to_string(), id.clone());
                    Some(FailedAt::Remove)
                }
                _ => None,
            };
            if let Some(at) = failed_at {
                Failures::record(
                    self.failures.map_of(at),
                    name.to_string(),
                    clock::now(),
                    error.message.clone(),
                    error.retry,
                );
            }
            let what = action
                .as_ref()
                .map_or_else(|| "action".to_string(), |a| a.to_string());
            self.events
                .emit(Some(name), "error", format!("{what}: {error}"));
        }
        self.set_observed(name, done.observed);
        if done.update == Default::default() {
            self.observed.updates.remove(name);
        } else {
            self.observed.updates.insert(name.to_string(), done.update);
        }
        if self.exited_while_busy.remove(name) {
            // Its observation above may predate the exit: look again.
            self.refresh_one(name.to_string());
        }
    }

    pub(super) fn finish_pull(
        &mut self,
        image: ImageSource,
        result: Result<berth_spec::Digest, ActionError>,
    ) {
        let label = |r: &str| crate::metrics::ResultLabel { result: r.into() };
        match result {
            Ok(digest) => {
                self.metrics.pulls.get_or_create(&label("ok")).inc();
                self.failures.pull.remove(&image);
                self.observed
                    .first_seen
                    .entry(digest.clone())
                    .or_insert_with(clock::now);
                self.events
                    .emit(None, "pulled", format!("pulled {image} ({digest})"));
                self.observed.images.insert(image, digest);
            }
            Err(e) => {
                self.metrics.pulls.get_or_create(&label("error")).inc();
                self.events
                    .emit(None, "error", format!("pull {image}: {e}"));
                Failures::record(
                    &mut self.failures.pull,
                    image,
                    clock::now(),
                    e.message,
                    e.retry,
                );
            }
        }
    }
}
