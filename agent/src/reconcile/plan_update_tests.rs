//! The lifecycle policies in the planner, with time passed in: tag checks, update holds (lock,
//! window, min_age, clock), verification, rollback and its circuit breaker, strategies, and
//! restarts of unhealthy containers.

use std::path::PathBuf;
use std::time::Duration;

use berth_spec::model::*;
use berth_spec::{ContainerSpec, ImageSource};

use crate::names::IncarnationId;
use crate::reconcile::plan::*;
use crate::reconcile::update::Locks;

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
        image_digest: test_digest(digest),
        run: RunState::Running,
        restarts: 0,
        crash_streak: 0,
        started_at: Some(Millis(0)),
        health: HealthState::None,
        resources: s.extra.resources,
        info: ContainerInfo::default(),
        image_health: None,
    }
}

/// A world where `app` runs digest `cur`, the store's tag says `local`, the registry `remote`.
fn world(s: &ContainerSpec, cur: &str, local: &str, remote: Option<&str>, now: Millis) -> Observed {
    let mut o = Observed::default();
    o.containers.insert("app".into(), running(s, cur));
    o.images.insert(img(), test_digest(local));
    if let Some(r) = remote {
        o.remote.insert(
            img(),
            RemoteCheck {
                digest: test_digest(r),
                created: None,
                checked_at: now,
            },
        );
    }
    let mut h = UpdateState {
        last_digest: Some(test_digest(cur)),
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
            digest: test_digest("sha256:a"),
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
        Action::Create(Create {
            image_digest,
            update,
            ..
        }) => {
            assert_eq!(image_digest, &test_digest("sha256:b"));
            assert_eq!(
                update,
                &UpdateMark::Update {
                    from: test_digest("sha256:a")
                }
            );
        }
        a => panic!("{a:?}"),
    }
}

#[test]
fn kill_then_download_makes_room_first() {
    let mut s = spec();
    s.extra.update.strategy = UpdateStrategy::KillThenDownload;
    let o = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(0))),
        ["pull", "remove"]
    );
}

#[test]
fn start_then_kill_overlaps_unless_something_exclusive() {
    let mut s = spec();
    s.extra.update.strategy = UpdateStrategy::StartThenKill;
    let o = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(0));
    let p = plan_with(&desired(&s), &o, &ctx(0));
    assert_eq!(kinds(&p), ["create"]);
    assert!(matches!(
        &p.actions[0],
        Action::Create(Create {
            replacing: Some(_),
            ..
        })
    ));
    s.extra.ports = vec![PortMapping {
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
    s.extra.update.lock = Some(PathBuf::from("/data/updating"));
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
        locks: Locks::Override,
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
    s.extra.update.window = Some(Window {
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
        ending: Ending::OnItsOwn,
    });
    assert_eq!(
        kinds(&plan_with(&desired(&s), &crashed, &Ctx::at(Millis(5000)))),
        ["start"]
    );
}

#[test]
fn min_age_waits_for_a_digest_to_age() {
    let mut s = spec();
    s.extra.update.min_age = Some(Duration::from_secs(3600));
    let mut o = world(&s, "sha256:a", "sha256:a", None, Millis(0));
    o.remote.insert(
        img(),
        RemoteCheck {
            digest: test_digest("sha256:b"),
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
    h.previous = Some(test_digest("sha256:a"));
    h.verifying = Some(Verifying {
        digest: test_digest("sha256:b"),
        since: Millis(since),
        boot_id: String::new(),
    });
    h.last_digest = Some(test_digest("sha256:b"));
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
        ending: Ending::OnItsOwn,
    });
    let p = plan_with(&desired(&s), &o, &ctx(6000));
    assert_eq!(kinds(&p), ["remove", "create"]);
    match &p.actions[1] {
        Action::Create(Create {
            image_digest,
            update,
            ..
        }) => {
            assert_eq!(image_digest, &test_digest("sha256:a"));
            assert_eq!(
                update,
                &UpdateMark::Rollback {
                    rejected: test_digest("sha256:b")
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
        .insert(test_digest("sha256:b"));
    let p = plan_with(&desired(&s), &after, &ctx(7000));
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(
        matches!(&p.waiting["app"], Waiting::Held(Hold::Rejected { digest, .. }) if *digest == test_digest("sha256:b")),
        "{p:?}"
    );
    // The tag moves once more: that digest is tried.
    after.remote.insert(
        img(),
        RemoteCheck {
            digest: test_digest("sha256:c"),
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
    s.extra.update.verify = Duration::from_secs(60);
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
    s.extra.health.check = Some(HealthCheck {
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
    s.extra.update.rollback = false;
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
    s.extra.health.on_unhealthy = OnUnhealthy::Restart;
    let mut o = world(&s, "sha256:a", "sha256:a", None, Millis(0));
    o.containers.get_mut("app").unwrap().health = HealthState::Unhealthy;
    let p = plan_with(&desired(&s), &o, &ctx(0));
    assert!(
        matches!(
            p.actions[..],
            [Action::Stop {
                cause: StopCause::Unhealthy,
                ..
            }]
        ),
        "{p:?}"
    );
    s.extra.health.on_unhealthy = OnUnhealthy::None;
    assert!(plan_with(&desired(&s), &o, &ctx(0)).actions.is_empty());
}

// ---- the circuit breaker holds for every recreation ---------------------------------------
//
// After a rollback the tag still names the rejected digest C in the store, the good digest B
// is kept there as `repo@B`, and the container runs B. Whatever recreates the container next
// (an edit, a changed env file, a lost incarnation, an agent restart, `apply --force`) makes it
// from B, and its status says why; C is taken only once the tag moves on.

const GOOD: &str = "sha256:bbbb";
const BAD: &str = "sha256:cccc";

/// `app` pinned to the digest labelled `label`.
fn pinned_img(label: &str) -> ImageSource {
    ImageSource::Registry(berth_spec::ImageReference {
        registry: "127.0.0.1:5000".into(),
        repository: "app".into(),
        tag: None,
        digest: Some(test_digest(label).to_string()),
    })
}

#[test]
fn a_kept_image_is_found_under_the_reference_the_store_gives_it() {
    // The store keeps the image a tag moved away from as `<name>@<digest>`.
    let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    let kept = ImageSource::parse(&format!("127.0.0.1:5000/app@{digest}")).unwrap();
    assert_eq!(pinned(&img(), &digest), Some(kept));
}

/// The world right after a rollback from BAD to GOOD; `remote`: what the last check said.
fn rolled_back(s: &ContainerSpec, remote: Option<&str>) -> Observed {
    let mut o = world(s, GOOD, BAD, remote, Millis(0));
    o.images.insert(pinned_img(GOOD), test_digest(GOOD));
    let h = o.updates.get_mut("app").unwrap();
    h.previous = Some(test_digest(GOOD));
    h.last_digest = Some(test_digest(GOOD));
    h.rejected.insert(test_digest(BAD));
    o
}

/// The plan makes `app` from GOOD (never BAD), pulls nothing, and says why.
fn assert_made_from_good(p: &Plan) {
    let creates: Vec<(&Digest, &UpdateMark)> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(Create {
                image_digest,
                update,
                ..
            }) => Some((image_digest, update)),
            _ => None,
        })
        .collect();
    assert_eq!(creates.len(), 1, "one creation: {p:?}");
    assert_eq!(
        creates[0].0,
        &test_digest(GOOD),
        "made from the last good digest: {p:?}"
    );
    assert_eq!(creates[0].1, &UpdateMark::None, "not an update to verify");
    assert!(
        p.actions.iter().all(|a| a.kind() != "pull"),
        "the rejected tag is not pulled again: {p:?}"
    );
    assert!(
        matches!(&p.waiting["app"], Waiting::Held(Hold::Rejected { digest, .. }) if *digest == test_digest(BAD)),
        "status says why: {:?}",
        p.waiting.get("app")
    );
    let why = p.waiting["app"].to_string();
    assert!(
        why.contains(test_digest(BAD).as_str())
            && why.contains("rolled back")
            && why.contains(test_digest(GOOD).as_str()),
        "{why}"
    );
}

#[test]
fn a_spec_edit_after_a_rollback_recreates_from_the_last_good_digest() {
    let s = spec();
    let mut edited = s.clone();
    edited.env.insert("ADDED".into(), "1".into());
    for remote in [None, Some(BAD)] {
        let p = plan_with(&desired(&edited), &rolled_back(&s, remote), &ctx(10_000));
        let mut k = kinds(&p);
        k.retain(|k| k != "check");
        assert_eq!(k, ["remove", "create"], "{p:?}");
        assert_made_from_good(&p);
    }
    // With start-then-kill the new incarnation (from GOOD) starts beside the old one.
    let mut overlap = edited.clone();
    overlap.extra.update.strategy = UpdateStrategy::StartThenKill;
    let p = plan_with(
        &desired(&overlap),
        &rolled_back(&s, Some(BAD)),
        &ctx(10_000),
    );
    assert_eq!(kinds(&p), ["create"], "{p:?}");
    assert_made_from_good(&p);
    // kill-then-download: nothing to download, GOOD is in the store.
    let mut kill_first = edited.clone();
    kill_first.extra.update.strategy = UpdateStrategy::KillThenDownload;
    let p = plan_with(
        &desired(&kill_first),
        &rolled_back(&s, Some(BAD)),
        &ctx(10_000),
    );
    assert_eq!(kinds(&p), ["remove", "create"], "{p:?}");
    assert_made_from_good(&p);
}

#[test]
fn a_config_change_after_a_rollback_recreates_from_the_last_good_digest() {
    // What reaches the spec from other files (an env file, a drop-in) changes its shape as
    // an edit does.
    let s = spec();
    let mut from_files = s.clone();
    from_files.env.insert("FROM_ENV_FILE".into(), "2".into());
    from_files
        .extra
        .labels
        .insert("from.drop-in".into(), "x".into());
    from_files.command = Some(vec!["serve".into(), "--v2".into()]);
    let p = plan_with(
        &desired(&from_files),
        &rolled_back(&s, Some(BAD)),
        &ctx(10_000),
    );
    assert_made_from_good(&p);
}

#[test]
fn a_crash_replacement_after_a_rollback_is_made_from_the_last_good_digest() {
    let s = spec();
    // The incarnation is gone (its bundle went, or a creation failed): a new one replaces it.
    let mut o = rolled_back(&s, Some(BAD));
    o.containers.clear();
    let p = plan_with(&desired(&s), &o, &ctx(10_000));
    assert_eq!(kinds(&p), ["create"], "{p:?}");
    assert_made_from_good(&p);
    // After a failed creation, once its backoff is over: still GOOD.
    let mut f = Failures::default();
    f.create.insert(
        "app".into(),
        Failure {
            count: 1,
            at: Millis(9_000),
            error: "boom".into(),
            retry: Retry::Backoff,
        },
    );
    let p = plan_pass(&desired(&s), &o, &f, &ctx(9_500));
    assert!(p.actions.is_empty(), "{p:?}");
    let p = plan_pass(&desired(&s), &o, &f, &ctx(20_000));
    assert_made_from_good(&p);
    // A crashed container that is still there restarts as it is (same incarnation, GOOD).
    let mut crashed = rolled_back(&s, Some(BAD));
    crashed.containers.get_mut("app").unwrap().run = RunState::Exited(Exit {
        code: 1,
        oom: false,
        at: Millis(1000),
        ending: Ending::OnItsOwn,
    });
    assert_eq!(
        kinds(&plan_with(&desired(&s), &crashed, &ctx(10_000))),
        ["start"]
    );
}

#[test]
fn an_agent_restart_after_a_rollback_keeps_the_last_good_digest() {
    let s = spec();
    // A fresh agent knows no remote answer yet: it checks, and recreates nothing.
    let mut o = rolled_back(&s, None);
    o.remote.clear();
    let p = plan_with(&desired(&s), &o, &ctx(10_000));
    assert_eq!(kinds(&p), ["check"], "{p:?}");
    // After a reboot the record is there but has not run in this boot: started as it is.
    o.containers.get_mut("app").unwrap().run = RunState::Created;
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &ctx(10_000))),
        ["check", "start"]
    );
    // Killed in the middle of the rollback, after the removal and before the creation: the
    // history still says BAD is being verified, and BAD's container is gone. The rollback is
    // finished (BAD rejected), never BAD made again unverified.
    let mut mid = world(&s, GOOD, BAD, None, Millis(0));
    mid.containers.clear();
    mid.images.insert(pinned_img(GOOD), test_digest(GOOD));
    let h = mid.updates.get_mut("app").unwrap();
    h.previous = Some(test_digest(GOOD));
    h.last_digest = Some(test_digest(BAD));
    h.verifying = Some(Verifying {
        digest: test_digest(BAD),
        since: Millis(0),
        boot_id: String::new(),
    });
    let p = plan_with(&desired(&s), &mid, &ctx(10_000));
    let create = p
        .actions
        .iter()
        .find(|a| a.kind() == "create")
        .unwrap_or_else(|| panic!("{p:?}"));
    match create {
        Action::Create(Create {
            image_digest,
            update,
            ..
        }) => {
            assert_eq!(image_digest, &test_digest(GOOD));
            assert_eq!(
                update,
                &UpdateMark::Rollback {
                    rejected: test_digest(BAD)
                }
            );
        }
        a => panic!("{a:?}"),
    }
}

#[test]
fn apply_force_after_a_rollback_never_takes_the_rejected_digest() {
    let mut s = spec();
    s.extra.update.lock = Some(PathBuf::from("/data/updating"));
    let forced = Ctx {
        locks: Locks::Override,
        ..ctx(10_000)
    };
    // Forced, the lock present, nothing edited: it stays as it is.
    let mut o = rolled_back(&s, Some(BAD));
    o.locks.insert("/data/updating".into());
    let p = plan_with(&desired(&s), &o, &forced);
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(matches!(
        p.waiting["app"],
        Waiting::Held(Hold::Rejected { .. })
    ));
    // Forced with an edit: the lock is overridden for the edit, not the circuit breaker.
    let mut edited = s.clone();
    edited.env.insert("ADDED".into(), "1".into());
    let p = plan_with(&desired(&edited), &o, &forced);
    assert_made_from_good(&p);
    // Forced with the container gone: GOOD.
    o.containers.clear();
    assert_made_from_good(&plan_with(&desired(&s), &o, &forced));
}

#[test]
fn a_new_digest_after_a_rollback_is_still_taken_as_an_update() {
    let s = spec();
    let mut edited = s.clone();
    edited.env.insert("ADDED".into(), "1".into());
    // The registry moved the tag on: that is the update, edit or not.
    let o = rolled_back(&s, Some("sha256:dddd"));
    assert_eq!(
        kinds(&plan_with(&desired(&edited), &o, &ctx(10_000))),
        ["pull"]
    );
    let mut gone = o.clone();
    gone.containers.clear();
    assert_eq!(
        kinds(&plan_with(&desired(&s), &gone, &ctx(10_000))),
        ["pull"]
    );
}

// ---- a hold on an update is not bypassed by a recreation for another reason ---------------

/// `app` ran `sha256:a` (kept in the store), the registry offers `sha256:b`; the container is
/// gone and must be replaced.
fn lost_with_an_update_offered(s: &ContainerSpec, local_moved: bool) -> Observed {
    let local = if local_moved { "sha256:b" } else { "sha256:a" };
    let mut o = world(s, "sha256:a", local, Some("sha256:b"), Millis(0));
    o.images
        .insert(pinned_img("sha256:a"), test_digest("sha256:a"));
    o.containers.clear();
    o
}

fn assert_replaced_from_a(p: &Plan) {
    let creates: Vec<&Digest> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(Create { image_digest, .. }) => Some(image_digest),
            _ => None,
        })
        .collect();
    assert_eq!(
        creates,
        [&test_digest("sha256:a")],
        "replaced from what it ran: {p:?}"
    );
    assert!(
        p.actions.iter().all(|a| a.kind() != "pull"),
        "the held update is not pulled for it: {p:?}"
    );
    assert!(matches!(p.waiting["app"], Waiting::Held(_)), "{p:?}");
}

#[test]
fn a_replacement_never_takes_an_update_a_lock_holds() {
    let mut s = spec();
    s.extra.update.lock = Some(PathBuf::from("/data/updating"));
    for local_moved in [false, true] {
        let mut o = lost_with_an_update_offered(&s, local_moved);
        o.locks.insert("/data/updating".into());
        let p = plan_with(&desired(&s), &o, &ctx(0));
        assert_replaced_from_a(&p);
        assert_eq!(
            p.waiting["app"],
            Waiting::Held(Hold::Lock("/data/updating".into()))
        );
        // The lock gone: the replacement is the update.
        o.locks.clear();
        let p = plan_with(&desired(&s), &o, &ctx(0));
        assert!(
            p.actions.iter().any(|a| a.kind() == "pull")
                || p.actions.iter().any(
                    |a| matches!(a, Action::Create(Create { image_digest, .. }) if *image_digest == test_digest("sha256:b"))
                ),
            "{p:?}"
        );
    }
}

#[test]
fn a_replacement_never_takes_an_update_the_window_holds() {
    let mut s = spec();
    s.extra.update.window = Some(Window {
        start_minute: 2 * 60,
        end_minute: 4 * 60,
    });
    for local_moved in [false, true] {
        let o = lost_with_an_update_offered(&s, local_moved);
        // ctx() is at noon: outside the window.
        let p = plan_with(&desired(&s), &o, &ctx(0));
        assert_replaced_from_a(&p);
        assert!(matches!(
            p.waiting["app"],
            Waiting::Held(Hold::Window { .. })
        ));
        // No synchronised clock: the window can't be told; the replacement runs what it ran.
        assert_replaced_from_a(&plan_with(&desired(&s), &o, &Ctx::at(Millis(0))));
    }
}

#[test]
fn a_replacement_or_an_edit_never_takes_a_digest_younger_than_min_age() {
    let mut s = spec();
    s.extra.update.min_age = Some(Duration::from_secs(3600));
    let young = |o: &mut Observed| {
        o.remote.get_mut(&img()).unwrap().created = Some(2_000_000_000 - 60);
    };
    for local_moved in [false, true] {
        let mut o = lost_with_an_update_offered(&s, local_moved);
        young(&mut o);
        let p = plan_with(&desired(&s), &o, &ctx(0));
        assert_replaced_from_a(&p);
        assert!(matches!(
            p.waiting["app"],
            Waiting::Held(Hold::TooNew { .. })
        ));
    }
    // An edit of a running container goes ahead on the image it runs; the young digest waits.
    let mut o = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    young(&mut o);
    let mut edited = s.clone();
    edited.env.insert("ADDED".into(), "1".into());
    let p = plan_with(&desired(&edited), &o, &ctx(0));
    assert_eq!(kinds(&p), ["remove", "create"], "{p:?}");
    assert_replaced_from_a(&p);
    // Old enough: the edit and the update go together.
    o.remote.get_mut(&img()).unwrap().created = Some(2_000_000_000 - 7200);
    assert_eq!(kinds(&plan_with(&desired(&edited), &o, &ctx(0))), ["pull"]);
}

#[test]
fn an_edit_naming_another_image_is_not_held_as_an_update() {
    let mut s = spec();
    s.extra.update.min_age = Some(Duration::from_secs(3600));
    let o = world(&s, "sha256:a", "sha256:a", None, Millis(0));
    let mut other = s.clone();
    other.pull = PullPolicy::Missing;
    other.image = ImageSource::parse("127.0.0.1:5000/other:1").unwrap();
    let mut o = o;
    o.images
        .insert(other.image.clone(), test_digest("sha256:e"));
    let p = plan_with(&desired(&other), &o, &ctx(0));
    assert_eq!(kinds(&p), ["remove", "create"], "{p:?}");
}

mod props {
    use proptest::prelude::*;

    use super::*;

    /// Every way a container may be found when a pass runs.
    fn arb_run() -> impl Strategy<Value = Option<RunState>> {
        prop_oneof![
            Just(None),
            Just(Some(RunState::Running)),
            Just(Some(RunState::Created)),
            Just(Some(RunState::Paused)),
            (
                prop_oneof![Just(Ending::OnItsOwn), Just(Ending::StoppedByBerth)],
                0..3i32
            )
                .prop_map(|(ending, code)| Some(RunState::Exited(Exit {
                    code,
                    oom: false,
                    at: Millis(1000),
                    ending,
                }))),
        ]
    }

    fn arb_strategy() -> impl Strategy<Value = UpdateStrategy> {
        prop_oneof![
            Just(UpdateStrategy::DownloadThenKill),
            Just(UpdateStrategy::KillThenDownload),
            Just(UpdateStrategy::StartThenKill),
        ]
    }

    proptest! {
        /// While the tag names a rejected digest, no pass of any kind makes a container from
        /// it or pulls the tag for it: edits, lost incarnations, restarts, locks, `--force`.
        #[test]
        fn the_circuit_breaker_holds_for_every_recreation(
            edited in any::<bool>(),
            run in arb_run(),
            remote_known in any::<bool>(),
            force in any::<bool>(),
            locked in any::<bool>(),
            strategy in arb_strategy(),
            stopped in any::<bool>(),
        ) {
            let mut s = spec();
            s.extra.update.lock = Some(PathBuf::from("/data/updating"));
            s.extra.update.strategy = strategy;
            let mut o = rolled_back(&s, remote_known.then_some(BAD));
            if locked {
                o.locks.insert("/data/updating".into());
            }
            match run {
                None => { o.containers.clear(); }
                Some(r) => o.containers.get_mut("app").unwrap().run = r,
            }
            let mut want = s.clone();
            if edited {
                want.env.insert("ADDED".into(), "1".into());
            }
            if stopped {
                want.state = DesiredState::Stopped;
            }
            let locks = if force { Locks::Override } else { Locks::Honour };
            let c = Ctx { locks, ..ctx(100_000) };
            let p = plan_with(&desired(&want), &o, &c);
            for a in &p.actions {
                prop_assert!(
                    !matches!(a, Action::Create(Create { image_digest, .. }) if *image_digest == test_digest(BAD)),
                    "{p:?}"
                );
                prop_assert!(a.kind() != "pull", "{p:?}");
            }
        }

        /// While a lock or the window holds an update, no replacement or edit runs the new
        /// digest.
        #[test]
        fn a_held_update_is_never_taken_by_another_recreation(
            edited in any::<bool>(),
            run in arb_run(),
            local_moved in any::<bool>(),
            by_lock in any::<bool>(),
            strategy in arb_strategy(),
        ) {
            let mut s = spec();
            s.extra.update.strategy = strategy;
            if by_lock {
                s.extra.update.lock = Some(PathBuf::from("/data/updating"));
            } else {
                s.extra.update.window = Some(Window { start_minute: 120, end_minute: 240 });
            }
            let mut o = lost_with_an_update_offered(&s, local_moved);
            o.containers.insert("app".into(), running(&s, "sha256:a"));
            o.locks.insert("/data/updating".into());
            match run {
                None => { o.containers.clear(); }
                Some(r) => o.containers.get_mut("app").unwrap().run = r,
            }
            let mut want = s.clone();
            if edited {
                want.env.insert("ADDED".into(), "1".into());
            }
            let p = plan_with(&desired(&want), &o, &ctx(100_000));
            for a in &p.actions {
                prop_assert!(
                    !matches!(a, Action::Create(Create { image_digest, .. }) if *image_digest == test_digest("sha256:b")),
                    "{p:?}"
                );
                prop_assert!(a.kind() != "pull", "{p:?}");
            }
        }
    }
}

#[test]
fn an_edit_never_ends_a_verification_unjudged_nor_takes_a_new_digest_unverified() {
    let s = spec();
    let mut edited = s.clone();
    edited.env.insert("ADDED".into(), "1".into());
    // b is being verified when the spec is edited: the new incarnation (b, edited) is
    // verified from the start, with a still the one to roll back to.
    let mut o = world(&s, "sha256:b", "sha256:b", Some("sha256:b"), Millis(0));
    verifying(&mut o, 0);
    let p = plan_with(&desired(&edited), &o, &ctx(1000));
    assert_eq!(kinds(&p), ["remove", "create"], "{p:?}");
    assert!(
        matches!(&p.actions[1], Action::Create(Create { image_digest, update: UpdateMark::Update { from }, .. })
            if *image_digest == test_digest("sha256:b") && *from == test_digest("sha256:a")),
        "{p:?}"
    );
    // An edit that comes with a new digest of the same image (downloaded): an update too.
    let mut o = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(0));
    o.images
        .insert(pinned_img("sha256:a"), test_digest("sha256:a"));
    let p = plan_with(&desired(&edited), &o, &ctx(1000));
    assert!(
        matches!(&p.actions[1], Action::Create(Create { image_digest, update: UpdateMark::Update { from }, .. })
            if *image_digest == test_digest("sha256:b") && *from == test_digest("sha256:a")),
        "{p:?}"
    );
}

/// A context with `[images] download_window = "01:00-05:00"`, at this local time.
fn metered(now: u64, minute: Option<u16>) -> Ctx {
    Ctx {
        wall: minute.map(|m| WallClock {
            unix: 2_000_000_000,
            minute_of_day: m,
        }),
        download_window: Some(Window {
            start_minute: 60,
            end_minute: 300,
        }),
        ..Ctx::at(Millis(now))
    }
}

#[test]
fn the_download_window_defers_update_downloads_then_lets_them_through() {
    let s = spec();
    let o = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    // Noon: the tag moved, but the download waits; what runs keeps running.
    let p = plan_with(&desired(&s), &o, &metered(1000, Some(12 * 60)));
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(
        p.waiting["app"],
        Waiting::Held(Hold::DownloadWindow {
            start_minute: 60,
            end_minute: 300
        })
    );
    assert!(
        p.wake_at.is_some_and(|w| w <= Millis(1000 + 60_000)),
        "looked at again soon: {p:?}"
    );
    assert_eq!(
        p.waiting["app"].to_string(),
        "update held: the download waits for the download window 01:00-05:00"
    );
    // 01:00, the window opens: the download goes, then the update as usual.
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &metered(1000, Some(60)))),
        ["pull"]
    );
    let done = world(&s, "sha256:a", "sha256:b", Some("sha256:b"), Millis(0));
    assert_eq!(
        kinds(&plan_with(
            &desired(&s),
            &done,
            &metered(1000, Some(4 * 60 + 59))
        )),
        ["remove", "create"]
    );
    // Already downloaded (in the store): nothing to download, so nothing waits.
    assert_eq!(
        kinds(&plan_with(
            &desired(&s),
            &done,
            &metered(1000, Some(12 * 60))
        )),
        ["remove", "create"]
    );
    // No synchronised clock: the window can't be told, the download waits.
    let p = plan_with(&desired(&s), &o, &metered(1000, None));
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(p.waiting["app"], Waiting::Held(Hold::ClockUnsynced));
}

#[test]
fn the_download_window_holds_kill_then_download_and_spec_edits_that_need_a_download() {
    let mut s = spec();
    s.extra.update.strategy = UpdateStrategy::KillThenDownload;
    let o = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    let p = plan_with(&desired(&s), &o, &metered(0, Some(12 * 60)));
    assert!(p.actions.is_empty(), "never removed to wait: {p:?}");
    assert_eq!(
        kinds(&plan_with(&desired(&s), &o, &metered(0, Some(2 * 60)))),
        ["pull", "remove"]
    );
    // An edit naming an image the store lacks is an update too: its download waits.
    let s = spec();
    let o = world(&s, "sha256:a", "sha256:a", None, Millis(0));
    let mut edited = s.clone();
    edited.image = ImageSource::parse("127.0.0.1:5000/app:v2").unwrap();
    edited.pull = PullPolicy::Missing;
    let p = plan_with(&desired(&edited), &o, &metered(0, Some(12 * 60)));
    assert!(
        !kinds(&p).contains(&"pull".to_string()) && !kinds(&p).contains(&"remove".to_string()),
        "{p:?}"
    );
    assert!(matches!(
        p.waiting["app"],
        Waiting::Held(Hold::DownloadWindow { .. })
    ));
    assert!(
        kinds(&plan_with(&desired(&edited), &o, &metered(0, Some(60))))
            .contains(&"pull".to_string())
    );
}

#[test]
fn a_first_start_and_crash_restarts_never_wait_for_the_download_window() {
    let s = spec();
    // Nothing runs and nothing is in the store: pulled at once.
    let p = plan_with(
        &desired(&s),
        &Observed::default(),
        &metered(0, Some(12 * 60)),
    );
    assert_eq!(kinds(&p), ["check", "pull"], "{p:?}");
    let p = plan_with(&desired(&s), &Observed::default(), &metered(0, None));
    assert!(kinds(&p).contains(&"pull".to_string()), "{p:?}");
    // A crash outside the window restarts at once.
    let mut crashed = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    crashed.containers.get_mut("app").unwrap().run = RunState::Exited(Exit {
        code: 1,
        oom: false,
        at: Millis(0),
        ending: Ending::OnItsOwn,
    });
    assert_eq!(
        kinds(&plan_with(
            &desired(&s),
            &crashed,
            &metered(5000, Some(12 * 60))
        )),
        ["start"]
    );
    // A lost incarnation is made again from what the store has; the new digest waits.
    let mut lost = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    lost.containers.clear();
    let p = plan_with(&desired(&s), &lost, &metered(0, Some(12 * 60)));
    assert_eq!(kinds(&p), ["create"], "{p:?}");
    assert!(matches!(
        &p.actions[0],
        Action::Create(Create { image_digest, .. }) if *image_digest == test_digest("sha256:a")
    ));
}

#[test]
fn a_pull_without_room_is_deferred_and_tried_again_later() {
    let s = spec();
    let o = world(&s, "sha256:a", "sha256:a", Some("sha256:b"), Millis(0));
    let mut f = Failures::default();
    f.pull.insert(
        img(),
        Failure {
            count: 1,
            at: Millis(10_000),
            error: "not enough disk space".into(),
            retry: Retry::WhenRoom,
        },
    );
    let p = plan_pass(&desired(&s), &o, &f, &ctx(10_500));
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(matches!(
        &p.waiting["app"],
        Waiting::PullDeferred { until, .. } if *until > Millis(10_500)
    ));
    assert!(
        p.waiting["app"]
            .to_string()
            .starts_with("pull deferred until the disk has room")
    );
    let again = p.wake_at.expect("a wake-up for the retry");
    assert_eq!(
        kinds(&plan_pass(&desired(&s), &o, &f, &ctx(again.0))),
        ["pull"]
    );
    // The running container is not disturbed meanwhile.
    let report = crate::reconcile::report::report(
        &desired(&s),
        &o,
        &f,
        &plan_pass(&desired(&s), &o, &f, &ctx(10_500)),
        &Default::default(),
    );
    assert_eq!(report[0].status, crate::status::Status::Running);
}
