//! The record of a container's current incarnation: `containers/<name>/incarnation.json`.
//!
//! Written before anything of the incarnation exists (phase `creating`) and updated once it
//! runs (`created`), so that after a crash at any step the agent knows which kernel objects to
//! look for and whether the incarnation was complete. It carries what the planner needs to
//! decide (recreate hash, image digest) and what restarts need across agent restarts
//! (restart count, crash streak, when it last started on the boot clock).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_spec::model::{NetworkMode, PortMapping};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::layout::Layout;
use crate::names::IncarnationId;
use crate::reconcile::Millis;
use crate::reconcile::model::{Ending, UpdateState};

pub const RECORD_VERSION: u32 = 1;
pub const FILE: &str = "incarnation.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Pieces may exist; the incarnation never completed. Removed at start.
    Creating,
    /// It ran (or runs) in this or an earlier boot.
    Created,
    /// Its removal began: whatever is left of it goes, at the latest at the next start.
    Removing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub id: IncarnationId,
    pub phase: Phase,
    pub spec_hash: String,
    pub image: String,
    /// The platform manifest digest it was made from.
    pub image_digest: berth_spec::Digest,
    pub network: NetworkMode,
    /// The address on its primary network: the first that is not internal, which holds its
    /// default route and published ports (see `Host::primary`).
    pub ip: Option<IpAddr>,
    /// Its IPv6 address on the primary network when that one is dual-stack (an IPv6-only
    /// network's is `ip`). For `berth status`; the lease is the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpAddr>,
    /// `network = "bridge"`: every network it joined, in order (`eth0`, `eth1`, ...), with its
    /// address there. Empty in a record from before named networks: the default network at
    /// `ip` (see [`Record::joined`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<(String, IpAddr)>,
    /// `network = "container:x"`: the incarnation of x whose netns it joined. When x has
    /// another incarnation, this one is observed as changed and made again in the new netns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_of: Option<IncarnationId>,
    pub ports: Vec<PortMapping>,
    pub restarts: u32,
    pub crash_streak: u32,
    /// The boot the last start happened in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// When the last start happened, on the boot clock of `boot_id`.
    pub started_at: Option<Millis>,
    /// Whose doing its exit is: berth's (`state = "stopped"`, a removal begun) is not a crash.
    /// On disk as the boolean `stopped_by_us`, as records have always had it.
    #[serde(rename = "stopped_by_us", with = "ending_on_disk")]
    pub ending: Ending,
    /// The image's own health check, as it was when the incarnation was made.
    #[serde(default)]
    pub image_health: Option<berth_spec::model::HealthCheck>,
}

/// `Ending` as the boolean records have always held, so records read both ways across versions.
mod ending_on_disk {
    use super::Ending;

    pub fn serialize<S: serde::Serializer>(e: &Ending, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*e == Ending::StoppedByBerth)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ending, D::Error> {
        let by_berth: bool = serde::Deserialize::deserialize(d)?;
        Ok(if by_berth {
            Ending::StoppedByBerth
        } else {
            Ending::OnItsOwn
        })
    }
}

impl Record {
    /// The networks of a bridged incarnation in order, with the address each holds (`None`:
    /// not leased yet); empty for the other modes.
    pub fn joined(&self) -> Vec<(String, Option<IpAddr>)> {
        if self.network != NetworkMode::Bridge {
            return Vec::new();
        }
        if self.networks.is_empty() {
            return vec![(berth_spec::config::DEFAULT_NETWORK.to_string(), self.ip)];
        }
        self.networks
            .iter()
            .map(|(n, ip)| (n.clone(), Some(*ip)))
            .collect()
    }

    pub fn path(layout: &Layout, name: &str) -> PathBuf {
        layout.container_dir(name).join(FILE)
    }

    pub fn load(layout: &Layout, name: &str) -> std::io::Result<Option<Record>> {
        let rec: Option<Record> = fsutil::read_json(&Self::path(layout, name))?;
        match rec {
            Some(r) if r.version > RECORD_VERSION => Err(std::io::Error::other(format!(
                "{}: record version {} is newer than this berth's {RECORD_VERSION}",
                Self::path(layout, name).display(),
                r.version
            ))),
            r => Ok(r),
        }
    }

    /// Durably: the record once the incarnation runs (off the start's critical path).
    pub fn save(&self, layout: &Layout, name: &str) -> std::io::Result<()> {
        let dir = layout.container_dir(name);
        fsutil::create_private_dir_all(&dir)?;
        fsutil::atomic_write_json(&dir.join(FILE), self)
    }

    /// Atomically but without waiting for the disk: the `creating` record, written before a
    /// start. A power loss kills whatever it describes, and anything of it left on disk is then
    /// an orphan by name, which the sweep removes.
    pub fn save_volatile(&self, layout: &Layout, name: &str) -> std::io::Result<()> {
        let dir = layout.container_dir(name);
        fsutil::create_private_dir_all(&dir)?;
        let mut data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        data.push(b'\n');
        fsutil::atomic_replace(&dir.join(FILE), &data)
    }

    pub fn delete(layout: &Layout, name: &str) -> std::io::Result<()> {
        fsutil::remove_file_if_exists(&Self::path(layout, name))?;
        fsutil::sync_dir(&layout.container_dir(name)).or_else(ignore_missing)
    }

    /// Every container name with a record.
    pub fn names(layout: &Layout) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(layout.containers_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(FILE).exists())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// The record of an incarnation being replaced (start-then-kill), while its successor starts.
pub fn old_path(layout: &Layout, name: &str) -> PathBuf {
    layout.container_dir(name).join(OLD_FILE)
}

pub const OLD_FILE: &str = "incarnation.old.json";
const UPDATE_FILE: &str = "update.json";

/// A container's update history (`containers/<name>/update.json`): it outlives incarnations.
pub fn load_update(layout: &Layout, name: &str) -> UpdateState {
    fsutil::read_json(&layout.container_dir(name).join(UPDATE_FILE))
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn save_update(layout: &Layout, name: &str, st: &UpdateState) -> std::io::Result<()> {
    let dir = layout.container_dir(name);
    fsutil::create_private_dir_all(&dir)?;
    fsutil::atomic_write_json(&dir.join(UPDATE_FILE), st)
}

/// This boot's id: a record from another boot describes processes that no longer exist.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The dir of an incarnation's /etc files (hosts, resolv.conf, hostname), beside its bundle.
pub fn etc_dir(layout: &Layout, name: &str, id: &IncarnationId) -> PathBuf {
    layout.container_dir(name).join(format!("{id}.etc"))
}

pub fn is_etc_dir(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".etc"))
        .is_some_and(|id| IncarnationId::parse(id).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(stopped_by_us: bool) -> String {
        format!(
            r#"{{"version":1,"id":"0123456789ab","phase":"created","spec_hash":"h",
            "image":"i","image_digest":"sha256:{d}","network":"none","ip":null,"ports":[],
            "restarts":0,"crash_streak":0,"boot_id":"b","started_at":null,
            "stopped_by_us":{stopped_by_us}}}"#,
            d = "0".repeat(64)
        )
    }

    #[test]
    fn the_ending_keeps_the_records_boolean_both_ways() {
        for (flag, ending) in [(true, Ending::StoppedByBerth), (false, Ending::OnItsOwn)] {
            let rec: Record = serde_json::from_str(&on_disk(flag)).unwrap();
            assert_eq!(rec.ending, ending);
            let back = serde_json::to_value(&rec).unwrap();
            assert_eq!(back["stopped_by_us"], serde_json::Value::Bool(flag));
            assert!(back.get("ending").is_none());
        }
    }
}
