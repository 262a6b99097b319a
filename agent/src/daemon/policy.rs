//! The loop's side of the lifecycle policies: the clock the planner sees, health checks run on
//! schedule, `pull = "always"` tags re-checked, update locks looked at. The decisions stay in
//! the pure planner; this only feeds it.

use std::collections::BTreeMap;

use berth_spec::{Config, ImageSource};

use super::{Event, Reconciler};
use crate::backend::{ActionError, RemoteImage};
use crate::clock;
use crate::names::IncarnationId;
use crate::reconcile::health::{self, Tracker};
use crate::reconcile::model::{Desired, HealthState, Millis, Observed, RemoteCheck, RunState};
use crate::reconcile::update::{Ctx, WallClock};
use crate::reconcile::{Plan, plan_with};

/// Health of the containers that have a check: keyed by name, valid for one run of one
/// incarnation (a restart starts over at `starting`).
#[derive(Default)]
pub(super) struct HealthBook {
    trackers: BTreeMap<String, (IncarnationId, Option<Millis>, Tracker)>,
    running: std::collections::BTreeSet<String>,
}

/// The context a pass plans in: the boot clock, the wall clock (when it can be trusted), this
/// host's jitter seed and the config's update policy. The loop and the in-process `berth plan`
/// and `berth status` plan with this one function, so they give the same answer.
pub fn planning_ctx(config: &Config, jitter_seed: u64, locks: UpdateLocks) -> Ctx {
    Ctx {
        now: clock::now(),
        wall: wall_clock(),
        force: locks == UpdateLocks::Overridden,
        update_interval: config.update_interval,
        jitter_seed,
        download_window: config.images.download_window,
    }
}

/// Whether `[update] lock` files hold updates back: they do, except while a `berth apply
/// --force` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateLocks {
    Hold,
    Overridden,
}

/// This host's seed for spreading `pull = "always"` re-checks: from its identity (host id and
/// instance), so every process that plans for it (the agent, an in-process command) agrees, and
/// a fleet's hosts still spread. Without a host id: random, as before.
pub fn jitter_seed(config: &Config) -> u64 {
    use sha2::Digest;
    let id = crate::identity::HostIdentity::of(config);
    let mut b = [0u8; 8];
    match id.host_id {
        Some(h) => {
            let d = sha2::Sha256::digest(format!("{h}\0{}", id.instance));
            b.copy_from_slice(&d[..8]);
        }
        None => {
            let _ = getrandom::fill(&mut b);
        }
    }
    u64::from_le_bytes(b)
}

/// Adds what the policy reads beyond the host's observation: the update locks present, and
/// each checked container's health from the loop's trackers (`None`: no tracker has run, as an
/// agent that just started sees it, so `starting`).
pub(super) fn add_policy_view(desired: &Desired, o: &mut Observed, health: Option<&HealthBook>) {
    for entry in desired.specs.values() {
        if let Some(lock) = entry
            .spec
            .as_ref()
            .and_then(|d| d.spec.extra.update.lock.as_ref())
            && lock.exists()
        {
            o.locks.insert(lock.clone());
        }
    }
    for (name, c) in o.containers.iter_mut() {
        let Some(d) = desired.specs.get(name).and_then(|e| e.spec.as_ref()) else {
            continue;
        };
        if health::effective(&d.spec, c.image_health.as_ref()).is_none() {
            c.health = HealthState::None;
            continue;
        }
        c.health = match health.and_then(|h| h.trackers.get(name)) {
            Some((id, started, t)) if *id == c.id && *started == c.started_at => t.state,
            _ => HealthState::Starting,
        };
    }
}

/// The plan the agent would make now from this observation, for `berth plan` and `berth
/// status` when no agent runs: the loop's view without what only a running loop holds (health
/// trackers, failures since it started, apply waiters).
pub fn plan_in_process(config: &Config, desired: &Desired, observed: &Observed) -> Plan {
    let mut view = observed.clone();
    add_policy_view(desired, &mut view, None);
    plan_with(
        desired,
        &view,
        &planning_ctx(config, jitter_seed(config), UpdateLocks::Hold),
    )
}

/// The wall clock, if it can be trusted: systemd-timesyncd says it is synchronised, or the
/// date is at least plausible (devices without an RTC boot in 1970).
pub fn wall_clock() -> Option<WallClock> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let synced = std::path::Path::new("/run/systemd/timesync/synchronized").exists();
    if !synced && now < PLAUSIBLE {
        return None;
    }
    Some(WallClock {
        unix: now,
        minute_of_day: local_minute_of_day(now),
    })
}

/// 2025-01-01T00:00:00Z: a clock earlier than this has not been set.
const PLAUSIBLE: u64 = 1_735_689_600;

fn local_minute_of_day(unix: u64) -> u16 {
    let t = unix as libc::time_t;
    // SAFETY: an all-zero tm is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return ((unix / 60) % 1440) as u16;
    }
    (tm.tm_hour * 60 + tm.tm_min) as u16
}

impl Reconciler {
    pub(super) fn ctx(&self) -> Ctx {
        let locks = if self.waiters.iter().any(|w| w.force()) {
            UpdateLocks::Overridden
        } else {
            UpdateLocks::Hold
        };
        planning_ctx(&self.config, self.jitter_seed, locks)
    }

    /// Adds what only the loop knows to an observation: update locks present, health states.
    pub(super) fn add_policy_view(&self, o: &mut Observed) {
        add_policy_view(&self.desired, o, Some(&self.health));
    }

    /// Starts the health checks that are due; returns when the next one is.
    pub(super) fn schedule_health(&mut self, now: Millis) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut live = Vec::new();
        for (name, c) in &self.observed.containers {
            let Some(d) = self.desired.specs.get(name).and_then(|e| e.spec.as_ref()) else {
                continue;
            };
            let Some(check) = health::effective(&d.spec, c.image_health.as_ref()) else {
                continue;
            };
            if c.run != RunState::Running || self.in_flight.contains_key(name) {
                continue;
            }
            let started = c.started_at.unwrap_or(now);
            live.push(name.clone());
            let entry = self
                .health
                .trackers
                .entry(name.clone())
                .or_insert_with(|| (c.id.clone(), c.started_at, Tracker::new()));
            if entry.0 != c.id || entry.1 != c.started_at {
                *entry = (c.id.clone(), c.started_at, Tracker::new());
            }
            let due = entry.2.next_due(started, &check);
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            if !self.health.running.insert(name.clone()) {
                continue;
            }
            let (backend, tx, name, id) = (
                self.backend.clone(),
                self.tx.clone(),
                name.clone(),
                c.id.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let run = backend.health_check(&name, &check);
                let _ = tx.send(Event::Health { name, id, run });
            });
        }
        self.health
            .trackers
            .retain(|n, _| live.contains(n) || self.health.running.contains(n));
        next
    }

    /// Folds in a check's result; returns whether the health state changed.
    pub(super) fn finish_health(
        &mut self,
        name: String,
        id: IncarnationId,
        run: health::CheckRun,
    ) -> bool {
        self.health.running.remove(&name);
        let now = clock::now();
        let Some(c) = self.observed.containers.get(&name).filter(|c| c.id == id) else {
            return false;
        };
        let Some(d) = self.desired.specs.get(&name).and_then(|e| e.spec.as_ref()) else {
            return false;
        };
        let Some(check) = health::effective(&d.spec, c.image_health.as_ref()) else {
            return false;
        };
        let started = c.started_at.unwrap_or(now);
        let Some((_, _, tracker)) = self
            .health
            .trackers
            .get_mut(&name)
            .filter(|(i, s, _)| *i == id && *s == c.started_at)
        else {
            return false;
        };
        let output = run.output.clone();
        match tracker.record(run, started, now, &check) {
            Some(state) => {
                let what = match state {
                    HealthState::Healthy => "healthy".to_string(),
                    HealthState::Unhealthy => format!("unhealthy: {}", output.trim()),
                    other => format!("{other:?}").to_lowercase(),
                };
                self.events.emit(Some(&name), "health", what);
                true
            }
            // Not a change, but the next check is now scheduled from this one.
            None => true,
        }
    }

    pub(super) fn spawn_check(&mut self, image: ImageSource) {
        if !self.checks_in_flight.insert(image.clone()) {
            return;
        }
        let (backend, tx) = (self.backend.clone(), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let result = backend.check(&image);
            let _ = tx.send(Event::Checked(image, result));
        });
    }

    pub(super) fn finish_check(
        &mut self,
        image: ImageSource,
        result: Result<RemoteImage, ActionError>,
    ) {
        self.checks_in_flight.remove(&image);
        let now = clock::now();
        match result {
            Ok(r) => {
                self.observed
                    .first_seen
                    .entry(r.digest.clone())
                    .or_insert(now);
                let moved = self
                    .observed
                    .images
                    .get(&image)
                    .is_some_and(|local| *local != r.digest);
                if moved {
                    self.events.emit(
                        None,
                        "update",
                        format!("{image} now points to {}", r.digest),
                    );
                }
                self.observed.remote.insert(
                    image,
                    RemoteCheck {
                        digest: r.digest,
                        created: r.created,
                        checked_at: now,
                    },
                );
            }
            Err(e) => {
                self.events
                    .emit(None, "error", format!("checking {image} for updates: {e}"));
                // Try again at the next interval, not at once: a registry down is not hammered.
                let kept = self.observed.remote.get(&image).cloned();
                let entry = match kept {
                    Some(r) => RemoteCheck {
                        checked_at: now,
                        ..r
                    },
                    // Never reached: nothing known, no update to offer; only the time counts.
                    None => return self.remember_failed_check(image, now),
                };
                self.observed.remote.insert(image, entry);
            }
        }
    }

    fn remember_failed_check(&mut self, image: ImageSource, now: Millis) {
        // With no digest known yet the local one stands in, so no update is offered.
        if let Some(local) = self.observed.images.get(&image).cloned() {
            self.observed.remote.insert(
                image,
                RemoteCheck {
                    digest: local,
                    created: None,
                    checked_at: now,
                },
            );
        }
    }

    /// SIGHUP and `berth apply`: re-check every `pull = "always"` tag now.
    pub(super) fn recheck_now(&mut self) {
        self.observed.remote.clear();
    }
}
