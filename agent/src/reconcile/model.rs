//! The planner's view of the world: what the specs ask for ([`Desired`]) and what is there now
//! ([`Observed`]). Plain data, built by the source and by `observe`; no I/O here.

use std::collections::BTreeMap;

use berth_spec::{ContainerSpec, Digest, ImageSource};

use crate::names::IncarnationId;

/// A digest for tests that name images by a label ("a", "sha256:new"): the label's sha256.
#[cfg(test)]
pub(crate) fn test_digest(label: &str) -> Digest {
    Digest::of(label.as_bytes())
}

/// Milliseconds on the boot clock (CLOCK_BOOTTIME): monotonic within a boot, immune to the
/// wall clock jumping when NTP first answers on a device without an RTC.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    pub fn plus(self, d: std::time::Duration) -> Millis {
        Millis(self.0.saturating_add(d.as_millis() as u64))
    }
    pub fn since(self, earlier: Millis) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// The whole desired set, from one complete scan of the spec source.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub specs: BTreeMap<String, DesiredEntry>,
    /// False when the source could not be read (dir missing, unreadable): nothing is pruned
    /// and entries absent from `specs` are left alone.
    pub trustworthy: bool,
}

#[derive(Debug, Clone)]
pub struct DesiredEntry {
    /// The spec to converge to: the file's, or the last valid one when the file stopped parsing.
    pub spec: Option<DesiredSpec>,
    /// Why the file is not valid right now (its container keeps its last valid spec).
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DesiredSpec {
    /// The one copy of the spec: shared with the spec source's cache, the last valid specs and
    /// the plan's actions.
    pub spec: std::sync::Arc<ContainerSpec>,
    pub hash: SpecHash,
}

impl DesiredSpec {
    pub fn new(spec: impl Into<std::sync::Arc<ContainerSpec>>) -> Self {
        let spec = spec.into();
        let hash = SpecHash(berth_spec::hash::spec_digest(&spec));
        DesiredSpec { spec, hash }
    }
}

/// A spec's recreate hash as its 32 bytes: held per spec in the last valid specs and in every
/// desired set (its `sha256:<hex>` text, in a shared allocation, was 100 bytes a spec). It
/// writes and compares as that text, which records and update histories keep.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SpecHash(pub [u8; 32]);

impl SpecHash {
    /// Whether `text` (`sha256:<hex>`, as [`berth_spec::spec_hash`] writes) is this hash.
    pub fn is(&self, text: &str) -> bool {
        let Some(hex) = text.strip_prefix("sha256:") else {
            return false;
        };
        // Exactly as written: lower-case only, as a comparison of the texts was.
        let mut bytes = [0u8; 32];
        !hex.bytes().any(|c| c.is_ascii_uppercase())
            && hex::decode_to_slice(hex, &mut bytes).is_ok()
            && bytes == self.0
    }
}

impl std::fmt::Display for SpecHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for SpecHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Everything observed at the start of a pass.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub containers: BTreeMap<String, ObservedContainer>,
    /// Images present in the store: source -> the platform manifest digest it resolves to
    /// locally. Every image digest of the model is a platform manifest's.
    pub images: BTreeMap<ImageSource, Digest>,
    /// What the registry said a `pull = "always"` tag resolves to, when last asked.
    pub remote: BTreeMap<ImageSource, RemoteCheck>,
    /// When berth first saw each image digest (boot clock): `min_age` without a created time.
    pub first_seen: BTreeMap<Digest, Millis>,
    /// Update lock files (`[update] lock`) that exist now.
    pub locks: std::collections::BTreeSet<std::path::PathBuf>,
    /// Each container's update history, kept across its incarnations.
    pub updates: BTreeMap<String, UpdateState>,
    /// Incarnations whose removal was begun and not finished (their record says `removing`:
    /// a removal that failed, say a cgroup still busy, or one a kill cut short). Not
    /// containers; what is left of them goes before anything counts as converged.
    pub removing: BTreeMap<String, IncarnationId>,
}

/// The answer of a registry to "what does this tag point to now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCheck {
    /// The platform manifest digest (what a pull would run).
    pub digest: Digest,
    /// The image config's `created`, in Unix seconds, when it has one.
    pub created: Option<u64>,
    pub checked_at: Millis,
}

/// A container's image updates: what it ran, what to roll back to, what failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpdateState {
    /// The image digest and spec hash of the last incarnation created.
    pub last_digest: Option<Digest>,
    pub last_hash: Option<String>,
    /// The digest before the last image update: what a rollback returns to.
    pub previous: Option<Digest>,
    /// Digests that failed their verification: not taken again until the tag moves.
    pub rejected: std::collections::BTreeSet<Digest>,
    /// An image update being verified.
    pub verifying: Option<Verifying>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verifying {
    pub digest: Digest,
    /// When its container started (boot clock of `boot_id`).
    pub since: Millis,
    pub boot_id: String,
}

/// One container that has a record in the state dir (an incarnation).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    pub id: IncarnationId,
    /// The recreate hash it was created from.
    pub spec_hash: String,
    /// The image digest it was created from.
    pub image_digest: Digest,
    pub run: RunState,
    /// Restarts within this boot (not counting the first start).
    pub restarts: u32,
    /// Consecutive runs that ended within [`super::backoff::RESET_AFTER`]: drives the backoff.
    pub crash_streak: u32,
    /// When the current or last run started.
    pub started_at: Option<Millis>,
    pub health: HealthState,
    /// The resources applied to its cgroup.
    pub resources: berth_spec::model::Resources,
    /// For the status report.
    pub info: ContainerInfo,
    /// The image's own health check (Docker `Healthcheck`), used when the spec has none.
    pub image_health: Option<berth_spec::model::HealthCheck>,
}

/// What `berth status` shows about a container beyond its run state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerInfo {
    /// The image reference it was made from (shown once its spec is gone).
    pub image: Option<String>,
    pub pid: Option<i32>,
    pub ip: Option<std::net::IpAddr>,
    /// The IPv6 address beside `ip` on a dual-stack network.
    pub ip6: Option<std::net::IpAddr>,
    /// `8080:80/tcp`, as published.
    pub ports: Vec<String>,
    /// Wall-clock time of the last change of run state, RFC 3339.
    pub since: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created (rootfs, network) but its process has not run in this boot.
    Created,
    Running,
    Paused,
    Exited(Exit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub code: i32,
    pub oom: bool,
    pub at: Millis,
    pub ending: Ending,
}

/// Whose doing an exit was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It ended by itself, crashed or was killed behind berth's back: its restart policy and
    /// backoff apply.
    OnItsOwn,
    /// berth stopped it (`state = "stopped"`, a recreate, a removal): not a crash, no backoff.
    StoppedByBerth,
}

impl Exit {
    pub fn succeeded(&self) -> bool {
        self.code == 0 && !self.oom
    }

    pub fn asked_for(&self) -> bool {
        self.ending == Ending::StoppedByBerth
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// No health check.
    #[default]
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// Consecutive failures of one thing, with the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub count: u32,
    pub at: Millis,
    pub error: String,
    pub retry: Retry,
}

/// Whether trying again can help, as the executor judged a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It cannot (a manifest that does not exist): reported, not retried.
    Never,
    /// Later, with the backoff (a registry down, a port held by another process).
    Backoff,
    /// Not a failure but a wait for room: the store cannot hold the download now (after GC).
    WhenRoom,
}

impl Failure {
    /// When it may be tried again: the backoff after `count` failures in a row.
    pub fn retry_at(&self) -> Millis {
        self.at
            .plus(super::backoff::delay(self.count.saturating_sub(1)))
    }
}

/// What failed and when, as the loop remembers it (an observation holds facts from the host
/// only): pulls by image, creations and starts by container. The planner's backoffs read it;
/// a success clears the entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    pub pull: BTreeMap<ImageSource, Failure>,
    /// Creations that failed (nothing of the container is left).
    pub create: BTreeMap<String, Failure>,
    pub start: BTreeMap<String, Failure>,
    /// Removals that failed (their record says `removing`).
    pub remove: BTreeMap<String, Failure>,
}

/// What a failure was, as the executor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedAt {
    Create,
    Start,
    Remove,
}

impl Failures {
    /// One more failure of `key` in a row, at `at`.
    pub fn record<K: Ord>(
        map: &mut BTreeMap<K, Failure>,
        key: K,
        at: Millis,
        error: String,
        retry: Retry,
    ) {
        let count = map.get(&key).map_or(0, |f| f.count) + 1;
        map.insert(
            key,
            Failure {
                count,
                at,
                error,
                retry,
            },
        );
    }

    /// A container's creation or start failure, for its status.
    pub fn of_container(&self, name: &str) -> Option<&Failure> {
        self.start.get(name).or(self.create.get(name))
    }

    pub fn map_of(&mut self, at: FailedAt) -> &mut BTreeMap<String, Failure> {
        match at {
            FailedAt::Create => &mut self.create,
            FailedAt::Start => &mut self.start,
            FailedAt::Remove => &mut self.remove,
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_spec::ImageSource;

    use super::*;

    #[test]
    fn a_spec_hash_is_its_text() {
        let spec = ContainerSpec::with_defaults("web", ImageSource::parse("nginx:1.27").unwrap());
        let text = berth_spec::spec_hash(&spec);
        let d = DesiredSpec::new(spec.clone());
        assert_eq!(d.hash.to_string(), text);
        assert_eq!(format!("{:?}", d.hash), text);
        assert!(d.hash.is(&text));
        for other in [
            text.to_uppercase().replace("SHA256", "sha256"),
            text.replace("sha256:", "sha512:"),
            text[..text.len() - 1].to_string(),
            format!("{text}0"),
            text.strip_prefix("sha256:").unwrap().to_string(),
            String::new(),
            berth_spec::spec_hash(&ContainerSpec::with_defaults(
                "web",
                ImageSource::parse("nginx:1.28").unwrap(),
            )),
        ] {
            assert!(!d.hash.is(&other), "{other}");
        }
    }
}
