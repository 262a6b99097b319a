//! Whether another table's forward chain drops the bridge's traffic (firewalld, ufw, a hand-made
//! `policy drop`). berth never edits other tables, so it says so plainly, with the fix.
//!
//! An accept in berth's own table cannot help: every base chain on the forward hook must let a
//! packet through. A chain counts as blocking when its policy is drop, or its last rule drops or
//! rejects unconditionally (firewalld's shape), unless one of its rules names the bridge (the
//! admin already allowed it).

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, InetHookNumber, ListAttribute,
    Verdict, VerdictAttribute,
};

use super::expr::{Expr, NF_DROP, expr_name};
use super::socket::{ChainInfo, RuleInfo};

/// A forward chain that drops the bridge's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub family: NetfilterProtoFamily,
    pub table: String,
    pub chain: String,
    /// Whether the table looks like firewalld's or ufw's, for the fix to suggest.
    pub manager: Manager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Firewalld,
    Ufw,
    /// iptables-nft's tables (`ip filter` with an upper-case `FORWARD`).
    Iptables,
    Nft,
}

/// Finds the blocking forward chains among `chains`; `rules` gives a chain's rules.
pub fn blockers(
    our_table: &str,
    bridge: &str,
    chains: &[ChainInfo],
    mut rules: impl FnMut(&ChainInfo) -> Vec<RuleInfo>,
) -> Vec<Blocker> {
    let mut out = Vec::new();
    for c in chains {
        let l3 = matches!(
            c.family,
            NetfilterProtoFamily::IPv4 | NetfilterProtoFamily::IPv6 | NetfilterProtoFamily::Inet
        );
        let ours = c.family == NetfilterProtoFamily::Inet && c.table == our_table;
        if !l3 || ours || c.hook != Some(InetHookNumber::Forward) {
            continue;
        }
        let chain_rules = rules(c);
        let drops_by_default = c.policy == Some(NF_DROP)
            || chain_rules
                .last()
                .is_some_and(|r| drops_unconditionally(&r.exprs));
        if !drops_by_default
            || chain_rules
                .iter()
                .any(|r| names_interface(&r.exprs, bridge))
        {
            continue;
        }
        let siblings: Vec<&ChainInfo> = chains
            .iter()
            .filter(|o| o.family == c.family && o.table == c.table)
            .collect();
        let manager = if c.table == "firewalld" {
            Manager::Firewalld
        } else if siblings.iter().any(|o| o.name.starts_with("ufw")) {
            Manager::Ufw
        } else if c.name == "FORWARD" {
            Manager::Iptables
        } else {
            Manager::Nft
        };
        out.push(Blocker {
            family: c.family,
            table: c.table.clone(),
            chain: c.name.clone(),
            manager,
        });
    }
    out
}

/// The plain message for `berth status` and the logs, with the one-line fix.
pub fn message(bridge: &str, b: &Blocker) -> String {
    let family = family_name(b.family);
    let fix = match b.manager {
        Manager::Firewalld => format!(
            "firewall-cmd --permanent --zone=trusted --add-interface={bridge} && firewall-cmd --reload"
        ),
        Manager::Ufw => {
            format!("ufw route allow in on {bridge} && ufw route allow out on {bridge}")
        }
        Manager::Iptables => format!(
            "iptables -I {chain} -i {bridge} -j ACCEPT && iptables -I {chain} -o {bridge} -j ACCEPT",
            chain = b.chain
        ),
        Manager::Nft => format!(
            "nft insert rule {family} {table} {chain} iifname {bridge} accept && \
             nft insert rule {family} {table} {chain} oifname {bridge} accept",
            table = b.table,
            chain = b.chain
        ),
    };
    format!(
        "the host firewall drops forwarded traffic (chain {chain} in table {family} {table}), so \
         containers on bridge {bridge} cannot reach other hosts and published ports are \
         unreachable; allow the bridge with: {fix}",
        chain = b.chain,
        table = b.table,
    )
}

fn family_name(f: NetfilterProtoFamily) -> &'static str {
    match f {
        NetfilterProtoFamily::IPv4 => "ip",
        NetfilterProtoFamily::IPv6 => "ip6",
        _ => "inet",
    }
}

fn data_of(e: &Expr) -> Option<&Expressions> {
    match e {
        ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
            ExpressionAttribute::Data(d) => Some(d),
            _ => None,
        }),
        _ => None,
    }
}

fn is_drop_verdict(e: &Expr) -> bool {
    let Some(Expressions::Immediate(attrs)) = data_of(e) else {
        return false;
    };
    attrs.iter().any(|a| match a {
        Immediate::Data(DataAttribute::Verdict(v)) => v
            .iter()
            .any(|v| matches!(v, VerdictAttribute::Code(Verdict::Other(code)) if *code == NF_DROP)),
        _ => false,
    })
}

/// A rule of only counters, logs and a drop or reject: it matches every packet.
fn drops_unconditionally(exprs: &[Expr]) -> bool {
    let harmless = |e: &Expr| matches!(expr_name(e), Some("counter") | Some("log") | Some("limit"));
    let terminal = |e: &Expr| expr_name(e) == Some("reject") || is_drop_verdict(e);
    exprs.iter().any(terminal) && exprs.iter().all(|e| harmless(e) || terminal(e))
}

/// Whether a rule compares an interface name with the bridge's (exactly or as a prefix).
fn names_interface(exprs: &[Expr], bridge: &str) -> bool {
    exprs.iter().any(|e| match data_of(e) {
        Some(Expressions::Cmp(attrs)) => attrs.iter().any(|a| match a {
            Cmp::Data(DataAttribute::Value(v)) => {
                // Exact names are NUL-padded; `berth*` wildcards compare a prefix.
                let name = v.split(|b| *b == 0).next().unwrap_or(&[]);
                (name.len() >= 3 || v.len() == 16 && !name.is_empty())
                    && bridge.as_bytes().starts_with(name)
            }
            _ => false,
        }),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::expr;
    use super::*;
    use netlink_packet_netfilter::nftables::{MetaKey, Operator};

    fn chain(family: NetfilterProtoFamily, table: &str, name: &str, policy: u32) -> ChainInfo {
        ChainInfo {
            family,
            table: table.into(),
            name: name.into(),
            hook: Some(InetHookNumber::Forward),
            policy: Some(policy),
        }
    }

    fn rule(exprs: Vec<Expr>) -> RuleInfo {
        RuleInfo {
            chain: String::new(),
            comment: None,
            exprs,
        }
    }

    #[test]
    fn drop_policy_blocks_until_the_bridge_is_allowed() {
        let chains = vec![
            chain(NetfilterProtoFamily::IPv4, "filter", "FORWARD", 0),
            chain(NetfilterProtoFamily::Inet, "berth", "forward", 0),
        ];
        let found = blockers("berth", "berth0", &chains, |_| vec![]);
        assert_eq!(found.len(), 1, "berth's own table is not a blocker");
        assert_eq!(found[0].manager, Manager::Iptables);
        let msg = message("berth0", &found[0]);
        assert!(
            msg.contains("iptables -I FORWARD -i berth0 -j ACCEPT"),
            "{msg}"
        );

        let allow = rule(vec![
            expr::meta(MetaKey::Iifname, expr::REG1),
            expr::cmp(Operator::Equal, expr::REG1, &expr::ifname("berth0")),
        ]);
        assert!(blockers("berth", "berth0", &chains, |_| vec![allow.clone()]).is_empty());
    }

    #[test]
    fn firewalld_final_reject_blocks() {
        let chains = vec![chain(
            NetfilterProtoFamily::Inet,
            "firewalld",
            "filter_FORWARD",
            1,
        )];
        let reject = rule(vec![
            expr::counter(),
            Expressions::Other {
                expression_type: "reject".into(),
                attributes: vec![],
            }
            .into(),
        ]);
        let found = blockers("berth", "berth0", &chains, |_| vec![reject.clone()]);
        assert_eq!(found[0].manager, Manager::Firewalld);
        assert!(message("berth0", &found[0]).contains("--zone=trusted --add-interface=berth0"));
        // An accepting policy with a conditional last rule does not block.
        let conditional = rule(vec![
            expr::meta(MetaKey::Iifname, expr::REG1),
            expr::cmp(Operator::Equal, expr::REG1, &expr::ifname("eth9")),
            expr::drop(),
        ]);
        assert!(blockers("berth", "berth0", &chains, |_| vec![conditional.clone()]).is_empty());
    }
}
