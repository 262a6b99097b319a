//! The real [`Backend`]: the store, the runtime and the network of this host, composed.
//!
//! Runtime and network never see each other: they meet here, through a netns path. Each
//! container's current incarnation is described by its [`record::Record`], written before any
//! kernel object of it exists, so that after a crash at any instant [`Host::startup`] knows
//! what to take apart.

pub mod doctor;
pub mod record;
mod sweep;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_spec::model::{NetworkMode, PortMapping, Resources};
use berth_spec::{Config, ContainerSpec, ImageSource};
use tokio::sync::mpsc;

use crate::crashpoint;
use crate::daemon::clock;
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::names::{IncarnationId, Names};
use crate::network::Network;
use crate::network::files::{self, ContainerNames};
use crate::reconcile::backend::{ActionError, Backend, Keep};
use crate::reconcile::model::{
    ContainerInfo, Exit, HealthState, Millis, Observed, ObservedContainer, RunState,
};
use crate::reconcile::plan::RemoveReason;
use crate::registry::{RegistryClient, RegistrySettings};
use crate::runtime::{ContainerConfig, EtcFiles, Placement, Runtime, RuntimeConfig, Status};
use crate::store::{PullEvent, PullOptions, Store};
use record::{Phase, Record};

pub struct Host {
    config: Config,
    layout: Layout,
    store: Store,
    client: RegistryClient,
    runtime: Runtime,
    network: Network,
    metrics: Option<Arc<Metrics>>,
    exits: Mutex<Option<(tokio::runtime::Handle, mpsc::UnboundedSender<String>)>>,
    /// Serialises rewrites of the containers' /etc/hosts files.
    hosts: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("image store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("registry credentials: {0}")]
    Credentials(String),
    #[error("network: {0}")]
    Network(#[from] crate::network::NetError),
}

fn transient(e: impl std::fmt::Display) -> ActionError {
    ActionError::transient(e.to_string())
}

impl Host {
    /// Opens everything for `config`. The caller holds the state dir lock. Call it on a thread
    /// in the host's network namespace (any thread of the agent is).
    pub fn open(config: &Config, metrics: Option<Arc<Metrics>>) -> Result<Host, HostError> {
        let store = Store::open(&Layout::new(config), &config.images)?;
        Self::with_store(config, store, metrics)
    }

    /// For readers beside a running agent (`berth doctor` without `--fix`): the store is
    /// opened without its start-up cleanup. Only read through it.
    pub fn open_read_only(config: &Config) -> Result<Host, HostError> {
        let store = Store::open_read_only(&Layout::new(config), &config.images);
        Self::with_store(config, store, None)
    }

    fn with_store(
        config: &Config,
        store: Store,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Host, HostError> {
        let layout = Layout::new(config);
        let names = Names::new(&config.instance);
        let settings = RegistrySettings::from_config(config)
            .map_err(|e| HostError::Credentials(e.to_string()))?;
        let network = Network::new(names.clone(), &config.network, &layout)?;
        let runtime = Runtime::new(RuntimeConfig::new(layout.clone(), names));
        Ok(Host {
            config: config.clone(),
            layout,
            store,
            client: RegistryClient::new(settings),
            runtime,
            network,
            metrics,
            exits: Mutex::new(None),
            hosts: Mutex::new(()),
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn record(&self, name: &str, id: &IncarnationId) -> Result<Record, ActionError> {
        match Record::load(&self.layout, name) {
            Ok(Some(r)) if r.id == *id => Ok(r),
            Ok(_) => Err(ActionError::transient(format!(
                "{name}: no record of incarnation {id}"
            ))),
            Err(e) => Err(transient(e)),
        }
    }

    fn save(&self, rec: &Record, name: &str) -> Result<(), ActionError> {
        rec.save(&self.layout, name)
            .map_err(|e| transient(format!("{name}: writing its record: {e}")))
    }

    /// Takes an incarnation apart: process, cgroup, bundle, network, /etc files. Idempotent;
    /// keeps going past failures and reports the first.
    fn teardown(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError> {
        let mut first: Option<ActionError> = None;
        let mut keep = |r: Result<(), ActionError>| {
            if let Err(e) = r {
                tracing::warn!(container = name, "teardown: {e}");
                first.get_or_insert(e);
            }
        };
        let timeout = self
            .runtime
            .read_config(name, id)
            .map(|c| c.stop_timeout)
            .unwrap_or(Duration::from_secs(10));
        keep(
            self.runtime
                .stop(name, id, None, timeout)
                .map(|_| ())
                .map_err(transient),
        );
        keep(self.runtime.remove(name, id, false).map_err(transient));
        crashpoint::point("remove.runtime");
        keep(self.network.detach(name, id).map_err(transient));
        crashpoint::point("remove.network");
        keep(
            crate::fsutil::remove_dir_all_if_exists(&record::etc_dir(&self.layout, name, id))
                .map_err(transient),
        );
        first.map_or(Ok(()), Err)
    }

    /// Registers a pidfd watch that reports the container's exit to the loop.
    fn watch_exit(&self, name: &str, id: &IncarnationId) {
        let guard = self.exits.lock().expect("exits lock");
        let Some((handle, tx)) = guard.as_ref() else {
            return;
        };
        let watch = match self.runtime.exit_watch(name, id) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(container = name, "cannot watch for its exit: {e}");
                return;
            }
        };
        let (tx, name) = (tx.clone(), name.to_string());
        handle.spawn(async move {
            // SAFETY: an ExitWatch owns its pidfd and returns that same open fd for its lifetime.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    watch,
                    tokio::io::Interest::READABLE,
                )
            };
            match registered {
                Ok(fd) => {
                    let _ = fd.readable().await;
                }
                Err(e) => tracing::warn!(container = %name, "cannot register exit watch: {e}"),
            }
            let _ = tx.send(name);
        });
    }

    /// Rewrites every bridge container's /etc/hosts (in place) to list the others.
    fn refresh_hosts(&self) {
        let _g = self.hosts.lock().expect("hosts lock");
        let peers = self.network.peers();
        for name in Record::names(&self.layout) {
            let Ok(Some(rec)) = Record::load(&self.layout, &name) else {
                continue;
            };
            if rec.network != NetworkMode::Bridge {
                continue;
            }
            let path = record::etc_dir(&self.layout, &name, &rec.id).join("hosts");
            if !path.exists() {
                continue;
            }
            let others: Vec<_> = peers.iter().filter(|p| p.name != name).cloned().collect();
            if let Err(e) = files::update_hosts(&path, &name, rec.ip, &others) {
                tracing::warn!(container = %name, "cannot update /etc/hosts: {e}");
            }
        }
    }

    fn publish(&self, name: &str, id: &IncarnationId, rec: &Record) -> Result<(), ActionError> {
        match (rec.network, rec.ip) {
            (NetworkMode::Bridge, Some(ip)) if !rec.ports.is_empty() => self
                .network
                .publish(name, id, ip, &rec.ports)
                .map_err(transient),
            _ => Ok(()),
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
        let netns = match spec.network {
            NetworkMode::Bridge => {
                let att = self.network.attach(name, &id, spec.ip).map_err(transient)?;
                rec.ip = Some(att.ip);
                self.save(rec, name)?;
                Some(att.netns)
            }
            NetworkMode::None | NetworkMode::Host => None,
        };
        crashpoint::point("create.network");
        let peers: Vec<_> = self
            .network
            .peers()
            .into_iter()
            .filter(|p| p.name != name)
            .collect();
        let host_resolv = files::read_host_resolv();
        let hostname = spec.hostname.as_deref().unwrap_or(name);
        let files = files::write_container_files(
            &record::etc_dir(&self.layout, name, &id),
            &ContainerNames {
                name: hostname,
                ip: rec.ip,
                peers: &peers,
                host_resolv: &host_resolv,
            },
        )
        .map_err(|e| transient(format!("writing /etc files: {e}")))?;
        let etc = EtcFiles {
            hostname: Some(files.hostname),
            hosts: Some(files.hosts),
            resolv_conf: Some(files.resolv_conf),
        };
        let cfg = ContainerConfig::build(
            spec,
            id.clone(),
            image,
            &self.layout,
            Placement { netns, etc },
        )
        .map_err(ActionError::permanent)?;
        self.runtime.create(&cfg).map_err(transient)?;
        crashpoint::point("create.runtime");
        self.publish(name, &id, rec)?;
        rec.phase = Phase::Created;
        rec.boot_id = record::boot_id();
        rec.started_at = Some(clock::now());
        self.save(rec, name)?;
        crashpoint::point("create.started");
        Ok(())
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

impl Backend for Host {
    fn startup(&self) -> Result<(), ActionError> {
        self.network
            .ensure_host()
            .map_err(|e| ActionError::permanent(format!("network: {e}")))?;
        for name in Record::names(&self.layout) {
            match Record::load(&self.layout, &name) {
                Ok(Some(rec)) if rec.phase == Phase::Creating => {
                    tracing::info!(container = %name, "removing an incarnation whose creation was interrupted");
                    self.teardown(&name, &rec.id)?;
                    Record::delete(&self.layout, &name).map_err(transient)?;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(container = %name, "unreadable record: {e}"),
            }
        }
        self.sweep();
        if let Ok(Some(msg)) = self.network.check_forward_blocked() {
            tracing::warn!("{msg}");
        }
        Ok(())
    }

    fn observe(&self) -> Result<Observed, ActionError> {
        let mut o = Observed::default();
        for name in Record::names(&self.layout) {
            if let Some(c) = self.observe_one(&name) {
                o.containers.insert(name, c);
            }
        }
        for rec in self.store.list().map_err(transient)? {
            if let Ok(src) = ImageSource::parse(&rec.reference) {
                o.images.insert(src, rec.manifest_digest);
            }
        }
        Ok(o)
    }

    fn observe_one(&self, name: &str) -> Option<ObservedContainer> {
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
                        requested: rec.stopped_by_us,
                    };
                    (RunState::Exited(exit), None, Some(e.finished_at))
                }
                Status::Lost => {
                    let exit = Exit {
                        code: 137,
                        oom: false,
                        at: clock::now(),
                        requested: rec.stopped_by_us,
                    };
                    (RunState::Exited(exit), None, c.finished_at)
                }
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
            spec_hash: rec.spec_hash.clone(),
            image_digest: rec.image_digest.clone(),
            run,
            restarts: if this_boot { rec.restarts } else { 0 },
            crash_streak: if this_boot { rec.crash_streak } else { 0 },
            started_at: rec.started_at.filter(|_| this_boot),
            start_failure: None,
            health: HealthState::None,
            resources,
            info: ContainerInfo {
                pid,
                ip: rec.ip,
                ports: rec.ports.iter().map(port_text).collect(),
                since: since.map(rfc3339),
            },
        })
    }

    fn pull(&self, image: &ImageSource) -> Result<String, ActionError> {
        let resolved = match image {
            ImageSource::Registry(r) => {
                let metrics = self.metrics.clone();
                let progress = move |e: &PullEvent<'_>| {
                    if let PullEvent::Bytes { n, .. } = e {
                        crashpoint::point("pull.blob");
                        if let Some(m) = &metrics {
                            m.pull_bytes.inc_by(*n);
                        }
                    }
                };
                self.store
                    .pull(&self.client, r, &PullOptions::default(), &progress)
            }
            _ => self.store.import_source(image),
        };
        crashpoint::point("pull.commit");
        match resolved {
            Ok(r) => Ok(r.manifest_digest),
            Err(e) if e.is_transient() => Err(ActionError::transient(e.to_string())),
            Err(e) => Err(ActionError::permanent(e.to_string())),
        }
    }

    fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        hash: &str,
        image_digest: &str,
    ) -> Result<(), ActionError> {
        let image = self
            .store
            .resolve(&spec.image)
            .map_err(transient)?
            .ok_or_else(|| {
                ActionError::transient(format!("image {} is not in the store", spec.image))
            })?;
        if image.manifest_digest != image_digest {
            return Err(ActionError::transient(format!(
                "image {} changed while planning",
                spec.image
            )));
        }
        let mut rec = Record {
            version: record::RECORD_VERSION,
            id: IncarnationId::random(),
            phase: Phase::Creating,
            spec_hash: hash.to_string(),
            image: spec.image.to_string(),
            image_digest: image_digest.to_string(),
            network: spec.network,
            ip: None,
            ports: spec.ports.clone(),
            restarts: 0,
            crash_streak: 0,
            boot_id: record::boot_id(),
            started_at: None,
            stopped_by_us: false,
        };
        self.save(&rec, name)?;
        crashpoint::point("create.record");
        if let Err(e) = self.create_steps(name, spec, &mut rec, &image) {
            // Undo everything of this incarnation: nothing half-made stays behind.
            let _ = self.teardown(name, &rec.id);
            let _ = Record::delete(&self.layout, name);
            return Err(e);
        }
        if let Err(e) = self.store.mark_used(&spec.image) {
            tracing::debug!(container = name, "cannot mark image used: {e}");
        }
        self.watch_exit(name, &rec.id);
        if spec.network == NetworkMode::Bridge {
            self.refresh_hosts();
        }
        Ok(())
    }

    fn start(&self, name: &str, id: &IncarnationId, crash_streak: u32) -> Result<(), ActionError> {
        let mut rec = self.record(name, id)?;
        let cfg = self.runtime.read_config(name, id).map_err(transient)?;
        if rec.network == NetworkMode::Bridge {
            // After a reboot the netns and veth are gone; attach makes what is missing.
            self.network.attach(name, id, rec.ip).map_err(transient)?;
        }
        // Clear the last run (keeping its upper dir: a restart keeps the filesystem).
        self.runtime.remove(name, id, true).map_err(transient)?;
        self.runtime.create(&cfg).map_err(transient)?;
        self.publish(name, id, &rec)?;
        let same_boot = rec.boot_id == record::boot_id();
        rec.restarts = if same_boot { rec.restarts + 1 } else { 0 };
        rec.crash_streak = crash_streak;
        rec.boot_id = record::boot_id();
        rec.started_at = Some(clock::now());
        rec.stopped_by_us = false;
        self.save(&rec, name)?;
        self.watch_exit(name, id);
        Ok(())
    }

    fn pause(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError> {
        self.runtime.pause(name, id).map_err(transient)
    }

    fn resume(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError> {
        self.runtime.resume(name, id).map_err(transient)
    }

    fn stop(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError> {
        let mut rec = self.record(name, id)?;
        rec.stopped_by_us = true;
        self.save(&rec, name)?;
        let timeout = self
            .runtime
            .read_config(name, id)
            .map(|c| c.stop_timeout)
            .unwrap_or(Duration::from_secs(10));
        self.runtime
            .stop(name, id, None, timeout)
            .map_err(transient)?;
        self.network.unpublish(name, id).map_err(transient)
    }

    fn remove(&self, name: &str, id: &IncarnationId, why: RemoveReason) -> Result<(), ActionError> {
        if let Ok(mut rec) = self.record(name, id) {
            rec.stopped_by_us = true;
            self.save(&rec, name)?;
        }
        self.teardown(name, id)?;
        Record::delete(&self.layout, name).map_err(transient)?;
        crashpoint::point("remove.record");
        if why == RemoveReason::Pruned {
            crate::fsutil::remove_dir_all_if_exists(&self.layout.container_dir(name))
                .map_err(transient)?;
        }
        self.refresh_hosts();
        Ok(())
    }

    fn update_resources(
        &self,
        name: &str,
        id: &IncarnationId,
        resources: &Resources,
    ) -> Result<(), ActionError> {
        self.runtime
            .update_resources(name, id, resources)
            .map_err(transient)?;
        // Keep the bundle's config in step: it is what a restart (and `observe`) reads.
        let mut cfg = self.runtime.read_config(name, id).map_err(transient)?;
        cfg.resources = *resources;
        let path = self.runtime.bundle(name, id).config();
        crate::fsutil::atomic_write_json(&path, &cfg).map_err(transient)
    }

    fn watch_exits(&self, tx: mpsc::UnboundedSender<String>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime: exits are noticed at the next resync");
            return;
        };
        *self.exits.lock().expect("exits lock") = Some((handle, tx));
        for name in Record::names(&self.layout) {
            if let Ok(Some(rec)) = Record::load(&self.layout, &name)
                && rec.phase == Phase::Created
            {
                self.watch_exit(&name, &rec.id);
            }
        }
    }

    fn resync(&self, keep: &Keep) -> Result<(), ActionError> {
        self.sweep();
        let notes = self
            .network
            .reconcile(&self.expected_networks(&keep.containers));
        match notes {
            Ok(notes) => {
                for n in notes {
                    tracing::warn!("network repaired: {n}");
                }
            }
            Err(e) => tracing::warn!("network repair: {e}"),
        }
        self.refresh_hosts();
        let roots = crate::store::GcRoots {
            images: keep.images.clone(),
            digests: keep.digests.clone(),
            layer_dirs: self.live_layer_dirs(),
        };
        match self.store.gc(&roots, self.config.images.gc_grace) {
            Ok(r) => tracing::debug!("image gc: {r:?}"),
            Err(e) => tracing::warn!("image gc: {e}"),
        }
        Ok(())
    }

    fn scan_imports(&self) -> Vec<String> {
        match crate::store::scan_import_dir(&self.store, &self.config.images_dir) {
            Ok(outcomes) => outcomes
                .into_iter()
                .map(|o| match o.result {
                    Ok(refs) => format!("imported {}: {}", o.path.display(), refs.join(", ")),
                    Err(e) => format!("cannot import {}: {e}", o.path.display()),
                })
                .collect(),
            Err(e) => vec![format!(
                "cannot scan {}: {e}",
                self.config.images_dir.display()
            )],
        }
    }
}
