//! berth's nftables table, built as a value: fixed chains plus published ports as map elements.
//!
//! ```text
//! table inet <instance> {
//!   comment "berth ruleset v1 <hash of bridge and subnet>"
//!   map pub4_ip  { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!   map pub4_any { type inet_proto . inet_service : ipv4_addr . inet_service }
//!   chain publish {
//!     meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub4_ip
//!     meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pub4_any
//!   }
//!   chain prerouting { type nat hook prerouting priority dstnat
//!     meta nfproto ipv4 ip daddr 127.0.0.0/8 return    # loopback is published to the host only
//!     jump publish }
//!   chain output { type nat hook output priority dstnat
//!     meta nfproto ipv6 ip6 daddr ::1 return    # IPv6 only: [::1] is the shim's relay's
//!     jump publish }
//!   chain postrouting { type nat hook postrouting priority srcnat
//!     meta nfproto ipv4 ip saddr <subnet> oifname != <bridge> masquerade            # egress
//!     meta nfproto ipv4 oifname <bridge> ct status dnat ip saddr <subnet> masquerade # hairpin
//!     meta nfproto ipv4 oifname <bridge> ip saddr 127.0.0.0/8 masquerade }          # host's 127/8
//!   chain input { type filter hook input priority filter
//!     meta nfproto ipv4 iif != lo ip daddr 127.0.0.0/8 ct status & dnat == 0 counter drop }
//!   # Only when the instance has named networks, or this network is internal:
//!   chain forward { type filter hook forward priority filter
//!     iifname <bridge> oifname <other> ct status & dnat == 0 drop   # per other bridge
//!     iifname <other> oifname <bridge> ct status & dnat == 0 drop   # of the instance
//!     iifname <bridge> oifname != <bridge> drop                     # internal: no way out
//!     oifname <bridge> iifname != <bridge> drop }                   # nor in
//! }
//! ```
//!
//! An internal network has no `berth:egress` rule either. The isolation rules let DNATed
//! traffic through: a published port stays reachable from every network, as with Docker.
//!
//! Every element ([`super::elements`]) carries its container (`<name>-<id>`) as a comment, and every fixed rule a
//! `berth:` comment, so a dump tells what is missing and whose each element is. The input rule is
//! kube-proxy's guard from CVE-2020-8558: route_localnet on the bridge must not let a container
//! (or a neighbour) reach services bound to the host's loopback.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, MetaKey, NfTablesMessage,
    Operator, RuleAttribute, RuleMessage, SetAttribute, SetFlags, SetMessage, TableAttribute,
    TableFlags, TableMessage,
};
use sha2::Digest;

use super::elements::{PortElement, add_elements};
use super::expr::{
    self, Expr, NETWORK_HEADER, REG1, REG32_01, REG32_02, REG32_04, REG32_05, TRANSPORT_HEADER,
};
use crate::network::ipam::{Family, Subnet};

pub const CHAIN_PUBLISH: &str = "publish";
pub const CHAIN_PREROUTING: &str = "prerouting";
pub const CHAIN_OUTPUT: &str = "output";
pub const CHAIN_POSTROUTING: &str = "postrouting";
pub const CHAIN_INPUT: &str = "input";
pub const CHAIN_FORWARD: &str = "forward";

pub const MAP_IP4: &str = "pub4_ip";
pub const MAP_ANY4: &str = "pub4_any";
/// IPv6 published ports (the same shapes with ipv6_addr), on networks with an IPv6 subnet.
pub const MAP_IP6: &str = "pub6_ip";
pub const MAP_ANY6: &str = "pub6_any";

/// Bump when the fixed part changes, so that a running table from an older berth is rebuilt.
const RULESET_VERSION: u32 = 1;

const NFT_DATATYPE_IPV4: u32 = 7;
const NFT_DATATYPE_IPV6: u32 = 8;
const NFT_DATATYPE_INET_PROTO: u32 = 12;
const NFT_DATATYPE_INET_SERVICE: u32 = 13;
const NFT_DATATYPE_BITS: u32 = 6;
const NF_ACCEPT: u32 = 1;
const PRIO_DSTNAT: i32 = -100;
const PRIO_SRCNAT: i32 = 100;
const PRIO_FILTER: i32 = 0;

/// One message of a batch with its netlink flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub body: NfTablesMessage,
    pub flags: u16,
}

/// The fixed part of the table: what it is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: String,
    pub bridge: String,
    /// The network's subnet: IPv4, or IPv6 on an IPv6-only network.
    pub subnet: Subnet,
    /// The IPv6 subnet of a dual-stack network.
    pub subnet6: Option<Subnet>,
    pub egress: Egress,
    /// Whether IPv6 leaving the host is masqueraded (config `masquerade6`).
    pub nat66: Nat66,
    /// The instance's other networks' bridges: no new connection crosses between them.
    pub isolate_from: Vec<String>,
}

/// Whether a network's containers may reach beyond the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Masqueraded out through any other interface.
    Masquerade,
    /// `internal = true`: no forwarding to or from the bridge at all.
    Internal,
}

/// What happens to containers' IPv6 traffic leaving the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat66 {
    /// Masqueraded to the host's address (NAT66), as IPv4 is.
    Masquerade,
    /// Sent with the containers' own addresses (`masquerade6 = false`: a prefix routed to the
    /// host).
    Routed,
}

impl Ruleset {
    /// The IPv4 and IPv6 subnets of the network (either may be absent, not both).
    pub fn families(&self) -> (Option<Subnet>, Option<Subnet>) {
        match self.subnet.family() {
            Family::V4 => (Some(self.subnet), self.subnet6),
            Family::V6 => (None, Some(self.subnet)),
        }
    }

    /// The table's comment, which says which fixed part it holds.
    pub fn version_comment(&self) -> String {
        let mut what = format!("{RULESET_VERSION}\n{}\n{}", self.bridge, self.subnet);
        // Appended only when present, so a table from before named networks is not rebuilt.
        if self.egress == Egress::Internal {
            what.push_str("\ninternal");
        }
        if let Some(s6) = self.subnet6 {
            what.push_str(&format!("\nsubnet6 {s6}"));
        }
        if self.nat66 == Nat66::Routed && self.families().1.is_some() {
            what.push_str("\nrouted6");
        }
        for other in &self.isolate_from {
            what.push_str(&format!("\nisolate {other}"));
        }
        let digest = sha2::Sha256::digest(what.as_bytes());
        format!(
            "berth ruleset v{RULESET_VERSION} {}",
            &hex::encode(digest)[..12]
        )
    }

    /// Each fixed rule's chain and comment, in order.
    pub fn expected_rules(&self) -> Vec<(&'static str, &'static str)> {
        self.rules()
            .into_iter()
            .map(|r| (r.chain, r.comment))
            .collect()
    }

    /// Replaces the whole table (repair only): add, delete and add again in one batch, so it
    /// works whether or not the table exists, and is never seen half-built.
    pub fn rebuild(&self, elements: &[PortElement]) -> Vec<Msg> {
        let mut batch = vec![
            self.new_table_msg(),
            Msg {
                body: NfTablesMessage::DeleteTable(TableMessage {
                    attributes: vec![TableAttribute::Name(self.table.clone())],
                }),
                flags: 0,
            },
            self.new_table_msg(),
        ];
        // The kernel wants a batch-unique id on every new set, even when nothing refers to it.
        for (set_id, map) in self.maps().into_iter().enumerate() {
            batch.push(Msg {
                body: NfTablesMessage::NewSet(SetMessage {
                    attributes: vec![
                        SetAttribute::Table(self.table.clone()),
                        SetAttribute::Name(map.name.to_string()),
                        SetAttribute::Flags(SetFlags::Map),
                        SetAttribute::KeyType(map.key_type),
                        SetAttribute::KeyLen(map.key_len),
                        SetAttribute::DataType(map.data_type),
                        SetAttribute::DataLen(map.data_len),
                        SetAttribute::Id(set_id as u32 + 1),
                    ],
                }),
                flags: NLM_F_CREATE,
            });
        }
        batch.push(self.chain_msg(CHAIN_PUBLISH, None));
        batch.push(self.chain_msg(
            CHAIN_PREROUTING,
            Some(("nat", InetHookNumber::PreRouting, PRIO_DSTNAT)),
        ));
        batch.push(self.chain_msg(
            CHAIN_OUTPUT,
            Some(("nat", InetHookNumber::LocalOut, PRIO_DSTNAT)),
        ));
        batch.push(self.chain_msg(
            CHAIN_POSTROUTING,
            Some(("nat", InetHookNumber::PostRouting, PRIO_SRCNAT)),
        ));
        batch.push(self.chain_msg(
            CHAIN_INPUT,
            Some(("filter", InetHookNumber::LocalIn, PRIO_FILTER)),
        ));
        if self.has_forward_chain() {
            batch.push(self.chain_msg(
                CHAIN_FORWARD,
                Some(("filter", InetHookNumber::Forward, PRIO_FILTER)),
            ));
        }
        for rule in self.rules() {
            batch.push(Msg {
                body: NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(self.table.clone()),
                        RuleAttribute::Chain(rule.chain.to_string()),
                        RuleAttribute::Expressions(rule.exprs),
                        RuleAttribute::UserData(expr::comment(rule.comment)),
                    ],
                }),
                flags: NLM_F_CREATE | NLM_F_APPEND,
            });
        }
        batch.extend(add_elements(&self.table, elements));
        batch
    }

    /// The maps of the published ports: `pub4_*` with an IPv4 subnet, `pub6_*` with an IPv6 one.
    fn maps(&self) -> Vec<MapDef> {
        let (v4, v6) = self.families();
        let mut out = Vec::new();
        let proto_port = concat(&[NFT_DATATYPE_INET_PROTO, NFT_DATATYPE_INET_SERVICE]);
        for (present, addr_type, addr_len, ip, any) in [
            (v4.is_some(), NFT_DATATYPE_IPV4, 4, MAP_IP4, MAP_ANY4),
            (v6.is_some(), NFT_DATATYPE_IPV6, 16, MAP_IP6, MAP_ANY6),
        ] {
            if !present {
                continue;
            }
            let data_type = concat(&[addr_type, NFT_DATATYPE_INET_SERVICE]);
            out.push(MapDef {
                name: ip,
                key_type: concat(&[
                    addr_type,
                    NFT_DATATYPE_INET_PROTO,
                    NFT_DATATYPE_INET_SERVICE,
                ]),
                key_len: addr_len + 8,
                data_type,
                data_len: addr_len + 4,
            });
            out.push(MapDef {
                name: any,
                key_type: proto_port,
                key_len: 8,
                data_type,
                data_len: addr_len + 4,
            });
        }
        out
    }

    /// The names of the maps this table has.
    pub fn map_names(&self) -> Vec<&'static str> {
        self.maps().into_iter().map(|m| m.name).collect()
    }

    /// Deletes the whole table (uninstall); ENOENT if it is not there.
    pub fn delete(&self) -> Vec<Msg> {
        vec![Msg {
            body: NfTablesMessage::DeleteTable(TableMessage {
                attributes: vec![TableAttribute::Name(self.table.clone())],
            }),
            flags: 0,
        }]
    }

    fn new_table_msg(&self) -> Msg {
        Msg {
            body: NfTablesMessage::NewTable(TableMessage {
                attributes: vec![
                    TableAttribute::Name(self.table.clone()),
                    TableAttribute::Flags(TableFlags::empty()),
                    TableAttribute::UserData(expr::comment(&self.version_comment())),
                ],
            }),
            flags: NLM_F_CREATE,
        }
    }

    fn chain_msg(&self, name: &str, base: Option<(&str, InetHookNumber, i32)>) -> Msg {
        let mut attributes = vec![
            ChainAttribute::Table(self.table.clone()),
            ChainAttribute::Name(name.to_string()),
        ];
        if let Some((kind, hook, prio)) = base {
            attributes.push(ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(hook)),
                Hook::Priority(prio as u32),
            ]));
            attributes.push(ChainAttribute::Policy(NF_ACCEPT));
            attributes.push(ChainAttribute::Type(kind.to_string()));
        }
        Msg {
            body: NfTablesMessage::NewChain(ChainMessage { attributes }),
            flags: NLM_F_CREATE,
        }
    }

    /// Only a table with something to forward-filter has the chain (a lone default network's
    /// table is as it was before named networks).
    fn has_forward_chain(&self) -> bool {
        self.egress == Egress::Internal || !self.isolate_from.is_empty()
    }

    fn rules(&self) -> Vec<Rule> {
        let mut rules = self.fixed_rules();
        if self.egress == Egress::Internal {
            rules.retain(|r| r.comment != "berth:egress" && r.comment != "berth:egress6");
        }
        if self.nat66 == Nat66::Routed {
            rules.retain(|r| r.comment != "berth:egress6");
        }
        rules.extend(self.forward_rules());
        rules
    }

    fn forward_rules(&self) -> Vec<Rule> {
        let iif = |op: Operator, name: &str| {
            vec![
                expr::meta(MetaKey::Iifname, REG1),
                expr::cmp(op, REG1, &expr::ifname(name)),
            ]
        };
        let oif = |op: Operator, name: &str| {
            vec![
                expr::meta(MetaKey::Oifname, REG1),
                expr::cmp(op, REG1, &expr::ifname(name)),
            ]
        };
        let not_dnat = || {
            vec![
                expr::ct_status(REG1),
                expr::bitwise(REG1, &expr::CT_STATUS_DNAT.to_ne_bytes(), &[0; 4]),
                expr::cmp(Operator::Equal, REG1, &[0; 4]),
            ]
        };
        let cat = |parts: Vec<Vec<Expr>>| parts.into_iter().flatten().collect::<Vec<_>>();
        let me = self.bridge.as_str();
        let mut out = Vec::new();
        for other in &self.isolate_from {
            out.push(Rule {
                chain: CHAIN_FORWARD,
                comment: "berth:isolate-out",
                exprs: cat(vec![
                    iif(Operator::Equal, me),
                    oif(Operator::Equal, other),
                    not_dnat(),
                    vec![expr::drop()],
                ]),
            });
            out.push(Rule {
                chain: CHAIN_FORWARD,
                comment: "berth:isolate-in",
                exprs: cat(vec![
                    iif(Operator::Equal, other),
                    oif(Operator::Equal, me),
                    not_dnat(),
                    vec![expr::drop()],
                ]),
            });
        }
        if self.egress == Egress::Internal {
            out.push(Rule {
                chain: CHAIN_FORWARD,
                comment: "berth:internal-out",
                exprs: cat(vec![
                    iif(Operator::Equal, me),
                    oif(Operator::NotEqual, me),
                    vec![expr::drop()],
                ]),
            });
            out.push(Rule {
                chain: CHAIN_FORWARD,
                comment: "berth:internal-in",
                exprs: cat(vec![
                    oif(Operator::Equal, me),
                    iif(Operator::NotEqual, me),
                    vec![expr::drop()],
                ]),
            });
        }
        out
    }

    /// The fixed rules, in chain order: each family's only when the network has that family.
    fn fixed_rules(&self) -> Vec<Rule> {
        let (v4, v6) = self.families();
        let mut publish = Vec::new();
        let mut prerouting = Vec::new();
        let mut postrouting = Vec::new();
        let mut input = Vec::new();
        for subnet in [v4, v6].into_iter().flatten() {
            let f = FamilyRules::new(&self.bridge, subnet);
            publish.extend(f.publish());
            prerouting.push(f.loopback_is_host_only());
            postrouting.extend(f.postrouting());
            input.push(f.loopback_guard());
        }
        let mut out = publish;
        out.extend(prerouting);
        out.push(Rule {
            chain: CHAIN_PREROUTING,
            comment: "berth:publish",
            exprs: vec![expr::jump(CHAIN_PUBLISH)],
        });
        if let Some(v6) = v6 {
            out.push(FamilyRules::new(&self.bridge, v6).loopback_is_the_proxys());
        }
        out.push(Rule {
            chain: CHAIN_OUTPUT,
            comment: "berth:publish",
            exprs: vec![expr::jump(CHAIN_PUBLISH)],
        });
        out.extend(postrouting);
        out.extend(input);
        out
    }
}

/// One family's fixed rules. IPv4's keep the comments they had before IPv6; IPv6's end in 6.
struct FamilyRules {
    family: Family,
    bridge: [u8; 16],
    subnet: Subnet,
}

/// Header offsets and the loopback network of a family.
struct Layout {
    nfproto: u8,
    saddr: u32,
    daddr: u32,
    addr_len: u32,
    loopback: IpAddr,
    loopback_len: u8,
}

impl FamilyRules {
    fn new(bridge: &str, subnet: Subnet) -> FamilyRules {
        FamilyRules {
            family: subnet.family(),
            bridge: expr::ifname(bridge),
            subnet,
        }
    }

    fn layout(&self) -> Layout {
        match self.family {
            Family::V4 => Layout {
                nfproto: expr::NFPROTO_IPV4,
                saddr: 12,
                daddr: 16,
                addr_len: 4,
                loopback: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
                loopback_len: 8,
            },
            Family::V6 => Layout {
                nfproto: expr::NFPROTO_IPV6,
                saddr: 8,
                daddr: 24,
                addr_len: 16,
                loopback: IpAddr::V6(Ipv6Addr::LOCALHOST),
                loopback_len: 128,
            },
        }
    }

    fn comment(&self, v4: &'static str, v6: &'static str) -> &'static str {
        match self.family {
            Family::V4 => v4,
            Family::V6 => v6,
        }
    }

    fn is_family(&self) -> Vec<Expr> {
        vec![
            expr::meta(MetaKey::Nfproto, REG1),
            expr::cmp(Operator::Equal, REG1, &[self.layout().nfproto]),
        ]
    }

    /// `ip saddr`/`ip6 daddr` (at `offset`) in `net/len`.
    fn addr_in(&self, offset: u32, net: IpAddr, len: u8) -> Vec<Expr> {
        let l = self.layout();
        let bits = l.addr_len * 8;
        let mask = u128::MAX
            .checked_shl(bits - len as u32)
            .unwrap_or(0)
            .to_be_bytes();
        let mask = &mask[16 - l.addr_len as usize..];
        let net = match net {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        vec![
            expr::payload(NETWORK_HEADER, offset, l.addr_len, REG1),
            expr::bitwise(REG1, mask, &vec![0; l.addr_len as usize]),
            expr::cmp(Operator::Equal, REG1, &net),
        ]
    }

    fn oif_is(&self, op: Operator) -> Vec<Expr> {
        vec![
            expr::meta(MetaKey::Oifname, REG1),
            expr::cmp(op, REG1, &self.bridge),
        ]
    }

    fn ct_dnat(op: Operator) -> Vec<Expr> {
        vec![
            expr::ct_status(REG1),
            expr::bitwise(REG1, &expr::CT_STATUS_DNAT.to_ne_bytes(), &[0; 4]),
            expr::cmp(op, REG1, &[0; 4]),
        ]
    }

    /// `dnat to <daddr> . meta l4proto . th dport map @pub*_ip` and
    /// `fib daddr type local dnat to meta l4proto . th dport map @pub*_any`. The key is built
    /// in consecutive 32-bit registers from register 1: an IPv6 address fills all four of
    /// register 1, so protocol and port go in the next two; the value (address, port) comes
    /// back from register 1 the same way.
    fn publish(&self) -> Vec<Rule> {
        let l = self.layout();
        let (map_ip, map_any) = match self.family {
            Family::V4 => (MAP_IP4, MAP_ANY4),
            Family::V6 => (MAP_IP6, MAP_ANY6),
        };
        let (proto_reg, port_reg, value_port) = match self.family {
            Family::V4 => (REG32_01, REG32_02, REG32_01),
            Family::V6 => (REG32_04, REG32_05, REG32_04),
        };
        vec![
            Rule {
                chain: CHAIN_PUBLISH,
                comment: self.comment("berth:publish-ip4", "berth:publish-ip6"),
                exprs: cat(vec![
                    self.is_family(),
                    vec![
                        expr::payload(NETWORK_HEADER, l.daddr, l.addr_len, REG1),
                        expr::meta(MetaKey::L4Proto, proto_reg),
                        expr::payload(TRANSPORT_HEADER, 2, 2, port_reg),
                        expr::lookup_map(map_ip, REG1, REG1),
                        expr::dnat(l.nfproto, REG1, value_port),
                    ],
                ]),
            },
            Rule {
                chain: CHAIN_PUBLISH,
                comment: self.comment("berth:publish-any4", "berth:publish-any6"),
                exprs: cat(vec![
                    self.is_family(),
                    vec![
                        expr::fib_daddr_type(REG1),
                        expr::cmp(Operator::Equal, REG1, &expr::RTN_LOCAL.to_ne_bytes()),
                        expr::meta(MetaKey::L4Proto, REG1),
                        expr::payload(TRANSPORT_HEADER, 2, 2, REG32_01),
                        expr::lookup_map(map_any, REG1, REG1),
                        expr::dnat(l.nfproto, REG1, value_port),
                    ],
                ]),
            },
        ]
    }

    fn loopback_is_host_only(&self) -> Rule {
        let l = self.layout();
        Rule {
            chain: CHAIN_PREROUTING,
            comment: self.comment(
                "berth:loopback-is-host-only",
                "berth:loopback-is-host-only6",
            ),
            exprs: cat(vec![
                self.is_family(),
                self.addr_in(l.daddr, l.loopback, l.loopback_len),
                vec![expr::ret()],
            ]),
        }
    }

    /// The host's own connections to `[::1]` are not DNATed: the reply would come back from
    /// the bridge to `::1`, which the kernel drops (IPv6 has no `route_localnet`). The shim's
    /// relay answers there instead (`runtime::proxy`).
    fn loopback_is_the_proxys(&self) -> Rule {
        let l = self.layout();
        Rule {
            chain: CHAIN_OUTPUT,
            comment: "berth:proxy-loopback6",
            exprs: cat(vec![
                self.is_family(),
                self.addr_in(l.daddr, l.loopback, l.loopback_len),
                vec![expr::ret()],
            ]),
        }
    }

    /// Egress masquerade and hairpin; IPv4 also masquerades the host's 127.0.0.0/8 going to
    /// the bridge (route_localnet). IPv6 has no such path: the kernel never routes ::1 out.
    fn postrouting(&self) -> Vec<Rule> {
        let l = self.layout();
        let subnet = (self.subnet.network(), self.subnet.prefix_len());
        let mut out = vec![
            Rule {
                chain: CHAIN_POSTROUTING,
                comment: self.comment("berth:egress", "berth:egress6"),
                exprs: cat(vec![
                    self.is_family(),
                    self.addr_in(l.saddr, subnet.0, subnet.1),
                    self.oif_is(Operator::NotEqual),
                    vec![expr::masquerade()],
                ]),
            },
            Rule {
                chain: CHAIN_POSTROUTING,
                comment: self.comment("berth:hairpin", "berth:hairpin6"),
                exprs: cat(vec![
                    self.is_family(),
                    self.oif_is(Operator::Equal),
                    Self::ct_dnat(Operator::NotEqual),
                    self.addr_in(l.saddr, subnet.0, subnet.1),
                    vec![expr::masquerade()],
                ]),
            },
        ];
        if self.family == Family::V4 {
            out.push(Rule {
                chain: CHAIN_POSTROUTING,
                comment: "berth:host-loopback",
                exprs: cat(vec![
                    self.is_family(),
                    self.oif_is(Operator::Equal),
                    self.addr_in(l.saddr, l.loopback, l.loopback_len),
                    vec![expr::masquerade()],
                ]),
            });
        }
        out
    }

    /// kube-proxy's CVE-2020-8558 guard: nothing but the host itself reaches its loopback
    /// unless DNATed. For IPv6 the kernel already drops ::1 arriving on other interfaces; the
    /// rule says so in the table too, and counts.
    fn loopback_guard(&self) -> Rule {
        let l = self.layout();
        Rule {
            chain: CHAIN_INPUT,
            comment: self.comment("berth:loopback-guard", "berth:loopback-guard6"),
            exprs: cat(vec![
                self.is_family(),
                vec![
                    expr::meta(MetaKey::Iif, REG1),
                    expr::cmp(Operator::NotEqual, REG1, &1u32.to_ne_bytes()),
                ],
                self.addr_in(l.daddr, l.loopback, l.loopback_len),
                Self::ct_dnat(Operator::Equal),
                vec![expr::counter(), expr::drop()],
            ]),
        }
    }
}

fn cat(parts: Vec<Vec<Expr>>) -> Vec<Expr> {
    parts.into_iter().flatten().collect()
}

struct MapDef {
    name: &'static str,
    key_type: u32,
    key_len: u32,
    data_type: u32,
    data_len: u32,
}

struct Rule {
    chain: &'static str,
    comment: &'static str,
    exprs: Vec<Expr>,
}

/// nft's type id of a concatenation: each part shifted in by 6 bits.
fn concat(types: &[u32]) -> u32 {
    types
        .iter()
        .fold(0, |acc, t| (acc << NFT_DATATYPE_BITS) | t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::model::Protocol;
    use netlink_packet_core::Emitable;

    fn ruleset() -> Ruleset {
        Ruleset {
            table: "probe".into(),
            bridge: "br-probe".into(),
            subnet: Subnet::parse("10.210.1.0/24").unwrap(),
            subnet6: None,
            egress: Egress::Masquerade,
            nat66: Nat66::Masquerade,
            isolate_from: Vec::new(),
        }
    }

    #[test]
    fn ipv6_rules_and_maps_come_with_an_ipv6_subnet() {
        let v4 = ruleset();
        assert_eq!(v4.map_names(), [MAP_IP4, MAP_ANY4]);
        assert!(!v4.expected_rules().iter().any(|(_, c)| c.ends_with('6')));
        let mut dual = ruleset();
        dual.subnet6 = Some(Subnet::parse("fd00:d::/64").unwrap());
        assert_eq!(dual.map_names(), [MAP_IP4, MAP_ANY4, MAP_IP6, MAP_ANY6]);
        assert_ne!(dual.version_comment(), v4.version_comment());
        let comments: Vec<&str> = dual.expected_rules().iter().map(|(_, c)| *c).collect();
        assert_eq!(
            comments,
            [
                "berth:publish-ip4",
                "berth:publish-any4",
                "berth:publish-ip6",
                "berth:publish-any6",
                "berth:loopback-is-host-only",
                "berth:loopback-is-host-only6",
                "berth:publish",
                "berth:proxy-loopback6",
                "berth:publish",
                "berth:egress",
                "berth:hairpin",
                "berth:host-loopback",
                "berth:egress6",
                "berth:hairpin6",
                "berth:loopback-guard",
                "berth:loopback-guard6",
            ]
        );
        // masquerade6 = false: IPv6 leaves with the containers' own addresses.
        let mut routed = dual.clone();
        routed.nat66 = Nat66::Routed;
        let rules = routed.expected_rules();
        assert!(!rules.iter().any(|(_, c)| *c == "berth:egress6"));
        assert!(rules.iter().any(|(_, c)| *c == "berth:egress"));
        assert_ne!(routed.version_comment(), dual.version_comment());
        // IPv6-only: no IPv4 rule or map at all.
        let mut v6 = ruleset();
        v6.subnet = Subnet::parse("fd00:e::/64").unwrap();
        assert_eq!(v6.map_names(), [MAP_IP6, MAP_ANY6]);
        assert!(
            v6.expected_rules()
                .iter()
                .all(|(_, c)| c.ends_with('6') || *c == "berth:publish")
        );
        // Internal: no egress of either family.
        let mut internal = dual;
        internal.egress = Egress::Internal;
        let rules = internal.expected_rules();
        assert!(!rules.iter().any(|(_, c)| c.starts_with("berth:egress")));
        let batch = internal.rebuild(&[]);
        let sets = batch
            .iter()
            .filter(|m| matches!(m.body, NfTablesMessage::NewSet(_)))
            .count();
        assert_eq!(sets, 4);
    }

    #[test]
    fn ipv6_dnat_expression_matches_nft() {
        // `dnat ip6 to ... map @pub6_any`: family 10, address from register 1, port from the
        // 32-bit register 12 (NFT_REG32_04), which follows the 16 bytes of the address.
        let e = expr::dnat(expr::NFPROTO_IPV6, REG1, REG32_04);
        let mut buf = vec![0; e.buffer_len()];
        e.emit(&mut buf);
        let got = hex::encode(&buf);
        assert!(got.contains("080002000000000a"), "family: {got}");
        assert!(got.contains("080005000000000c"), "port register: {got}");
    }

    fn web() -> PortElement {
        PortElement {
            host_ip: None,
            protocol: Protocol::Tcp,
            host_port: 8080,
            to_ip: "10.210.1.2".parse().unwrap(),
            to_port: 80,
            owner: "web:0123456789ab".into(),
        }
    }

    #[test]
    fn masquerade_rule_matches_nft() {
        // `oifname "br-probe" ip saddr 127.0.0.0/8 masquerade` minus nft's 1-byte shortcut for
        // /8 prefixes: compare expression by expression where the encodings agree.
        let masq = expr::masquerade();
        let mut buf = vec![0; netlink_packet_core::Emitable::buffer_len(&masq)];
        masq.emit(&mut buf);
        assert_eq!(hex::encode(buf), "14000180090001006d6173710000000004000280");
        let jump = expr::jump("publish");
        let mut buf = vec![0; jump.buffer_len()];
        jump.emit(&mut buf);
        assert_eq!(
            hex::encode(buf),
            "3c0001800e000100696d6d6564696174650000002800028008000100000000001c0002801800028008000100fffffffd0c0002007075626c69736800"
        );
    }

    #[test]
    fn hand_encoded_expressions_match_nft() {
        let cases: Vec<(Expr, &str)> = vec![
            (
                expr::dnat(expr::NFPROTO_IPV4, REG1, REG32_01),
                "30000180080001006e617400240002800800010000000001080002000000000208000300000000010800050000000009",
            ),
            (
                expr::fib_daddr_type(REG1),
                "2800018008000100666962001c000280080001000000000108000200000000030800030000000002",
            ),
            (
                expr::ct_status(REG1),
                "2000018007000100637400001400028008000100000000010800020000000002",
            ),
            (expr::counter(), "140001800c000100636f756e7465720004000280"),
        ];
        for (e, want) in cases {
            let mut buf = vec![0; e.buffer_len()];
            e.emit(&mut buf);
            let got = hex::encode(&buf);
            // nft orders attributes differently; compare as sets of attributes.
            assert_eq!(sorted_attrs(&got), sorted_attrs(want), "{e:?}");
        }
    }

    /// Splits an expression's DATA into its attributes, sorted, so attribute order does not matter.
    fn sorted_attrs(hexed: &str) -> Vec<String> {
        let b = hex::decode(hexed.get(..hexed.len()).unwrap()).unwrap_or_default();
        let mut out = Vec::new();
        let mut o = 4;
        while o + 4 <= b.len() {
            let len = u16::from_le_bytes([b[o], b[o + 1]]) as usize;
            let kind = u16::from_le_bytes([b[o + 2], b[o + 3]]) & 0x3fff;
            if len < 4 {
                break;
            }
            if kind == 2 {
                let mut p = o + 4;
                while p + 4 <= o + len {
                    let l = u16::from_le_bytes([b[p], b[p + 1]]) as usize;
                    if l < 4 {
                        break;
                    }
                    out.push(hex::encode(&b[p..p + l]));
                    p += (l + 3) & !3;
                }
            } else {
                out.push(hex::encode(&b[o..o + len]));
            }
            o += (len + 3) & !3;
        }
        out.sort();
        out
    }

    #[test]
    fn rebuild_is_add_delete_add_then_contents() {
        let batch = ruleset().rebuild(&[web()]);
        assert!(matches!(batch[0].body, NfTablesMessage::NewTable(_)));
        assert!(matches!(batch[1].body, NfTablesMessage::DeleteTable(_)));
        assert!(matches!(batch[2].body, NfTablesMessage::NewTable(_)));
        let rules = batch
            .iter()
            .filter(|m| matches!(m.body, NfTablesMessage::NewRule(_)))
            .count();
        assert_eq!(rules, ruleset().expected_rules().len());
        assert!(matches!(
            batch.last().unwrap().body,
            NfTablesMessage::NewSetElement(_)
        ));
        // The version changes with the bridge or subnet, so a changed config rebuilds.
        let mut other = ruleset();
        other.subnet = Subnet::parse("10.210.2.0/24").unwrap();
        assert_ne!(other.version_comment(), ruleset().version_comment());
    }

    #[test]
    fn a_lone_default_network_keeps_its_table() {
        // The version of a table made before named networks, for this bridge and subnet.
        let digest = sha2::Sha256::digest(b"1\nbr-probe\n10.210.1.0/24");
        assert_eq!(
            ruleset().version_comment(),
            format!("berth ruleset v1 {}", &hex::encode(digest)[..12])
        );
        assert!(
            !ruleset()
                .expected_rules()
                .iter()
                .any(|(c, _)| *c == CHAIN_FORWARD)
        );
    }

    #[test]
    fn isolation_and_internal_rules() {
        let mut r = ruleset();
        r.isolate_from = vec!["br-a".into(), "br-b".into()];
        let rules = r.expected_rules();
        let fwd: Vec<_> = rules.iter().filter(|(c, _)| *c == CHAIN_FORWARD).collect();
        assert_eq!(fwd.len(), 4);
        assert_ne!(r.version_comment(), ruleset().version_comment());
        assert!(rules.iter().any(|(_, c)| *c == "berth:egress"));
        r.egress = Egress::Internal;
        let rules = r.expected_rules();
        assert!(!rules.iter().any(|(_, c)| *c == "berth:egress"));
        assert!(rules.iter().any(|(_, c)| *c == "berth:internal-out"));
        let batch = r.rebuild(&[]);
        let chains = batch
            .iter()
            .filter(|m| matches!(m.body, NfTablesMessage::NewChain(_)))
            .count();
        assert_eq!(chains, 6);
    }
}
