//! Address management, the pure part: the subnet's arithmetic and which address a container
//! gets, decided from the leases and hints alone (persistence is in [`super::leases`]).
//!
//! Order of preference for a container without a static address:
//! 1. the lease it already holds (allocation is idempotent);
//! 2. the address its name held last, when free (a recreated container keeps its address);
//! 3. the lowest free address no other name held recently;
//! 4. the free address released longest ago.
//!
//! The network, gateway (first host) and broadcast addresses are never handed out.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::names::IncarnationId;

/// A subnet of either family. IPv4: prefix 8 to 29, network, gateway and broadcast reserved.
/// IPv6: prefix 48 to 124 (as the config checks), the network address (the subnet-router anycast) and the gateway
/// reserved; there is no broadcast. The arithmetic is on u128 for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: IpAddr,
    prefix_len: u8,
}

/// Which family a subnet is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

impl Subnet {
    /// Parses `a.b.c.d/n` or `x::/n`; host bits must be zero and the subnet must hold at
    /// least two containers besides the gateway.
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| format!("subnet {text:?} is not of the form address/len"))?;
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("subnet {text:?}: {addr:?} is not an IP address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("subnet {text:?}: {len:?} is not a prefix length"))?;
        let range = match network {
            IpAddr::V4(_) => 8..=29,
            IpAddr::V6(_) => 48..=124,
        };
        if !range.contains(&prefix_len) {
            return Err(format!(
                "subnet {text:?}: prefix length must be between {} and {}",
                range.start(),
                range.end()
            ));
        }
        let s = Subnet {
            network,
            prefix_len,
        };
        if to_u128(network) & s.host_mask() != 0 {
            return Err(format!(
                "subnet {text:?}: host bits are set (did you mean {}/{prefix_len}?)",
                from_u128(s.family(), to_u128(network) & !s.host_mask())
            ));
        }
        Ok(s)
    }

    /// [`Subnet::parse`] that also wants the given family (`subnet` IPv4, `subnet6` IPv6).
    pub fn parse_family(text: &str, family: Family) -> Result<Subnet, String> {
        let s = Subnet::parse(text)?;
        if s.family() != family {
            return Err(format!(
                "subnet {text:?} is not an {} subnet",
                match family {
                    Family::V4 => "IPv4",
                    Family::V6 => "IPv6",
                }
            ));
        }
        Ok(s)
    }

    pub fn family(&self) -> Family {
        match self.network {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn host_mask(&self) -> u128 {
        u128::MAX >> (128 - self.family().bits() + self.prefix_len as u32)
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The first host address: the bridge's own.
    pub fn gateway(&self) -> IpAddr {
        from_u128(self.family(), to_u128(self.network) + 1)
    }

    /// The last address: IPv4's broadcast; for IPv6 a host address like any other.
    fn last(&self) -> u128 {
        to_u128(self.network) | self.host_mask()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4()
            && to_u128(ip) & !self.host_mask() == to_u128(self.network)
    }

    /// Network and gateway, and IPv4's broadcast: never a container's.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        ip == self.network
            || ip == self.gateway()
            || (self.family() == Family::V4 && to_u128(ip) == self.last())
    }

    /// Every address a container may get, lowest first.
    pub fn hosts(&self) -> impl Iterator<Item = IpAddr> + use<> {
        let family = self.family();
        let first = to_u128(self.network) + 2;
        let last = match family {
            Family::V4 => self.last() - 1,
            Family::V6 => self.last(),
        };
        (first..=last).map(move |n| from_u128(family, n))
    }

    /// How many addresses [`Subnet::hosts`] yields.
    pub fn host_count(&self) -> u128 {
        match self.family() {
            Family::V4 => self.host_mask() - 2,
            Family::V6 => self.host_mask() - 1,
        }
    }

    /// Whether two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        prefixes_overlap(other.network, other.prefix_len, self)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Whether the network of `addr/len` (an interface's address) shares addresses with `subnet`
/// (never across families).
pub fn prefixes_overlap(addr: IpAddr, len: u8, subnet: &Subnet) -> bool {
    if addr.is_ipv4() != subnet.network().is_ipv4() {
        return false;
    }
    let bits = subnet.family().bits();
    let common = len.min(subnet.prefix_len()) as u32;
    let mask = if common == 0 {
        0
    } else {
        (u128::MAX << (128 - common)) >> (128 - bits)
    };
    to_u128(addr) & mask == to_u128(subnet.network()) & mask
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub name: String,
    pub id: IncarnationId,
}

/// The address a name held last, and when it let it go (any monotonic count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    pub ip: IpAddr,
    pub released: u64,
}

/// Why no address could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    OutsideSubnet(IpAddr),
    Reserved(IpAddr),
    Taken {
        ip: IpAddr,
        holder: Holder,
    },
    /// The container already holds another address than the static one asked for.
    HoldsOther {
        held: IpAddr,
        wanted: IpAddr,
    },
    Exhausted,
}

/// The decision: an address the container holds already, or a new one to lease first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Held(IpAddr),
    New(IpAddr),
}

impl Choice {
    pub fn ip(self) -> IpAddr {
        match self {
            Choice::Held(ip) | Choice::New(ip) => ip,
        }
    }
}

/// Picks an address for `who`.
pub fn choose(
    subnet: &Subnet,
    held: &BTreeMap<IpAddr, Holder>,
    hints: &BTreeMap<String, Hint>,
    who: &Holder,
    wanted: Option<IpAddr>,
) -> Result<Choice, AllocError> {
    let own = held.iter().find(|(_, h)| *h == who).map(|(ip, _)| *ip);
    if let Some(wanted) = wanted {
        if !subnet.contains(wanted) {
            return Err(AllocError::OutsideSubnet(wanted));
        }
        if subnet.is_reserved(wanted) {
            return Err(AllocError::Reserved(wanted));
        }
        return match (own, held.get(&wanted)) {
            (Some(ip), _) if ip == wanted => Ok(Choice::Held(ip)),
            (Some(ip), _) => Err(AllocError::HoldsOther { held: ip, wanted }),
            (None, Some(holder)) => Err(AllocError::Taken {
                ip: wanted,
                holder: holder.clone(),
            }),
            (None, None) => Ok(Choice::New(wanted)),
        };
    }
    if let Some(ip) = own {
        return Ok(Choice::Held(ip));
    }
    let usable =
        |ip: IpAddr| subnet.contains(ip) && !subnet.is_reserved(ip) && !held.contains_key(&ip);
    if let Some(hint) = hints.get(&who.name)
        && usable(hint.ip)
    {
        return Ok(Choice::New(hint.ip));
    }
    let recently: BTreeMap<IpAddr, u64> = hints
        .iter()
        .filter(|(name, _)| **name != who.name)
        .map(|(_, h)| (h.ip, h.released))
        .collect();
    if let Some(ip) = subnet
        .hosts()
        .find(|ip| !held.contains_key(ip) && !recently.contains_key(ip))
    {
        return Ok(Choice::New(ip));
    }
    recently
        .iter()
        .filter(|(ip, _)| usable(**ip))
        .min_by_key(|(ip, released)| (**released, **ip))
        .map(|(ip, _)| Choice::New(*ip))
        .ok_or(AllocError::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn holder(name: &str, n: u8) -> Holder {
        Holder {
            name: name.into(),
            id: IncarnationId::parse(&format!("{n:012x}")).unwrap(),
        }
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_arithmetic() {
        let s = Subnet::parse("10.213.0.0/16").unwrap();
        assert_eq!(s.gateway(), v4("10.213.0.1"));
        assert!(s.is_reserved(v4("10.213.255.255")));
        assert_eq!(s.hosts().next().unwrap().to_string(), "10.213.0.2");
        assert_eq!(s.hosts().last().unwrap().to_string(), "10.213.255.254");
        assert_eq!(s.hosts().count() as u128, s.host_count());
        assert_eq!(s.to_string(), "10.213.0.0/16");
        assert!(s.contains(v4("10.213.7.9")));
        assert!(!s.contains(v4("10.214.0.2")));
        assert!(s.is_reserved(v4("10.213.0.1")));
        assert!(s.overlaps(&Subnet::parse("10.213.4.0/24").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("10.88.0.0/16").unwrap()));
        assert!(!s.contains(v4("fd00::1")));
        assert!(prefixes_overlap("10.213.9.9".parse().unwrap(), 32, &s));
        assert!(!prefixes_overlap("fd00::1".parse().unwrap(), 64, &s));
        assert!(prefixes_overlap("10.0.0.1".parse().unwrap(), 8, &s));
        assert!(!prefixes_overlap("10.214.0.1".parse().unwrap(), 24, &s));
        assert!(!prefixes_overlap("192.0.2.2".parse().unwrap(), 24, &s));
    }

    #[test]
    fn subnet_errors_say_why() {
        assert!(
            Subnet::parse("10.0.0.1/24")
                .unwrap_err()
                .contains("10.0.0.0/24")
        );
        assert!(
            Subnet::parse("10.0.0.0")
                .unwrap_err()
                .contains("address/len")
        );
        assert!(
            Subnet::parse("10.0.0.0/31")
                .unwrap_err()
                .contains("between")
        );
        assert!(
            Subnet::parse_family("fd00::/64", Family::V4)
                .unwrap_err()
                .contains("not an IPv4 subnet")
        );
        assert!(
            Subnet::parse_family("10.0.0.0/24", Family::V6)
                .unwrap_err()
                .contains("not an IPv6 subnet")
        );
        assert!(
            Subnet::parse("fd00::1/64")
                .unwrap_err()
                .contains("did you mean fd00::/64")
        );
        assert!(
            Subnet::parse("fd00::/47")
                .unwrap_err()
                .contains("between 48 and 124")
        );
        assert!(Subnet::parse("fd00::/125").is_err());
        assert!(Subnet::parse("fd00::/64").is_ok());
    }

    #[test]
    fn static_addresses() {
        let s = Subnet::parse("10.1.0.0/24").unwrap();
        let mut held = BTreeMap::new();
        held.insert(v4("10.1.0.5"), holder("db", 1));
        let none = BTreeMap::new();
        let web = holder("web", 2);
        let ask = |ip: &str| choose(&s, &held, &none, &web, Some(v4(ip)));
        assert_eq!(ask("10.1.0.9"), Ok(Choice::New(v4("10.1.0.9"))));
        assert_eq!(
            ask("10.1.1.9"),
            Err(AllocError::OutsideSubnet(v4("10.1.1.9")))
        );
        for r in ["10.1.0.0", "10.1.0.1", "10.1.0.255"] {
            assert_eq!(ask(r), Err(AllocError::Reserved(v4(r))));
        }
        assert_eq!(
            ask("10.1.0.5"),
            Err(AllocError::Taken {
                ip: v4("10.1.0.5"),
                holder: holder("db", 1)
            })
        );
        assert_eq!(
            ask("fd00::5"),
            Err(AllocError::OutsideSubnet(v4("fd00::5")))
        );
        let db = holder("db", 1);
        assert_eq!(
            choose(&s, &held, &none, &db, Some(v4("10.1.0.5"))),
            Ok(Choice::Held(v4("10.1.0.5")))
        );
    }

    #[test]
    fn recreation_keeps_the_address_when_free() {
        let s = Subnet::parse("10.1.0.0/24").unwrap();
        let mut hints = BTreeMap::new();
        hints.insert(
            "web".to_string(),
            Hint {
                ip: v4("10.1.0.77"),
                released: 3,
            },
        );
        let held = BTreeMap::new();
        assert_eq!(
            choose(&s, &held, &hints, &holder("web", 9), None),
            Ok(Choice::New(v4("10.1.0.77")))
        );
        // Another name avoids web's old address while others are free.
        assert_eq!(
            choose(&s, &held, &hints, &holder("db", 9), None),
            Ok(Choice::New(v4("10.1.0.2")))
        );
        // Taken meanwhile: web gets another one.
        let mut held = BTreeMap::new();
        held.insert(v4("10.1.0.77"), holder("db", 9));
        assert_eq!(
            choose(&s, &held, &hints, &holder("web", 9), None),
            Ok(Choice::New(v4("10.1.0.2")))
        );
    }

    #[test]
    fn recently_released_addresses_come_last_oldest_first() {
        let s = Subnet::parse("10.1.0.0/29").unwrap(); // hosts .2 to .6
        let mut held = BTreeMap::new();
        for (i, ip) in ["10.1.0.2", "10.1.0.3", "10.1.0.4"].iter().enumerate() {
            held.insert(v4(ip), holder(&format!("c{i}"), i as u8));
        }
        let mut hints = BTreeMap::new();
        hints.insert(
            "a".into(),
            Hint {
                ip: v4("10.1.0.5"),
                released: 20,
            },
        );
        hints.insert(
            "b".into(),
            Hint {
                ip: v4("10.1.0.6"),
                released: 10,
            },
        );
        assert_eq!(
            choose(&s, &held, &hints, &holder("new", 1), None),
            Ok(Choice::New(v4("10.1.0.6")))
        );
        held.insert(v4("10.1.0.5"), holder("x", 1));
        held.insert(v4("10.1.0.6"), holder("y", 1));
        assert_eq!(
            choose(&s, &held, &hints, &holder("new", 1), None),
            Err(AllocError::Exhausted)
        );
    }

    #[test]
    fn ipv6_subnet_arithmetic() {
        let s = Subnet::parse("fd00:b::/64").unwrap();
        assert_eq!(s.family(), Family::V6);
        assert_eq!(s.gateway(), v4("fd00:b::1"));
        assert_eq!(s.hosts().next(), Some(v4("fd00:b::2")));
        assert_eq!(s.host_count(), (1u128 << 64) - 2);
        assert!(s.contains(v4("fd00:b::ffff:ffff:ffff:ffff")));
        assert!(!s.contains(v4("fd00:c::2")));
        assert!(!s.contains(v4("10.0.0.2")));
        // No broadcast in IPv6: the last address is a host's; network and gateway are not.
        assert!(!s.is_reserved(v4("fd00:b::ffff:ffff:ffff:ffff")));
        assert!(s.is_reserved(v4("fd00:b::")));
        assert!(s.is_reserved(v4("fd00:b::1")));
        assert!(prefixes_overlap(v4("fd00::1"), 16, &s));
        assert!(prefixes_overlap(v4("fd00:b::9"), 128, &s));
        assert!(!prefixes_overlap(v4("fd00:c::9"), 64, &s));
        assert!(s.overlaps(&Subnet::parse("fd00:b::100/120").unwrap()));
        let small = Subnet::parse("fd00:b::/120").unwrap();
        assert_eq!(small.hosts().count() as u128, small.host_count());
        assert_eq!(small.hosts().last(), Some(v4("fd00:b::ff")));
        let held = BTreeMap::new();
        let none = BTreeMap::new();
        assert_eq!(
            choose(&s, &held, &none, &holder("web", 1), None),
            Ok(Choice::New(v4("fd00:b::2")))
        );
        assert_eq!(
            choose(&s, &held, &none, &holder("web", 1), Some(v4("10.1.0.2"))),
            Err(AllocError::OutsideSubnet(v4("10.1.0.2")))
        );
    }

    proptest! {
        /// Every subnet6 the config check accepts, the agent's IPAM takes, with the same
        /// network; and what the check refuses, the agent refuses too (or the check did for a
        /// reason of its own: link-local, multicast, IPv4-mapped).
        #[test]
        fn the_config_check_and_the_agent_agree_on_subnet6(
            addr in any::<u128>(),
            len in 40u8..=128,
            masked in any::<bool>(),
        ) {
            // Half of them with the host bits cleared, so both sides mostly accept.
            let addr = if masked { addr & !(u128::MAX.checked_shr(len as u32).unwrap_or(0)) } else { addr };
            let text = format!("{}/{len}", Ipv6Addr::from(addr));
            let agent = Subnet::parse_family(&text, Family::V6);
            match berth_spec::check_subnet6(&text) {
                Ok((net, l)) => {
                    let s = agent.unwrap();
                    prop_assert_eq!((s.network(), s.prefix_len()), (IpAddr::V6(net), l));
                }
                Err(why) => prop_assert!(
                    agent.is_err() || why.contains("link-local"),
                    "{} refused by the config ({}) but taken by the agent", text, why
                ),
            }
        }
    }

    fn arb_subnet() -> impl Strategy<Value = Subnet> {
        (24u8..=29, any::<u8>()).prop_map(|(len, third)| {
            let net = u32::from(Ipv4Addr::new(10, 9, third, 0)) & !(u32::MAX >> len);
            Subnet {
                network: IpAddr::V4(Ipv4Addr::from(net)),
                prefix_len: len,
            }
        })
    }

    /// IPv6 subnets small enough to exhaust: /120 to /124.
    fn arb_subnet6() -> impl Strategy<Value = Subnet> {
        (120u8..=124, any::<u16>()).prop_map(|(len, group)| {
            let net = u128::from("fd00:9::".parse::<Ipv6Addr>().unwrap()) | ((group as u128) << 16);
            Subnet {
                network: IpAddr::V6(Ipv6Addr::from(net & !(u128::MAX >> len))),
                prefix_len: len,
            }
        })
    }

    fn arb_any_subnet() -> impl Strategy<Value = Subnet> {
        prop_oneof![arb_subnet(), arb_subnet6()]
    }

    proptest! {
        /// Whatever the leases and hints, a new address is in the subnet, not reserved and not
        /// held; and a container that holds one gets it back.
        #[test]
        fn choice_is_always_valid(
            subnet in arb_any_subnet(),
            held_idx in proptest::collection::btree_set(0u32..300, 0..80),
            hint_idx in proptest::collection::vec((0u32..300, 0u64..50), 0..20),
            wanted_idx in proptest::option::of(0u32..300),
            me in 0u8..100,
        ) {
            let base = to_u128(subnet.network());
            let addr = |i: u32| from_u128(subnet.family(), base + i as u128);
            let mut held = BTreeMap::new();
            for (n, i) in held_idx.iter().enumerate() {
                held.insert(addr(*i), holder(&format!("c{n}"), n as u8));
            }
            let hints: BTreeMap<String, Hint> = hint_idx
                .iter()
                .enumerate()
                .map(|(n, (i, r))| (format!("c{}", n * 7 % 90), Hint { ip: addr(*i), released: *r }))
                .collect();
            let who = holder(&format!("c{me}"), me);
            let own = held.iter().find(|(_, h)| **h == who).map(|(ip, _)| *ip);
            match choose(&subnet, &held, &hints, &who, wanted_idx.map(addr)) {
                Ok(Choice::Held(ip)) => prop_assert_eq!(Some(ip), own),
                Ok(Choice::New(ip)) => {
                    prop_assert!(own.is_none());
                    prop_assert!(subnet.contains(ip));
                    prop_assert!(!subnet.is_reserved(ip));
                    prop_assert!(!held.contains_key(&ip));
                    if let Some(w) = wanted_idx {
                        prop_assert_eq!(ip, addr(w));
                    }
                }
                Err(AllocError::Exhausted) => {
                    prop_assert!(wanted_idx.is_none());
                    prop_assert!(subnet.hosts().all(|h| held.contains_key(&h)));
                }
                Err(AllocError::Taken { ip, holder }) => {
                    prop_assert_eq!(held.get(&ip), Some(&holder));
                    prop_assert!(own.is_none());
                }
                Err(AllocError::OutsideSubnet(ip)) => prop_assert!(!subnet.contains(ip)),
                Err(AllocError::Reserved(ip)) => prop_assert!(subnet.is_reserved(ip)),
                Err(AllocError::HoldsOther { held: h, .. }) => prop_assert_eq!(Some(h), own),
            }
        }

        /// Allocating for distinct containers one after another hands out every host address
        /// exactly once, then reports exhaustion.
        #[test]
        fn sequential_allocation_is_unique_until_exhausted(subnet in arb_any_subnet()) {
            let mut held = BTreeMap::new();
            let hints = BTreeMap::new();
            for n in 0..subnet.host_count() {
                let who = Holder {
                    name: format!("c{n}"),
                    id: IncarnationId::parse(&format!("{n:012x}")).unwrap(),
                };
                let Ok(Choice::New(ip)) = choose(&subnet, &held, &hints, &who, None) else {
                    return Err(TestCaseError::fail("ran out early"));
                };
                prop_assert!(held.insert(ip, who).is_none());
            }
            let who = holder("last", 1);
            prop_assert_eq!(choose(&subnet, &held, &hints, &who, None), Err(AllocError::Exhausted));
        }
    }
}
