//! Table tests and a convergence property for the planner.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_spec::model::*;
use berth_spec::{ContainerSpec, ImageSource};
use proptest::prelude::*;

use crate::names::IncarnationId;
use crate::reconcile::plan::*;

fn img(n: &str) -> ImageSource {
    ImageSource::parse(&format!("127.0.0.1:5000/{n}:1")).unwrap()
}

fn spec(name: &str, image: &str) -> ContainerSpec {
    ContainerSpec::with_defaults(name, img(image))
}

fn desired(specs: Vec<ContainerSpec>) -> Desired {
    Desired {
        specs: specs
            .into_iter()
            .map(|s| {
                (
                    s.name.clone(),
                    DesiredEntry {
                        spec: Some(DesiredSpec::new(s)),
                        error: None,
                    },
                )
            })
            .collect(),
        trustworthy: true,
    }
}

fn running(s: &ContainerSpec, digest: &str) -> ObservedContainer {
    ObservedContainer {
        id: IncarnationId::random(),
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

fn with_image(mut o: Observed, s: &ContainerSpec, digest: &str) -> Observed {
    o.images.insert(s.image.clone(), test_digest(digest));
    o
}

fn kinds(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| {
            let k = match a {
                Action::UpdateResources { .. } => "resources",
                other => other.kind(),
            };
            match a.container() {
                Some(n) => format!("{k} {n}"),
                None => k.to_string(),
            }
        })
        .collect()
}

#[test]
fn new_spec_pulls_then_creates() {
    let s = spec("web", "web");
    let d = desired(vec![s.clone()]);
    let p = plan(&d, &Observed::default(), Millis(0));
    assert_eq!(kinds(&p), ["pull"]);
    assert_eq!(p.waiting["web"], Waiting::Pulling);
    let o = with_image(Observed::default(), &s, "sha256:a");
    let p = plan(&d, &o, Millis(0));
    assert_eq!(kinds(&p), ["create web"]);
}

#[test]
fn one_pull_for_many_containers() {
    let d = desired(vec![spec("a", "same"), spec("b", "same")]);
    assert_eq!(kinds(&plan(&d, &Observed::default(), Millis(0))), ["pull"]);
}

#[test]
fn converged_plans_nothing() {
    let s = spec("web", "web");
    let mut o = with_image(Observed::default(), &s, "sha256:a");
    o.containers.insert("web".into(), running(&s, "sha256:a"));
    assert!(plan(&desired(vec![s]), &o, Millis(0)).actions.is_empty());
}

#[test]
fn deleted_spec_prunes_only_when_the_source_is_trustworthy() {
    let s = spec("web", "web");
    let mut o = Observed::default();
    o.containers.insert("web".into(), running(&s, "sha256:a"));
    let mut d = desired(vec![]);
    assert_eq!(kinds(&plan(&d, &o, Millis(0))), ["remove web"]);
    d.trustworthy = false;
    assert!(plan(&d, &o, Millis(0)).actions.is_empty());
}

#[test]
fn invalid_spec_without_last_valid_never_prunes() {
    let s = spec("web", "web");
    let mut o = Observed::default();
    o.containers.insert("web".into(), running(&s, "sha256:a"));
    let mut d = desired(vec![]);
    d.specs.insert(
        "web".into(),
        DesiredEntry {
            spec: None,
            error: Some("bad".into()),
        },
    );
    assert!(plan(&d, &o, Millis(0)).actions.is_empty());
}

#[test]
fn changed_spec_pulls_first_then_recreates() {
    let old = spec("web", "web");
    let mut new = old.clone();
    new.image = img("web2");
    let mut o = with_image(Observed::default(), &old, "sha256:a");
    o.containers.insert("web".into(), running(&old, "sha256:a"));
    let d = desired(vec![new.clone()]);
    // download-then-kill: the old one keeps running while the new image downloads.
    assert_eq!(kinds(&plan(&d, &o, Millis(0))), ["pull"]);
    let o = with_image(o, &new, "sha256:b");
    assert_eq!(
        kinds(&plan(&d, &o, Millis(0))),
        ["remove web", "create web"]
    );
}

#[test]
fn kill_then_download_removes_first() {
    let old = spec("web", "web");
    let mut new = old.clone();
    new.image = img("web2");
    new.extra.update.strategy = UpdateStrategy::KillThenDownload;
    let mut o = with_image(Observed::default(), &old, "sha256:a");
    o.containers.insert("web".into(), running(&old, "sha256:a"));
    assert_eq!(
        kinds(&plan(&desired(vec![new]), &o, Millis(0))),
        ["pull", "remove web"]
    );
}

#[test]
fn moved_image_digest_recreates() {
    let s = spec("web", "web");
    let mut o = with_image(Observed::default(), &s, "sha256:new");
    o.containers.insert("web".into(), running(&s, "sha256:old"));
    assert_eq!(
        kinds(&plan(&desired(vec![s]), &o, Millis(0))),
        ["remove web", "create web"]
    );
}

#[test]
fn non_shaping_changes_never_recreate() {
    let s = spec("web", "web");
    let mut o = with_image(Observed::default(), &s, "sha256:a");
    o.containers.insert("web".into(), running(&s, "sha256:a"));
    let mut changed = s.clone();
    changed.restart = RestartPolicy::Never;
    changed.pull = PullPolicy::Always;
    changed.logging.max_files = 9;
    changed.extra.update.verify = Duration::from_secs(1);
    // pull = "always" asks the registry about the tag; nothing touches the container.
    assert!(
        plan(&desired(vec![changed.clone()]), &o, Millis(0))
            .actions
            .iter()
            .all(|a| a.container().is_none())
    );
    changed.extra.resources.memory = Some(1 << 30);
    assert_eq!(
        kinds(&plan(&desired(vec![changed]), &o, Millis(0))),
        ["check", "resources web"]
    );
}

#[test]
fn state_changes_pause_resume_stop_start() {
    let s = spec("web", "web");
    let base = with_image(Observed::default(), &s, "sha256:a");
    let mut o = base.clone();
    o.containers.insert("web".into(), running(&s, "sha256:a"));
    let mut paused = s.clone();
    paused.state = DesiredState::Paused;
    assert_eq!(
        kinds(&plan(&desired(vec![paused.clone()]), &o, Millis(0))),
        ["pause web"]
    );
    let mut stopped = s.clone();
    stopped.state = DesiredState::Stopped;
    assert_eq!(
        kinds(&plan(&desired(vec![stopped.clone()]), &o, Millis(0))),
        ["stop web"]
    );

    o.containers.get_mut("web").unwrap().run = RunState::Paused;
    assert_eq!(
        kinds(&plan(&desired(vec![s.clone()]), &o, Millis(0))),
        ["resume web"]
    );

    let exit = Exit {
        code: 143,
        oom: false,
        at: Millis(5),
        ending: Ending::StoppedByBerth,
    };
    o.containers.get_mut("web").unwrap().run = RunState::Exited(exit);
    assert!(
        plan(&desired(vec![stopped]), &o, Millis(5))
            .actions
            .is_empty()
    );
    // Asked to run again: started at once, whatever the restart policy.
    let mut never = s.clone();
    never.restart = RestartPolicy::Never;
    assert_eq!(
        kinds(&plan(&desired(vec![never]), &o, Millis(5))),
        ["start web"]
    );
}

#[test]
fn stopped_spec_creates_nothing_but_fetches_the_image() {
    let mut s = spec("web", "web");
    s.state = DesiredState::Stopped;
    assert_eq!(
        kinds(&plan(
            &desired(vec![s.clone()]),
            &Observed::default(),
            Millis(0)
        )),
        ["pull"]
    );
    let o = with_image(Observed::default(), &s, "sha256:a");
    assert!(plan(&desired(vec![s]), &o, Millis(0)).actions.is_empty());
}

fn exited(s: &ContainerSpec, code: i32, started: u64, at: u64, streak: u32) -> ObservedContainer {
    let mut c = running(s, "sha256:a");
    c.run = RunState::Exited(Exit {
        code,
        oom: false,
        at: Millis(at),
        ending: Ending::OnItsOwn,
    });
    c.started_at = Some(Millis(started));
    c.crash_streak = streak;
    c
}

#[test]
fn restart_policies() {
    for (policy, code, restarts) in [
        (RestartPolicy::Always, 0, true),
        (RestartPolicy::Always, 1, true),
        (RestartPolicy::OnFailure, 0, false),
        (RestartPolicy::OnFailure, 137, true),
        (RestartPolicy::Never, 1, false),
    ] {
        let mut s = spec("web", "web");
        s.restart = policy;
        let mut o = with_image(Observed::default(), &s, "sha256:a");
        o.containers
            .insert("web".into(), exited(&s, code, 0, 1000, 0));
        let p = plan(&desired(vec![s]), &o, Millis(1_000_000));
        assert_eq!(!p.actions.is_empty(), restarts, "{policy:?} code {code}");
    }
}

#[test]
fn oom_counts_as_failure() {
    let mut s = spec("web", "web");
    s.restart = RestartPolicy::OnFailure;
    let mut o = with_image(Observed::default(), &s, "sha256:a");
    let mut c = exited(&s, 0, 0, 1000, 0);
    c.run = RunState::Exited(Exit {
        code: 0,
        oom: true,
        at: Millis(1000),
        ending: Ending::OnItsOwn,
    });
    o.containers.insert("web".into(), c);
    assert_eq!(
        kinds(&plan(&desired(vec![s]), &o, Millis(10_000))),
        ["start web"]
    );
}

#[test]
fn crash_backoff_doubles_and_resets_after_a_long_run() {
    let s = spec("web", "web");
    let mut o = with_image(Observed::default(), &s, "sha256:a");
    // Third quick crash in a row: waits 4 s after the exit.
    o.containers
        .insert("web".into(), exited(&s, 1, 1000, 2000, 2));
    let d = desired(vec![s.clone()]);
    let p = plan(&d, &o, Millis(5999));
    assert!(p.actions.is_empty());
    assert_eq!(
        p.waiting["web"],
        Waiting::Backoff {
            until: Millis(6000)
        }
    );
    assert_eq!(p.wake_at, Some(Millis(6000)));
    let p = plan(&d, &o, Millis(6000));
    assert_eq!(p.actions.len(), 1);
    assert!(matches!(
        p.actions[0],
        Action::Start {
            crash_streak: 3,
            ..
        }
    ));
    // After ten minutes of running, the streak is forgiven: 1 s.
    o.containers
        .insert("web".into(), exited(&s, 1, 0, 600_000, 8));
    let p = plan(&d, &o, Millis(600_999));
    assert_eq!(
        p.waiting["web"],
        Waiting::Backoff {
            until: Millis(601_000)
        }
    );
    let p = plan(&d, &o, Millis(601_000));
    assert!(matches!(
        p.actions[0],
        Action::Start {
            crash_streak: 1,
            ..
        }
    ));
}

#[test]
fn failed_start_backs_off() {
    let s = spec("web", "web");
    let mut o = with_image(Observed::default(), &s, "sha256:a");
    let mut c = running(&s, "sha256:a");
    c.run = RunState::Created;
    let mut f = Failures::default();
    f.start.insert(
        "web".into(),
        Failure {
            count: 3,
            at: Millis(100),
            error: "port in use".into(),
            retry: Retry::Backoff,
        },
    );
    o.containers.insert("web".into(), c);
    let d = desired(vec![s]);
    let at = |t| plan_pass(&d, &o, &f, &Ctx::at(Millis(t)));
    assert_eq!(
        at(4099).waiting["web"],
        Waiting::Backoff {
            until: Millis(4100)
        }
    );
    assert_eq!(kinds(&at(4100)), ["start web"]);
}

#[test]
fn failed_create_backs_off() {
    let s = spec("web", "web");
    let o = with_image(Observed::default(), &s, "sha256:a");
    let mut f = Failures::default();
    f.create.insert(
        "web".into(),
        Failure {
            count: 1,
            at: Millis(0),
            error: "x".into(),
            retry: Retry::Backoff,
        },
    );
    let d = desired(vec![s]);
    let at = |t| plan_pass(&d, &o, &f, &Ctx::at(Millis(t)));
    assert_eq!(
        at(999).waiting["web"],
        Waiting::Backoff {
            until: Millis(1000)
        }
    );
    assert_eq!(kinds(&at(1000)), ["create web"]);
}

#[test]
fn pull_failures_back_off_and_permanent_ones_wait() {
    let s = spec("web", "web");
    let d = desired(vec![s.clone()]);
    let o = Observed::default();
    let mut f = Failures::default();
    f.pull.insert(
        s.image.clone(),
        Failure {
            count: 2,
            at: Millis(0),
            error: "503".into(),
            retry: Retry::Backoff,
        },
    );
    let p = plan_pass(&d, &o, &f, &Ctx::at(Millis(1999)));
    assert!(p.actions.is_empty());
    assert_eq!(p.wake_at, Some(Millis(2000)));
    assert_eq!(
        kinds(&plan_pass(&d, &o, &f, &Ctx::at(Millis(2000)))),
        ["pull"]
    );
    f.pull.insert(
        s.image.clone(),
        Failure {
            count: 1,
            at: Millis(0),
            error: "no such tag".into(),
            retry: Retry::Never,
        },
    );
    let p = plan_pass(&d, &o, &f, &Ctx::at(Millis(1_000_000)));
    assert!(p.actions.is_empty());
    assert!(matches!(
        p.waiting["web"],
        Waiting::PullFailed { until: None, .. }
    ));
}

#[test]
fn pull_never_waits_for_the_image() {
    let mut s = spec("web", "web");
    s.pull = PullPolicy::Never;
    let p = plan(&desired(vec![s]), &Observed::default(), Millis(0));
    assert!(p.actions.is_empty());
    assert_eq!(p.waiting["web"], Waiting::ImageMissing);
}

#[test]
fn dependencies_gate_creation() {
    let db = spec("db", "db");
    let mut web = spec("web", "web");
    for (condition, dep_state, health, ready) in [
        (
            DependencyCondition::Started,
            Some(RunState::Running),
            HealthState::None,
            true,
        ),
        (DependencyCondition::Started, None, HealthState::None, false),
        (
            DependencyCondition::Started,
            Some(RunState::Created),
            HealthState::None,
            false,
        ),
        (
            DependencyCondition::Healthy,
            Some(RunState::Running),
            HealthState::Starting,
            false,
        ),
        (
            DependencyCondition::Healthy,
            Some(RunState::Running),
            HealthState::Healthy,
            true,
        ),
        (
            DependencyCondition::Completed,
            Some(RunState::Exited(Exit {
                code: 0,
                oom: false,
                at: Millis(1),
                ending: Ending::OnItsOwn,
            })),
            HealthState::None,
            true,
        ),
        (
            DependencyCondition::Completed,
            Some(RunState::Exited(Exit {
                code: 2,
                oom: false,
                at: Millis(1),
                ending: Ending::OnItsOwn,
            })),
            HealthState::None,
            false,
        ),
        (
            DependencyCondition::Completed,
            Some(RunState::Running),
            HealthState::None,
            false,
        ),
    ] {
        web.extra.depends_on = vec![Dependency {
            name: "db".into(),
            condition,
        }];
        let mut db = db.clone();
        db.restart = RestartPolicy::Never;
        let mut o = with_image(Observed::default(), &web, "sha256:w");
        o = with_image(o, &db, "sha256:d");
        if let Some(run) = dep_state {
            let mut c = running(&db, "sha256:d");
            c.run = run;
            c.health = health;
            o.containers.insert("db".into(), c);
        }
        let p = plan(&desired(vec![db.clone(), web.clone()]), &o, Millis(10));
        let creates_web = kinds(&p).contains(&"create web".to_string());
        assert_eq!(creates_web, ready, "{condition:?} {dep_state:?} {health:?}");
        if !ready {
            assert_eq!(
                p.waiting["web"],
                Waiting::Dependency {
                    name: "db".into(),
                    condition
                }
            );
        }
    }
}

// ---- convergence property ----------------------------------------------------------------

/// Applies actions to a model of the world, as a successful executor would.
fn apply(o: &mut Observed, actions: &[Action], now: Millis) {
    for a in actions {
        match a {
            Action::Pull { image } => {
                o.images.insert(
                    image.clone(),
                    test_digest(&format!("sha256:{}", image.to_string().len())),
                );
            }
            Action::Create(Create {
                name,
                spec,
                hash,
                image_digest,
                ..
            }) => {
                let mut c = running(spec, "");
                c.image_digest = image_digest.clone();
                c.spec_hash = hash.clone();
                c.started_at = Some(now);
                c.health = if spec.extra.health.check.is_some() {
                    HealthState::Healthy
                } else {
                    HealthState::None
                };
                o.containers.insert(name.clone(), c);
            }
            Action::Start { name, .. } | Action::Resume { name, .. } => {
                let c = o.containers.get_mut(name).unwrap();
                c.run = RunState::Running;
                c.started_at = Some(now);
            }
            Action::Pause { name, .. } => {
                o.containers.get_mut(name).unwrap().run = RunState::Paused
            }
            Action::Stop { name, .. } => {
                o.containers.get_mut(name).unwrap().run = RunState::Exited(Exit {
                    code: 143,
                    oom: false,
                    at: now,
                    ending: Ending::StoppedByBerth,
                })
            }
            Action::Remove { name, .. } => {
                o.containers.remove(name);
            }
            Action::UpdateResources {
                name, resources, ..
            } => o.containers.get_mut(name).unwrap().resources = *resources,
            Action::Check { .. } | Action::MarkVerified { .. } => {}
        }
    }
}

fn arb_spec(i: usize) -> impl Strategy<Value = ContainerSpec> {
    (
        0..3usize,
        prop_oneof![
            Just(DesiredState::Running),
            Just(DesiredState::Paused),
            Just(DesiredState::Stopped)
        ],
        proptest::option::of(1u64..4),
        proptest::collection::vec((0..i.max(1), any::<bool>()), 0..3),
        any::<bool>(),
    )
        .prop_map(move |(image, state, mem, deps, health)| {
            let mut s = spec(&format!("c{i}"), &format!("img{image}"));
            s.state = state;
            s.extra.resources.memory = mem.map(|m| m << 20);
            if health {
                s.extra.health.check = Some(HealthCheck {
                    command: vec!["true".into()],
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    retries: 1,
                    start_period: Duration::ZERO,
                });
            }
            // Dependencies point to lower indices only: no cycles, as validation guarantees.
            s.extra.depends_on = deps
                .into_iter()
                .filter(|(d, _)| *d < i)
                .map(|(d, healthy)| Dependency {
                    name: format!("c{d}"),
                    condition: if healthy {
                        DependencyCondition::Healthy
                    } else {
                        DependencyCondition::Started
                    },
                })
                .collect();
            s
        })
}

fn arb_set() -> impl Strategy<Value = Vec<ContainerSpec>> {
    (1..6usize).prop_flat_map(|n| (0..n).map(arb_spec).collect::<Vec<_>>())
}

/// Whether a spec's dependencies can ever be met (a stopped dependency never starts).
fn satisfiable(s: &ContainerSpec, all: &BTreeMap<String, ContainerSpec>) -> bool {
    s.extra.depends_on.iter().all(|d| {
        all.get(&d.name).is_some_and(|dep| {
            dep.state != DesiredState::Stopped
                && (d.condition != DependencyCondition::Healthy
                    || (dep.extra.health.check.is_some() && dep.state == DesiredState::Running))
                && satisfiable(dep, all)
        })
    })
}

proptest! {
    /// From any earlier desired set's converged world, planning and applying repeatedly reaches
    /// the new desired set, and then plans nothing.
    #[test]
    fn converges_to_the_desired_state(before in arb_set(), after in arb_set()) {
        let mut o = Observed::default();
        let mut now = Millis(0);
        for target in [&before, &after] {
            let d = desired(target.clone());
            let mut passes = 0;
            loop {
                // The health checker (not the planner) follows the current spec's check.
                for s in target {
                    if let Some(c) = o.containers.get_mut(&s.name) {
                        c.health = if s.extra.health.check.is_some() { HealthState::Healthy } else { HealthState::None };
                    }
                }
                let p = plan(&d, &o, now);
                if p.actions.is_empty() { break; }
                apply(&mut o, &p.actions, now);
                now = Millis(now.0 + 10);
                passes += 1;
                prop_assert!(passes < 50, "no convergence: {:?}", p);
            }
            let by_name: BTreeMap<_, _> = target.iter().map(|s| (s.name.clone(), s.clone())).collect();
            for s in target {
                let c = o.containers.get(&s.name);
                if !satisfiable(s, &by_name) {
                    continue;
                }
                match s.state {
                    DesiredState::Running => prop_assert_eq!(c.map(|c| c.run), Some(RunState::Running), "{}", s.name),
                    DesiredState::Paused => prop_assert_eq!(c.map(|c| c.run), Some(RunState::Paused), "{}", s.name),
                    DesiredState::Stopped => prop_assert!(
                        c.is_none_or(|c| matches!(c.run, RunState::Exited(_))), "{}", s.name),
                }
                if let Some(c) = c {
                    prop_assert_eq!(&c.spec_hash, &berth_spec::spec_hash(s));
                    if s.state != DesiredState::Stopped {
                        prop_assert_eq!(c.resources, s.extra.resources);
                    }
                }
            }
            for name in o.containers.keys() {
                prop_assert!(by_name.contains_key(name), "{} should have been pruned", name);
            }
        }
    }
}

#[test]
fn an_unfinished_removal_is_finished_after_its_backoff() {
    let id = IncarnationId::random();
    let mut o = Observed::default();
    o.removing.insert("gone".into(), id.clone());
    let d = desired(vec![]);
    // Begun by a kill or failed before: finished now.
    let p = plan(&d, &o, Millis(0));
    assert!(
        matches!(&p.actions[..], [Action::Remove { name, id: i, why: RemoveReason::Pruned }]
            if name == "gone" && *i == id),
        "{p:?}"
    );
    // It failed a moment ago: after its backoff, not before.
    let mut f = Failures::default();
    f.remove.insert(
        "gone".into(),
        Failure {
            count: 2,
            at: Millis(1000),
            error: "cgroup busy".into(),
            retry: Retry::Backoff,
        },
    );
    let p = plan_pass(&d, &o, &f, &Ctx::at(Millis(2999)));
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(p.wake_at, Some(Millis(3000)));
    let p = plan_pass(&d, &o, &f, &Ctx::at(Millis(3000)));
    assert_eq!(kinds(&p), ["remove gone"]);
}

#[test]
fn an_unfinished_removal_never_holds_back_a_wanted_container() {
    let s = spec("web", "web");
    let mut o = with_image(Observed::default(), &s, "sha256:a");
    o.removing.insert("web".into(), IncarnationId::random());
    let mut f = Failures::default();
    f.remove.insert(
        "web".into(),
        Failure {
            count: 9,
            at: Millis(0),
            error: "cgroup busy".into(),
            retry: Retry::Backoff,
        },
    );
    // Its new incarnation replaces the record; the sweep takes what is left of the old one.
    let p = plan_pass(&desired(vec![s]), &o, &f, &Ctx::at(Millis(1)));
    assert_eq!(kinds(&p), ["create web"]);
}
