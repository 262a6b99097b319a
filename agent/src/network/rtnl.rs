//! Links, addresses and routes over a blocking rtnetlink socket.
//!
//! Why not the rtnetlink crate: it is async (one tokio reactor per netns thread, and its
//! namespace helper forks), while every namespace-bound step here runs on a short-lived OS thread
//! (see [`super::netns`]). The message types come from netlink-packet-route, the same split
//! netavark made for speed and size; only the request/ack loop (`network::nl`) is ours.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::nl::NlSocket;

/// What berth reads back about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// For a bridge port: whether hairpin mode is on.
    pub hairpin: Option<bool>,
}

/// The host end of a veth pair whose other end is born inside a container's netns.
#[derive(Debug)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub alias: &'a str,
    pub master: u32,
    pub mtu: u32,
    pub peer_name: &'a str,
    pub peer_mac: [u8; 6],
    pub peer_netns: BorrowedFd<'a>,
}

/// Changes to an existing link (it is also brought up).
#[derive(Debug, Default, Clone)]
pub struct LinkChange<'a> {
    pub mtu: Option<u32>,
    pub master: Option<u32>,
    pub alias: Option<&'a str>,
}

pub struct Rtnl {
    nl: NlSocket,
}

impl Rtnl {
    /// Opens a socket in the calling thread's netns; it stays there whichever thread uses it.
    pub fn open() -> io::Result<Rtnl> {
        Ok(Rtnl {
            nl: NlSocket::open(NETLINK_ROUTE)?,
        })
    }

    fn call(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.nl.request(msg, flags)
    }

    /// The link called `name`, if any.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.call(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(to_link(&m)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.call(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(to_link(m)),
                _ => None,
            })
            .collect())
    }

    pub fn create_bridge(&mut self, name: &str, mtu: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        // A fixed address: otherwise the bridge takes the lowest of its ports' addresses and
        // changes it as containers come and go, which breaks their neighbour caches.
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.call(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Creates a veth pair, host end up on `master`, the peer created directly in another netns.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> io::Result<()> {
        // Not up yet: the kernel configures the peer before pairing it (ENOTCONN).
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.to_string()));
        peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
        peer.attributes
            .push(LinkAttribute::Address(spec.peer_mac.to_vec()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(spec.peer_netns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(spec.name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
        msg.attributes.push(LinkAttribute::Controller(spec.master));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.call(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        self.configure_port(spec.name, spec.alias)
    }

    /// Sets a bridge port's alias and hairpin mode, which the kernel ignores at creation.
    ///
    /// Hairpin: with br_netfilter active (common, and the default in every new netns once the
    /// module is loaded), a container reaching its own published port has its DNATed packet
    /// bridged back out of the port it came in on, which a bridge only does in hairpin mode.
    pub fn configure_port(&mut self, name: &str, alias: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::PortData(
                InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)]),
            )]));
        self.call(RouteNetlinkMessage::NewLink(msg), 0).map(drop)
    }

    /// Brings a link up, optionally setting its MTU.
    pub fn set_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        self.set_link(
            index,
            &LinkChange {
                mtu,
                ..LinkChange::default()
            },
        )
    }

    /// Brings a link up and applies `change`.
    pub fn set_link(&mut self, index: u32, change: &LinkChange<'_>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = change.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = change.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(alias) = change.alias {
            msg.attributes
                .push(LinkAttribute::IfAlias(alias.to_string()));
        }
        self.call(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Deletes a link by name. Returns false when it did not exist.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.call(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds an address: IPv4 with its broadcast, IPv6 without duplicate address detection
    /// (`IFA_F_NODAD`: the address is usable at once instead of tentative for a second or
    /// more; IPAM already keeps it unique on the bridge). An address already there is fine.
    pub fn add_address(&mut self, index: u32, ip: IpAddr, prefix_len: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        match ip {
            IpAddr::V4(v4) => {
                msg.header.family = AddressFamily::Inet;
                let host_mask = if prefix_len >= 32 {
                    0
                } else {
                    u32::MAX >> prefix_len
                };
                if prefix_len < 31 {
                    msg.attributes
                        .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                            u32::from(v4) | host_mask,
                        )));
                }
            }
            IpAddr::V6(_) => {
                msg.header.family = AddressFamily::Inet6;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        match self.call(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Every address (of one link if given): link index, address, prefix length.
    pub fn addresses(&mut self, index: Option<u32>) -> io::Result<Vec<(u32, IpAddr, u8)>> {
        let replies = self.call(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(m) if index.is_none_or(|i| i == m.header.index) => {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(ip) => {
                            Some((m.header.index, *ip, m.header.prefix_len))
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `default via gateway dev oif`; one already there is fine.
    pub fn add_default_route(&mut self, gateway: IpAddr, oif: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(gateway);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        msg.attributes.push(RouteAttribute::Oif(oif));
        match self.call(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Whether a default route via `gateway` exists.
    pub fn has_default_route(&mut self, gateway: IpAddr) -> io::Result<bool> {
        let mut req = RouteMessage::default();
        req.header.address_family = family_of(gateway);
        let replies = self.call(RouteNetlinkMessage::GetRoute(req), NLM_F_DUMP)?;
        Ok(replies.iter().any(|r| {
            match r {
            RouteNetlinkMessage::NewRoute(m) => {
                m.header.destination_prefix_length == 0
                    && m.header.table == RouteHeader::RT_TABLE_MAIN
                    && m.attributes.iter().any(|a| {
                        matches!(a, RouteAttribute::Gateway(g) if *g == RouteAddress::from(gateway))
                    })
            }
            _ => false,
        }
        }))
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn to_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        alias: None,
        kind: None,
        master: None,
        mtu: None,
        up: m.header.flags.contains(LinkFlags::Up),
        hairpin: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::IfAlias(s) => link.alias = Some(s.clone()),
            LinkAttribute::Controller(i) => link.master = Some(*i),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                if let InfoBridgePort::HairpinMode(h) = p {
                                    link.hairpin = Some(*h);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}
