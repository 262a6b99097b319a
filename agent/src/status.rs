//! What the reconciler publishes (a status snapshot, events, plans) and the API serves and the
//! CLI prints: one definition for every side.

use berth_spec::Digest;
use serde::{Deserialize, Serialize};

use crate::reconcile::fleet::{CommitId, Reason};

/// One container as `berth status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    /// `running`, `paused` or `stopped`, as the spec asks; `removed` once its spec file is
    /// deleted (shown until the removal has finished).
    pub desired: String,
    pub status: Status,
    /// Why it is in that status: waiting for a dependency, backing off, held by a lock, ...
    pub reason: Option<String>,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub image: String,
    /// The platform manifest digest of the image it runs.
    pub digest: Option<Digest>,
    pub ip: Option<String>,
    /// Its IPv6 address beside `ip` on a dual-stack network (an IPv6-only network's is `ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// A sidecar (`network = "container:app"`): the container whose network namespace it
    /// shares (its `ip` is that container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_of: Option<String>,
    pub ports: Vec<String>,
    pub restarts: u32,
    /// `starting`, `healthy`, `unhealthy`, or absent without a health check.
    pub health: Option<String>,
    /// The last error: an invalid spec, a failed pull or start.
    pub error: Option<String>,
    /// Its last run ended by the kernel's OOM killer (at its memory limit), as Docker's
    /// `State.OOMKilled`.
    #[serde(default)]
    pub oom_killed: bool,
    /// RFC 3339 time of the last status change.
    pub since: Option<String>,
    /// The incarnation id, when a container exists.
    pub id: Option<String>,
    /// The image digest before the last update: what a rollback returns to.
    #[serde(default)]
    pub previous_digest: Option<Digest>,
    /// Digests that failed their verification and are not taken until the tag moves.
    #[serde(default)]
    pub rejected_digests: Vec<Digest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Waiting,
    Pulling,
    Creating,
    Running,
    Paused,
    Stopped,
    Exited,
    Restarting,
    Failed,
    /// Its spec file was deleted and its removal (stop, then everything it owns) has not
    /// finished: its process and ports may still be there.
    Removing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Pulling => "pulling",
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Exited => "exited",
            Status::Restarting => "restarting",
            Status::Failed => "failed",
            Status::Removing => "removing",
        }
    }
}

/// One line of `berth events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// RFC 3339.
    pub time: String,
    pub container: Option<String>,
    /// `started`, `exited`, `pulled`, `removed`, `error`, `health`, ...
    pub kind: String,
    pub message: String,
}

impl EventRecord {
    pub fn now(container: Option<&str>, kind: &str, message: impl Into<String>) -> Self {
        EventRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            container: container.map(str::to_string),
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// `berth plan --json`: the actions the next pass would take and what waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    pub actions: Vec<PlannedAction>,
    pub waiting: Vec<WaitingView>,
    /// What the running agent is doing right now (empty in-process: nothing runs there). A
    /// container listed here may also have a planned action: the pass after this one's end
    /// decides it again.
    #[serde(default)]
    pub in_progress: Vec<InProgressView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InProgressView {
    /// `pull`, `create`, `start`, `stop`, `remove`, `update`.
    pub action: String,
    /// The container, or none for a pull of an image.
    pub container: Option<String>,
    /// The image, for a pull.
    pub image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    /// `pull`, `create`, `start`, `pause`, `resume`, `stop`, `remove`, `update-resources`.
    pub action: String,
    pub container: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingView {
    pub container: String,
    pub reason: String,
}

/// The result of `berth apply --once`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult {
    pub converged: bool,
    /// `true` when `--wait` ran out of time.
    pub timed_out: bool,
    /// `name: reason` for everything that failed or is not where its spec wants it.
    pub problems: Vec<String>,
    pub containers: Vec<ContainerStatus>,
}

/// What `berth prune` removed (or, with `--dry-run`, would remove).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub images: Vec<String>,
    pub layers: usize,
    pub blobs: usize,
    /// Bytes freed.
    pub freed: u64,
    pub volumes: Vec<String>,
}

/// `berth source --json`, the API's `/v1/source`, and the header of `berth status`: where
/// specs come from and which commit this host runs. What a reporter (metrics, MQTT) reads about
/// the source is here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The remote URL; `None` for bundles only.
    pub remote: Option<String>,
    pub branch: String,
    /// The spec path inside the repository (empty: its root).
    pub path: String,
    pub host_id: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Things to know about this setup (allow_unsigned, no host id).
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub state: SourceState,
}

/// What the source remembers across restarts (`<state_dir>/source/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceState {
    /// The commit whose specs this host runs.
    pub applied: Option<AppliedCommit>,
    /// The commit applied before it (its tree is kept).
    pub previous: Option<CommitId>,
    /// The last verified tip: the end of the fast-forward chain (what hosts in a rollout run).
    pub verified: Option<CommitId>,
    /// The tip last seen at the remote or in a bundle (it may be refused).
    pub tip: Option<CommitId>,
    /// The rollout the verified tip carries, and where this host stands in it.
    pub rollout: Option<RolloutView>,
    /// RFC 3339 times of the last fetch tried and the last that reached the remote.
    pub last_fetch: Option<String>,
    pub last_success: Option<String>,
    /// The last fetch or import problem (cleared by a fetch that works).
    pub last_error: Option<String>,
    /// Fetches failed in a row (retries back off).
    pub fetch_failures: u32,
    /// Tips refused, newest first (at most 20).
    pub refused: Vec<RefusedTip>,
}

/// The commit a host runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCommit {
    pub commit: CommitId,
    pub subject: String,
    pub author: String,
    /// Who signed it (the principal allowed_signers matched, and the key); `None` for a pinned
    /// or unsigned commit.
    pub signer: Option<crate::reconcile::fleet::signature::Signer>,
    /// RFC 3339.
    pub applied_at: String,
}

/// A host's place in a staged rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub id: String,
    pub from: CommitId,
    /// `10%`, `2.5%`.
    pub percent: String,
    /// This host's bucket, 0-9999 (`None` without a host id).
    pub bucket: Option<u16>,
    /// Whether this host is in (applies the tip) or out (applies `from`).
    #[serde(rename = "in")]
    pub included: bool,
    /// The commit that makes this host apply.
    pub applies: CommitId,
}

/// A tip that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedTip {
    pub tip: CommitId,
    /// The commit at fault (the tip itself, or one between the last verified commit and it).
    pub commit: CommitId,
    pub reason: Reason,
    pub detail: String,
    /// `fetch`, or `bundle <file>`.
    pub via: String,
    /// RFC 3339.
    pub time: String,
}

/// What `berth source import` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResult {
    pub bundle: String,
    pub tip: Option<CommitId>,
    /// `applied`, `up-to-date`, `refused` or `failed`.
    pub outcome: String,
    pub message: String,
}

/// What the reporters (`/metrics`, MQTT) say about the spec source: the commit this host runs
/// and its place in a staged rollout. `None` as a whole when the config has no `[source]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// The full id of the commit whose specs this host runs, once one is applied.
    pub commit: Option<String>,
    pub rollout: Option<RolloutMembership>,
}

impl SourceSummary {
    /// What the reporters say of the source's remembered state.
    pub fn of(state: &SourceState) -> SourceSummary {
        SourceSummary {
            commit: state.applied.as_ref().map(|a| a.commit.to_string()),
            rollout: state.rollout.as_ref().map(|r| RolloutMembership {
                id: r.id.clone(),
                included: r.included,
                applies: r.applies.to_string(),
            }),
        }
    }
}

/// A host's place in the staged rollout its source's tip carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutMembership {
    pub id: String,
    /// In: this host applies the tip; out: it applies the rollout's `from` commit.
    #[serde(rename = "in")]
    pub included: bool,
    /// The commit that makes this host apply.
    pub applies: String,
}
