//! Making an incarnation: the record first, then network, /etc files, runtime, ports; undone
//! completely on failure. Also the update history each creation writes, and start-then-kill
//! (a new incarnation beside the old one, which goes once the new one runs).

use std::net::IpAddr;

use berth_spec::ContainerSpec;
use berth_spec::model::NetworkMode;

use super::record::{self, Phase, Record};
use super::{Host, transient};
use crate::backend::ActionError;
use crate::clock;
use crate::crashpoint;
use crate::image::ResolvedImage;
use crate::names::IncarnationId;
use crate::network::Join;
use crate::network::files::{self, ContainerNames};
use crate::reconcile::action::UpdateMark;
use crate::reconcile::model::{Ending, Verifying};
use crate::reconcile::plan::Create;
use crate::runtime::{ContainerConfig, EtcFiles, Placement};

impl Host {
    pub(super) fn create_incarnation(&self, req: &Create) -> Result<(), ActionError> {
        let Some(old) = &req.replacing else {
            return self.create_new(req);
        };
        // start-then-kill: the old record steps aside (it still describes a running container),
        // the new one is made, and only then the old one goes.
        let (main, aside) = (
            Record::path(&self.layout, &req.name),
            record::old_path(&self.layout, &req.name),
        );
        std::fs::rename(&main, &aside)
            .map_err(|e| transient(format!("{}: setting the old record aside: {e}", req.name)))?;
        match self.create_new(req) {
            Ok(()) => {
                let torn = self.teardown(&req.name, old);
                crate::fsutil::remove_file_if_exists(&aside).map_err(transient)?;
                self.refresh_hosts();
                torn
            }
            Err(e) => {
                let _ = std::fs::rename(&aside, &main);
                Err(e)
            }
        }
    }

    /// The image to run: the spec's reference if it still resolves to `digest`, else (a
    /// rollback to the previous image) the kept image with that digest.
    fn image_for(
        &self,
        spec: &ContainerSpec,
        digest: &berth_spec::Digest,
    ) -> Result<ResolvedImage, ActionError> {
        if let Some(img) = self.store.resolve(&spec.image).map_err(transient)?
            && img.manifest_digest == *digest
        {
            return Ok(img);
        }
        if let Some(pinned) = crate::reconcile::plan::pinned(&spec.image, digest)
            && let Some(img) = self.store.resolve(&pinned).map_err(transient)?
        {
            return Ok(img);
        }
        Err(ActionError::transient(format!(
            "image {} ({digest}) is not in the store",
            spec.image
        )))
    }

    fn create_new(&self, req: &Create) -> Result<(), ActionError> {
        let (name, spec) = (req.name.as_str(), &*req.spec);
        let image = self.image_for(spec, &req.image_digest)?;
        let mut rec = Record {
            version: record::RECORD_VERSION,
            id: IncarnationId::random(),
            phase: Phase::Creating,
            spec_hash: req.hash.to_string(),
            image: spec.image.to_string(),
            image_digest: req.image_digest.clone(),
            network: spec.network.clone(),
            ip: None,
            ip6: None,
            networks: Vec::new(),
            netns_of: None,
            ports: spec.extra.ports.clone(),
            restarts: 0,
            crash_streak: 0,
            boot_id: record::boot_id(),
            started_at: None,
            ending: Ending::OnItsOwn,
            image_health: image.config.healthcheck.as_ref().and_then(|h| h.to_check()),
        };
        rec.save_volatile(&self.layout, name)
            .map_err(|e| transient(format!("{name}: writing its record: {e}")))?;
        crashpoint::point("create.record");
        if let Err(e) = self.create_steps(name, spec, &mut rec, &image) {
            // Undo everything of this incarnation: nothing half-made stays behind.
            let _ = self.teardown(name, &rec.id);
            let _ = Record::delete(&self.layout, name);
            return Err(e);
        }
        self.record_update(name, req, &rec);
        if let Err(e) = self.store.mark_used(&spec.image) {
            tracing::debug!(container = name, "cannot mark image used: {e}");
        }
        self.watch_exit(name, &rec.id);
        if spec.network == NetworkMode::Bridge {
            self.refresh_hosts();
        }
        Ok(())
    }

    /// What this creation means for the container's update history.
    fn record_update(&self, name: &str, req: &Create, rec: &Record) {
        let mut st = record::load_update(&self.layout, name);
        match &req.update {
            UpdateMark::None => st.verifying = None,
            UpdateMark::Update { from } => {
                st.previous = Some(from.clone());
                // The tag moved on: what failed before may be tried again.
                st.rejected.clear();
                st.verifying = Some(Verifying {
                    digest: req.image_digest.clone(),
                    since: rec.started_at.unwrap_or_else(clock::now),
                    boot_id: rec.boot_id.clone(),
                });
            }
            UpdateMark::Rollback { rejected } => {
                st.rejected.insert(rejected.clone());
                st.verifying = None;
            }
        }
        st.last_digest = Some(req.image_digest.clone());
        st.last_hash = Some(req.hash.to_string());
        if let Err(e) = record::save_update(&self.layout, name, &st) {
            // The container runs; only its rollback bookkeeping is lost.
            tracing::warn!(container = name, "cannot record the update history: {e}");
        }
    }

    fn create_steps(
        &self,
        name: &str,
        spec: &ContainerSpec,
        rec: &mut Record,
        image: &crate::image::ResolvedImage,
    ) -> Result<(), ActionError> {
        let id = rec.id.clone();
        crate::runtime::sys::mark("agent-create");
        // Where the container's netns and /etc files will be is known before they exist: the
        // shim starts first (its cgroup migrations wait for an RCU grace period, ~10 ms after
        // idle) and the network is attached beside it; the shim then waits for `start`, which
        // also tells it where `[::1]` is relayed (the container's address is known only then).
        let bridged = spec.network == NetworkMode::Bridge && !spec.extra.networks.is_empty();
        let netns = match &spec.network {
            NetworkMode::Bridge if bridged => Some(self.layout.netns(name, &id)),
            NetworkMode::Container(of) => Some(self.sidecar_netns(of, rec)?),
            NetworkMode::Bridge | NetworkMode::None | NetworkMode::Host => None,
        };
        let etc_dir = record::etc_dir(&self.layout, name, &id);
        let paths = files::container_files(&etc_dir);
        let cfg = ContainerConfig::build(
            spec,
            id.clone(),
            image,
            &self.layout,
            Placement {
                netns,
                etc: EtcFiles {
                    hostname: Some(paths.hostname),
                    hosts: Some(paths.hosts),
                    resolv_conf: Some(paths.resolv_conf),
                },
                loopback6: bridged,
            },
        )
        .map_err(ActionError::permanent)?;
        let spawning = self.runtime.spawn(&cfg).map_err(transient)?;
        let (written, loopback6_to) = match self.attach_and_write_files(name, spec, rec, &etc_dir) {
            Ok(w) => w,
            Err(e) => {
                spawning.abort();
                return Err(e);
            }
        };
        crate::runtime::sys::mark("agent-network-ready");
        spawning.start(loopback6_to).map_err(transient)?;
        // Durable before the record says the container was made.
        written
            .sync()
            .map_err(|e| transient(format!("writing /etc files: {e}")))?;
        crashpoint::point("create.runtime");
        self.publish(name, &id, rec)?;
        rec.phase = Phase::Created;
        rec.boot_id = record::boot_id();
        rec.started_at = Some(clock::now());
        self.save(rec, name)?;
        crashpoint::point("create.started");
        Ok(())
    }

    /// A sidecar's netns: the current incarnation's of `of`, which must have a netns of its
    /// own (bridge or none) made already; the planner starts it after `of`.
    fn sidecar_netns(&self, of: &str, rec: &mut Record) -> Result<std::path::PathBuf, ActionError> {
        let target = Record::load(&self.layout, of)
            .map_err(transient)?
            .filter(|r| r.phase == Phase::Created)
            .ok_or_else(|| transient(format!("container {of} does not exist yet")))?;
        let path = self.layout.netns(of, &target.id);
        if !crate::network::netns::is_mounted(&path) {
            return Err(transient(format!(
                "container {of} has no network namespace ({})",
                path.display()
            )));
        }
        rec.ip = target.ip;
        rec.ip6 = target.ip6;
        rec.netns_of = Some(target.id.clone());
        Ok(path)
    }

    /// The container's networks (each joined in the netns at `layout.netns(name, id)`) and
    /// its /etc files, which name its address; with where `[::1]` is relayed.
    fn attach_and_write_files(
        &self,
        name: &str,
        spec: &ContainerSpec,
        rec: &mut Record,
        etc_dir: &std::path::Path,
    ) -> Result<(files::ContainerFiles, Option<IpAddr>), ActionError> {
        let id = rec.id.clone();
        let mut loopback6_to = None;
        if spec.network == NetworkMode::Bridge {
            // The leases name the incarnation, so a crash from here on finds the addresses
            // through them: the record learns them with the final save.
            let mut v6_of = Vec::new();
            let primary = self.primary(spec.extra.networks.iter().map(|j| j.name.as_str()));
            for (i, join) in spec.extra.networks.iter().enumerate() {
                let net = self.net(&join.name).ok_or_else(|| {
                    ActionError::permanent(format!(
                        "network {:?} is not declared in the agent config",
                        join.name
                    ))
                })?;
                let (ip4, ip6) = (join.ip.map(IpAddr::V4), join.ip6.map(IpAddr::V6));
                let att = if net.subnet6().is_some() {
                    net.attach_dual(name, &id, ip4, ip6, &Join::of(i, primary))
                } else {
                    // Single stack: the static address of the network's one family.
                    net.attach_as(name, &id, ip4.or(ip6), &Join::of(i, primary))
                }
                .map_err(transient)?;
                debug_assert_eq!(att.netns, self.layout.netns(name, &id));
                rec.networks.push((join.name.clone(), att.ip));
                v6_of.push(att.ip6.or(Some(att.ip).filter(IpAddr::is_ipv6)));
                if i == primary {
                    rec.ip = Some(att.ip);
                    rec.ip6 = att.ip6;
                }
            }
            loopback6_to = self.loopback6_target(rec, &v6_of);
        }
        crashpoint::point("create.network");
        let peers = self.peers_of(name, rec);
        let host_resolv = files::read_host_resolv();
        let hostname = spec.extra.hostname.as_deref().unwrap_or(name);
        let written = files::write_container_files(
            etc_dir,
            &ContainerNames {
                name: hostname,
                ip: rec.ip,
                peers: &peers,
                host_resolv: &host_resolv,
            },
        )
        .map_err(|e| transient(format!("writing /etc files: {e}")))?;
        Ok((written, loopback6_to))
    }
}
