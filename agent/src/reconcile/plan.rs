//! `plan(desired, observed, ctx) -> Plan`: the policy, as a pure function.
//!
//! Level-triggered: each pass plans from the whole picture, and an action whose effect a later
//! pass needs (a pull before a create) is simply followed by another pass. Nothing here reads a
//! clock or a file; time comes in through [`Ctx`].

use std::collections::{BTreeMap, BTreeSet};

use berth_spec::model::{
    DependencyCondition, DesiredState, MountKind, OnUnhealthy, PullPolicy, RestartPolicy,
    UpdateStrategy,
};
use berth_spec::{ContainerSpec, ImageSource};

pub use super::action::{Action, Hold, RemoveReason, UpdateMark, Waiting};
use super::backoff;
use super::health;
use super::model::*;
use super::update::{self, Verdict};
pub use super::update::{Ctx, WallClock};

/// How soon a held update is looked at again: a lock file may go any moment; a window or an
/// age changes slowly.
const RECHECK_LOCK: std::time::Duration = std::time::Duration::from_secs(2);
const RECHECK_HOLD: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub waiting: BTreeMap<String, Waiting>,
    /// The earliest moment something becomes due (a backoff, a check, a verification): the
    /// next pass should run by then.
    pub wake_at: Option<Millis>,
}

impl Plan {
    fn wake(&mut self, at: Millis) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// [`plan_with`] at boot-clock time `now`, without a wall clock.
pub fn plan(desired: &Desired, observed: &Observed, now: Millis) -> Plan {
    plan_with(desired, observed, &Ctx::at(now))
}

pub fn plan_with(desired: &Desired, observed: &Observed, ctx: &Ctx) -> Plan {
    let mut p = Planner {
        observed,
        ctx,
        out: Plan::default(),
        checks: BTreeSet::new(),
        pulls: BTreeSet::new(),
    };
    let names: BTreeSet<&String> = desired
        .specs
        .keys()
        .chain(observed.containers.keys())
        .collect();
    for name in names {
        let entry = desired.specs.get(name);
        let obs = observed.containers.get(name);
        match (entry.and_then(|e| e.spec.as_ref()), obs) {
            (None, None) => {}
            (None, Some(o)) => {
                // Only a deleted file prunes: never an unreadable dir or a file that stopped
                // parsing (its container has no last valid spec only if it never had one).
                if desired.trustworthy && entry.is_none() {
                    p.push(Action::Remove {
                        name: name.clone(),
                        id: o.id.clone(),
                        why: RemoveReason::Pruned,
                    });
                }
            }
            (Some(d), obs) => p.one(name, d, obs),
        }
    }
    // Checks and pulls go first so a slow download starts as early as possible.
    let mut out = p.out;
    let checks = p.checks.into_iter().map(|image| Action::Check { image });
    let mut actions: Vec<Action> = checks
        .chain(p.pulls.into_iter().map(|image| Action::Pull { image }))
        .collect();
    actions.append(&mut out.actions);
    out.actions = actions;
    out
}

struct Planner<'a> {
    observed: &'a Observed,
    ctx: &'a Ctx,
    out: Plan,
    /// Checks and pulls, deduplicated across containers sharing an image.
    checks: BTreeSet<ImageSource>,
    pulls: BTreeSet<ImageSource>,
}

impl Planner<'_> {
    fn push(&mut self, a: Action) {
        self.out.actions.push(a);
    }

    fn wait(&mut self, name: &str, w: Waiting) {
        self.out.waiting.insert(name.to_string(), w);
    }

    fn one(&mut self, name: &str, d: &DesiredSpec, obs: Option<&ObservedContainer>) {
        let spec = &d.spec;
        if spec.pull == PullPolicy::Always
            && matches!(&spec.image, ImageSource::Registry(r) if r.digest.is_none())
        {
            self.maybe_check(&spec.image);
        }
        let local = self.observed.images.get(&spec.image);
        let remote = self.remote_update(spec, local);
        let want_process = spec.state != DesiredState::Stopped;
        let history = self.observed.updates.get(name);

        let Some(o) = obs else {
            match (remote, local) {
                (Some(_), _) | (None, None) => self.need_image(name, spec),
                (None, Some(digest)) if want_process => self.create(name, d, digest, None),
                (None, Some(_)) => {}
            }
            return;
        };

        if self.verify(name, d, o, history) {
            return;
        }
        let image_moved = local.is_some_and(|digest| *digest != o.image_digest);
        let spec_changed = o.spec_hash != d.hash;
        let rejected =
            local.filter(|d| image_moved && history.is_some_and(|h| h.rejected.contains(*d)));
        // (Unless the registry already moved the tag on: then that digest is the update.)
        if let (false, Some(digest), None) = (spec_changed, rejected, &remote) {
            // The tag still points at a digest that failed: stay on what runs.
            self.wait(
                name,
                Waiting::Held(Hold::Rejected {
                    digest: digest.clone(),
                }),
            );
            self.converge_existing(name, spec, o);
            return;
        }
        if spec_changed || image_moved || remote.is_some() {
            self.recreate(name, d, o, local, remote, spec_changed);
            return;
        }
        self.converge_existing(name, spec, o);
    }

    /// For `pull = "always"`: the digest the registry says the tag points to, when it differs
    /// from the local one and was not rejected.
    fn remote_update(&self, spec: &ContainerSpec, local: Option<&String>) -> Option<String> {
        if spec.pull != PullPolicy::Always {
            return None;
        }
        let r = self.observed.remote.get(&spec.image)?;
        let rejected = self
            .observed
            .updates
            .get(&spec.name)
            .is_some_and(|h| h.rejected.contains(&r.digest));
        (local != Some(&r.digest) && !rejected).then(|| r.digest.clone())
    }

    fn maybe_check(&mut self, image: &ImageSource) {
        let due = update::check_due(image, self.observed, self.ctx);
        if due <= self.ctx.now {
            self.checks.insert(image.clone());
        } else {
            self.out.wake(due);
        }
    }

    /// The spec or the image changed: replace the container, per `[update]`, unless a lock,
    /// the window or min_age holds it (it keeps running meanwhile).
    fn recreate(
        &mut self,
        name: &str,
        d: &DesiredSpec,
        o: &ObservedContainer,
        local: Option<&String>,
        remote: Option<String>,
        spec_changed: bool,
    ) {
        let spec = &d.spec;
        if let Some(h) = update::hold(spec, self.observed, self.ctx) {
            // Lock files are looked at every pass: come back soon to see it gone.
            let again = if matches!(h, Hold::Lock(_)) {
                RECHECK_LOCK
            } else {
                RECHECK_HOLD
            };
            self.wait(name, Waiting::Held(h));
            self.out.wake(self.ctx.now.plus(again));
            self.converge_existing(name, spec, o);
            return;
        }
        // The digest we would move to, and whether it is old enough.
        let target = remote.clone().or_else(|| local.cloned());
        if !spec_changed && let Some(t) = &target {
            let created = self
                .observed
                .remote
                .get(&spec.image)
                .filter(|r| r.digest == *t)
                .and_then(|r| r.created);
            if let Some(h) = update::too_new(spec, t, created, self.observed, self.ctx) {
                self.wait(name, Waiting::Held(h));
                self.out.wake(self.ctx.now.plus(RECHECK_HOLD));
                self.converge_existing(name, spec, o);
                return;
            }
        }
        let strategy = effective_strategy(spec);
        let kill_first = strategy == UpdateStrategy::KillThenDownload;
        let ready = remote.is_none() && local.is_some();
        if !ready && !kill_first {
            // The old container serves while the new image downloads.
            self.need_image(name, spec);
            self.converge_existing(name, spec, o);
            return;
        }
        let want_process = spec.state != DesiredState::Stopped;
        match (ready, local) {
            (true, Some(digest)) if want_process && strategy == UpdateStrategy::StartThenKill => {
                self.create(name, d, digest, Some(o));
            }
            (true, Some(digest)) => {
                self.push(Action::Remove {
                    name: name.into(),
                    id: o.id.clone(),
                    why: RemoveReason::Recreate,
                });
                if want_process {
                    self.create(name, d, digest, None);
                }
            }
            _ => {
                // kill-then-download: make room first, fetch after.
                self.push(Action::Remove {
                    name: name.into(),
                    id: o.id.clone(),
                    why: RemoveReason::Recreate,
                });
                self.need_image(name, spec);
            }
        }
    }

    /// An updated image under verification: fine so far, passed, or failed (rolled back).
    /// Returns true when it decided this pass for the container.
    fn verify(
        &mut self,
        name: &str,
        d: &DesiredSpec,
        o: &ObservedContainer,
        history: Option<&UpdateState>,
    ) -> bool {
        let Some(h) = history else { return false };
        let Some(v) = h.verifying.as_ref().filter(|v| v.digest == o.image_digest) else {
            return false;
        };
        let spec = &d.spec;
        let has_check = health::effective(spec, o.image_health.as_ref()).is_some();
        match update::verdict(v, o, has_check, spec.update.verify, self.ctx.now) {
            Verdict::Pending { until } => {
                self.out.wake(until);
                if !matches!(o.run, RunState::Exited(_)) {
                    self.wait(name, Waiting::Verifying { until });
                }
                false
            }
            Verdict::Passed => {
                self.push(Action::MarkVerified { name: name.into() });
                true
            }
            Verdict::Failed => match (&h.previous, spec.update.rollback) {
                (Some(previous), true) => {
                    self.push(Action::Remove {
                        name: name.into(),
                        id: o.id.clone(),
                        why: RemoveReason::Recreate,
                    });
                    self.push(Action::Create {
                        name: name.into(),
                        spec: Box::new(spec.clone()),
                        hash: d.hash.clone(),
                        image_digest: previous.clone(),
                        update: UpdateMark::Rollback {
                            rejected: o.image_digest.clone(),
                        },
                        replacing: None,
                    });
                    true
                }
                // No rollback: the update stands, and its crashes restart as usual.
                _ => {
                    self.push(Action::MarkVerified { name: name.into() });
                    true
                }
            },
        }
    }

    /// The image is missing: pull it unless the policy or a recent failure says not now.
    fn need_image(&mut self, name: &str, spec: &ContainerSpec) {
        let from_registry = matches!(spec.image, ImageSource::Registry(_));
        if from_registry && spec.pull == PullPolicy::Never {
            self.wait(name, Waiting::ImageMissing);
            return;
        }
        if let Some(f) = self.observed.pull_failures.get(&spec.image) {
            if !f.transient {
                self.wait(
                    name,
                    Waiting::PullFailed {
                        until: None,
                        error: f.error.clone(),
                    },
                );
                return;
            }
            let until = f.at.plus(backoff::delay(f.count.saturating_sub(1)));
            if self.ctx.now < until {
                self.wait(
                    name,
                    Waiting::PullFailed {
                        until: Some(until),
                        error: f.error.clone(),
                    },
                );
                self.out.wake(until);
                return;
            }
        }
        self.pulls.insert(spec.image.clone());
        self.out
            .waiting
            .entry(name.to_string())
            .or_insert(Waiting::Pulling);
    }

    fn create(
        &mut self,
        name: &str,
        d: &DesiredSpec,
        digest: &str,
        replacing: Option<&ObservedContainer>,
    ) {
        if let Some(f) = self.observed.create_failures.get(name) {
            let until = f.at.plus(backoff::delay(f.count.saturating_sub(1)));
            if self.ctx.now < until {
                self.wait(name, Waiting::Backoff { until });
                self.out.wake(until);
                return;
            }
        }
        if let Err(w) = dependencies_ready(&d.spec, self.observed) {
            self.wait(name, w);
            return;
        }
        // An image update (same spec, new digest) is verified and can be rolled back.
        let update = match self.observed.updates.get(name) {
            Some(h) if h.last_hash.as_deref() == Some(&d.hash) => match &h.last_digest {
                Some(from) if from != digest => UpdateMark::Update { from: from.clone() },
                _ => UpdateMark::None,
            },
            _ => UpdateMark::None,
        };
        self.push(Action::Create {
            name: name.into(),
            spec: Box::new(d.spec.clone()),
            hash: d.hash.clone(),
            image_digest: digest.into(),
            update,
            replacing: replacing.map(|o| o.id.clone()),
        });
    }

    fn converge_existing(&mut self, name: &str, spec: &ContainerSpec, o: &ObservedContainer) {
        let id = o.id.clone();
        let live = matches!(o.run, RunState::Running | RunState::Paused);
        if live && o.resources != spec.resources {
            self.push(Action::UpdateResources {
                name: name.into(),
                id: id.clone(),
                resources: spec.resources,
            });
        }
        let unhealthy_restart = o.run == RunState::Running
            && o.health == HealthState::Unhealthy
            && spec.health.on_unhealthy == OnUnhealthy::Restart
            && spec.state == DesiredState::Running;
        match (spec.state, o.run) {
            (_, RunState::Running) if unhealthy_restart => {
                self.push(Action::Stop {
                    name: name.into(),
                    id,
                    failed: true,
                });
            }
            (DesiredState::Stopped, RunState::Running | RunState::Paused) => {
                self.push(Action::Stop {
                    name: name.into(),
                    id,
                    failed: false,
                });
            }
            (DesiredState::Stopped, _) => {}
            (DesiredState::Running, RunState::Paused) => self.push(Action::Resume {
                name: name.into(),
                id,
            }),
            (DesiredState::Paused, RunState::Running) => self.push(Action::Pause {
                name: name.into(),
                id,
            }),
            (_, RunState::Running | RunState::Paused) => {}
            (_, RunState::Created) => self.start(name, spec, o, 0),
            (_, RunState::Exited(exit)) => {
                if exit.requested {
                    // berth stopped it on purpose; the spec now wants it up again.
                    self.start(name, spec, o, 0);
                    return;
                }
                let restart = match spec.restart {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !exit.succeeded(),
                    RestartPolicy::Never => false,
                };
                if !restart {
                    return;
                }
                let ran = o
                    .started_at
                    .map_or(std::time::Duration::ZERO, |s| exit.at.since(s));
                let streak = if ran >= backoff::RESET_AFTER {
                    0
                } else {
                    o.crash_streak
                };
                let until = exit.at.plus(backoff::delay(streak));
                if self.ctx.now < until {
                    self.wait(name, Waiting::Backoff { until });
                    self.out.wake(until);
                    return;
                }
                self.start(name, spec, o, streak.saturating_add(1));
            }
        }
    }

    fn start(
        &mut self,
        name: &str,
        spec: &ContainerSpec,
        o: &ObservedContainer,
        crash_streak: u32,
    ) {
        if let Some(f) = &o.start_failure {
            let until = f.at.plus(backoff::delay(f.count.saturating_sub(1)));
            if self.ctx.now < until {
                self.wait(name, Waiting::Backoff { until });
                self.out.wake(until);
                return;
            }
        }
        if let Err(w) = dependencies_ready(spec, self.observed) {
            self.wait(name, w);
            return;
        }
        self.push(Action::Start {
            name: name.into(),
            id: o.id.clone(),
            crash_streak,
        });
    }
}

/// start-then-kill needs two incarnations side by side: not possible while a host port or an
/// exclusive mount (a bind or a volume) or a static address would be held twice.
fn effective_strategy(spec: &ContainerSpec) -> UpdateStrategy {
    let exclusive = !spec.ports.is_empty()
        || spec.ip.is_some()
        || spec
            .mounts
            .iter()
            .any(|m| !matches!(m.kind, MountKind::Tmpfs { .. }));
    match spec.update.strategy {
        UpdateStrategy::StartThenKill if exclusive => UpdateStrategy::DownloadThenKill,
        s => s,
    }
}

/// Every `depends_on` entry has reached its condition, judged on what is observed now.
pub fn dependencies_ready(spec: &ContainerSpec, observed: &Observed) -> Result<(), Waiting> {
    for dep in &spec.depends_on {
        let o = observed.containers.get(&dep.name);
        let ready = match (dep.condition, o) {
            (_, None) => false,
            (DependencyCondition::Started, Some(o)) => {
                matches!(o.run, RunState::Running | RunState::Paused)
            }
            (DependencyCondition::Healthy, Some(o)) => {
                o.run == RunState::Running && o.health == HealthState::Healthy
            }
            (DependencyCondition::Completed, Some(o)) => {
                matches!(o.run, RunState::Exited(e) if e.succeeded() && !e.requested)
            }
        };
        if !ready {
            return Err(Waiting::Dependency {
                name: dep.name.clone(),
                condition: dep.condition,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_update_tests.rs"]
mod update_tests;
