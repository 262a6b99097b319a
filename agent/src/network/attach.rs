//! One container's wiring: its netns, the veth pair into it, its address and default route;
//! and taking all of that down again.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use super::error::{NetError, TeardownErrors};
use super::rtnl::{Link, LinkChange, Rtnl, VethSpec};
use super::{Network, netns};
use crate::names::IncarnationId;

/// The container's side of its network, for the runtime: the netns to join, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub netns: PathBuf,
    /// The address of the network's primary family (IPv4, or IPv6 on an IPv6-only network).
    pub ip: IpAddr,
    pub gateway: IpAddr,
    pub prefix_len: u8,
    /// On a dual-stack network, the IPv6 address too.
    pub ip6: Option<IpAddr>,
    pub mtu: u32,
}

/// One address a container's interface gets, with its subnet's gateway and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Addr {
    ip: IpAddr,
    gateway: IpAddr,
    prefix_len: u8,
}

/// How a container's veth of one network looks inside its netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// `eth<n>` for the container's n-th network.
    pub ifname: String,
    pub route: Route,
}

/// Which routes a container gets through a network's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The default route via the network's gateway (the container's first network).
    Default,
    /// The network's own subnet only (the connected route its address brings).
    Subnet,
}

impl Join {
    /// The container's `n`-th network (from 0): `eth<n>`, the default route on the first.
    pub fn nth(n: usize) -> Join {
        Self::of(n, 0)
    }

    /// The `n`-th of a container's networks whose `primary`-th holds the default route.
    pub fn of(n: usize, primary: usize) -> Join {
        Join {
            ifname: format!("eth{n}"),
            route: if n == primary {
                Route::Default
            } else {
                Route::Subnet
            },
        }
    }
}

impl Network {
    /// Gives `name`/`id` its network on the bridge: a lease first (durable before anything uses
    /// it), then the netns at `layout.netns(name, id)` with lo up, a veth pair whose container
    /// end is born inside it as `eth0`, the address, the default route via the gateway, and the
    /// bridge's MTU. Idempotent: missing pieces are made, present ones kept. If this call leased
    /// a new address and then fails, it undoes what it made.
    pub fn attach(
        &self,
        name: &str,
        id: &IncarnationId,
        static_ip: Option<IpAddr>,
    ) -> Result<Attachment, NetError> {
        self.attach_as(name, id, static_ip, &Join::nth(0))
    }

    /// [`Network::attach`] for a container's `join.ifname` interface (its n-th network).
    /// `static_ip` of the network's primary family; see [`Network::attach_dual`] for both.
    pub fn attach_as(
        &self,
        name: &str,
        id: &IncarnationId,
        static_ip: Option<IpAddr>,
        join: &Join,
    ) -> Result<Attachment, NetError> {
        let (ip, ip6) = match static_ip {
            Some(ip @ IpAddr::V6(_)) if self.v6.is_some() => (None, Some(ip)),
            ip => (ip, None),
        };
        self.attach_dual(name, id, ip, ip6, join)
    }

    /// [`Network::attach_as`] with a static address of each family (either may be `None`). On a
    /// dual-stack network the container gets an IPv6 lease besides its IPv4 one.
    pub fn attach_dual(
        &self,
        name: &str,
        id: &IncarnationId,
        static_ip: Option<IpAddr>,
        static_ip6: Option<IpAddr>,
        join: &Join,
    ) -> Result<Attachment, NetError> {
        let bridge = self.bridge_link()?;
        let had_lease = self.ipam.lease_of(name, id).is_some();
        let lease = self.ipam.allocate(name, id, static_ip)?;
        let ip6 = match &self.v6 {
            Some(v6) => match v6.ipam.allocate(name, id, static_ip6) {
                Ok(l) => Some(l.ip),
                Err(e) => {
                    if !had_lease {
                        let _ = self.ipam.release(name, id);
                    }
                    return Err(e);
                }
            },
            None => None,
        };
        match self.wire(name, id, &bridge, lease.ip, ip6, join) {
            Ok(a) => Ok(a),
            Err(e) => {
                if !had_lease {
                    // Best effort: what is left is an orphan the next sweep removes.
                    let _ = self.detach(name, id);
                }
                Err(e)
            }
        }
    }

    /// `network = "none"`: a netns with only lo, up. Returns its path.
    pub fn attach_none(&self, name: &str, id: &IncarnationId) -> Result<PathBuf, NetError> {
        let path = self.layout.netns(name, id);
        let created =
            netns::create(&path, lo_up).map_err(|e| NetError::io("create netns", &path, e))?;
        if !created {
            // It existed: a crash may have come between its mount and bringing lo up.
            let ns = File::open(&path).map_err(|e| NetError::io("open netns", &path, e))?;
            netns::in_netns(&ns, lo_up)
                .and_then(|r| r)
                .map_err(|e| NetError::netlink("set lo up in", path.display().to_string(), e))?;
        }
        Ok(path)
    }

    pub(super) fn bridge_link(&self) -> Result<Link, NetError> {
        self.rtnl()
            .link(&self.bridge)
            .map_err(|e| NetError::netlink("get", &self.bridge, e))?
            .ok_or_else(|| {
                NetError::Config(format!(
                    "bridge {} does not exist (ensure_host makes it)",
                    self.bridge
                ))
            })
    }

    /// Everything after the lease; each step idempotent.
    pub(super) fn wire(
        &self,
        name: &str,
        id: &IncarnationId,
        bridge: &Link,
        ip: IpAddr,
        ip6: Option<IpAddr>,
        join: &Join,
    ) -> Result<Attachment, NetError> {
        let path = self.layout.netns(name, id);
        netns::create(&path, lo_up).map_err(|e| NetError::io("create netns", &path, e))?;
        let ns = File::open(&path).map_err(|e| NetError::io("open netns", &path, e))?;
        let mtu = bridge.mtu.unwrap_or(super::DEFAULT_MTU);
        let gateway = self.subnet.gateway();
        let prefix_len = self.subnet.prefix_len();
        let mut addrs = vec![Addr {
            ip,
            gateway,
            prefix_len,
        }];
        if let (Some(ip6), Some(s6)) = (ip6, self.subnet6()) {
            addrs.push(Addr {
                ip: ip6,
                gateway: s6.gateway(),
                prefix_len: s6.prefix_len(),
            });
        }
        // Two rounds at most: a host end whose peer is not in this netns is made again.
        for _ in 0..2 {
            self.ensure_host_end(name, id, bridge, &ns, ip, mtu, &join.ifname)?;
            let inside = netns::in_netns(&ns, || {
                configure_inside(&join.ifname, &addrs, mtu, join.route)
            })
            .and_then(|r| r)
            .map_err(|e| {
                NetError::netlink(
                    "configure interface in",
                    format!("{} ({})", path.display(), join.ifname),
                    e,
                )
            })?;
            if inside {
                return Ok(Attachment {
                    netns: path,
                    ip,
                    gateway,
                    prefix_len,
                    ip6,
                    mtu,
                });
            }
            let veth = self.names.veth(id);
            self.rtnl()
                .delete_link(&veth)
                .map_err(|e| NetError::netlink("delete", &veth, e))?;
        }
        Err(NetError::netlink(
            "create veth into",
            path.display().to_string(),
            io::Error::other(format!(
                "{} did not appear in the container's netns",
                join.ifname
            )),
        ))
    }

    /// The host end: made with its peer inside `ns` if missing, else put back on the bridge, up,
    /// with its alias.
    // The container's identity, its netns and the link's three settings are all needed at
    // once; a struct for one private call site would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn ensure_host_end(
        &self,
        name: &str,
        id: &IncarnationId,
        bridge: &Link,
        ns: &File,
        ip: IpAddr,
        mtu: u32,
        ifname: &str,
    ) -> Result<(), NetError> {
        use std::os::fd::AsFd;
        let veth = self.names.veth(id);
        let alias = self.names.link_alias(name, id);
        let mut rt = self.rtnl();
        match rt
            .link(&veth)
            .map_err(|e| NetError::netlink("get", &veth, e))?
        {
            Some(link) => {
                if let Some(other) = link.alias.as_deref().filter(|a| *a != alias) {
                    return Err(NetError::Config(format!(
                        "link {veth} belongs to {other:?}, not to container {name}"
                    )));
                }
                if link.master != Some(bridge.index) || !link.up {
                    rt.set_link(
                        link.index,
                        &LinkChange {
                            mtu: Some(mtu),
                            master: Some(bridge.index),
                            alias: Some(&alias),
                        },
                    )
                    .map_err(|e| NetError::netlink("repair", &veth, e))?;
                }
                if link.alias.is_none() || link.hairpin != Some(true) {
                    rt.configure_port(&veth, &alias)
                        .map_err(|e| NetError::netlink("configure port", &veth, e))?;
                }
                Ok(())
            }
            None => rt
                .create_veth(&VethSpec {
                    name: &veth,
                    alias: &alias,
                    master: bridge.index,
                    mtu,
                    peer_name: ifname,
                    peer_mac: mac_for(ip),
                    peer_netns: ns.as_fd(),
                })
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EXFULL) => NetError::BridgeFull {
                        bridge: self.bridge.clone(),
                        name: name.to_string(),
                    },
                    _ => NetError::netlink("create veth", &veth, e),
                }),
        }
    }

    /// Takes a container's network down: its published ports, veth, netns and lease, in that
    /// order (the address is released last, once nothing uses it). Keeps going past failures and
    /// returns them all; whatever is already gone counts as done.
    pub fn detach(&self, name: &str, id: &IncarnationId) -> Result<(), TeardownErrors> {
        let mut errors = Vec::new();
        if let Err(e) = self.unpublish(name, id) {
            errors.push(e);
        }
        if let Err(e) = self.delete_veth(name, id) {
            errors.push(e);
        }
        let path = self.layout.netns(name, id);
        if let Err(e) = netns::remove(&path) {
            errors.push(NetError::io("remove netns", &path, e));
        }
        if let Err(e) = self.ipam.release(name, id) {
            errors.push(e);
        }
        if let Some(v6) = &self.v6
            && let Err(e) = v6.ipam.release(name, id)
        {
            errors.push(e);
        }
        TeardownErrors(errors).into_result()
    }

    /// Deletes the host end of a container's veth (which takes the peer with it), unless the
    /// link's alias says it is someone else's.
    pub(crate) fn delete_veth(&self, name: &str, id: &IncarnationId) -> Result<(), NetError> {
        let veth = self.names.veth(id);
        let alias = self.names.link_alias(name, id);
        let mut rt = self.rtnl();
        match rt
            .link(&veth)
            .map_err(|e| NetError::netlink("get", &veth, e))?
        {
            Some(link) if link.alias.as_deref().is_none_or(|a| a == alias) => {
                rt.delete_link(&veth)
                    .map_err(|e| NetError::netlink("delete", &veth, e))?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Brings lo up in the calling thread's netns.
pub(super) fn lo_up() -> io::Result<()> {
    let mut rt = Rtnl::open()?;
    let lo = rt
        .link("lo")?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    rt.set_up(lo.index, None)
}

/// Inside the container's netns: lo and the interface up, the addresses, a default route per
/// family when asked. Returns false when the interface is missing (its host end must be made
/// again). IPv6 addresses are added without duplicate address detection (IPAM keeps them
/// unique), and `accept_dad` is turned off on the interface so that its link-local address is
/// not tentative either: the container can talk at once.
fn configure_inside(ifname: &str, addrs: &[Addr], mtu: u32, route: Route) -> io::Result<bool> {
    let mut rt = Rtnl::open()?;
    let Some(eth0) = rt.link(ifname)? else {
        return Ok(false);
    };
    if let Some(lo) = rt.link("lo")?
        && !lo.up
    {
        rt.set_up(lo.index, None)?;
    }
    if addrs.iter().any(|a| a.ip.is_ipv6()) {
        super::sysctl::apply(&[super::sysctl::Setting {
            path: format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad").into(),
            value: "0",
        }])?;
    }
    for a in addrs {
        rt.add_address(eth0.index, a.ip, a.prefix_len)?;
    }
    if !eth0.up || eth0.mtu != Some(mtu) {
        rt.set_up(eth0.index, Some(mtu))?;
    }
    if route == Route::Default {
        for a in addrs {
            rt.add_default_route(a.gateway, eth0.index)?;
        }
    }
    Ok(true)
}

/// The container end's MAC, derived from its address (as Docker does): a recreated container
/// that gets its address back is reachable at once, without waiting for neighbour caches that
/// still hold the old incarnation's MAC to expire.
/// For an IPv6-only container, from the address's last 32 bits.
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    let o = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let b = v6.octets();
            [b[12], b[13], b[14], b[15]]
        }
    };
    [0x02, 0x62, o[0], o[1], o[2], o[3]]
}
