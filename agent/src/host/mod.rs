//! The real [`Backend`] (and, in `images`, the real [`crate::operations::Operations`]): the
//! store, the runtime and the network of this host, composed.
//!
//! Runtime and network never see each other: they meet here, through a netns path. Each
//! container's current incarnation is described by its [`record::Record`], written before any
//! kernel object of it exists, so that after a crash at any instant [`Host::startup`] knows
//! what to take apart.

mod create;
pub mod doctor;
mod health;
mod images;
mod observe;
pub mod record;
mod sweep;

use crate::runtime::BundleDir;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_spec::model::{HealthCheck, NetworkMode, Resources};
use berth_spec::{Config, ImageSource};
use tokio::sync::mpsc;

use crate::backend::{ActionError, Backend, Keep, Notice, RemoteImage};
use crate::clock;
use crate::crashpoint;
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::names::{IncarnationId, Names};
use crate::network::files;
use crate::network::{Drift, Join, NetDef, Network, Watcher};
use crate::reconcile::health::CheckRun;
use crate::reconcile::model::{Ending, Observed, ObservedContainer};
use crate::reconcile::plan::Create;
use crate::reconcile::plan::{RemoveReason, StopCause};
use crate::registry::{RegistryClient, RegistrySettings};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::{Store, StoreError};
use record::{Phase, Record};

pub struct Host {
    config: Config,
    layout: Layout,
    store: Store,
    client: RegistryClient,
    runtime: Runtime,
    /// The default network (`[network]`).
    network: Arc<Network>,
    /// The named networks (`[networks.<name>]`), by name.
    named: Vec<Arc<Network>>,
    metrics: Option<Arc<Metrics>>,
    exits: Mutex<Option<(tokio::runtime::Handle, mpsc::UnboundedSender<Notice>)>>,
    /// The nftables drift watchers, one per network's table; dropping one stops its thread.
    drift: Mutex<Vec<Watcher>>,
    /// Serialises rewrites of the containers' /etc/hosts files.
    hosts: Mutex<()>,
    /// Shared by the actions that make or unmake kernel objects (create, start, stop, remove),
    /// exclusive for the resync: it lists records before objects and judges ports by what runs,
    /// so an action between the two would look like an orphan or a stale port.
    making: std::sync::RwLock<()>,
    /// The config file the agent read, passed on to `berth exec` for health checks.
    config_path: Option<std::path::PathBuf>,
    /// Started by the agent's `startup` (a command's host has none).
    grace: std::sync::OnceLock<Option<crate::runtime::cgroup::GraceStarter>>,
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
        let layout = Layout::new(config);
        // Private before anything is written under it (and an older install tightened).
        layout
            .secure()
            .map_err(|e| HostError::Store(crate::store::StoreError::io(&layout.state_dir, e)))?;
        let store = Store::open(&layout, &config.images)?;
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
        let defs = NetDef::from_config(config)?;
        let network = Network::open(names.clone(), &defs[0], &layout)?;
        let named = defs[1..]
            .iter()
            .map(|d| Network::open(names.clone(), d, &layout).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = Runtime::new(RuntimeConfig::new(layout.clone(), names));
        Ok(Host {
            config: config.clone(),
            layout,
            store,
            client: RegistryClient::new(settings),
            runtime,
            network: Arc::new(network),
            named,
            metrics,
            exits: Mutex::new(None),
            drift: Mutex::new(Vec::new()),
            config_path: None,
            hosts: Mutex::new(()),
            making: std::sync::RwLock::new(()),
            grace: std::sync::OnceLock::new(),
        })
    }

    /// The config file to hand to the `berth exec` children that run health checks.
    pub fn with_config_path(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.config_path = path;
        self
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Every network of the instance, the default one first.
    pub fn networks(&self) -> impl Iterator<Item = &Arc<Network>> {
        std::iter::once(&self.network).chain(self.named.iter())
    }

    /// The network of that name (`default` or a named one).
    pub fn net(&self, name: &str) -> Option<&Arc<Network>> {
        self.networks().find(|n| n.name() == name)
    }

    /// Which of a container's networks holds its default route and published ports: the
    /// first that is not internal (else the first).
    pub(crate) fn primary<'a>(&self, networks: impl IntoIterator<Item = &'a str>) -> usize {
        networks
            .into_iter()
            .position(|n| {
                self.net(n)
                    .is_some_and(|n| n.egress() == crate::network::Egress::Masquerade)
            })
            .unwrap_or(0)
    }

    /// The names a container finds in its /etc/hosts: every other container on any of its
    /// networks, at its addresses there (the first network's, for one on several; both
    /// families' on a dual-stack network); and its own IPv6 address, which the hosts file
    /// lists under its own name.
    fn peers_of(&self, name: &str, rec: &Record) -> Vec<files::HostEntry> {
        let mut out: Vec<files::HostEntry> = Vec::new();
        for (net, _) in rec.joined() {
            let Some(net) = self.net(&net) else { continue };
            let seen: Vec<String> = out.iter().map(|o| o.name.clone()).collect();
            for p in net.peers() {
                // Its own IPv6 address is its hosts file's too (its IPv4 one is `rec.ip`).
                let own_v6 = p.name == name && rec.ip6 == Some(p.ip);
                if own_v6 || (p.name != name && !seen.contains(&p.name)) {
                    out.push(p);
                }
            }
        }
        out
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
        keep(
            self.runtime
                .remove(name, id, BundleDir::Remove)
                .map_err(transient),
        );
        crashpoint::point("remove.runtime");
        // Every network, whichever it joined: detaching from one it is not on finds nothing to
        // do, and a record lost in a crash cannot leave a veth behind. Every veth goes before
        // the netns they share: once it is gone, the kernel deletes the remaining pairs in its
        // own time, and doctor (or a new container's veth of the same name) would meet them.
        for net in self.networks() {
            keep(net.delete_veth(name, id).map_err(transient));
        }
        for net in self.networks() {
            keep(net.detach(name, id).map_err(transient));
        }
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
            let _ = tx.send(Notice::Exited(name));
        });
    }

    /// Rewrites every bridge container's /etc/hosts (in place) to list the others.
    fn refresh_hosts(&self) {
        let _g = self.hosts.lock().expect("hosts lock");
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
            let others = self.peers_of(&name, &rec);
            if let Err(e) = files::update_hosts(&path, &name, rec.ip, &others) {
                tracing::warn!(container = %name, "cannot update /etc/hosts: {e}");
            }
        }
    }

    fn publish(&self, name: &str, id: &IncarnationId, rec: &Record) -> Result<(), ActionError> {
        if rec.ports.is_empty() {
            return Ok(());
        }
        // Ports go to the addresses on its primary network (`ip` holds that one's), and the
        // IPv6 ones to the first routed network with IPv6 when the primary has none.
        let joined = rec.joined();
        for index in self.publishing(&joined) {
            let (net, ip) = &joined[index];
            let Some(ip) = ip.or(rec.ip) else { continue };
            self.net(net)
                .ok_or_else(|| transient(format!("network {net:?} is not in the agent config")))?
                .publish(name, id, ip, &rec.ports)
                .map_err(transient)?;
        }
        Ok(())
    }

    /// Which of a container's networks publish its ports: the primary, and the first routed
    /// network with IPv6 when the primary has no IPv6 (the spec's "first network of each
    /// family that is not internal").
    /// Where a container's ports' `[::1]` relay connects to: its IPv6 address on a network
    /// that publishes its IPv6 ports (`v6_of`: its IPv6 address on each joined network), else
    /// its IPv4 one.
    pub(crate) fn loopback6_target(
        &self,
        rec: &record::Record,
        v6_of: &[Option<IpAddr>],
    ) -> Option<IpAddr> {
        self.publishing(&rec.joined())
            .into_iter()
            .find_map(|i| v6_of.get(i).copied().flatten())
            .or(rec.ip.filter(IpAddr::is_ipv4))
    }

    pub(crate) fn publishing(&self, joined: &[(String, Option<std::net::IpAddr>)]) -> Vec<usize> {
        let primary = self.primary(joined.iter().map(|(n, _)| n.as_str()));
        let mut out = vec![primary];
        let has_v6 = |n: &str| self.net(n).is_some_and(|n| n.has_ipv6());
        if !joined.get(primary).is_some_and(|(n, _)| has_v6(n))
            && let Some(i) = joined.iter().position(|(n, _)| {
                has_v6(n)
                    && self
                        .net(n)
                        .is_some_and(|n| n.egress() == crate::network::Egress::Masquerade)
            })
        {
            out.push(i);
        }
        out
    }
}

impl Host {
    /// A start-then-kill interrupted by a crash: if the new incarnation made it, the old one
    /// goes; if not, the old one is the container again.
    fn finish_replacements(&self) -> Result<(), ActionError> {
        for e in std::fs::read_dir(self.layout.containers_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let aside = record::old_path(&self.layout, &name);
            let Ok(Some(old)) = crate::fsutil::read_json::<Record>(&aside) else {
                continue;
            };
            match Record::load(&self.layout, &name) {
                Ok(Some(new)) if new.phase == Phase::Created => {
                    self.teardown(&name, &old.id)?;
                    crate::fsutil::remove_file_if_exists(&aside).map_err(transient)?;
                }
                _ => {
                    if let Ok(Some(new)) = Record::load(&self.layout, &name) {
                        self.teardown(&name, &new.id)?;
                    }
                    std::fs::rename(&aside, Record::path(&self.layout, &name))
                        .map_err(transient)?;
                }
            }
        }
        Ok(())
    }
}

impl Host {
    /// Puts a network's table back at once when another process changes it.
    fn watch_table(&self, net: &Arc<Network>, tx: &mpsc::UnboundedSender<Notice>) {
        let network = net.clone();
        let notes = tx.clone();
        match net.spawn_watcher(move |drift| {
            let what = match &drift {
                Drift::Changed {
                    by_name: Some(n),
                    by_pid,
                    ..
                } => format!("by {n} (pid {})", by_pid.unwrap_or(0)),
                Drift::Changed { .. } => "by another process".to_string(),
                Drift::Overrun => "(notifications lost)".to_string(),
            };
            match network.repair_rules() {
                Ok(true) => {
                    let _ = notes.send(Notice::Repaired(format!(
                        "nftables table {} restored after a change {what}",
                        network.table()
                    )));
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot restore the nftables table: {e}"),
            }
        }) {
            Ok(w) => self.drift.lock().expect("drift lock").push(w),
            Err(e) => tracing::warn!(
                "cannot watch the nftables table {} for changes: {e}",
                net.table()
            ),
        }
    }

    /// Named networks the config dropped go once no container uses them.
    fn retire_removed_networks(&self) {
        let declared: Vec<&str> = self.networks().map(|n| n.name()).collect();
        let names = Names::new(&self.config.instance);
        for note in crate::network::retire_removed(&names, &self.layout, &declared) {
            tracing::info!("{note}");
        }
    }

    fn resync_rest(&self, keep: &Keep) -> Result<(), ActionError> {
        self.retire_removed_networks();
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
}

impl Backend for Host {
    fn startup(&self) -> Result<(), ActionError> {
        self.grace.get_or_init(|| {
            crate::runtime::cgroup::GraceStarter::spawn(&self.runtime.config().cgroups)
        });
        for net in self.networks() {
            net.ensure_host()
                .map_err(|e| ActionError::permanent(format!("network {:?}: {e}", net.name())))?;
        }
        self.retire_removed_networks();
        // Nothing here stops the agent from starting: what cannot be cleaned up now (a
        // cgroup still busy) is retried by every resync's sweep, and running containers need
        // their agent more than a tidy state dir.
        if let Err(e) = self.finish_replacements() {
            tracing::warn!("finishing an interrupted replacement: {}", e.message);
        }
        for name in Record::names(&self.layout) {
            match Record::load(&self.layout, &name) {
                Ok(Some(mut rec)) if rec.phase == Phase::Creating => {
                    tracing::info!(container = %name, "removing an incarnation whose creation was interrupted");
                    rec.phase = Phase::Removing;
                    if let Err(e) = self.save(&rec, &name) {
                        tracing::warn!(container = %name, "{}", e.message);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(container = %name, "unreadable record: {e}"),
            }
        }
        // Finishes those removals and any cut short, then takes what no record explains.
        self.sweep();
        for w in self.warnings() {
            tracing::warn!("{w}");
        }
        Ok(())
    }

    fn observe(&self) -> Result<Observed, ActionError> {
        self.observe_all()
    }

    fn observe_one(&self, name: &str) -> Option<ObservedContainer> {
        self.observe_container(name)
    }

    fn pull(
        &self,
        image: &ImageSource,
        keep: Option<&Keep>,
    ) -> Result<berth_spec::Digest, ActionError> {
        let mut resolved = self.pull_once(image);
        if let (Err(StoreError::NoSpace { needed, .. }), Some(keep)) = (&resolved, keep) {
            // Room first: images nothing needs go (grace or not) until the download fits
            // above min_free; then one more try, which checks the space again before writing.
            let roots = crate::store::GcRoots {
                images: keep.images.clone(),
                digests: keep.digests.clone(),
                layer_dirs: self.live_layer_dirs(),
            };
            match self
                .store
                .gc_making_room(&roots, self.config.images.gc_grace, *needed)
            {
                Ok(r) if r.freed > 0 => {
                    tracing::info!(image = %image, freed = r.freed, "made room for a pull");
                    resolved = self.pull_once(image);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(image = %image, "making room for a pull: {e}"),
            }
        }
        crashpoint::point("pull.commit");
        match resolved {
            Ok(r) => Ok(r.manifest_digest),
            Err(e @ StoreError::NoSpace { .. }) => Err(ActionError::deferred(e.to_string())),
            Err(e) if e.is_transient() => Err(ActionError::transient(e.to_string())),
            Err(e) => Err(ActionError::permanent(e.to_string())),
        }
    }

    fn update_state(&self, name: &str) -> crate::reconcile::model::UpdateState {
        record::load_update(&self.layout, name)
    }

    fn check(&self, image: &ImageSource) -> Result<RemoteImage, ActionError> {
        let ImageSource::Registry(r) = image else {
            return Err(ActionError::permanent(format!(
                "{image} is not a registry image"
            )));
        };
        match self.store.check(&self.client, r) {
            Ok((digest, created)) => Ok(RemoteImage { digest, created }),
            Err(e) if e.is_transient() => Err(ActionError::transient(e.to_string())),
            Err(e) => Err(ActionError::permanent(e.to_string())),
        }
    }

    fn create(&self, req: &Create) -> Result<(), ActionError> {
        let _making = self.making.read().unwrap_or_else(|p| p.into_inner());
        self.create_incarnation(req)
    }

    fn mark_verified(&self, name: &str) -> Result<(), ActionError> {
        let mut st = record::load_update(&self.layout, name);
        st.verifying = None;
        record::save_update(&self.layout, name, &st).map_err(transient)
    }

    fn health_check(&self, name: &str, check: &HealthCheck) -> CheckRun {
        self.run_health_check(name, check)
    }

    fn start(&self, name: &str, id: &IncarnationId, crash_streak: u32) -> Result<(), ActionError> {
        let _making = self.making.read().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.record(name, id)?;
        let cfg = self.runtime.read_config(name, id).map_err(transient)?;
        // Clear the last run (keeping its upper dir: a restart keeps the filesystem).
        self.runtime
            .remove(name, id, BundleDir::Keep)
            .map_err(transient)?;
        // The shim makes its cgroups while the network is attached (see `create_steps`).
        let spawning = self.runtime.spawn(&cfg).map_err(transient)?;
        // After a reboot the netns and veths are gone; attach makes what is missing.
        let joined = rec.joined();
        let primary = self.primary(joined.iter().map(|(n, _)| n.as_str()));
        let mut v6_of = Vec::new();
        for (i, (net, ip)) in joined.into_iter().enumerate() {
            let attached = self
                .net(&net)
                .ok_or_else(|| transient(format!("network {net:?} is not in the agent config")))
                .and_then(|n| {
                    n.attach_as(name, id, ip, &Join::of(i, primary))
                        .map_err(transient)
                });
            match attached {
                Ok(att) => v6_of.push(att.ip6.or(Some(att.ip).filter(IpAddr::is_ipv6))),
                Err(e) => {
                    spawning.abort();
                    return Err(e);
                }
            }
        }
        let loopback6_to = match rec.netns_of {
            // A sidecar publishes nothing of its own.
            Some(_) => None,
            None => self.loopback6_target(&rec, &v6_of),
        };
        spawning.start(loopback6_to).map_err(transient)?;
        self.publish(name, id, &rec)?;
        let same_boot = rec.boot_id == record::boot_id();
        rec.restarts = if same_boot { rec.restarts + 1 } else { 0 };
        rec.crash_streak = crash_streak;
        rec.boot_id = record::boot_id();
        rec.started_at = Some(clock::now());
        rec.ending = Ending::OnItsOwn;
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

    fn stop(&self, name: &str, id: &IncarnationId, cause: StopCause) -> Result<(), ActionError> {
        let _making = self.making.read().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.record(name, id)?;
        rec.ending = match cause {
            StopCause::Asked => Ending::StoppedByBerth,
            StopCause::Unhealthy => Ending::OnItsOwn,
        };
        self.save(&rec, name)?;
        let timeout = self
            .runtime
            .read_config(name, id)
            .map(|c| c.stop_timeout)
            .unwrap_or(Duration::from_secs(10));
        self.runtime
            .stop(name, id, None, timeout)
            .map_err(transient)?;
        for net in self.networks() {
            net.unpublish(name, id).map_err(transient)?;
        }
        Ok(())
    }

    fn remove(&self, name: &str, id: &IncarnationId, why: RemoveReason) -> Result<(), ActionError> {
        let _making = self.making.read().unwrap_or_else(|p| p.into_inner());
        if let Ok(mut rec) = self.record(name, id) {
            // Said first and durably: a removal cut short must never leave a record that
            // looks like a startable container over a half-removed one.
            rec.ending = Ending::StoppedByBerth;
            rec.phase = Phase::Removing;
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

    fn watch(&self, tx: mpsc::UnboundedSender<Notice>) {
        // A flushed or deleted table (a firewall reload) is put back at once, not at the next
        // resync: published ports would be dark until then.
        for net in self.networks() {
            self.watch_table(net, &tx);
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime: exits are noticed at the next resync");
            return;
        };
        *self.exits.lock().expect("exits lock") = Some((handle, tx));
        let this_boot = record::boot_id();
        for name in Record::names(&self.layout) {
            // A record of another boot is history: its processes died with that boot, and
            // the container is started (and watched) anew if its spec wants it.
            if let Ok(Some(rec)) = Record::load(&self.layout, &name)
                && rec.phase == Phase::Created
                && rec.boot_id == this_boot
            {
                self.watch_exit(&name, &rec.id);
            }
        }
    }

    fn resync(&self, keep: &Keep) -> Result<(), ActionError> {
        // The whole resync judges what exists by the records as they are now, with no create
        // or removal half done: `keep` was taken before this ran, and a container made since
        // would otherwise look like an orphan to the network's repair.
        let _no_creates = self.making.write().unwrap_or_else(|p| p.into_inner());
        self.sweep_locked();
        let live: Vec<_> = self.known().into_iter().collect();
        for net in self.networks() {
            let expected = self.expected_networks(net.name(), &live);
            match net.reconcile(&expected, &live) {
                Ok(notes) => {
                    for n in notes {
                        tracing::warn!("network repaired: {n}");
                    }
                }
                Err(e) => tracing::warn!("network {:?} repair: {e}", net.name()),
            }
        }
        self.resync_rest(keep)
    }

    fn warnings(&self) -> Vec<String> {
        self.networks()
            .filter_map(|net| match net.check_forward_blocked() {
                Ok(msg) => msg,
                Err(e) => Some(format!(
                    "cannot check other firewalls for a forward drop on {}: {e}",
                    net.bridge()
                )),
            })
            .collect()
    }

    fn prepare_for_changes(&self) {
        if let Some(Some(g)) = self.grace.get() {
            g.poke();
        }
    }

    fn scan_imports(&self) -> Vec<String> {
        let owners = match crate::source::perms::TrustedOwners::resolve(&self.config.trusted_owners)
        {
            Ok(o) => o,
            Err(e) => {
                return vec![format!(
                    "cannot scan {}: {e}",
                    self.config.images_dir.display()
                )];
            }
        };
        match crate::store::scan_import_dir(&self.store, &self.config.images_dir, &owners) {
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
