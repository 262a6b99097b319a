//! What the reconciler publishes (a status snapshot, events, plans) and the API serves and the
//! CLI prints: one definition for every side.

use serde::{Deserialize, Serialize};

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
    pub digest: Option<String>,
    pub ip: Option<String>,
    pub ports: Vec<String>,
    pub restarts: u32,
    /// `starting`, `healthy`, `unhealthy`, or absent without a health check.
    pub health: Option<String>,
    /// The last error: an invalid spec, a failed pull or start.
    pub error: Option<String>,
    /// RFC 3339 time of the last status change.
    pub since: Option<String>,
    /// The incarnation id, when a container exists.
    pub id: Option<String>,
    /// The image digest before the last update: what a rollback returns to.
    #[serde(default)]
    pub previous_digest: Option<String>,
    /// Digests that failed their verification and are not taken until the tag moves.
    #[serde(default)]
    pub rejected_digests: Vec<String>,
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

/// What the reporters (`/metrics`, MQTT) say about the spec source: the commit this host runs
/// and its place in a staged rollout. `None` as a whole when the config has no `[source]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// The full id of the commit whose specs this host runs, once one is applied.
    pub commit: Option<String>,
    pub rollout: Option<RolloutMembership>,
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
