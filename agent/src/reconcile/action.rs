//! The closed set of things the executor can be asked to do, and why a container waits.

use std::fmt;
use std::path::PathBuf;

use berth_spec::model::{DependencyCondition, Resources};
use berth_spec::{ContainerSpec, Digest, ImageSource};

use super::model::Millis;
use crate::names::IncarnationId;

/// A new incarnation: what the executor is handed as it is (the backend takes this action).
#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub name: String,
    pub spec: std::sync::Arc<ContainerSpec>,
    pub hash: String,
    /// The platform manifest digest to make it from.
    pub image_digest: Digest,
    /// What this creation means for the container's update history.
    pub update: UpdateMark,
    /// start-then-kill: the incarnation to remove once this one runs.
    pub replacing: Option<IncarnationId>,
}

/// One step for the executor. Actions for one container run in order; different containers
/// proceed concurrently.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the registry what a `pull = "always"` tag points to now (no download).
    Check {
        image: ImageSource,
    },
    /// Fetch (or import, for on-disk sources) an image into the store.
    Pull {
        image: ImageSource,
    },
    /// Make a new incarnation (rootfs, network, cgroup) and start it.
    Create(Create),
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
        cause: StopCause,
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
    /// The updated image passed its verification window.
    MarkVerified {
        name: String,
    },
}

/// Why a container is stopped: what its exit then counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// Its spec wants it stopped: the exit was asked for (no restart, no backoff).
    Asked,
    /// It is unhealthy (`on_unhealthy = "restart"`): the exit counts as a crash, so its restart
    /// policy and backoff apply.
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its spec file was deleted.
    Pruned,
    /// Its spec or image changed; a new incarnation replaces it.
    Recreate,
}

/// What a creation is, for the update history ([`super::model::UpdateState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateMark {
    /// A first creation or a spec change: nothing to verify.
    None,
    /// The image moved from `from`: verify the new one, keep `from` for a rollback.
    Update { from: Digest },
    /// Back to the previous image because `rejected` failed its verification.
    Rollback { rejected: Digest },
}

impl Action {
    /// The container this action belongs to; `None` for shared work (pulls, checks).
    pub fn container(&self) -> Option<&str> {
        match self {
            Action::Check { .. } | Action::Pull { .. } => None,
            Action::Create(Create { name, .. })
            | Action::Start { name, .. }
            | Action::Pause { name, .. }
            | Action::Resume { name, .. }
            | Action::Stop { name, .. }
            | Action::Remove { name, .. }
            | Action::UpdateResources { name, .. }
            | Action::MarkVerified { name } => Some(name),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Check { .. } => "check",
            Action::Pull { .. } => "pull",
            Action::Create(_) => "create",
            Action::Start { .. } => "start",
            Action::Pause { .. } => "pause",
            Action::Resume { .. } => "resume",
            Action::Stop { .. } => "stop",
            Action::Remove { .. } => "remove",
            Action::UpdateResources { .. } => "update-resources",
            Action::MarkVerified { .. } => "verified",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Check { image } => write!(f, "check {image} for a new digest"),
            Action::Pull { image } => write!(f, "pull {image}"),
            Action::Create(Create {
                name,
                image_digest,
                update,
                replacing,
                ..
            }) => {
                write!(f, "create {name} from {image_digest}")?;
                match update {
                    UpdateMark::None => {}
                    UpdateMark::Update { from } => write!(f, " (update from {from})")?,
                    UpdateMark::Rollback { rejected } => {
                        write!(f, " (rollback: {rejected} failed)")?
                    }
                }
                if let Some(old) = replacing {
                    write!(f, ", then remove {old}")?;
                }
                Ok(())
            }
            Action::Start { name, id, .. } => write!(f, "start {name} ({id})"),
            Action::Pause { name, id } => write!(f, "pause {name} ({id})"),
            Action::Resume { name, id } => write!(f, "resume {name} ({id})"),
            Action::Stop {
                name,
                id,
                cause: StopCause::Asked,
            } => write!(f, "stop {name} ({id})"),
            Action::Stop {
                name,
                id,
                cause: StopCause::Unhealthy,
            } => write!(f, "stop {name} ({id}): unhealthy"),
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
            Action::MarkVerified { name } => write!(f, "{name}: update verified"),
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
    /// The store cannot hold the download now, even after GC; tried again at `until`.
    PullDeferred { until: Millis, error: String },
    /// `pull = "never"` and the image is not in the store.
    ImageMissing,
    /// An update or recreation waits (the container keeps running as it is).
    Held(Hold),
    /// An updated image is being verified until then.
    Verifying { until: Millis },
}

/// What holds an update back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// `[update] lock` exists (`berth apply --force` overrides it).
    Lock(PathBuf),
    /// Outside the maintenance window.
    Window { start_minute: u16, end_minute: u16 },
    /// A download for a running container waits for `[images] download_window`.
    DownloadWindow { start_minute: u16, end_minute: u16 },
    /// `window` or `min_age` need the real time, and the clock is not synchronised yet.
    ClockUnsynced,
    /// The new digest is younger than `min_age`.
    TooNew { digest: Digest },
    /// The tag points to a digest that failed its verification; waiting for the tag to move.
    /// `keeping`: the digest containers are made from meanwhile (`None`: none known good).
    Rejected {
        digest: Digest,
        keeping: Option<Digest>,
    },
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
            Waiting::PullDeferred { error, .. } => {
                write!(f, "pull deferred until the disk has room: {error}")
            }
            Waiting::ImageMissing => write!(f, "image not in the store and pull = \"never\""),
            Waiting::Held(h) => write!(f, "update held: {h}"),
            Waiting::Verifying { .. } => write!(f, "verifying the updated image"),
        }
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        match self {
            Hold::Lock(p) => write!(f, "held by lock {}", p.display()),
            Hold::Window {
                start_minute,
                end_minute,
            } => {
                write!(
                    f,
                    "outside the maintenance window {}-{}",
                    hm(*start_minute),
                    hm(*end_minute)
                )
            }
            Hold::DownloadWindow {
                start_minute,
                end_minute,
            } => write!(
                f,
                "the download waits for the download window {}-{}",
                hm(*start_minute),
                hm(*end_minute)
            ),
            Hold::ClockUnsynced => write!(f, "waiting for a synchronised clock"),
            Hold::TooNew { digest } => write!(f, "{digest} is younger than min_age"),
            Hold::Rejected {
                digest,
                keeping: Some(k),
            } => write!(
                f,
                "{digest} was rolled back; running {k} until the tag moves"
            ),
            Hold::Rejected {
                digest,
                keeping: None,
            } => write!(
                f,
                "{digest} was rolled back and no earlier image is in the store; waiting for the tag to move"
            ),
        }
    }
}
