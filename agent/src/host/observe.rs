//! What the host has now, in the planner's terms: containers from their records and their
//! shims, images from the store, each container's update history.

use std::net::IpAddr;
use std::time::SystemTime;

use berth_spec::ImageSource;
use berth_spec::model::{NetworkMode, PortMapping};

use super::record::{self, Phase, Record};
use super::{Host, transient};
use crate::backend::ActionError;
use crate::clock;
use crate::reconcile::model::{
    ContainerInfo, Exit, HealthState, Millis, Observed, ObservedContainer, RunState,
};
use crate::runtime::Status;

impl Host {
    pub(super) fn observe_all(&self) -> Result<Observed, ActionError> {
        let mut o = Observed::default();
        for name in Record::names(&self.layout) {
            if let Some(c) = self.observe_container(&name) {
                o.containers.insert(name, c);
            } else if let Ok(Some(rec)) = Record::load(&self.layout, &name)
                && rec.phase == Phase::Removing
            {
                o.removing.insert(name, rec.id);
            }
        }
        for e in std::fs::read_dir(self.layout.containers_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let mut st = record::load_update(&self.layout, &name);
            if let Some(v) = &mut st.verifying
                && v.boot_id != record::boot_id()
            {
                // A reboot during verification: the window starts again in this boot.
                v.since = clock::now();
                v.boot_id = record::boot_id();
            }
            if st != Default::default() {
                o.updates.insert(name, st);
            }
        }
        for rec in self.store.list().map_err(transient)? {
            if let Ok(src) = ImageSource::parse(&rec.reference) {
                o.images.insert(src, rec.manifest_digest);
            }
        }
        Ok(o)
    }

    pub(super) fn observe_container(&self, name: &str) -> Option<ObservedContainer> {
        let rec = match Record::load(&self.layout, name) {
            Ok(Some(r)) if r.phase == Phase::Created => r,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(container = name, "unreadable record: {e}");
                return None;
            }
        };
        let this_boot = rec.boot_id == record::boot_id();
        let seen = self.runtime.inspect(name, &rec.id).unwrap_or_else(|e| {
            tracing::warn!(container = name, "cannot inspect: {e}");
            None
        });
        let (run, pid, since) = match &seen {
            Some(c) if this_boot => match c.status {
                Status::Running | Status::Unsupervised => (RunState::Running, c.pid, c.started_at),
                Status::Paused => (RunState::Paused, c.pid, c.started_at),
                Status::Exited => {
                    let e = c.exit.as_ref().expect("an exited container has its record");
                    let exit = Exit {
                        code: exit_code(e),
                        oom: e.oom,
                        at: boot_time_of(e.finished_at),
                        ending: rec.ending,
                    };
                    (RunState::Exited(exit), None, Some(e.finished_at))
                }
                Status::Lost => {
                    let exit = Exit {
                        code: 137,
                        oom: false,
                        at: clock::now(),
                        ending: rec.ending,
                    };
                    (RunState::Exited(exit), None, c.finished_at)
                }
            },
            // Nothing left to start it from (its bundle went by hand, or with a removal that
            // did not record itself): not a container, so a new incarnation replaces it and
            // the sweep takes the rest.
            None if self.runtime.read_config(name, &rec.id).is_err() => {
                tracing::warn!(container = name, "incarnation {} has no bundle", rec.id);
                return None;
            }
            // The last run, in an earlier boot, ran to completion (it ended on its own, not
            // stopped by berth or the shutdown): the planner judges it by its restart policy,
            // so a `restart = "never"` job that finished stays finished across a reboot.
            _ if !this_boot => match self.runtime.completed_run(name, &rec.id) {
                Some(e) => {
                    let exit = Exit {
                        code: exit_code(&e),
                        oom: e.oom,
                        // Long ago on this boot's clock: no backoff is owed for it.
                        at: Millis(0),
                        ending: rec.ending,
                    };
                    (RunState::Exited(exit), None, Some(e.finished_at))
                }
                None => (RunState::Created, None, None),
            },
            // No run in this boot: ready to start.
            _ => (RunState::Created, None, None),
        };
        let resources = self
            .runtime
            .read_config(name, &rec.id)
            .map(|c| c.resources)
            .unwrap_or_default();
        Some(ObservedContainer {
            id: rec.id.clone(),
            spec_hash: self.sidecar_hash(&rec),
            image_digest: rec.image_digest.clone(),
            run,
            restarts: if this_boot { rec.restarts } else { 0 },
            crash_streak: if this_boot { rec.crash_streak } else { 0 },
            started_at: rec.started_at.filter(|_| this_boot),
            health: HealthState::None,
            resources,
            image_health: rec.image_health.clone(),
            info: ContainerInfo {
                image: Some(rec.image.clone()),
                pid,
                ip: rec.ip,
                ip6: rec.ip6,
                ports: rec.ports.iter().map(port_text).collect(),
                since: since.map(rfc3339),
            },
        })
    }
}

impl Host {
    /// A sidecar (`network = "container:x"`) whose x has been made again sits in a namespace
    /// nothing else uses any more: it is observed with a hash no spec has, so the planner
    /// recreates it into x's new namespace.
    fn sidecar_hash(&self, rec: &Record) -> String {
        let (NetworkMode::Container(of), Some(joined)) = (&rec.network, &rec.netns_of) else {
            return rec.spec_hash.clone();
        };
        match Record::load(&self.layout, of) {
            Ok(Some(target)) if target.id == *joined => rec.spec_hash.clone(),
            _ => format!(
                "{} (in the netns of {of} {joined}, which is gone)",
                rec.spec_hash
            ),
        }
    }
}

/// The exit code as shells report it: the code, or 128 + the signal.
fn exit_code(e: &crate::runtime::ExitRecord) -> i32 {
    e.code.unwrap_or_else(|| 128 + e.signal.unwrap_or(9))
}

/// A wall-clock moment on the boot clock.
fn boot_time_of(t: SystemTime) -> Millis {
    let ago = SystemTime::now().duration_since(t).unwrap_or_default();
    Millis(clock::now().0.saturating_sub(ago.as_millis() as u64))
}

fn port_text(p: &PortMapping) -> String {
    match p.host_ip {
        Some(IpAddr::V6(ip)) => {
            format!("[{ip}]:{}:{}/{}", p.host, p.container, p.protocol.as_str())
        }
        Some(ip) => format!("{ip}:{}:{}/{}", p.host, p.container, p.protocol.as_str()),
        None => format!("{}:{}/{}", p.host, p.container, p.protocol.as_str()),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
