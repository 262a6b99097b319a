//! Container networking: a bridge, a netns and veth per container, IPAM, name files, and
//! published ports and NAT in berth's own nftables table, all programmed through netlink.
//!
//! # Layout
//! - [`Network`]: the API the reconciler calls. Every operation is idempotent (re-running it
//!   after a crash at any point is fine) and blocking: call it from `spawn_blocking`. Namespace
//!   switches happen on dedicated threads ([`netns`]); the netlink sockets opened by
//!   [`Network::new`] stay in the host's netns whichever thread uses them.
//! - [`ipam`] (pure) and [`leases`] (on disk): which address a container gets.
//! - [`files`]: /etc/hosts, /etc/resolv.conf, /etc/hostname for the container.
//! - [`nft`]: the table, its batches, the drift watcher, the forward-chain check.
//! - [`rtnl`], `nl`, [`netns`], [`sysctl`]: the kernel edges.
//!
//! # Kernel objects (all named in [`crate::names`])
//! | object | name | removed by |
//! |---|---|---|
//! | bridge | config `network.bridge`, gateway = first host of `network.subnet` | [`Network::remove_host`] |
//! | netns | `<run_dir>/netns/<name>-<id>` | [`Network::detach`] |
//! | veth | `bth<tag><id8>` on the bridge, alias `berth:<instance>:<name>:<id>`; `eth0` inside | [`Network::detach`] |
//! | lease | `<state_dir>/network/leases/<ip>` (symlink to `<id>:<name>`) | [`Network::detach`] |
//! | nft elements | in `inet <instance>` maps, comment `<name>-<id>` | [`Network::unpublish`] |
//!
//! A named network (`[networks.<name>]`, see [`NetDef`]) is a [`Network`] of its own: its
//! bridge ([`crate::names::network_bridge`] unless the config names one), its subnet and leases
//! under `<state_dir>/network/named/<name>/`, its table `inet <instance>-<name>` whose forward
//! chain keeps the instance's other bridges out, and veths tagged with instance and network
//! ([`Names::for_network`]). A container on several networks has one veth per network in its
//! one netns (`eth0`, `eth1`, ...: [`Join`]); the first that is not internal holds the default route.

mod attach;
pub mod error;
pub mod files;
pub mod ipam;
pub mod leases;
pub mod netns;
pub mod nft;
pub(crate) mod nl;
mod repair;
pub mod rtnl;
pub mod sysctl;

use std::fs::File;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use berth_spec::config::{Config, DEFAULT_NETWORK, NetworkConfig};
use berth_spec::model::{PortMapping, Protocol};

pub use attach::{Attachment, Join, Route};
pub use error::{NetError, TeardownErrors};
pub use files::HostEntry;
pub use ipam::Subnet;
pub use leases::{Ipam, Lease};
pub use nft::elements::PortElement;
pub use nft::ruleset::{Egress, Nat66};
pub use nft::watch::{Drift, Watcher};
pub use repair::{ExpectedMode, ExpectedNet, NetObserved, OwnedLink, TableState};

use crate::layout::Layout;
use crate::names::{IncarnationId, Names};
use nft::elements as el;
use nft::ruleset::Ruleset;
use nft::socket::NftSocket;
use rtnl::Rtnl;

/// MTU of a bridge berth creates (an existing bridge keeps its own, and veths follow it).
pub const DEFAULT_MTU: u32 = 1500;

/// A Linux bridge takes at most this many ports (`BR_MAX_PORTS` is 1024 and port number 0 is
/// reserved), so at most this many containers per bridge; the next attach fails with
/// [`NetError::BridgeFull`].
pub const MAX_BRIDGE_PORTS: usize = 1023;

/// `<state_dir>/network/named/<network>/network.json`: a named network's bridge and subnet.
const KEPT_FILE: &str = "network.json";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KeptNetwork {
    bridge: String,
    subnet: String,
    #[serde(default)]
    subnet6: Option<String>,
}

/// Removes the named networks the config no longer declares, each once no container holds a
/// lease on it: its table, its bridge, its state dir. Returns what it did or left, for the
/// logs. Call in the host's netns (at start and at every resync).
pub fn retire_removed(names: &Names, layout: &Layout, declared: &[&str]) -> Vec<String> {
    let dir = layout.network_dir().join("named");
    let mut notes = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if declared.contains(&name.as_str()) {
            continue;
        }
        let kept: Option<KeptNetwork> = crate::fsutil::read_json(&entry.path().join(KEPT_FILE))
            .ok()
            .flatten();
        let Some(kept) = kept else { continue };
        let def = NetDef {
            name: name.clone(),
            bridge: kept.bridge,
            subnet: kept.subnet,
            subnet6: kept.subnet6,
            egress: Egress::Masquerade,
            nat66: Nat66::Masquerade,
            isolate_from: Vec::new(),
        };
        let net = match Network::open(names.clone(), &def, layout) {
            Ok(n) => n,
            Err(e) => {
                notes.push(format!("network {name:?} (removed from the config): {e}"));
                continue;
            }
        };
        let users: Vec<String> = net.ipam.leases().into_iter().map(|l| l.name).collect();
        if !users.is_empty() {
            notes.push(format!(
                "network {name:?} is no longer in the config; kept while {} use it",
                users.join(", ")
            ));
            continue;
        }
        match net.remove_host() {
            Ok(()) => {
                let _ = crate::fsutil::remove_dir_all_if_exists(&entry.path());
                notes.push(format!(
                    "network {name:?} is no longer in the config: removed bridge {} and table inet {}",
                    net.bridge,
                    net.table()
                ));
            }
            Err(e) => notes.push(format!("network {name:?}: {e}")),
        }
    }
    notes
}

/// One network of the instance as the agent builds it: the default one (`[network]`) or a named
/// one (`[networks.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDef {
    /// `default` or the name in `[networks.<name>]`.
    pub name: String,
    pub bridge: String,
    /// IPv4, or IPv6 on an IPv6-only network: the subnet whose leases carry the ports.
    pub subnet: String,
    /// The IPv6 subnet of a dual-stack network.
    pub subnet6: Option<String>,
    pub egress: Egress,
    pub nat66: Nat66,
    /// The bridges of the instance's other networks, kept apart from this one. Empty for a
    /// lone default network (its table stays as before named networks).
    pub isolate_from: Vec<String>,
}

impl NetDef {
    /// Every network of `config`, the default one first, with derived bridge names and each
    /// isolated from all the others. Two networks with one bridge (a derived name meeting
    /// another) are refused, naming the network.
    pub fn from_config(config: &Config) -> Result<Vec<NetDef>, NetError> {
        let mut defs: Vec<NetDef> = Vec::new();
        for d in config.network_defs() {
            let bridge = d
                .bridge
                .clone()
                .unwrap_or_else(|| crate::names::network_bridge(&config.instance, &d.name));
            let (subnet, subnet6) = match (d.subnet.clone(), d.subnet6.clone()) {
                (Some(v4), v6) => (v4, v6),
                (None, Some(v6)) => (v6, None),
                (None, None) => {
                    return Err(NetError::Config(format!(
                        "network {:?} has neither subnet nor subnet6",
                        d.name
                    )));
                }
            };
            if let Some(other) = defs.iter().find(|o| o.bridge == bridge) {
                return Err(NetError::Config(format!(
                    "networks {:?} and {:?} would share bridge {bridge}; set networks.{}.bridge",
                    other.name, d.name, d.name
                )));
            }
            defs.push(NetDef {
                name: d.name,
                bridge,
                subnet,
                subnet6,
                egress: if d.internal {
                    Egress::Internal
                } else {
                    Egress::Masquerade
                },
                nat66: nat66(d.masquerade6),
                isolate_from: Vec::new(),
            });
        }
        if defs.len() > 1 {
            let bridges: Vec<String> = defs.iter().map(|d| d.bridge.clone()).collect();
            for d in &mut defs {
                d.isolate_from = bridges
                    .iter()
                    .filter(|b| **b != d.bridge)
                    .cloned()
                    .collect();
            }
        }
        Ok(defs)
    }

    /// The default network of `config` alone, as [`Network::new`] takes it.
    pub fn default_of(config: &NetworkConfig) -> NetDef {
        NetDef {
            name: DEFAULT_NETWORK.to_string(),
            bridge: config.bridge.clone(),
            subnet: config.subnet.clone(),
            subnet6: config.subnet6.clone(),
            egress: if config.internal {
                Egress::Internal
            } else {
                Egress::Masquerade
            },
            nat66: nat66(config.masquerade6),
            isolate_from: Vec::new(),
        }
    }

    fn is_default(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }
}

fn nat66(masquerade6: bool) -> Nat66 {
    if masquerade6 {
        Nat66::Masquerade
    } else {
        Nat66::Routed
    }
}

/// The IPv6 half of a dual-stack network: its subnet and leases
/// (`<network_dir>/v6/leases/<ip>`), one per container beside its IPv4 lease. The ports stay
/// recorded in the IPv4 lease.
#[derive(Debug)]
struct Stack6 {
    subnet: Subnet,
    ipam: Ipam,
}

impl Network {
    /// Whether this is the default network (`[network]`), which owns the containers' netns.
    pub(crate) fn is_default(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }
}

/// One instance's container network.
pub struct Network {
    /// `default` or the network's name in `[networks.<name>]`.
    name: String,
    names: Names,
    layout: Layout,
    bridge: String,
    /// IPv4, or IPv6 on an IPv6-only network; [`Network::ipam`] leases from it.
    subnet: Subnet,
    /// A dual-stack network's IPv6 subnet and leases.
    v6: Option<Stack6>,
    ruleset: Ruleset,
    host_ns: File,
    rtnl: Mutex<Rtnl>,
    /// Also serialises every change to the table together with the lease records behind it.
    nft: Mutex<NftSocket>,
    ipam: Ipam,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("instance", &self.names.instance())
            .field("bridge", &self.bridge)
            .field("subnet", &self.subnet)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// Validates the config and opens berth's netlink sockets in the calling thread's network
    /// namespace, which becomes "the host" for everything this value does. Changes nothing in the
    /// kernel (it creates the lease directories).
    pub fn new(names: Names, config: &NetworkConfig, layout: &Layout) -> Result<Network, NetError> {
        Self::open(names, &NetDef::default_of(config), layout)
    }

    /// As [`Network::new`], for any network of the instance: `names` are the instance's, and a
    /// named network's own are derived here.
    pub fn open(names: Names, def: &NetDef, layout: &Layout) -> Result<Network, NetError> {
        let (names, network_dir) = if def.is_default() {
            (names, layout.network_dir())
        } else {
            berth_spec::names::validate_network_name(&def.name).map_err(NetError::Config)?;
            (
                names.for_network(&def.name),
                layout.network_dir().join("named").join(&def.name),
            )
        };
        validate_bridge_name(&def.bridge)?;
        let subnet = Subnet::parse(&def.subnet).map_err(NetError::Config)?;
        let subnet6 = def
            .subnet6
            .as_deref()
            .map(|s| ipam::Subnet::parse_family(s, ipam::Family::V6))
            .transpose()
            .map_err(NetError::Config)?;
        let host_ns =
            netns::current().map_err(|e| NetError::io("open", "/proc/thread-self/ns/net", e))?;
        let rtnl = Rtnl::open().map_err(|e| NetError::netlink("open", "rtnetlink socket", e))?;
        let table = names.nft_table().to_string();
        let nft = NftSocket::open().map_err(|e| NetError::Nft {
            op: "open socket",
            table: table.clone(),
            source: e,
        })?;
        let ipam = Ipam::open(&network_dir, subnet)?;
        let v6 = match subnet6 {
            Some(s6) => Some(Stack6 {
                subnet: s6,
                ipam: Ipam::open(&network_dir.join("v6"), s6)?,
            }),
            None => None,
        };
        if !def.is_default() {
            // What a later agent needs to remove this network once the config drops it: its
            // bridge may be named by hand, and its subnet opens its leases.
            let kept = KeptNetwork {
                bridge: def.bridge.clone(),
                subnet: def.subnet.clone(),
                subnet6: def.subnet6.clone(),
            };
            crate::fsutil::atomic_write_json(&network_dir.join(KEPT_FILE), &kept)
                .map_err(|e| NetError::io("write", network_dir.join(KEPT_FILE), e))?;
        }
        Ok(Network {
            ruleset: Ruleset {
                table,
                bridge: def.bridge.clone(),
                subnet,
                subnet6,
                egress: def.egress,
                nat66: def.nat66,
                isolate_from: def.isolate_from.clone(),
            },
            name: def.name.clone(),
            names,
            layout: layout.clone(),
            bridge: def.bridge.clone(),
            subnet,
            v6,
            host_ns,
            rtnl: Mutex::new(rtnl),
            nft: Mutex::new(nft),
            ipam,
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// `default`, or the name of `[networks.<name>]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn egress(&self) -> Egress {
        self.ruleset.egress
    }

    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }

    pub fn gateway(&self) -> IpAddr {
        self.subnet.gateway()
    }

    /// The IPv6 subnet of a dual-stack network (an IPv6-only network's is [`Network::subnet`]).
    pub fn subnet6(&self) -> Option<&Subnet> {
        self.v6.as_ref().map(|v| &v.subnet)
    }

    /// Every subnet of the network: the primary one, then a dual-stack network's IPv6 one.
    pub fn subnets(&self) -> Vec<Subnet> {
        std::iter::once(self.subnet)
            .chain(self.subnet6().copied())
            .collect()
    }

    /// Whether the network carries IPv6 (dual-stack or IPv6-only).
    pub fn has_ipv6(&self) -> bool {
        self.stack() != sysctl::Stack::V4
    }

    fn stack(&self) -> sysctl::Stack {
        match (self.subnet.family(), self.v6.is_some()) {
            (ipam::Family::V6, _) => sysctl::Stack::V6,
            (ipam::Family::V4, true) => sysctl::Stack::Dual,
            (ipam::Family::V4, false) => sysctl::Stack::V4,
        }
    }

    /// A container's addresses on this network: its lease, and on a dual-stack network its
    /// IPv6 lease when it holds one.
    pub fn addresses_of(&self, name: &str, id: &IncarnationId, ip: IpAddr) -> Vec<IpAddr> {
        let mut out = vec![ip];
        if let Some(l) = self.v6.as_ref().and_then(|v| v.ipam.lease_of(name, id)) {
            out.push(l.ip);
        }
        out
    }

    /// The IPv6 lease store of a dual-stack network.
    pub fn ipam6(&self) -> Option<&Ipam> {
        self.v6.as_ref().map(|v| &v.ipam)
    }

    pub fn table(&self) -> &str {
        &self.ruleset.table
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    fn rtnl(&self) -> MutexGuard<'_, Rtnl> {
        self.rtnl.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nft(&self) -> MutexGuard<'_, NftSocket> {
        self.nft.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nft_err(&self, op: &'static str, source: std::io::Error) -> NetError {
        NetError::Nft {
            op,
            table: self.ruleset.table.clone(),
            source,
        }
    }

    /// Makes the host side ready: the bridge up with its gateway address, forwarding and
    /// route_localnet on (see [`sysctl::bridge_settings`]: `ip_forward` is host-wide), and
    /// berth's table with the ports recorded in the leases. Idempotent; call at start.
    pub fn ensure_host(&self) -> Result<(), NetError> {
        let existing = self
            .rtnl()
            .link(&self.bridge)
            .map_err(|e| NetError::netlink("get", &self.bridge, e))?;
        self.check_subnet_is_free(existing.map(|l| l.index))?;
        self.ensure_bridge()?;
        let settings = sysctl::bridge_settings(&self.bridge, self.stack());
        netns::in_netns(&self.host_ns, || sysctl::apply(&settings))
            .and_then(|r| r)
            .map_err(|e| NetError::io("write", "/proc/sys/net", e))?;
        self.repair_rules()?;
        Ok(())
    }

    fn ensure_bridge(&self) -> Result<rtnl::Link, NetError> {
        let mut rt = self.rtnl();
        let link = match rt
            .link(&self.bridge)
            .map_err(|e| NetError::netlink("get", &self.bridge, e))?
        {
            Some(l) => l,
            None => {
                match rt.create_bridge(&self.bridge, DEFAULT_MTU, random_mac()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(NetError::netlink("create bridge", &self.bridge, e)),
                }
                rt.link(&self.bridge)
                    .map_err(|e| NetError::netlink("get", &self.bridge, e))?
                    .ok_or_else(|| {
                        NetError::netlink(
                            "get",
                            &self.bridge,
                            std::io::Error::from_raw_os_error(libc::ENODEV),
                        )
                    })?
            }
        };
        if link.kind.as_deref() != Some("bridge") {
            return Err(NetError::Config(format!(
                "link {} exists and is not a bridge ({}); choose another network.bridge",
                self.bridge,
                link.kind.as_deref().unwrap_or("unknown kind")
            )));
        }
        rt.set_up(link.index, None)
            .map_err(|e| NetError::netlink("set up", &self.bridge, e))?;
        for subnet in self.subnets() {
            rt.add_address(link.index, subnet.gateway(), subnet.prefix_len())
                .map_err(|e| NetError::netlink("add address", &self.bridge, e))?;
        }
        Ok(link)
    }

    /// Refuses a subnet that holds another interface's network: berth's route would shadow it.
    /// A broader network around it (a 10.0.0.0/8 LAN) is fine: the more specific route wins.
    fn check_subnet_is_free(&self, bridge_index: Option<u32>) -> Result<(), NetError> {
        let mut rt = self.rtnl();
        let addrs = rt
            .addresses(None)
            .map_err(|e| NetError::netlink("list", "addresses", e))?;
        for (index, ip, len) in addrs {
            let Some(subnet) = self.subnets().into_iter().find(|s| {
                Some(index) != bridge_index
                    && len >= s.prefix_len()
                    && ipam::prefixes_overlap(ip, len, s)
            }) else {
                continue;
            };
            let link = rt
                .links()
                .ok()
                .and_then(|ls| ls.into_iter().find(|l| l.index == index))
                .map(|l| l.name)
                .unwrap_or_else(|| format!("link {index}"));
            return Err(NetError::Config(format!(
                "subnet {subnet} overlaps address {ip}/{len} on {link}; choose another network.subnet (network {:?})",
                self.name
            )));
        }
        Ok(())
    }

    /// Publishes a container's ports: records them in its lease, then adds its map elements in
    /// one batch. Another container's port is refused, naming it.
    pub fn publish(
        &self,
        name: &str,
        id: &IncarnationId,
        ip: IpAddr,
        ports: &[PortMapping],
    ) -> Result<(), NetError> {
        let owner = Names::container_key(name, id);
        let elements = el::elements_for(&owner, &self.addresses_of(name, id, ip), ports);
        let mut nft = self.nft();
        for lease in self.ipam.leases() {
            if lease.name == name && &lease.id == id {
                continue;
            }
            for p in &lease.ports {
                if let Some(mine) = ports.iter().find(|m| clashes(m, p)) {
                    return Err(NetError::PortTaken {
                        name: name.to_string(),
                        port: mine.host,
                        protocol: mine.protocol,
                        holder: lease.name.clone(),
                    });
                }
            }
        }
        let previous = self
            .ipam
            .lease_of(name, id)
            .map(|l| l.ports)
            .unwrap_or_default();
        self.ipam.set_ports(name, id, ports)?;
        let mut batch = Vec::new();
        let wanted: std::collections::BTreeSet<&PortMapping> = ports.iter().collect();
        if previous.iter().any(|p| !wanted.contains(p)) {
            let keep: std::collections::BTreeSet<&PortElement> = elements.iter().collect();
            let stale =
                self.present_elements(&mut nft, |e| e.owner == owner && !keep.contains(e))?;
            batch.extend(el::delete_elements(self.table(), &stale));
        }
        batch.extend(el::add_elements(self.table(), &elements));
        let applied = nft.apply(&batch);
        if applied.is_err() {
            // Nothing changed in the kernel: the lease must not claim it did (a repair would
            // keep trying to add the refused ports).
            let _ = self.ipam.set_ports(name, id, &previous);
        }
        match applied {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    nft::socket::errno(&e),
                    Some(libc::EEXIST) | Some(libc::EBUSY)
                ) =>
            {
                // A key held by an element no lease explains (made by hand, or left by a crash):
                // name its owner from the table.
                let keys: Vec<_> = elements.iter().map(|e| e.key_tuple()).collect();
                let holder = self
                    .present_elements(&mut nft, |p| {
                        p.owner != owner && keys.contains(&p.key_tuple())
                    })?
                    .into_iter()
                    .next();
                let (_, protocol, port) = holder
                    .as_ref()
                    .map(|h| h.key_tuple())
                    .or_else(|| elements.first().map(|e| e.key_tuple()))
                    .unwrap_or((None, Protocol::Tcp, 0));
                Err(NetError::PortTaken {
                    name: name.to_string(),
                    port,
                    protocol,
                    holder: holder
                        .map(|h| h.owner)
                        .filter(|o| !o.is_empty())
                        .unwrap_or_else(|| "an element without owner".into()),
                })
            }
            Err(e) => Err(self.nft_err("publish ports", e)),
        }
    }

    /// Removes a container's published ports (it keeps its address while stopped). Records the
    /// change in the lease first, so that a crash in between never brings the ports back.
    pub fn unpublish(&self, name: &str, id: &IncarnationId) -> Result<(), NetError> {
        let owner = Names::container_key(name, id);
        let mut nft = self.nft();
        let recorded = match self.ipam.lease_of(name, id) {
            Some(lease) => {
                self.ipam.set_ports(name, id, &[])?;
                el::elements_for(&owner, &self.addresses_of(name, id, lease.ip), &lease.ports)
            }
            None => Vec::new(),
        };
        // Fast path: delete what the lease recorded; if any is missing (deleted by hand, or
        // never added before a crash), delete what is really there instead.
        if !recorded.is_empty()
            && nft
                .apply(&el::delete_elements(self.table(), &recorded))
                .is_ok()
        {
            return Ok(());
        }
        let present = self.present_elements(&mut nft, |e| e.owner == owner)?;
        nft.apply(&el::delete_elements(self.table(), &present))
            .map_err(|e| self.nft_err("unpublish ports", e))
    }

    /// The elements in berth's maps that `keep` selects; a missing table has none.
    fn present_elements(
        &self,
        nft: &mut NftSocket,
        keep: impl Fn(&PortElement) -> bool,
    ) -> Result<Vec<PortElement>, NetError> {
        let mut out = Vec::new();
        for map in self.ruleset.map_names() {
            match nft.elements(self.table(), map) {
                Ok(elements) => out.extend(elements.into_iter().filter(|e| keep(e))),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.nft_err("list elements", e)),
            }
        }
        Ok(out)
    }

    /// Every container with an address on the bridge, for the hosts files: on a dual-stack
    /// network, its IPv4 and its IPv6 address.
    pub fn peers(&self) -> Vec<HostEntry> {
        let v6 = self.v6.iter().flat_map(|v| v.ipam.leases());
        self.ipam
            .leases()
            .into_iter()
            .chain(v6)
            .map(|l| HostEntry {
                name: l.name,
                ip: l.ip,
            })
            .collect()
    }

    /// Starts the drift watcher: `on_drift` runs (on the watcher's thread) whenever another
    /// process deletes anything in berth's table. Hand it [`Network::repair_rules`] or a
    /// message to the reconciler. Stops when the [`Watcher`] is dropped.
    pub fn spawn_watcher(
        &self,
        on_drift: impl FnMut(Drift) + Send + 'static,
    ) -> Result<Watcher, NetError> {
        nft::watch::spawn(&self.host_ns, self.ruleset.table.clone(), on_drift)
            .map_err(|e| self.nft_err("watch", e))
    }

    /// `Some(message with the one-line fix)` when another table's forward chain would drop the
    /// bridge's traffic (firewalld, ufw, iptables `FORWARD` policy drop).
    pub fn check_forward_blocked(&self) -> Result<Option<String>, NetError> {
        let mut nft = self.nft();
        let chains = nft.chains().map_err(|e| self.nft_err("list chains", e))?;
        let found = nft::forward::blockers(self.table(), &self.bridge, &chains, |c| {
            nft.rules(c.family, &c.table, Some(&c.name))
                .unwrap_or_default()
        });
        Ok(found
            .first()
            .map(|b| nft::forward::message(&self.bridge, b)))
    }

    /// Removes berth's table and the bridge (uninstall, tests). Containers must be gone first.
    pub fn remove_host(&self) -> Result<(), TeardownErrors> {
        let mut errors = Vec::new();
        let batch = self.ruleset.delete();
        match self.nft().apply(&batch) {
            Err(e) if nft::socket::errno(&e) != Some(libc::ENOENT) => {
                errors.push(self.nft_err("delete table", e))
            }
            _ => {}
        }
        if let Err(e) = self.rtnl().delete_link(&self.bridge) {
            errors.push(NetError::netlink("delete", &self.bridge, e));
        }
        TeardownErrors(errors).into_result()
    }
}

/// Whether two published ports want the same host port: same protocol and port, and addresses
/// that overlap (`None` is every address).
fn clashes(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host == b.host
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

fn validate_bridge_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(NetError::Config(format!(
            "invalid network.bridge {name:?}: 1-15 characters of a-z, A-Z, 0-9, '-', '_', '.'"
        )))
    }
}

/// A random locally administered unicast MAC address.
fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    getrandom::fill(&mut mac).expect("getrandom");
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Network>();
        shareable::<Watcher>();
    }

    #[test]
    fn network_defs_from_config() {
        use berth_spec::config::NamedNetworkConfig;
        let mut c = Config {
            instance: "btabc".into(),
            ..Config::default()
        };
        let net = |subnet: &str| NamedNetworkConfig {
            subnet: Some(subnet.into()),
            ..Default::default()
        };
        // A lone default network: no isolation, its table as before.
        let defs = NetDef::from_config(&c).unwrap();
        assert_eq!(defs, vec![NetDef::default_of(&c.network)]);
        c.networks.insert("backend".into(), net("10.1.0.0/24"));
        c.networks.insert(
            "vault".into(),
            NamedNetworkConfig {
                internal: true,
                ..net("10.2.0.0/24")
            },
        );
        let defs = NetDef::from_config(&c).unwrap();
        let bridges: Vec<&str> = defs.iter().map(|d| d.bridge.as_str()).collect();
        assert_eq!(bridges, ["berth0", "btabc-backend", "btabc-vault"]);
        assert_eq!(defs[1].isolate_from, ["berth0", "btabc-vault"]);
        assert_eq!(defs[0].isolate_from, ["btabc-backend", "btabc-vault"]);
        assert_eq!(
            (defs[1].egress, defs[2].egress),
            (Egress::Masquerade, Egress::Internal)
        );
        // A bridge named by hand that another network derives: refused, naming both.
        c.networks.insert(
            "other".into(),
            NamedNetworkConfig {
                bridge: Some("btabc-backend".into()),
                ..net("10.3.0.0/24")
            },
        );
        let err = NetDef::from_config(&c).unwrap_err().to_string();
        assert!(
            err.contains("\"backend\" and \"other\" would share bridge btabc-backend"),
            "{err}"
        );
        c.networks.remove("other");
        // IPv6: dual stack keeps IPv4 as the primary subnet; an IPv6-only network's primary
        // subnet is its IPv6 one.
        c.networks.insert(
            "v6only".into(),
            NamedNetworkConfig {
                subnet6: Some("fd00:b::/64".into()),
                ..Default::default()
            },
        );
        c.networks.insert(
            "dual".into(),
            NamedNetworkConfig {
                subnet6: Some("fd00:d::/64".into()),
                masquerade6: false,
                ..net("10.4.0.0/24")
            },
        );
        let defs = NetDef::from_config(&c).unwrap();
        let find = |n: &str| defs.iter().find(|d| d.name == n).unwrap().clone();
        let v6only = find("v6only");
        assert_eq!(
            (v6only.subnet.as_str(), v6only.subnet6),
            ("fd00:b::/64", None)
        );
        let dual = find("dual");
        assert_eq!(
            (dual.subnet.as_str(), dual.subnet6.as_deref(), dual.nat66),
            ("10.4.0.0/24", Some("fd00:d::/64"), Nat66::Routed)
        );
        assert_eq!(find("backend").nat66, Nat66::Masquerade);
    }

    #[test]
    fn bridge_names() {
        assert!(validate_bridge_name("berth0").is_ok());
        assert!(validate_bridge_name("br-test.1").is_ok());
        for bad in ["", "a/b", "sixteen-chars-xx", "..", "a b"] {
            assert!(validate_bridge_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_clashes() {
        let p = |ip: Option<&str>, port, protocol| PortMapping {
            host_ip: ip.map(|s| s.parse().unwrap()),
            host: port,
            container: 80,
            protocol,
        };
        assert!(clashes(
            &p(None, 80, Protocol::Tcp),
            &p(Some("127.0.0.1"), 80, Protocol::Tcp)
        ));
        assert!(!clashes(
            &p(None, 80, Protocol::Tcp),
            &p(None, 80, Protocol::Udp)
        ));
        assert!(!clashes(
            &p(Some("127.0.0.1"), 80, Protocol::Tcp),
            &p(Some("192.0.2.1"), 80, Protocol::Tcp)
        ));
        let mac = random_mac();
        assert_eq!(mac[0] & 0x03, 0x02);
    }
}
