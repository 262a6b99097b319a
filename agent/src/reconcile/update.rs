//! The update rules as pure functions: when to re-check a tag, what holds an update back
//! (lock, window, min_age, an unsynchronised clock), and how an update's verification ends.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use berth_spec::model::Window;
use berth_spec::{ContainerSpec, Digest, ImageSource};

use super::action::Hold;
use super::model::*;

/// Time and operator intent for one pass.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The boot clock: durations, backoffs, verification windows.
    pub now: Millis,
    /// The local wall clock, `None` until it is synchronised (an edge device without an RTC
    /// boots in 1970): `window` and `min_age` wait for it; crash restarts never do.
    pub wall: Option<WallClock>,
    /// `berth apply --force` overrides update locks while it waits.
    pub locks: Locks,
    /// How often `pull = "always"` tags are re-checked.
    pub update_interval: Duration,
    /// A per-host random seed spreading re-checks over time, so a fleet does not hit its
    /// registry at once.
    pub jitter_seed: u64,
    /// `[images] download_window`: when downloads for containers that already run may happen.
    pub download_window: Option<Window>,
}

/// Whether update locks hold back updates in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locks {
    Honour,
    /// `berth apply --force` is waiting.
    Override,
}

impl Ctx {
    /// A context at boot-clock time `now`, without a wall clock, checking hourly.
    pub fn at(now: Millis) -> Self {
        Ctx {
            now,
            wall: None,
            locks: Locks::Honour,
            update_interval: Duration::from_secs(3600),
            jitter_seed: 0,
            download_window: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// Seconds since the Unix epoch.
    pub unix: u64,
    /// Local time of day, in minutes after midnight.
    pub minute_of_day: u16,
}

/// The part of the interval a check is spread over: up to a fifth of it, at most 10 minutes.
pub fn jitter(image: &ImageSource, seed: u64, interval: Duration) -> Duration {
    let span = (interval / 5).min(Duration::from_secs(600));
    if span.is_zero() {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, image.to_string()).hash(&mut h);
    Duration::from_millis(h.finish() % span.as_millis().max(1) as u64)
}

/// When a `pull = "always"` tag is next due for a check (`now` or earlier: due).
pub fn check_due(image: &ImageSource, observed: &Observed, ctx: &Ctx) -> Millis {
    match observed.remote.get(image) {
        None => ctx.now,
        Some(r) => r
            .checked_at
            .plus(ctx.update_interval + jitter(image, ctx.jitter_seed, ctx.update_interval)),
    }
}

/// What holds back updates and recreations of this container now, if anything: its lock file,
/// its maintenance window (or a clock too unsure to tell).
pub fn hold(spec: &ContainerSpec, observed: &Observed, ctx: &Ctx) -> Option<Hold> {
    if let Some(lock) = &spec.extra.update.lock
        && observed.locks.contains(lock)
        && ctx.locks == Locks::Honour
    {
        return Some(Hold::Lock(lock.clone()));
    }
    let w = spec.extra.update.window.as_ref()?;
    shut(w, ctx, |start_minute, end_minute| Hold::Window {
        start_minute,
        end_minute,
    })
}

/// What holds back a download for a container that already runs (an update), if anything:
/// `[images] download_window`. A first start and crash restarts never ask.
pub fn download_hold(ctx: &Ctx) -> Option<Hold> {
    let w = ctx.download_window.as_ref()?;
    shut(w, ctx, |start_minute, end_minute| Hold::DownloadWindow {
        start_minute,
        end_minute,
    })
}

/// The hold of a daily window now: `outside` when the local time is not in it, and
/// [`Hold::ClockUnsynced`] when the clock is too unsure to tell.
fn shut(w: &Window, ctx: &Ctx, outside: impl FnOnce(u16, u16) -> Hold) -> Option<Hold> {
    match ctx.wall {
        None => Some(Hold::ClockUnsynced),
        Some(wc) if !w.contains(wc.minute_of_day) => Some(outside(w.start_minute, w.end_minute)),
        Some(_) => None,
    }
}

/// Whether `digest` is too young to take under `min_age`: its age is the registry's created
/// time (needs a synchronised clock), else how long ago berth first saw it (boot clock).
pub fn too_new(
    spec: &ContainerSpec,
    digest: &Digest,
    created: Option<u64>,
    observed: &Observed,
    ctx: &Ctx,
) -> Option<Hold> {
    let min_age = spec.extra.update.min_age?;
    let young = Some(Hold::TooNew {
        digest: digest.clone(),
    });
    match (created, ctx.wall) {
        (Some(c), Some(w)) => (w.unix.saturating_sub(c) < min_age.as_secs())
            .then_some(())
            .and(young),
        (Some(_), None) => Some(Hold::ClockUnsynced),
        (None, _) => match observed.first_seen.get(digest) {
            Some(seen) => (ctx.now.since(*seen) < min_age).then_some(()).and(young),
            None => young,
        },
    }
}

/// How an update's verification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pending { until: Millis },
    Passed,
    Failed,
}

/// An updated container must stay up (no crash, no restart) for `[update] verify` and, when it
/// has a health check, be healthy by the end of it.
pub fn verdict(
    v: &Verifying,
    o: &ObservedContainer,
    has_check: bool,
    verify: Duration,
    now: Millis,
) -> Verdict {
    let crashed = matches!(o.run, RunState::Exited(e) if !e.asked_for()) || o.restarts > 0;
    if crashed || o.health == HealthState::Unhealthy {
        return Verdict::Failed;
    }
    let until = v.since.plus(verify);
    if now < until {
        return Verdict::Pending { until };
    }
    if has_check && o.health != HealthState::Healthy {
        Verdict::Failed
    } else {
        Verdict::Passed
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use berth_spec::model::Window;

    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec::with_defaults("a", ImageSource::parse("x/a:1").unwrap())
    }

    fn wall(unix: u64, minute: u16) -> Option<WallClock> {
        Some(WallClock {
            unix,
            minute_of_day: minute,
        })
    }

    #[test]
    fn lock_holds_unless_forced() {
        let mut s = spec();
        s.extra.update.lock = Some(PathBuf::from("/data/hold"));
        let mut o = Observed::default();
        let mut ctx = Ctx::at(Millis(0));
        assert_eq!(hold(&s, &o, &ctx), None);
        o.locks.insert("/data/hold".into());
        assert_eq!(hold(&s, &o, &ctx), Some(Hold::Lock("/data/hold".into())));
        ctx.locks = Locks::Override;
        assert_eq!(hold(&s, &o, &ctx), None);
    }

    #[test]
    fn window_edges_and_midnight() {
        let mut s = spec();
        s.extra.update.window = Some(Window {
            start_minute: 120,
            end_minute: 240,
        });
        let o = Observed::default();
        let mut ctx = Ctx::at(Millis(0));
        assert_eq!(hold(&s, &o, &ctx), Some(Hold::ClockUnsynced));
        for (minute, open) in [(119, false), (120, true), (239, true), (240, false)] {
            ctx.wall = wall(2_000_000_000, minute);
            assert_eq!(hold(&s, &o, &ctx).is_none(), open, "minute {minute}");
        }
        s.extra.update.window = Some(Window {
            start_minute: 23 * 60,
            end_minute: 60,
        });
        for (minute, open) in [
            (22 * 60 + 59, false),
            (23 * 60, true),
            (0, true),
            (59, true),
            (60, false),
        ] {
            ctx.wall = wall(2_000_000_000, minute);
            assert_eq!(hold(&s, &o, &ctx).is_none(), open, "minute {minute}");
        }
    }

    #[test]
    fn min_age_by_created_time_then_first_seen() {
        let mut s = spec();
        s.extra.update.min_age = Some(Duration::from_secs(3600));
        let mut o = Observed::default();
        let mut ctx = Ctx::at(Millis(10_000_000));
        assert_eq!(
            too_new(&s, &test_digest("d"), Some(1000), &o, &ctx),
            Some(Hold::ClockUnsynced)
        );
        ctx.wall = wall(1000 + 3599, 0);
        assert!(too_new(&s, &test_digest("d"), Some(1000), &o, &ctx).is_some());
        ctx.wall = wall(1000 + 3600, 0);
        assert_eq!(too_new(&s, &test_digest("d"), Some(1000), &o, &ctx), None);
        // No created time: first seen on the boot clock, no wall clock needed.
        ctx.wall = None;
        assert!(
            too_new(&s, &test_digest("d"), None, &o, &ctx).is_some(),
            "never seen: too new"
        );
        o.first_seen
            .insert(test_digest("d"), Millis(10_000_000 - 3_599_999));
        assert!(too_new(&s, &test_digest("d"), None, &o, &ctx).is_some());
        o.first_seen
            .insert(test_digest("d"), Millis(10_000_000 - 3_600_000));
        assert_eq!(too_new(&s, &test_digest("d"), None, &o, &ctx), None);
        s.extra.update.min_age = None;
        assert_eq!(
            too_new(&s, &test_digest("d"), None, &Observed::default(), &ctx),
            None
        );
    }

    #[test]
    fn checks_are_jittered_and_spread() {
        let i = Duration::from_secs(3600);
        let a = ImageSource::parse("x/a:1").unwrap();
        let b = ImageSource::parse("x/b:1").unwrap();
        assert!(jitter(&a, 1, i) < Duration::from_secs(600));
        assert_ne!(
            jitter(&a, 1, i),
            jitter(&a, 2, i),
            "another host, another time"
        );
        assert_ne!(jitter(&a, 1, i), jitter(&b, 1, i));
        let mut o = Observed::default();
        let ctx = Ctx {
            jitter_seed: 1,
            ..Ctx::at(Millis(5000))
        };
        assert_eq!(
            check_due(&a, &o, &ctx),
            Millis(5000),
            "never checked: due now"
        );
        o.remote.insert(
            a.clone(),
            RemoteCheck {
                digest: test_digest("d"),
                created: None,
                checked_at: Millis(5000),
            },
        );
        let due = check_due(&a, &o, &ctx);
        assert!(
            due >= Millis(5000 + 3_600_000) && due < Millis(5000 + 4_200_000),
            "{due:?}"
        );
    }

    fn container(run: RunState, restarts: u32, health: HealthState) -> ObservedContainer {
        ObservedContainer {
            id: crate::names::IncarnationId::random(),
            spec_hash: "h".into(),
            image_digest: test_digest("new"),
            run,
            restarts,
            crash_streak: 0,
            started_at: Some(Millis(0)),
            health,
            resources: Default::default(),
            info: Default::default(),
            image_health: None,
        }
    }

    #[test]
    fn verification() {
        let v = Verifying {
            digest: test_digest("new"),
            since: Millis(0),
            boot_id: String::new(),
        };
        let d = Duration::from_secs(60);
        let up = container(RunState::Running, 0, HealthState::None);
        assert_eq!(
            verdict(&v, &up, false, d, Millis(59_999)),
            Verdict::Pending {
                until: Millis(60_000)
            }
        );
        assert_eq!(verdict(&v, &up, false, d, Millis(60_000)), Verdict::Passed);
        let crashed = RunState::Exited(Exit {
            code: 1,
            oom: false,
            at: Millis(5),
            ending: Ending::OnItsOwn,
        });
        assert_eq!(
            verdict(
                &v,
                &container(crashed, 0, HealthState::None),
                false,
                d,
                Millis(10)
            ),
            Verdict::Failed
        );
        assert_eq!(
            verdict(
                &v,
                &container(RunState::Running, 1, HealthState::None),
                false,
                d,
                Millis(10)
            ),
            Verdict::Failed
        );
        let sick = container(RunState::Running, 0, HealthState::Unhealthy);
        assert_eq!(verdict(&v, &sick, true, d, Millis(10)), Verdict::Failed);
        let starting = container(RunState::Running, 0, HealthState::Starting);
        assert_eq!(
            verdict(&v, &starting, true, d, Millis(10)),
            Verdict::Pending {
                until: Millis(60_000)
            }
        );
        assert_eq!(
            verdict(&v, &starting, true, d, Millis(60_000)),
            Verdict::Failed,
            "never became healthy"
        );
        let healthy = container(RunState::Running, 0, HealthState::Healthy);
        assert_eq!(
            verdict(&v, &healthy, true, d, Millis(60_000)),
            Verdict::Passed
        );
    }
}
