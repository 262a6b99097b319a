//! Observing what this instance owns in the kernel and on disk, removing what no container
//! explains, and putting back what was deleted behind berth's back.

use std::collections::BTreeSet;
use std::net::IpAddr;

use berth_spec::model::PortMapping;

use super::error::{NetError, TeardownErrors};
use super::leases::Lease;
use super::nft::elements::{self as el, PortElement};
use super::{Network, netns};
use crate::names::{IncarnationId, Names};

/// A link carrying this instance's name shape or alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLink {
    pub ifname: String,
    /// From the alias; `None` when the alias is missing (a crash between create and alias).
    pub owner: Option<(String, IncarnationId)>,
}

/// The state of berth's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    Missing,
    /// Built by another version or config, or some fixed rule is missing.
    Stale(String),
    Intact,
}

/// Everything of this instance's network that exists now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetObserved {
    pub bridge_present: bool,
    pub links: Vec<OwnedLink>,
    pub netns: Vec<(String, IncarnationId)>,
    pub leases: Vec<Lease>,
    /// A dual-stack network's IPv6 leases.
    pub leases6: Vec<Lease>,
    pub elements: Vec<PortElement>,
    pub table: TableState,
}

/// A container that should have networking, as the reconciler knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNet {
    pub name: String,
    pub id: IncarnationId,
    pub mode: ExpectedMode,
    /// Its netns existed in this boot, so a missing one is drift worth a note; a container
    /// that last ran in an earlier boot lost it with that boot.
    pub made_this_boot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedMode {
    /// On the bridge at `ip` through interface `join`, publishing `ports` (empty while
    /// stopped).
    Bridge {
        ip: IpAddr,
        ports: Vec<PortMapping>,
        join: super::Join,
    },
    /// `network = "none"`: a netns with lo only.
    Isolated,
}

impl Network {
    pub fn observe(&self) -> Result<NetObserved, NetError> {
        self.ipam.reload()?;
        let mut rt = self.rtnl();
        let all = rt
            .links()
            .map_err(|e| NetError::netlink("list", "links", e))?;
        drop(rt);
        let bridge_present = all.iter().any(|l| l.name == self.bridge);
        let links = all
            .into_iter()
            .filter_map(|l| {
                let owner = l
                    .alias
                    .as_deref()
                    .and_then(|a| self.names.parse_link_alias(a));
                (owner.is_some() || (l.alias.is_none() && self.names.is_own_veth(&l.name)))
                    .then_some(OwnedLink {
                        ifname: l.name,
                        owner,
                    })
            })
            .collect();
        let netns = netns::list(&self.layout.netns_dir())
            .map_err(|e| NetError::io("list", self.layout.netns_dir(), e))?
            .into_iter()
            .map(|(n, id, _)| (n, id))
            .collect();
        let mut nft = self.nft();
        let table = self.table_state(&mut nft)?;
        let elements = self.present_elements(&mut nft, |_| true)?;
        Ok(NetObserved {
            bridge_present,
            links,
            netns,
            leases: self.ipam.leases(),
            leases6: match self.ipam6() {
                Some(ipam6) => {
                    ipam6.reload()?;
                    ipam6.leases()
                }
                None => Vec::new(),
            },
            elements,
            table,
        })
    }

    fn table_state(&self, nft: &mut super::NftSocket) -> Result<TableState, NetError> {
        let Some(table) = nft
            .table(self.table())
            .map_err(|e| self.nft_err("get table", e))?
        else {
            return Ok(TableState::Missing);
        };
        let want = self.ruleset.version_comment();
        if table.comment.as_deref() != Some(want.as_str()) {
            return Ok(TableState::Stale(format!(
                "table comment {:?}, want {want:?}",
                table.comment
            )));
        }
        let rules = nft
            .rules(
                netlink_packet_netfilter::NetfilterProtoFamily::Inet,
                self.table(),
                None,
            )
            .map_err(|e| self.nft_err("list rules", e))?;
        // Per chain, the fixed rules in order (the order of the chains in a dump may vary).
        let mut have: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in rules {
            have.entry(r.chain)
                .or_default()
                .push(r.comment.unwrap_or_default());
        }
        let mut want: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (chain, comment) in self.ruleset.expected_rules() {
            want.entry(chain.to_string())
                .or_default()
                .push(comment.to_string());
        }
        if have != want {
            let total: usize = want.values().map(Vec::len).sum();
            let intact: usize = want
                .iter()
                .map(|(c, w)| have.get(c).filter(|h| *h == w).map_or(0, |_| w.len()))
                .sum();
            return Ok(TableState::Stale(format!(
                "{intact} of {total} fixed rules in place"
            )));
        }
        Ok(TableState::Intact)
    }

    /// Makes the table hold the fixed chains and exactly `desired`: rebuilt whole when its fixed
    /// part is missing or stale, else only the differing elements, in one batch. Returns whether
    /// anything changed.
    fn sync_table(&self, desired: &[PortElement]) -> Result<bool, NetError> {
        let mut nft = self.nft();
        if self.table_state(&mut nft)? != TableState::Intact {
            nft.apply(&self.ruleset.rebuild(desired))
                .map_err(|e| self.nft_err("rebuild table", e))?;
            return Ok(true);
        }
        let present: BTreeSet<PortElement> = self
            .present_elements(&mut nft, |_| true)?
            .into_iter()
            .collect();
        let desired: BTreeSet<PortElement> = desired.iter().cloned().collect();
        let stale: Vec<PortElement> = present.difference(&desired).cloned().collect();
        let missing: Vec<PortElement> = desired.difference(&present).cloned().collect();
        if stale.is_empty() && missing.is_empty() {
            return Ok(false);
        }
        let mut batch = el::delete_elements(self.table(), &stale);
        batch.extend(el::add_elements(self.table(), &missing));
        nft.apply(&batch)
            .map_err(|e| self.nft_err("sync elements", e))?;
        Ok(true)
    }

    /// Restores berth's table from the leases on disk (what the drift watcher calls): the fixed
    /// chains, and every published port the leases record. Returns whether anything changed.
    pub fn repair_rules(&self) -> Result<bool, NetError> {
        let desired = self.elements_from_leases();
        self.sync_table(&desired)
    }

    fn elements_from_leases(&self) -> Vec<PortElement> {
        self.ipam
            .leases()
            .iter()
            .flat_map(|l| {
                el::elements_for(
                    &Names::container_key(&l.name, &l.id),
                    &self.addresses_of(&l.name, &l.id, l.ip),
                    &l.ports,
                )
            })
            .collect()
    }

    /// Removes this instance's links, netns, leases and elements that belong to no container in
    /// `known`. Another instance's objects are never touched. Keeps going past failures.
    pub fn sweep_orphans(&self, known: &[(String, IncarnationId)]) -> Result<(), TeardownErrors> {
        self.sweep_orphans_keeping(known, known)
    }

    /// [`Network::sweep_orphans`] where `known` are the containers on this network and
    /// `live` every container of the instance: a netns is a container's, not a network's, so
    /// only the default network removes netns, and only those of no live container.
    fn sweep_orphans_keeping(
        &self,
        known: &[(String, IncarnationId)],
        live: &[(String, IncarnationId)],
    ) -> Result<(), TeardownErrors> {
        let live: BTreeSet<(String, IncarnationId)> = known.iter().chain(live).cloned().collect();
        let known: BTreeSet<(String, IncarnationId)> = known.iter().cloned().collect();
        let known_ids: BTreeSet<&IncarnationId> = known.iter().map(|(_, id)| id).collect();
        let mut errors = Vec::new();
        let observed = match self.observe() {
            Ok(o) => o,
            Err(e) => return Err(TeardownErrors(vec![e])),
        };
        for link in &observed.links {
            let orphan = match &link.owner {
                Some(owner) => !known.contains(owner),
                // No alias: the name carries the id's first 8 hex digits.
                None => !known_ids
                    .iter()
                    .any(|id| self.names.veth(id) == link.ifname),
            };
            if orphan && let Err(e) = self.rtnl().delete_link(&link.ifname) {
                errors.push(NetError::netlink("delete", &link.ifname, e));
            }
        }
        for (name, id) in &observed.netns {
            if self.is_default() && !live.contains(&(name.clone(), id.clone())) {
                let path = self.layout.netns(name, id);
                if let Err(e) = netns::remove(&path) {
                    errors.push(NetError::io("remove netns", &path, e));
                }
            }
        }
        for lease in &observed.leases {
            if !known.contains(&(lease.name.clone(), lease.id.clone()))
                && let Err(e) = self.ipam.release_ip(lease.ip)
            {
                errors.push(e);
            }
        }
        let _ = self.ipam.remove_stale_temps();
        if let Some(ipam6) = self.ipam6() {
            for lease in &observed.leases6 {
                if !known.contains(&(lease.name.clone(), lease.id.clone()))
                    && let Err(e) = ipam6.release_ip(lease.ip)
                {
                    errors.push(e);
                }
            }
            let _ = ipam6.remove_stale_temps();
        }
        let orphans: Vec<PortElement> = observed
            .elements
            .into_iter()
            .filter(|e| {
                Names::parse_container_key(&e.owner)
                    .is_none_or(|(n, id)| !known.contains(&(n.to_string(), id)))
            })
            .collect();
        if !orphans.is_empty()
            && let Err(e) = self
                .nft()
                .apply(&el::delete_elements(self.table(), &orphans))
        {
            errors.push(self.nft_err("delete orphaned elements", e));
        }
        TeardownErrors(errors).into_result()
    }

    /// Makes this instance's network match `expected` (the containers that should have one):
    /// removes orphans, makes sure of the bridge and host settings, then gives back each
    /// container what was deleted by hand (lease, netns, veth, address, route, published
    /// ports), then syncs the table. A netns that had to be
    /// made again is new: a container still running in the old one must be restarted, which the
    /// returned notes say. Keeps going past failures.
    /// `live` are all the instance's containers, on this network or not (their netns stays).
    pub fn reconcile(
        &self,
        expected: &[ExpectedNet],
        live: &[(String, IncarnationId)],
    ) -> Result<Vec<String>, TeardownErrors> {
        let known: Vec<(String, IncarnationId)> = expected
            .iter()
            .map(|e| (e.name.clone(), e.id.clone()))
            .collect();
        let mut errors = match self.sweep_orphans_keeping(&known, live) {
            Ok(()) => Vec::new(),
            Err(TeardownErrors(e)) => e,
        };
        let mut notes = Vec::new();
        // The bridge too may have been deleted by hand: make it (and its settings) again.
        if let Err(e) = self.ensure_host() {
            errors.push(e);
        }
        let bridge = match self.bridge_link() {
            Ok(b) => Some(b),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let mut desired = Vec::new();
        for e in expected {
            let path = self.layout.netns(&e.name, &e.id);
            if !netns::is_mounted(&path) && e.made_this_boot {
                notes.push(format!(
                    "netns of container {} was gone and is made again; restart the container",
                    e.name
                ));
            }
            let result = match &e.mode {
                ExpectedMode::Isolated => self.attach_none(&e.name, &e.id).map(drop),
                ExpectedMode::Bridge { ip, ports, join } => {
                    let owner = Names::container_key(&e.name, &e.id);
                    let restored = self.restore_bridge(e, *ip, ports, join, bridge.as_ref());
                    // After the restore: a dual-stack container's IPv6 lease is back by now.
                    desired.extend(el::elements_for(
                        &owner,
                        &self.addresses_of(&e.name, &e.id, *ip),
                        ports,
                    ));
                    restored
                }
            };
            if let Err(err) = result {
                errors.push(err);
            }
        }
        if let Err(e) = self.sync_table(&desired) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(notes)
        } else {
            Err(TeardownErrors(errors))
        }
    }

    fn restore_bridge(
        &self,
        e: &ExpectedNet,
        ip: IpAddr,
        ports: &[PortMapping],
        join: &super::Join,
        bridge: Option<&super::rtnl::Link>,
    ) -> Result<(), NetError> {
        let lease = Lease {
            ip,
            name: e.name.clone(),
            id: e.id.clone(),
            ports: ports.to_vec(),
        };
        match self.ipam.lease_of(&e.name, &e.id) {
            Some(held) if held == lease => {}
            Some(held) => {
                if held.ip != ip {
                    self.ipam.release_ip(held.ip)?;
                }
                self.ipam.restore(&lease)?;
            }
            None => self.ipam.restore(&lease)?,
        }
        // The IPv6 lease is not in the container's record: allocation gives back the one it
        // holds, or the address its name held last.
        let ip6 = match &self.v6 {
            Some(v6) => Some(v6.ipam.allocate(&e.name, &e.id, None)?.ip),
            None => None,
        };
        let Some(bridge) = bridge else {
            return Ok(());
        };
        self.wire(&e.name, &e.id, bridge, ip, ip6, join).map(drop)
    }
}
