//! From desired, observed and the plan to what `berth status` shows: a pure function.

use std::collections::BTreeMap;

use berth_spec::model::DesiredState;

use super::model::*;
use super::plan::{Action, Plan, RemoveReason, Waiting};
use crate::status::{ContainerStatus, Status};

/// What the executor is doing for a container right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    Pulling,
    Creating,
    Starting,
    Stopping,
    Removing,
    Other,
}

impl InFlight {
    /// As `berth plan` names it.
    pub fn verb(self) -> &'static str {
        match self {
            InFlight::Pulling => "pull",
            InFlight::Creating => "create",
            InFlight::Starting => "start",
            InFlight::Stopping => "stop",
            InFlight::Removing => "remove",
            InFlight::Other => "update",
        }
    }
}

/// Every container's status: each desired one's (what the host shows, what the plan holds it
/// for, what is being done to it), then those being removed.
pub fn report(
    desired: &Desired,
    observed: &Observed,
    failures: &Failures,
    plan: &Plan,
    in_flight: &BTreeMap<String, InFlight>,
) -> Vec<ContainerStatus> {
    let removing = removing(desired, observed, plan, in_flight);
    // Kept until the next pass (and shared with the API and the metrics): exactly as long as
    // the list, not the up to twice that a growing Vec leaves (megabytes at 10,000 specs).
    let mut out = Vec::with_capacity(desired.specs.len() + removing.len());
    for (name, entry) in &desired.specs {
        let Some(d) = &entry.spec else {
            out.push(invalid(name, entry));
            continue;
        };
        let spec = &d.spec;
        let obs = observed.containers.get(name);
        let mut error = entry.error.clone();
        let shown = host_view(obs, spec.state);
        let shown = held(shown, plan.waiting.get(name), obs, &mut error);
        let shown = acted_on(shown, in_flight.get(name), obs);
        if let Some(f) = failures.of_container(name) {
            error.get_or_insert_with(|| f.error.clone());
        }
        out.push(status(name, spec, obs, observed, shown, error));
    }
    out.extend(removing);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A status and why.
struct Shown {
    status: Status,
    reason: Option<String>,
}

/// A spec that never parsed: failed, with the reason.
fn invalid(name: &str, entry: &DesiredEntry) -> ContainerStatus {
    ContainerStatus {
        name: name.to_string(),
        desired: "running".into(),
        status: Status::Failed,
        reason: Some("invalid spec".into()),
        pid: None,
        exit_code: None,
        image: String::new(),
        digest: None,
        ip: None,
        ip6: None,
        network_of: None,
        ports: vec![],
        restarts: 0,
        health: None,
        error: entry.error.clone(),
        oom_killed: false,
        since: None,
        id: None,
        previous_digest: None,
        rejected_digests: Vec::new(),
    }
}

fn last_exit(obs: Option<&ObservedContainer>) -> Option<Exit> {
    match obs.map(|o| o.run) {
        Some(RunState::Exited(e)) => Some(e),
        _ => None,
    }
}

/// What the host shows, as the spec's desired state reads it.
fn host_view(obs: Option<&ObservedContainer>, desired: DesiredState) -> Shown {
    let stopped = desired == DesiredState::Stopped;
    let (status, reason) = match obs.map(|o| o.run) {
        Some(RunState::Running) => (Status::Running, None),
        Some(RunState::Paused) => (Status::Paused, None),
        Some(RunState::Exited(_)) if stopped => (Status::Stopped, None),
        Some(RunState::Exited(e)) => (Status::Exited, Some(exit_reason(&e))),
        Some(RunState::Created) if stopped => (Status::Stopped, None),
        Some(RunState::Created) => (Status::Creating, None),
        None if stopped => (Status::Stopped, None),
        None => (Status::Waiting, None),
    };
    Shown { status, reason }
}

/// What the plan holds the container for, over what the host shows (a pull's error becomes
/// the status's error when it has none).
fn held(
    shown: Shown,
    waiting: Option<&Waiting>,
    obs: Option<&ObservedContainer>,
    error: &mut Option<String>,
) -> Shown {
    let Shown { mut status, reason } = shown;
    let mut reason = reason;
    match waiting {
        Some(w @ Waiting::Backoff { .. }) if obs.is_some() => {
            status = Status::Restarting;
            reason = Some(match last_exit(obs) {
                Some(e) if e.oom => format!("{w} (out of memory)"),
                _ => w.to_string(),
            });
        }
        Some(Waiting::Backoff { .. }) => {
            status = Status::Waiting;
            reason = Some("retrying after a failed create".into());
        }
        Some(Waiting::Pulling) => {
            status = Status::Pulling;
            reason = Some("pulling image".into());
        }
        Some(w @ Waiting::PullFailed { until, error: e }) => {
            status = if until.is_none() {
                Status::Failed
            } else {
                Status::Waiting
            };
            reason = Some(w.to_string());
            error.get_or_insert_with(|| e.clone());
        }
        // A running container keeps running; one that has none waits for the room.
        Some(w @ Waiting::PullDeferred { error: e, .. }) => {
            if obs.is_none() {
                status = Status::Waiting;
            }
            reason = Some(w.to_string());
            error.get_or_insert_with(|| e.clone());
        }
        Some(w @ Waiting::ImageMissing) => {
            status = Status::Failed;
            reason = Some(w.to_string());
        }
        // A running container is not disturbed by a dependency going away.
        Some(w @ Waiting::Dependency { .. })
            if obs.is_none_or(|o| !matches!(o.run, RunState::Running | RunState::Paused)) =>
        {
            status = Status::Waiting;
            reason = Some(w.to_string());
        }
        Some(Waiting::Dependency { .. }) => {}
        // The container runs as it is; the reason says what is held or being verified.
        Some(w @ (Waiting::Held(_) | Waiting::Verifying { .. })) => reason = Some(w.to_string()),
        None => {}
    }
    Shown { status, reason }
}

/// What is being done to the container right now, over everything else.
fn acted_on(shown: Shown, in_flight: Option<&InFlight>, obs: Option<&ObservedContainer>) -> Shown {
    let status = match in_flight {
        Some(InFlight::Pulling) => Status::Pulling,
        Some(InFlight::Creating) => Status::Creating,
        Some(InFlight::Starting) if obs.is_some_and(|o| o.restarts > 0) => Status::Restarting,
        Some(InFlight::Starting) => Status::Creating,
        _ => shown.status,
    };
    Shown { status, ..shown }
}

/// The status of a container with a spec, from what was worked out and what the host holds.
fn status(
    name: &str,
    spec: &berth_spec::ContainerSpec,
    obs: Option<&ObservedContainer>,
    observed: &Observed,
    shown: Shown,
    error: Option<String>,
) -> ContainerStatus {
    let last_exit = last_exit(obs);
    let health = match obs.map(|o| o.health) {
        Some(HealthState::Starting) => Some("starting".to_string()),
        Some(HealthState::Healthy) => Some("healthy".to_string()),
        Some(HealthState::Unhealthy) => Some("unhealthy".to_string()),
        _ => None,
    };
    let live = matches!(shown.status, Status::Running | Status::Paused);
    ContainerStatus {
        name: name.to_string(),
        desired: desired_str(spec.state).into(),
        status: shown.status,
        reason: shown.reason,
        pid: obs.and_then(|o| o.info.pid).filter(|_| live),
        exit_code: last_exit.map(|e| e.code),
        image: spec.image.to_string(),
        digest: obs
            .map(|o| o.image_digest.clone())
            .or_else(|| observed.images.get(&spec.image).cloned()),
        ip: obs.and_then(|o| o.info.ip).map(|ip| ip.to_string()),
        ip6: obs.and_then(|o| o.info.ip6).map(|ip| ip.to_string()),
        network_of: match &spec.network {
            berth_spec::model::NetworkMode::Container(of) => Some(of.clone()),
            _ => None,
        },
        ports: obs.map(|o| o.info.ports.clone()).unwrap_or_default(),
        restarts: obs.map_or(0, |o| o.restarts),
        health,
        error,
        oom_killed: last_exit.is_some_and(|e| e.oom),
        since: obs.and_then(|o| o.info.since.clone()),
        id: obs.map(|o| o.id.to_string()),
        previous_digest: observed.updates.get(name).and_then(|h| h.previous.clone()),
        rejected_digests: observed
            .updates
            .get(name)
            .map(|h| h.rejected.iter().cloned().collect())
            .unwrap_or_default(),
    }
}

/// Why a container is not running any more: its code, and the OOM killer when it fired.
fn exit_reason(e: &Exit) -> String {
    if e.oom {
        format!(
            "out of memory: killed at its memory limit (exit code {})",
            e.code
        )
    } else {
        format!("exited with code {}", e.code)
    }
}

/// Containers whose spec file was deleted, until their removal has finished: a payload that
/// ignores its stop signal keeps its process and ports for its whole stop timeout, and status
/// must not call it gone meanwhile.
fn removing(
    desired: &Desired,
    observed: &Observed,
    plan: &Plan,
    in_flight: &BTreeMap<String, InFlight>,
) -> Vec<ContainerStatus> {
    let pruned = |name: &str| {
        plan.actions.iter().any(
            |a| matches!(a, Action::Remove { name: n, why: RemoveReason::Pruned, .. } if n == name),
        )
    };
    observed
        .containers
        .iter()
        .filter(|(name, _)| !desired.specs.contains_key(*name))
        .filter(|(name, _)| in_flight.get(*name) == Some(&InFlight::Removing) || pruned(name))
        .map(|(name, o)| {
            let live = matches!(o.run, RunState::Running | RunState::Paused);
            ContainerStatus {
                name: name.clone(),
                desired: "removed".into(),
                status: Status::Removing,
                reason: Some("spec file deleted".into()),
                pid: o.info.pid.filter(|_| live),
                exit_code: None,
                image: o.info.image.clone().unwrap_or_default(),
                digest: Some(o.image_digest.clone()),
                ip: o.info.ip.map(|ip| ip.to_string()),
                ip6: o.info.ip6.map(|ip| ip.to_string()),
                network_of: None,
                ports: o.info.ports.clone(),
                restarts: o.restarts,
                health: None,
                error: None,
                oom_killed: matches!(o.run, RunState::Exited(e) if e.oom),
                since: o.info.since.clone(),
                id: Some(o.id.to_string()),
                previous_digest: None,
                rejected_digests: Vec::new(),
            }
        })
        .collect()
}

pub fn desired_str(s: DesiredState) -> &'static str {
    match s {
        DesiredState::Running => "running",
        DesiredState::Paused => "paused",
        DesiredState::Stopped => "stopped",
    }
}

/// Whether a container is where its spec wants it (for `apply --wait`). A container that ran
/// to completion (exit 0) and is not restarted counts: a one-shot job is done.
pub fn settled(s: &ContainerStatus) -> bool {
    let state_ok = match s.desired.as_str() {
        "running" => {
            (s.status == Status::Running && s.health.as_deref().is_none_or(|h| h == "healthy"))
                || (s.status == Status::Exited && s.exit_code == Some(0))
        }
        "paused" => s.status == Status::Paused,
        // Settled once it is gone from the list.
        "removed" => false,
        _ => s.status == Status::Stopped,
    };
    state_ok && s.error.is_none()
}

/// Whether nothing more will happen for it without a change (a failed pull that won't be
/// retried, an exited container that won't restart, an invalid spec).
pub fn stuck(s: &ContainerStatus) -> bool {
    s.status == Status::Failed || (s.status == Status::Exited && s.exit_code != Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::IncarnationId;
    use berth_spec::{ContainerSpec, ImageSource};

    fn exited(oom: bool) -> (Desired, Observed) {
        let mut s = ContainerSpec::with_defaults(
            "job",
            ImageSource::parse("127.0.0.1:5000/job:1").unwrap(),
        );
        s.restart = berth_spec::model::RestartPolicy::Never;
        let o = ObservedContainer {
            id: IncarnationId::random(),
            spec_hash: berth_spec::spec_hash(&s),
            image_digest: test_digest("sha256:a"),
            run: RunState::Exited(Exit {
                code: 137,
                oom,
                at: Millis(1000),
                ending: Ending::OnItsOwn,
            }),
            restarts: 0,
            crash_streak: 0,
            started_at: Some(Millis(0)),
            health: HealthState::None,
            resources: s.extra.resources,
            info: ContainerInfo::default(),
            image_health: None,
        };
        let mut observed = Observed::default();
        observed.containers.insert("job".into(), o);
        let desired = Desired {
            specs: [(
                "job".to_string(),
                DesiredEntry {
                    spec: Some(DesiredSpec::new(s)),
                    error: None,
                },
            )]
            .into(),
            trustworthy: true,
        };
        (desired, observed)
    }

    fn one(oom: bool) -> ContainerStatus {
        let (d, o) = exited(oom);
        let plan = super::super::plan::plan(&d, &o, Millis(5000));
        report(&d, &o, &Failures::default(), &plan, &BTreeMap::new()).remove(0)
    }

    #[test]
    fn an_oom_kill_is_named_in_the_reason_and_the_field() {
        let s = one(true);
        assert_eq!(s.status, Status::Exited);
        assert_eq!(s.exit_code, Some(137));
        assert!(s.oom_killed);
        assert!(
            s.reason.as_deref().unwrap().contains("out of memory"),
            "{s:?}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["oom_killed"], true);
    }

    #[test]
    fn a_plain_kill_is_not_an_oom() {
        let s = one(false);
        assert!(!s.oom_killed);
        assert_eq!(s.reason.as_deref(), Some("exited with code 137"));
    }

    fn gone_spec_world() -> (Desired, Observed) {
        let desired = Desired {
            trustworthy: true,
            ..Desired::default()
        };
        let mut observed = Observed::default();
        observed.containers.insert(
            "web".into(),
            ObservedContainer {
                id: IncarnationId::parse("0123456789ab").unwrap(),
                spec_hash: "h".into(),
                image_digest: test_digest("sha256:d"),
                run: RunState::Running,
                restarts: 0,
                crash_streak: 0,
                started_at: None,
                health: HealthState::None,
                resources: Default::default(),
                info: ContainerInfo {
                    image: Some("docker.io/library/nginx:1.27".into()),
                    pid: Some(42),
                    ports: vec!["8080:80/tcp".into()],
                    ..ContainerInfo::default()
                },
                image_health: None,
            },
        );
        (desired, observed)
    }

    #[test]
    fn a_deleted_spec_shows_removing_until_its_container_is_gone() {
        let (desired, observed) = gone_spec_world();
        let plan = super::super::plan::plan(&desired, &observed, Millis(0));
        let s = report(
            &desired,
            &observed,
            &Failures::default(),
            &plan,
            &BTreeMap::new(),
        );
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].status, Status::Removing);
        assert_eq!(s[0].desired, "removed");
        assert_eq!(s[0].pid, Some(42), "its process is still there");
        assert_eq!(s[0].ports, ["8080:80/tcp"]);
        assert_eq!(s[0].image, "docker.io/library/nginx:1.27");
        assert!(!settled(&s[0]) && !stuck(&s[0]));
        // While the removal runs (the loop no longer plans it): still removing.
        let in_flight = BTreeMap::from([("web".to_string(), InFlight::Removing)]);
        let s = report(
            &desired,
            &observed,
            &Failures::default(),
            &Plan::default(),
            &in_flight,
        );
        assert_eq!(s[0].status, Status::Removing);
        // Gone from the observation: gone from the list.
        let s = report(
            &desired,
            &Observed::default(),
            &Failures::default(),
            &Plan::default(),
            &in_flight,
        );
        assert!(s.is_empty());
        // An unreadable spec dir prunes nothing, so nothing is being removed.
        let untrusted = Desired::default();
        let plan = super::super::plan::plan(&untrusted, &observed, Millis(0));
        assert!(
            report(
                &untrusted,
                &observed,
                &Failures::default(),
                &plan,
                &BTreeMap::new()
            )
            .is_empty()
        );
    }
}
