//! `plan(desired, observed, now) -> Plan`: the policy, as a pure function.
//!
//! Level-triggered: each pass plans from the whole picture, and an action whose effect a later
//! pass needs (a pull before a create) is simply followed by another pass. Nothing here reads a
//! clock or a file; time comes in as `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use berth_spec::model::{
    DependencyCondition, DesiredState, PullPolicy, Resources, RestartPolicy, UpdateStrategy,
};
use berth_spec::{ContainerSpec, ImageSource};

use super::backoff;
use super::model::*;
use crate::names::IncarnationId;

/// One step for the executor. Actions for one container run in order; different containers
/// proceed concurrently.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Fetch (or import, for on-disk sources) an image into the store.
    Pull {
        image: ImageSource,
    },
    /// Make a new incarnation (rootfs, network, cgroup) and start it.
    Create {
        name: String,
        spec: Box<ContainerSpec>,
        hash: String,
        image_digest: String,
    },
    /// Start the existing incarnation again (its upper dir is kept).
    Start {
        name: String,
        id: IncarnationId,
        crash_streak: u32,
    },
    Pause {
        name: String,
        id: IncarnationId,
    },
    Resume {
        name: String,
        id: IncarnationId,
    },
    /// Stop the process; the rootfs and the address stay, published ports are released.
    Stop {
        name: String,
        id: IncarnationId,
    },
    /// Stop and remove everything the incarnation owns.
    Remove {
        name: String,
        id: IncarnationId,
        why: RemoveReason,
    },
    UpdateResources {
        name: String,
        id: IncarnationId,
        resources: Resources,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its spec file was deleted.
    Pruned,
    /// Its spec or image changed; a new incarnation replaces it.
    Recreate,
}

impl Action {
    /// The container this action belongs to; `None` for shared work (pulls).
    pub fn container(&self) -> Option<&str> {
        match self {
            Action::Pull { .. } => None,
            Action::Create { name, .. }
            | Action::Start { name, .. }
            | Action::Pause { name, .. }
            | Action::Resume { name, .. }
            | Action::Stop { name, .. }
            | Action::Remove { name, .. }
            | Action::UpdateResources { name, .. } => Some(name),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Pull { image } => write!(f, "pull {image}"),
            Action::Create {
                name, image_digest, ..
            } => write!(f, "create {name} from {image_digest}"),
            Action::Start { name, id, .. } => write!(f, "start {name} ({id})"),
            Action::Pause { name, id } => write!(f, "pause {name} ({id})"),
            Action::Resume { name, id } => write!(f, "resume {name} ({id})"),
            Action::Stop { name, id } => write!(f, "stop {name} ({id})"),
            Action::Remove {
                name,
                id,
                why: RemoveReason::Pruned,
            } => write!(f, "remove {name} ({id}): spec deleted"),
            Action::Remove {
                name,
                id,
                why: RemoveReason::Recreate,
            } => {
                write!(f, "remove {name} ({id}): replaced by a new incarnation")
            }
            Action::UpdateResources { name, id, .. } => {
                write!(f, "update resources of {name} ({id})")
            }
        }
    }
}

/// Why a container is not yet where its spec wants it, when no action moves it this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    Dependency {
        name: String,
        condition: DependencyCondition,
    },
    /// Restart backoff after a crash or a failed start.
    Backoff { until: Millis },
    /// The image is being fetched.
    Pulling,
    /// The last pull failed; retried at `until` (or never, for a permanent error).
    PullFailed {
        until: Option<Millis>,
        error: String,
    },
    /// `pull = "never"` and the image is not in the store.
    ImageMissing,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Dependency { name, condition } => {
                let c = match condition {
                    DependencyCondition::Started => "started",
                    DependencyCondition::Healthy => "healthy",
                    DependencyCondition::Completed => "completed",
                };
                write!(f, "waiting for dependency {name} to be {c}")
            }
            Waiting::Backoff { .. } => write!(f, "backing off before restart"),
            Waiting::Pulling => write!(f, "pulling image"),
            Waiting::PullFailed {
                until: Some(_),
                error,
            } => write!(f, "pull failed, retrying: {error}"),
            Waiting::PullFailed { until: None, error } => write!(f, "pull failed: {error}"),
            Waiting::ImageMissing => write!(f, "image not in the store and pull = \"never\""),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub waiting: BTreeMap<String, Waiting>,
    /// The earliest moment a backoff ends: the next pass should run by then.
    pub wake_at: Option<Millis>,
}

impl Plan {
    fn wake(&mut self, at: Millis) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

pub fn plan(desired: &Desired, observed: &Observed, now: Millis) -> Plan {
    let mut out = Plan::default();
    let mut pulls: BTreeSet<ImageSource> = BTreeSet::new();
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
                    out.actions.push(Action::Remove {
                        name: name.clone(),
                        id: o.id.clone(),
                        why: RemoveReason::Pruned,
                    });
                }
            }
            (Some(d), obs) => plan_one(name, d, obs, observed, now, &mut out, &mut pulls),
        }
    }
    // Pulls go first so a slow download starts as early as possible.
    let mut actions: Vec<Action> = pulls
        .into_iter()
        .map(|image| Action::Pull { image })
        .collect();
    actions.append(&mut out.actions);
    out.actions = actions;
    out
}

fn plan_one(
    name: &str,
    d: &DesiredSpec,
    obs: Option<&ObservedContainer>,
    observed: &Observed,
    now: Millis,
    out: &mut Plan,
    pulls: &mut BTreeSet<ImageSource>,
) {
    let spec = &d.spec;
    let local = observed.images.get(&spec.image);
    let want_process = spec.state != DesiredState::Stopped;

    if let Some(o) = obs {
        let image_moved = local.is_some_and(|digest| *digest != o.image_digest);
        if o.spec_hash != d.hash || image_moved {
            // Recreate. download-then-kill (and start-then-kill, until it has its own path):
            // the old container serves while the new image downloads.
            let kill_first = spec.update.strategy == UpdateStrategy::KillThenDownload;
            if local.is_none() && !kill_first {
                need_image(name, spec, observed, now, out, pulls);
                return;
            }
            out.actions.push(Action::Remove {
                name: name.into(),
                id: o.id.clone(),
                why: RemoveReason::Recreate,
            });
            match local {
                Some(digest) if want_process => create(name, d, digest, observed, now, out),
                Some(_) => {}
                None => need_image(name, spec, observed, now, out, pulls),
            }
            return;
        }
        converge_existing(name, spec, o, observed, now, out);
        return;
    }

    match local {
        None => need_image(name, spec, observed, now, out, pulls),
        Some(digest) if want_process => create(name, d, digest, observed, now, out),
        Some(_) => {}
    }
}

/// The image is missing: pull it unless the policy or a recent failure says not now.
fn need_image(
    name: &str,
    spec: &ContainerSpec,
    observed: &Observed,
    now: Millis,
    out: &mut Plan,
    pulls: &mut BTreeSet<ImageSource>,
) {
    let from_registry = matches!(spec.image, ImageSource::Registry(_));
    if from_registry && spec.pull == PullPolicy::Never {
        out.waiting.insert(name.into(), Waiting::ImageMissing);
        return;
    }
    if let Some(f) = observed.pull_failures.get(&spec.image) {
        if !f.transient {
            out.waiting.insert(
                name.into(),
                Waiting::PullFailed {
                    until: None,
                    error: f.error.clone(),
                },
            );
            return;
        }
        let until = f.at.plus(backoff::delay(f.count.saturating_sub(1)));
        if now < until {
            out.waiting.insert(
                name.into(),
                Waiting::PullFailed {
                    until: Some(until),
                    error: f.error.clone(),
                },
            );
            out.wake(until);
            return;
        }
    }
    pulls.insert(spec.image.clone());
    out.waiting.insert(name.into(), Waiting::Pulling);
}

fn create(
    name: &str,
    d: &DesiredSpec,
    digest: &str,
    observed: &Observed,
    now: Millis,
    out: &mut Plan,
) {
    if let Some(f) = observed.create_failures.get(name) {
        let until = f.at.plus(backoff::delay(f.count.saturating_sub(1)));
        if now < until {
            out.waiting.insert(name.into(), Waiting::Backoff { until });
            out.wake(until);
            return;
        }
    }
    if let Err(w) = dependencies_ready(&d.spec, observed) {
        out.waiting.insert(name.into(), w);
        return;
    }
    out.actions.push(Action::Create {
        name: name.into(),
        spec: Box::new(d.spec.clone()),
        hash: d.hash.clone(),
        image_digest: digest.into(),
    });
}

fn converge_existing(
    name: &str,
    spec: &ContainerSpec,
    o: &ObservedContainer,
    observed: &Observed,
    now: Millis,
    out: &mut Plan,
) {
    let id = o.id.clone();
    let live = matches!(o.run, RunState::Running | RunState::Paused);
    if live && o.resources != spec.resources {
        out.actions.push(Action::UpdateResources {
            name: name.into(),
            id: id.clone(),
            resources: spec.resources,
        });
    }
    match (spec.state, o.run) {
        (DesiredState::Stopped, RunState::Running | RunState::Paused) => {
            out.actions.push(Action::Stop {
                name: name.into(),
                id,
            });
        }
        (DesiredState::Stopped, _) => {}
        (DesiredState::Running, RunState::Paused) => out.actions.push(Action::Resume {
            name: name.into(),
            id,
        }),
        (DesiredState::Paused, RunState::Running) => out.actions.push(Action::Pause {
            name: name.into(),
            id,
        }),
        (_, RunState::Running | RunState::Paused) => {}
        (_, RunState::Created) => start(name, spec, o, 0, observed, now, out),
        (_, RunState::Exited(exit)) => {
            if exit.requested {
                // berth stopped it on purpose; the spec now wants it up again.
                start(name, spec, o, 0, observed, now, out);
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
            if now < until {
                out.waiting.insert(name.into(), Waiting::Backoff { until });
                out.wake(until);
                return;
            }
            start(name, spec, o, streak.saturating_add(1), observed, now, out);
        }
    }
}

fn start(
    name: &str,
    spec: &ContainerSpec,
    o: &ObservedContainer,
    crash_streak: u32,
    observed: &Observed,
    now: Millis,
    out: &mut Plan,
) {
    if let Some(f) = &o.start_failure {
        let until = f.at.plus(backoff::delay(f.count.saturating_sub(1)));
        if now < until {
            out.waiting.insert(name.into(), Waiting::Backoff { until });
            out.wake(until);
            return;
        }
    }
    if let Err(w) = dependencies_ready(spec, observed) {
        out.waiting.insert(name.into(), w);
        return;
    }
    out.actions.push(Action::Start {
        name: name.into(),
        id: o.id.clone(),
        crash_streak,
    });
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
