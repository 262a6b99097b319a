//! Orphans: kernel objects and files of this instance that no record explains, left by a crash
//! (or by hand). Found by their names, which carry the instance and the incarnation id; another
//! instance's objects are never touched.

use crate::runtime::BundleDir;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use berth_spec::model::NetworkMode;

use super::Host;
use super::record::{self, Phase, Record};
use crate::names::{IncarnationId, Names};
use crate::network::{ExpectedMode, ExpectedNet, Join};
use crate::reconcile::model::Ending;
use crate::runtime::cgroup::Cgroup;

/// One orphan, as `berth doctor` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Orphan {
    /// `shim`, `bundle`, `etc`, `cgroup`, `container-dir`.
    pub kind: &'static str,
    pub what: String,
}

impl Host {
    /// The incarnations records explain.
    /// (The one a start-then-kill set aside still runs until its successor does.)
    pub(super) fn known(&self) -> BTreeSet<(String, IncarnationId)> {
        let mut known: BTreeSet<_> = Record::names(&self.layout)
            .into_iter()
            .filter_map(|n| {
                Record::load(&self.layout, &n)
                    .ok()
                    .flatten()
                    .map(|r| (n, r.id))
            })
            .collect();
        for e in std::fs::read_dir(self.layout.containers_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let old: Option<Record> = crate::fsutil::read_json(&e.path().join(record::OLD_FILE))
                .ok()
                .flatten();
            if let (Some(r), Some(n)) = (old, e.file_name().to_str()) {
                known.insert((n.to_string(), r.id));
            }
        }
        known
    }

    /// Lists this instance's runtime orphans (shims, bundles, /etc dirs, cgroups) without
    /// touching them.
    pub fn find_orphans(&self) -> Vec<Orphan> {
        let known = self.known();
        let mut out = Vec::new();
        for (name, id) in self.shim_keys() {
            if !known.contains(&(name.clone(), id.clone())) {
                out.push(Orphan {
                    kind: "shim",
                    what: Names::container_key(&name, &id),
                });
            }
        }
        for entry in std::fs::read_dir(self.layout.containers_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dir = entry.path();
            let has_record = known.iter().any(|(n, _)| *n == name);
            // A spec file of that name explains the dir too: its container may not exist yet
            // (a create that failed for want of disk space leaves the dir it made).
            let has_spec_file = self
                .config
                .specs_dir
                .join(format!("{name}.toml"))
                .symlink_metadata()
                .is_ok();
            if !has_record
                && !has_spec_file
                && !dir.join("spec.json").exists()
                && !dir.join(record::FILE).exists()
            {
                out.push(Orphan {
                    kind: "container-dir",
                    what: dir.display().to_string(),
                });
                continue;
            }
            for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = sub.path();
                let file = sub.file_name().to_string_lossy().into_owned();
                let (kind, id) = if record::is_etc_dir(&p) {
                    ("etc", file.trim_end_matches(".etc").to_string())
                } else if IncarnationId::parse(&file).is_some() && p.is_dir() {
                    ("bundle", file.clone())
                } else {
                    continue;
                };
                let id = IncarnationId::parse(&id).expect("checked above");
                if !known.contains(&(name.clone(), id)) {
                    out.push(Orphan {
                        kind,
                        what: p.display().to_string(),
                    });
                }
            }
        }
        for (key, cg) in self.runtime.container_cgroups() {
            if let Some((name, id)) = Names::parse_container_key(&key)
                && !known.contains(&(name.to_string(), id))
            {
                out.push(Orphan {
                    kind: "cgroup",
                    what: cg.rel().to_string(),
                });
            }
        }
        out
    }

    /// Removes every runtime orphan and the network's. Keeps going past failures.
    pub(super) fn sweep(&self) -> Vec<Orphan> {
        let _no_creates = self.making.write().unwrap_or_else(|p| p.into_inner());
        self.sweep_locked()
    }

    /// [`Self::sweep`] for a caller that holds `making` exclusively.
    pub(super) fn sweep_locked(&self) -> Vec<Orphan> {
        self.finish_removals();
        let orphans = self.find_orphans();
        for o in &orphans {
            tracing::info!("removing orphan {}: {}", o.kind, o.what);
            let result = match o.kind {
                "shim" | "bundle" | "etc" => self.remove_incarnation_by_path(o),
                "cgroup" => {
                    let rel = &o.what;
                    let cg = Cgroup::new(&self.runtime.config().cgroups, rel);
                    cg.kill_all(Duration::from_secs(10))
                        .and_then(|_| cg.remove(Duration::from_secs(10)))
                        .map_err(|e| e.to_string())
                }
                "container-dir" => crate::fsutil::remove_dir_all_if_exists(&PathBuf::from(&o.what))
                    .map_err(|e| e.to_string()),
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!("cannot remove orphan {} {}: {e}", o.kind, o.what);
            }
        }
        let known: Vec<_> = self.known().into_iter().collect();
        for net in self.networks() {
            if let Err(e) = net.sweep_orphans(&known) {
                tracing::warn!("network {:?} orphans: {e}", net.name());
            }
        }
        self.runtime.prune_cgroups();
        orphans
    }

    /// Removals that failed or were cut short (their record says `removing`): what is left of
    /// them goes, then the record. The caller keeps removals from running meanwhile.
    pub(super) fn finish_removals(&self) {
        for name in Record::names(&self.layout) {
            let Ok(Some(rec)) = Record::load(&self.layout, &name) else {
                continue;
            };
            if rec.phase != Phase::Removing {
                continue;
            }
            tracing::info!(container = %name, "finishing the removal of {}", rec.id);
            match self.teardown(&name, &rec.id) {
                Ok(()) => {
                    if let Err(e) = Record::delete(&self.layout, &name) {
                        tracing::warn!(container = %name, "cannot delete its record: {e}");
                    }
                }
                Err(e) => tracing::warn!(container = %name, "cannot finish its removal: {e}"),
            }
        }
    }

    fn remove_incarnation_by_path(&self, o: &Orphan) -> Result<(), String> {
        let (name, id) = match o.kind {
            "shim" => {
                let (n, id) = Names::parse_container_key(&o.what).ok_or("bad shim name")?;
                (n.to_string(), id)
            }
            _ => {
                let p = PathBuf::from(&o.what);
                let file = p.file_name().and_then(|f| f.to_str()).ok_or("bad path")?;
                let id = IncarnationId::parse(file.trim_end_matches(".etc")).ok_or("bad id")?;
                let name = p
                    .parent()
                    .and_then(|d| d.file_name())
                    .and_then(|f| f.to_str())
                    .ok_or("bad path")?;
                (name.to_string(), id)
            }
        };
        let stop = self
            .runtime
            .stop(&name, &id, Some(libc::SIGKILL), Duration::from_secs(5));
        let removed = self.runtime.remove(&name, &id, BundleDir::Remove);
        let etc =
            crate::fsutil::remove_dir_all_if_exists(&record::etc_dir(&self.layout, &name, &id));
        stop.map(|_| ()).map_err(|e| e.to_string())?;
        removed.map_err(|e| e.to_string())?;
        etc.map_err(|e| e.to_string())
    }

    fn shim_keys(&self) -> Vec<(String, IncarnationId)> {
        std::fs::read_dir(self.layout.shims_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let key = e.file_name().to_string_lossy().into_owned();
                Names::parse_container_key(&key).map(|(n, id)| (n.to_string(), id))
            })
            .collect()
    }

    /// The containers that should be on network `net`, each with its interface there.
    pub(super) fn expected_networks(
        &self,
        net: &str,
        live: &[(String, IncarnationId)],
    ) -> Vec<ExpectedNet> {
        live.iter()
            .filter_map(|(name, id)| {
                let rec = Record::load(&self.layout, name).ok().flatten()?;
                if rec.id != *id
                    || rec.phase != Phase::Created
                    || rec.network != NetworkMode::Bridge
                {
                    return None;
                }
                let joined = rec.joined();
                let index = joined.iter().position(|(n, _)| n == net)?;
                let primary = self.primary(joined.iter().map(|(n, _)| n.as_str()));
                let ip = joined[index].1?;
                let running = matches!(
                    self.runtime
                        .inspect(name, id)
                        .ok()
                        .flatten()
                        .map(|c| c.status),
                    Some(crate::runtime::Status::Running | crate::runtime::Status::Paused)
                );
                // A stopped container keeps its address but not its ports.
                // Its ports are published on its primary network (and its IPv6 ones on the
                // first routed network with IPv6 when the primary has none).
                let ports = if running
                    && rec.ending == Ending::OnItsOwn
                    && self.publishing(&joined).contains(&index)
                {
                    rec.ports.clone()
                } else {
                    Vec::new()
                };
                Some(ExpectedNet {
                    name: name.clone(),
                    id: id.clone(),
                    mode: ExpectedMode::Bridge {
                        ip,
                        ports,
                        join: Join::of(index, primary),
                    },
                    made_this_boot: rec.boot_id == record::boot_id(),
                })
            })
            .collect()
    }

    /// Layer dirs stacked by containers that exist: GC must keep them.
    pub(super) fn live_layer_dirs(&self) -> Vec<PathBuf> {
        self.known()
            .iter()
            .filter_map(|(name, id)| self.runtime.read_config(name, id).ok())
            .flat_map(|c| c.layers)
            .collect()
    }
}
