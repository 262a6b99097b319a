//! The lifecycle policies in the planner, with time passed in: tag checks, update holds (lock,
//! window, min_age, clock), verification, rollback and its circuit breaker, strategies, and
//! restarts of unhealthy containers.

use std::path::PathBuf;
use std::time::Duration;

use berth_spec::model::*;
use berth_spec::{ContainerSpec, ImageSource};

use crate::names::IncarnationId;
use crate::reconcile::plan::*;

fn img() -> ImageSource {
    ImageSource::parse("127.0.0.1:5000/app:stable").unwrap()
}

fn spec() -> ContainerSpec {
    let mut s = ContainerSpec::with_defaults("app", img());
    s.pull = PullPolicy::Always;
    s
}

fn desired(s: &ContainerSpec) -> Desired {
    let mut d = Desired {
        trustworthy: true,
        ..Desired::default()
    };
    d.specs.insert(
        s.name.clone(),
        DesiredEntry {
            spec: Some(DesiredSpec::new(s.clone())),
            error: None,
        },
    );
    d
}

fn running(s: &ContainerSpec, digest: &str) -> ObservedContainer {
    ObservedContainer {
        id: IncarnationId::parse("0123456789ab").unwrap(),
        spec_hash: berth_spec::spec_hash(s),
        image_digest: digest.into(),
        run: RunState::Running,
        restarts: 0,
        crash_streak: 0,
        started_at: Some(Millis(0)),
        start_failure: None,
        health: HealthState::None,
        resources: s.resources,
        info: ContainerInfo::default(),
        image_health: None,
    }
}

/// A world where `app` runs digest `cur`, the store's tag says `local`, the registry `remote`.
fn world(s: &ContainerSpec, cur: &str, local: &str, remote: Option<&str>, now: Millis) -> Observed {
    let mut o = Observed::default();
    o.containers.insert("app".into(), running(s, cur));
    o.images.insert(img(), local.into());
    if let Some(r) = remote {
        o.remote.insert(
            img(),
            RemoteCheck {
                digest: r.into(),
                created: None,
                checked_at: now,
            },
        );
    }
    let mut h = UpdateState {
        last_digest: Some(cur.into()),
        last_hash: Some(berth_spec::spec_hash(s)),
        ..UpdateState::default()
    };
    h.rejected.clear();
    o.updates.insert("app".into(), h);
    o
}

fn kinds(p: &Plan) -> Vec<String> {
    p.actions.iter().map(|a| a.kind().to_string()).collect()
}

fn ctx(now: u64) -> Ctx {
    Ctx {
        wall: Some(WallClock {
            unix: 2_000_000_000,
            minute_of_day: 12 * 60,
        }),
        ..Ctx::at(Millis(now))
    }
}

#[test]
fn tags_are_checked_when_due_and_not_before() {
    let s = spec();
    let mut o = world(&s, "sha256:a", "sha256:a", None, Millis(0));
    assert_eq!(kinds(&plan_with(&desired(&s), &o, &ctx(1000))), ["check"]);
    o.remote.insert(
        img(),
        RemoteCheck {
            digest: "sha256:a".into(),
            created: None,
            checked_at: Millis(1000),
        },
    );
    let p = plan_with(&desired(&s), &o, &ctx(2000));
    assert!(p.actions.is_empty());
    let due = p.wake_at.expect("a wake-up for the next check");
    assert!(due >= Millis(1000 + 3_600_000), "{due:?}");
    assert_eq!(kinds(&plan_with(&desired(&s), &o, &ctx(due.0))), ["check"]);
    // Pinned by digest: nothing to check.
    let mut pinned = s.clone();
    pinned.image =
        ImageSource::parse(&format!("127.0.0.1:5000/app@sha256:{}", "0".repeat(64))).unwrap();
    assert!(
        plan_with(&desired(&pinned), &Observed::default(), &ctx(0))
            .actions
            .iter()
            .all(|a| a.kind() != "check")
    );
}

#[test]
fn a_moved_tag_downloads_first_then_recreates_as_an_update() {
    let s = spec();
    let now = 10_000;
    // The registry moved the tag: download while the old one serves.
    let o = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(now));
    assert_eq!(kinds(&plan_with(&desired(&s), &o, &ctx(now))), ["pull"]);
    // Downloaded: replace it, marked as an update from a.
    let o = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(now));
    let p = plan_with(&desired(&s), &o, &ctx(now));
    assert_eq!(kinds(&p), ["remove", "create"]);
    match &p.actions[1] {
        Action::Create {
            image_digest,
            update,
            ..
        } => {
            assert_eq!(image_digest, "sha256:b");
            assert_eq!(
                update,
                &UpdateMark::Update {
                    from: "sha256:a".into()
                }
            );
        }
        a => panic!("{a:?}"),
    }
}

#[test]
fn kill_then_download_makes_room_first() {
    let mut s = spec();
    s.update.strategy = UpdateStrategy::KillThenDownload;
    let o = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(0))),
        ["pull", "remove"]
    );
}

#[test]
fn start_then_kill_overlaps_unless_something_exclusive() {
    let mut s = spec();
    s.update.strategy = UpdateStrategy::StartThenKill;
    let o = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(0));
    let p = plan_with(&desired(&s), &o, &ctx(0));
    assert_eq!(kinds(&p), ["create"]);
    assert!(matches!(
        &p.actions[0],
        Action::Create {
            replacing: Some(_),
            ..
        }
    ));
    s.ports = vec![PortMapping {
        host_ip: None,
        host: 8080,
        container: 80,
        protocol: Protocol::Tcp,
    }];
    let o = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(0));
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(0))),
        ["remove", "create"],
        "a host port can't be held twice"
    );
}

#[test]
fn a_lock_file_holds_updates_until_removed_or_forced() {
    let mut s = spec();
    s.update.lock = Some(PathBuf::from("/data/updating"));
    let mut o = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(0));
    o.locks.insert("/data/updating".into());
    let p = plan_with(&desired(&s), &o, &ctx(0));
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(
        p.waiting["app"],
        Waiting::Held(Hold::Lock("/data/updating".into()))
    );
    assert!(p.wake_at.is_some(), "the lock is looked at again soon");
    // Spec changes wait for the lock too.
    let mut edited = s.clone();
    edited.env.insert("X".into(), "1".into());
    assert!(plan_with(&desired(&edited), &o, &ctx(0)).actions.is_empty());
    let forced = Ctx {
        force: true,
        ..ctx(0)
    };
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &forced)),
        ["remove", "create"]
    );
    o.locks.clear();
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(0))),
        ["remove", "create"]
    );
}

#[test]
fn the_window_holds_recreations_but_never_crash_restarts() {
    let mut s = spec();
    s.update.window = Some(Window {
        start_minute: 2 * 60,
        end_minute: 4 * 60,
    });
    let o = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(0));
    let at = |minute: u16| Ctx {
        wall: Some(WallClock {
            unix: 2_000_000_000,
            minute_of_day: minute,
        }),
        ..Ctx::at(Millis(0))
    };
    let p = plan_with(&desired(&s), &o, &at(12 * 60));
    assert!(p.actions.is_empty());
    assert!(matches!(
        p.waiting["app"],
        Waiting::Held(Hold::Window { .. })
    ));
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &at(2 * 60))),
        ["remove", "create"]
    );
    // No synchronised clock: the window can't be told, so it waits.
    let p = plan_with(&desired(&s), &o, &Ctx::at(Millis(0)));
    assert_eq!(p.waiting["app"], Waiting::Held(Hold::ClockUnsynced));
    // A crash outside the window restarts anyway.
    let mut crashed = world(&s, "sha256:a", "sha256:a", Some("sha256:a"), Millis(0));
    crashed.containers.get_mut("app").unwrap().run = RunState::Exited(Exit {
        code: 1,
        oom: false,
        at: Millis(0),
        requested: false,
    });
    assert_eq!(
        kinds(&plan_with(&desired(&s), &crashed, &Ctx::at(Millis(5000)))),
        ["start"]
    );
}

#[test]
fn min_age_waits_for_a_digest_to_age() {
    let mut s = spec();
    s.update.min_age = Some(Duration::from_secs(3600));
    let mut o = world(&s, "sha256:a", "sha256:a", None, Millis(0));
    o.remote.insert(
        img(),
        RemoteCheck {
            digest: "sha256:b".into(),
            created: Some(2_000_000_000 - 60),
            checked_at: Millis(0),
        },
    );
    let p = plan_with(&desired(&s), &o, &ctx(0));
    assert!(p.actions.is_empty(), "not even downloaded yet: {p:?}");
    assert!(matches!(
        p.waiting["app"],
        Waiting::Held(Hold::TooNew { .. })
    ));
    o.remote.get_mut(&img()).unwrap().created = Some(2_000_000_000 - 3600);
    assert_eq!(kinds(&plan_with(&desired(&s), &o, &ctx(0))), ["pull"]);
}

fn verifying(o: &mut Observed, since: u64) {
    let h = o.updates.get_mut("app").unwrap();
    h.previous = Some("sha256:a".into());
    h.verifying = Some(Verifying {
        digest: "sha256:b".into(),
        since: Millis(since),
        boot_id: String::new(),
    });
    h.last_digest = Some("sha256:b".into());
}

#[test]
fn a_crash_during_verification_rolls_back_and_the_digest_is_not_retried() {
    let s = spec();
    let mut o = world(&s, "sha256:b", "sha256:b", Some("sha256:b"), Millis(0));
    verifying(&mut o, 0);
    o.containers.get_mut("app").unwrap().run = RunState::Exited(Exit {
        code: 1,
        oom: false,
        at: Millis(5000),
        requested: false,
    });
    let p = plan_with(&desired(&s), &o, &ctx(6000));
    assert_eq!(kinds(&p), ["remove", "create"]);
    match &p.actions[1] {
        Action::Create {
            image_digest,
            update,
            ..
        } => {
            assert_eq!(image_digest, "sha256:a");
            assert_eq!(
                update,
                &UpdateMark::Rollback {
                    rejected: "sha256:b".into()
                }
            );
        }
        a => panic!("{a:?}"),
    }
    // After the rollback: a runs, the tag still says b, b is rejected: no flapping.
    let mut after = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(6000));
    after
        .updates
        .get_mut("app")
        .unwrap()
        .rejected
        .insert("sha256:b".into());
    let p = plan_with(&desired(&s), &after, &ctx(7000));
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(
        p.waiting["app"],
        Waiting::Held(Hold::Rejected {
            digest: "sha256:b".into()
        })
    );
    // The tag moves once more: that digest is tried.
    after.remote.insert(
        img(),
        RemoteCheck {
            digest: "sha256:c".into(),
            created: None,
            checked_at: Millis(7000),
        },
    );
    assert_eq!(
        kinds(&plan_with(&desired(&s), &after, &ctx(7000))),
        ["pull"]
    );
}

#[test]
fn verification_passes_after_the_window_or_fails_without_health() {
    let mut s = spec();
    s.update.verify = Duration::from_secs(60);
    let mut o = world(&s, "sha256:b", "sha256:b", Some("sha256:b"), Millis(0));
    verifying(&mut o, 0);
    let p = plan_with(&desired(&s), &o, &ctx(59_999));
    assert!(p.actions.is_empty());
    assert_eq!(
        p.waiting["app"],
        Waiting::Verifying {
            until: Millis(60_000)
        }
    );
    assert_eq!(p.wake_at, Some(Millis(60_000)));
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(60_000))),
        ["verified"]
    );
    // With a health check it must be healthy by then.
    s.health.check = Some(HealthCheck {
        command: vec!["true".into()],
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        retries: 3,
        start_period: Duration::ZERO,
    });
    let mut o = world(&s, "sha256:b", "sha256:b", Some("sha256:b"), Millis(0));
    verifying(&mut o, 0);
    o.containers.get_mut("app").unwrap().health = HealthState::Starting;
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(60_000))),
        ["remove", "create"],
        "never healthy: rolled back"
    );
    o.containers.get_mut("app").unwrap().health = HealthState::Healthy;
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(60_000))),
        ["verified"]
    );
    // rollback = false: the update stands.
    s.update.rollback = false;
    let mut o = world(&s, "sha256:b", "sha256:b", Some("sha256:b"), Millis(0));
    verifying(&mut o, 0);
    o.containers.get_mut("app").unwrap().restarts = 1;
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(1000))),
        ["verified"]
    );
}

#[test]
fn unhealthy_containers_restart_when_asked() {
    let mut s = spec();
    s.pull = PullPolicy::Missing;
    s.health.on_unhealthy = OnUnhealthy::Restart;
    let mut o = world(&s, "sha256:a", "sha256:a", None, Millis(0));
    o.containers.get_mut("app").unwrap().health = HealthState::Unhealthy;
    let p = plan_with(&desired(&s), &o, &ctx(0));
    assert!(
        matches!(p.actions[..], [Action::Stop { failed: true, .. }]),
        "{p:?}"
    );
    s.health.on_unhealthy = OnUnhealthy::None;
    assert!(plan_with(&desired(&s), &o, &ctx(0)).actions.is_empty());
}
