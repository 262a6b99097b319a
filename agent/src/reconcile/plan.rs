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
use berth_spec::{ContainerSpec, Digest, ImageSource};

pub use super::action::{Action, Create, Hold, RemoveReason, StopCause, UpdateMark, Waiting};
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

/// [`plan_pass`] with no failures remembered (a fresh start, and most planner tests).
pub fn plan_with(desired: &Desired, observed: &Observed, ctx: &Ctx) -> Plan {
    plan_pass(desired, observed, &Failures::default(), ctx)
}

/// The policy: what to do now to move `observed` towards `desired`, backing off from what
/// `failures` says failed recently.
pub fn plan_pass(desired: &Desired, observed: &Observed, failures: &Failures, ctx: &Ctx) -> Plan {
    let mut p = Planner {
        observed,
        failures,
        ctx,
        out: Plan::default(),
        checks: BTreeSet::new(),
        pulls: BTreeSet::new(),
    };
    let names: BTreeSet<&String> = desired
        .specs
        .keys()
        .chain(observed.containers.keys())
        .chain(observed.removing.keys())
        .collect();
    for name in names {
        let entry = desired.specs.get(name);
        let obs = observed.containers.get(name);
        match (entry.and_then(|e| e.spec.as_ref()), obs) {
            (None, None) => p.finish_removal(name),
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
    failures: &'a Failures,
    ctx: &'a Ctx,
    out: Plan,
    /// Checks and pulls, deduplicated across containers sharing an image.
    checks: BTreeSet<ImageSource>,
    pulls: BTreeSet<ImageSource>,
}

impl Planner<'_> {
    /// A removal begun and not finished, of a container no spec wants: finish it (after the
    /// backoff of its last failure). Where a spec still wants the name, its new incarnation
    /// replaces the record and the sweep takes what is left of the old one, so a removal that
    /// keeps failing never keeps a wanted container down.
    fn finish_removal(&mut self, name: &str) {
        let Some(id) = self.observed.removing.get(name) else {
            return;
        };
        if self.backing_off(name, self.failures.remove.get(name)) {
            return;
        }
        self.push(Action::Remove {
            name: name.to_string(),
            id: id.clone(),
            why: RemoveReason::Pruned,
        });
    }

    /// Whether `name` waits out the backoff of its last failure (and, if so, says so and
    /// schedules the wake-up).
    fn backing_off(&mut self, name: &str, failure: Option<&Failure>) -> bool {
        let Some(until) = failure.map(Failure::retry_at) else {
            return false;
        };
        if self.ctx.now >= until {
            return false;
        }
        self.wait(name, Waiting::Backoff { until });
        self.out.wake(until);
        true
    }

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
        let history = self.observed.updates.get(name);

        let Some(o) = obs else {
            self.create_missing(name, d, local, remote, history);
            return;
        };

        if self.verify(name, d, o, history) {
            return;
        }
        let image_moved = local.is_some_and(|digest| *digest != o.image_digest);
        let spec_changed = !d.hash.is(&o.spec_hash);
        if image_moved
            && remote.is_none()
            && let Some(l) = local
            && history.is_some_and(|h| h.rejected.contains(l))
        {
            // The tag still points at a digest that failed (unless the registry already moved
            // it on: then that digest is the update). The circuit breaker holds for every
            // recreation: an edit is made on what runs now, never on the rejected digest.
            let keep = self.good_digest(spec, Some(o), history);
            self.wait(
                name,
                Waiting::Held(Hold::Rejected {
                    digest: l.clone(),
                    keeping: keep.clone(),
                }),
            );
            match keep {
                Some(k) if spec_changed => {
                    self.recreate(name, d, o, local, None, Change::SpecOnKept(k));
                }
                _ => self.converge_existing(name, spec, o),
            }
            return;
        }
        let change = match (spec_changed, image_moved || remote.is_some()) {
            (true, _) => Change::Spec,
            (false, true) => Change::Image,
            (false, false) => return self.converge_existing(name, spec, o),
        };
        self.recreate(name, d, o, local, remote, change);
    }

    /// A container with a spec but no incarnation: a first creation, or a replacement for one
    /// that is gone (a lost bundle, a failed creation, an agent restart between the removal
    /// and the creation of a recreate). A replacement is not an update: it never takes a
    /// rejected digest, nor one an update hold (lock, window, min_age) keeps back.
    fn create_missing(
        &mut self,
        name: &str,
        d: &DesiredSpec,
        local: Option<&Digest>,
        remote: Option<Digest>,
        history: Option<&UpdateState>,
    ) {
        let spec = &d.spec;
        let want_process = spec.state != DesiredState::Stopped;
        if let Some(h) = history
            && let Some(v) = &h.verifying
            && local == Some(&v.digest)
            && h.last_hash.as_deref().is_some_and(|h| d.hash.is(h))
            && let Some(previous) = h.previous.as_ref().filter(|p| **p != v.digest)
            && spec.extra.update.rollback
            && want_process
        {
            // An update under verification whose container is gone did not pass: it went
            // away, or an agent restart cut its rollback short between removal and creation.
            self.create_as(
                name,
                d,
                previous,
                UpdateMark::Rollback {
                    rejected: v.digest.clone(),
                },
            );
            return;
        }
        if let Some((instead, why)) = self.instead_of_tag(spec, local, remote.as_ref(), history) {
            self.wait(name, Waiting::Held(why));
            if let Some(digest) = instead
                && want_process
            {
                self.create_as(name, d, &digest, UpdateMark::None);
            }
            return;
        }
        match (remote, local) {
            // A replacement runs what the store has; the update's download waits for the window.
            (Some(_), Some(digest))
                if want_process && let Some(h) = update::download_hold(self.ctx) =>
            {
                self.wait(name, Waiting::Held(h));
                self.out.wake(self.ctx.now.plus(RECHECK_HOLD));
                self.create(name, d, digest, None);
            }
            (Some(_), _) | (None, None) => self.need_image(name, spec),
            (None, Some(digest)) if want_process => self.create(name, d, digest, None),
            (None, Some(_)) => {}
        }
    }

    /// Why a new incarnation of a container that has none may not run the digest its tag
    /// names now, and what it runs instead (`None`: nothing known good, so nothing).
    fn instead_of_tag(
        &self,
        spec: &ContainerSpec,
        local: Option<&Digest>,
        remote: Option<&Digest>,
        history: Option<&UpdateState>,
    ) -> Option<(Option<Digest>, Hold)> {
        let h = history?;
        if remote.is_none()
            && let Some(l) = local
            && h.rejected.contains(l)
        {
            let keep = self.good_digest(spec, None, history);
            return Some((
                keep.clone(),
                Hold::Rejected {
                    digest: l.clone(),
                    keeping: keep,
                },
            ));
        }
        // An update from the last digest this container ran to the tag's new one waits for
        // whatever holds updates; the replacement runs the last one meanwhile.
        let new = remote.or(local)?;
        let last = h
            .last_digest
            .as_ref()
            .filter(|l| *l != new && !h.rejected.contains(*l))?;
        if !self.in_store(&spec.image, last) {
            // Not an image of this reference (the spec names another one now): no update.
            return None;
        }
        let held = update::hold(spec, self.observed, self.ctx).or_else(|| {
            update::too_new(spec, new, self.created(spec, new), self.observed, self.ctx)
        });
        held.map(|why| (Some(last.clone()), why))
    }

    /// The digest to run while the tag names a rejected one: what runs now, else the last one
    /// created, else the one before the last update; the first not rejected and in the store.
    fn good_digest(
        &self,
        spec: &ContainerSpec,
        running: Option<&ObservedContainer>,
        history: Option<&UpdateState>,
    ) -> Option<Digest> {
        let h = history?;
        [
            running.map(|o| &o.image_digest),
            h.last_digest.as_ref(),
            h.previous.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|d| !h.rejected.contains(*d) && self.in_store(&spec.image, d))
        .cloned()
    }

    /// Whether the store holds `digest` as an image of `image`: under its tag, or kept by its
    /// digest since the tag moved.
    fn in_store(&self, image: &ImageSource, digest: &Digest) -> bool {
        let under = |src: &ImageSource| self.observed.images.get(src).is_some_and(|d| d == digest);
        under(image) || pinned(image, digest).is_some_and(|p| under(&p))
    }

    /// The registry's created time of `digest`, when the last check of the tag returned it.
    fn created(&self, spec: &ContainerSpec, digest: &Digest) -> Option<u64> {
        self.observed
            .remote
            .get(&spec.image)
            .filter(|r| r.digest == *digest)
            .and_then(|r| r.created)
    }

    /// For `pull = "always"`: the digest the registry says the tag points to, when it differs
    /// from the local one and was not rejected.
    fn remote_update(&self, spec: &ContainerSpec, local: Option<&Digest>) -> Option<Digest> {
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
        local: Option<&Digest>,
        remote: Option<Digest>,
        change: Change,
    ) {
        let spec = &d.spec;
        let keep = match &change {
            Change::SpecOnKept(k) => Some(k),
            Change::Spec | Change::Image => None,
        };
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
        // The digest we would move to, and whether it must be downloaded first.
        let (mut target, mut fetch) = match keep {
            Some(k) => (Some(k.clone()), false),
            None => (remote.clone().or_else(|| local.cloned()), remote.is_some()),
        };
        // (A spec edit that names another image is not an update of the one that runs.)
        let same_image = change == Change::Image || self.in_store(&spec.image, &o.image_digest);
        if keep.is_none()
            && same_image
            && let Some(t) = target.clone().filter(|t| *t != o.image_digest)
            && let Some(h) =
                update::too_new(spec, &t, self.created(spec, &t), self.observed, self.ctx)
        {
            self.wait(name, Waiting::Held(h));
            self.out.wake(self.ctx.now.plus(RECHECK_HOLD));
            if change == Change::Image {
                self.converge_existing(name, spec, o);
                return;
            }
            // The edit goes ahead on the image that runs now; the young digest waits.
            target = Some(o.image_digest.clone());
            fetch = false;
        }
        let ready = !fetch && target.is_some();
        if !ready && let Some(h) = update::download_hold(self.ctx) {
            // An update's download waits for the window; what runs now keeps running.
            self.wait(name, Waiting::Held(h));
            self.out.wake(self.ctx.now.plus(RECHECK_HOLD));
            self.converge_existing(name, spec, o);
            return;
        }
        let strategy = effective_strategy(spec);
        let kill_first = strategy == UpdateStrategy::KillThenDownload;
        if !ready && !kill_first {
            // The old container serves while the new image downloads.
            self.need_image(name, spec);
            self.converge_existing(name, spec, o);
            return;
        }
        let want_process = spec.state != DesiredState::Stopped;
        let tagged = target.as_ref() == local;
        match (ready, target) {
            (true, Some(digest)) if want_process && strategy == UpdateStrategy::StartThenKill => {
                self.create_from(name, d, &digest, tagged, Some(o));
            }
            (true, Some(digest)) => {
                self.push(Action::Remove {
                    name: name.into(),
                    id: o.id.clone(),
                    why: RemoveReason::Recreate,
                });
                if want_process {
                    self.create_from(name, d, &digest, tagged, None);
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

    /// A creation from the tag's digest (an update when it moved), or from a digest kept in
    /// the store instead of it (never an update).
    fn create_from(
        &mut self,
        name: &str,
        d: &DesiredSpec,
        digest: &Digest,
        tagged: bool,
        replacing: Option<&ObservedContainer>,
    ) {
        if tagged {
            self.create(name, d, digest, replacing);
        } else {
            self.create_with(name, d, digest, UpdateMark::None, replacing);
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
        match update::verdict(v, o, has_check, spec.extra.update.verify, self.ctx.now) {
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
            Verdict::Failed => match (&h.previous, spec.extra.update.rollback) {
                (Some(previous), true) => {
                    self.push(Action::Remove {
                        name: name.into(),
                        id: o.id.clone(),
                        why: RemoveReason::Recreate,
                    });
                    self.push(Action::Create(Create {
                        name: name.into(),
                        spec: spec.clone(),
                        hash: d.hash.to_string(),
                        image_digest: previous.clone(),
                        update: UpdateMark::Rollback {
                            rejected: o.image_digest.clone(),
                        },
                        replacing: None,
                    }));
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
        if let Some(f) = self.failures.pull.get(&spec.image) {
            let until = f.retry_at();
            if f.retry == Retry::WhenRoom && self.ctx.now < until {
                self.wait(
                    name,
                    Waiting::PullDeferred {
                        until,
                        error: f.error.clone(),
                    },
                );
                self.out.wake(until);
                return;
            }
            if f.retry == Retry::Never {
                self.wait(
                    name,
                    Waiting::PullFailed {
                        until: None,
                        error: f.error.clone(),
                    },
                );
                return;
            }
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
        digest: &Digest,
        replacing: Option<&ObservedContainer>,
    ) {
        self.create_with(
            name,
            d,
            digest,
            self.update_mark(name, d, digest),
            replacing,
        );
    }

    /// What a creation from the tag's `digest` means for the update history. A new digest of
    /// the same image is an update, verified and rolled back if it fails, whether or not an
    /// edit came with it; so is a digest still under verification made anew by an edit (its
    /// verification starts over rather than ending unjudged).
    fn update_mark(&self, name: &str, d: &DesiredSpec, digest: &Digest) -> UpdateMark {
        let Some(h) = self.observed.updates.get(name) else {
            return UpdateMark::None;
        };
        if let Some(v) = &h.verifying
            && v.digest == *digest
            && let Some(from) = h.previous.as_ref().filter(|p| *p != digest)
        {
            return UpdateMark::Update { from: from.clone() };
        }
        match &h.last_digest {
            Some(from)
                if from != digest
                    && (h.last_hash.as_deref().is_some_and(|h| d.hash.is(h))
                        || self.in_store(&d.spec.image, from)) =>
            {
                UpdateMark::Update { from: from.clone() }
            }
            _ => UpdateMark::None,
        }
    }

    /// A creation whose meaning for the update history is decided by the caller.
    fn create_as(&mut self, name: &str, d: &DesiredSpec, digest: &Digest, update: UpdateMark) {
        self.create_with(name, d, digest, update, None);
    }

    fn create_with(
        &mut self,
        name: &str,
        d: &DesiredSpec,
        digest: &Digest,
        update: UpdateMark,
        replacing: Option<&ObservedContainer>,
    ) {
        if self.backing_off(name, self.failures.create.get(name)) {
            return;
        }
        if let Err(w) = dependencies_ready(&d.spec, self.observed) {
            self.wait(name, w);
            return;
        }
        self.push(Action::Create(Create {
            name: name.into(),
            spec: d.spec.clone(),
            hash: d.hash.to_string(),
            image_digest: digest.clone(),
            update,
            replacing: replacing.map(|o| o.id.clone()),
        }));
    }

    fn converge_existing(&mut self, name: &str, spec: &ContainerSpec, o: &ObservedContainer) {
        let id = o.id.clone();
        let live = matches!(o.run, RunState::Running | RunState::Paused);
        if live && o.resources != spec.extra.resources {
            self.push(Action::UpdateResources {
                name: name.into(),
                id: id.clone(),
                resources: spec.extra.resources,
            });
        }
        let unhealthy_restart = o.run == RunState::Running
            && o.health == HealthState::Unhealthy
            && spec.extra.health.on_unhealthy == OnUnhealthy::Restart
            && spec.state == DesiredState::Running;
        match (spec.state, o.run) {
            (_, RunState::Running) if unhealthy_restart => {
                self.push(Action::Stop {
                    name: name.into(),
                    id,
                    cause: StopCause::Unhealthy,
                });
            }
            (DesiredState::Stopped, RunState::Running | RunState::Paused) => {
                self.push(Action::Stop {
                    name: name.into(),
                    id,
                    cause: StopCause::Asked,
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
                if exit.asked_for() {
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
                let (delay, streak) = backoff::restart_after(o.crash_streak, ran);
                let until = exit.at.plus(delay);
                if self.ctx.now < until {
                    self.wait(name, Waiting::Backoff { until });
                    self.out.wake(until);
                    return;
                }
                self.start(name, spec, o, streak);
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
        if self.backing_off(name, self.failures.start.get(name)) {
            return;
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

/// Why a container is recreated: an image update may be held back or too young; a spec edit
/// goes ahead on the image that runs when only the image is held.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Spec,
    /// A spec edit while the tag names a rejected digest: made from this one, in the store.
    SpecOnKept(Digest),
    Image,
}

/// `image` pinned to `digest` (`repo@digest`): how the store keeps an image its tag moved
/// away from.
pub fn pinned(image: &ImageSource, digest: &Digest) -> Option<ImageSource> {
    let ImageSource::Registry(r) = image else {
        return None;
    };
    Some(ImageSource::Registry(berth_spec::ImageReference {
        tag: None,
        digest: Some(digest.to_string()),
        ..r.clone()
    }))
}

/// start-then-kill needs two incarnations side by side: not possible while a host port or an
/// exclusive mount (a bind or a volume) or a static address would be held twice.
fn effective_strategy(spec: &ContainerSpec) -> UpdateStrategy {
    let exclusive = !spec.extra.ports.is_empty()
        || spec.has_static_address()
        || spec
            .extra
            .mounts
            .iter()
            .any(|m| !matches!(m.kind, MountKind::Tmpfs { .. }));
    match spec.extra.update.strategy {
        UpdateStrategy::StartThenKill if exclusive => UpdateStrategy::DownloadThenKill,
        s => s,
    }
}

/// Every `depends_on` entry has reached its condition, judged on what is observed now.
pub fn dependencies_ready(spec: &ContainerSpec, observed: &Observed) -> Result<(), Waiting> {
    // `network = "container:x"` waits for x as `depends_on` does.
    for dep in &spec.dependencies() {
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
                matches!(o.run, RunState::Exited(e) if e.succeeded() && !e.asked_for())
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
