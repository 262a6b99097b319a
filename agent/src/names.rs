//! Names of every kernel object berth makes, derived from the config's `instance` and the
//! container's incarnation id, so that each can be found again and attributed to its owner.
//!
//! | object | name |
//! |---|---|
//! | incarnation id | 12 random hex digits, recorded in the container dir |
//! | cgroup | `<instance>/<name>-<id>` under each v1 hierarchy, or under the v2 root |
//! | scope unit (systemd hosts) | `berth-<instance>_<name>-<id>.scope` in berth.slice |
//! | veth, host side | `bth` + 4 hex of sha256(instance) + the id's first 8 hex (15 chars) |
//! | netns | `<run_dir>/netns/<name>-<id>` |
//! | nftables table | `inet <instance>` (the default network), `inet <instance>-<network>` |
//! | named network's bridge | `<instance>-<network>`, or when longer than 14 bytes the first 9 of the instance, `-` and 4 hex of sha256(`<instance>/<network>`) |
//! | named network's veths | `bth` + 4 hex of sha256(`<instance>/<network>`) + the id's first 8 hex |
//! | link alias (IFLA_IFALIAS) | `berth:<instance>:<name>:<id>` |
//!
//! Interface names are limited to 15 bytes, too short for the instance itself: the veth name
//! carries a tag of it, and the link's alias carries the whole owner so that an orphan can be
//! attributed without doubt.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Random id of one incarnation of a container (kept across restarts, new on recreate).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IncarnationId(String);

pub const ID_LEN: usize = 12;

impl IncarnationId {
    pub fn random() -> Self {
        let mut b = [0u8; ID_LEN / 2];
        getrandom::fill(&mut b).expect("getrandom");
        IncarnationId(hex::encode(b))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| IncarnationId(s.to_string()))
    }
}

impl TryFrom<String> for IncarnationId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        IncarnationId::parse(&s).ok_or_else(|| format!("invalid incarnation id {s:?}"))
    }
}

impl From<IncarnationId> for String {
    fn from(id: IncarnationId) -> String {
        id.0
    }
}

impl fmt::Display for IncarnationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names derived from one agent's instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    instance: String,
    tag: String,
    /// `<instance>` for the default network, `<instance>-<network>` for a named one.
    table: String,
}

impl Names {
    pub fn new(instance: &str) -> Self {
        use sha2::Digest;
        let tag = hex::encode(sha2::Sha256::digest(instance.as_bytes()))[..4].to_string();
        Names {
            instance: instance.to_string(),
            tag,
            table: instance.to_string(),
        }
    }

    /// The names of a named network's objects (`[networks.<network>]`): its veths carry a tag of
    /// instance and network, so each network's sweep sees only its own, and its table is
    /// `<instance>-<network>`. Container keys, aliases and cgroups stay the instance's.
    pub fn for_network(&self, network: &str) -> Names {
        Names {
            instance: self.instance.clone(),
            tag: network_tag(&self.instance, network),
            table: format!("{}-{network}", self.instance),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// `<name>-<id>`: the leaf of a container's cgroup and its netns file name.
    pub fn container_key(name: &str, id: &IncarnationId) -> String {
        format!("{name}-{id}")
    }

    /// Splits a `<name>-<id>` key back; `None` if it is not one.
    pub fn parse_container_key(key: &str) -> Option<(&str, IncarnationId)> {
        let (name, id) = key.rsplit_once('-')?;
        Some((name, IncarnationId::parse(id)?)).filter(|(n, _)| !n.is_empty())
    }

    /// The cgroup path of a container relative to a hierarchy's root.
    pub fn cgroup(&self, name: &str, id: &IncarnationId) -> String {
        format!("{}/{}", self.instance, Self::container_key(name, id))
    }

    /// The transient scope unit of a container on a systemd host:
    /// `berth-<instance>_<name>-<id>.scope` (an instance has no `_`, so the first one ends it).
    pub fn scope_unit(&self, name: &str, id: &IncarnationId) -> String {
        format!(
            "berth-{}_{}.scope",
            self.instance,
            Self::container_key(name, id)
        )
    }

    /// The `<name>-<id>` key of one of this instance's scope units; `None` for anything else.
    pub fn parse_scope_unit<'a>(&self, unit: &'a str) -> Option<&'a str> {
        let key = unit
            .strip_prefix("berth-")?
            .strip_prefix(self.instance.as_str())?
            .strip_prefix('_')?
            .strip_suffix(".scope")?;
        Self::parse_container_key(key).map(|_| key)
    }

    /// The directory under each hierarchy that holds this instance's cgroups.
    pub fn cgroup_parent(&self) -> &str {
        &self.instance
    }

    /// Host-side veth name: `bth` + instance tag + 8 hex of the id.
    pub fn veth(&self, id: &IncarnationId) -> String {
        format!("bth{}{}", self.tag, &id.as_str()[..8])
    }

    /// Whether a link name has this instance's veth shape (its alias still decides ownership).
    pub fn is_own_veth(&self, ifname: &str) -> bool {
        ifname.len() == 15 && ifname.starts_with("bth") && ifname[3..7] == self.tag
    }

    /// The alias set on every link berth creates for a container.
    pub fn link_alias(&self, name: &str, id: &IncarnationId) -> String {
        format!("berth:{}:{name}:{id}", self.instance)
    }

    /// Parses a link alias of this instance back into (name, id).
    pub fn parse_link_alias(&self, alias: &str) -> Option<(String, IncarnationId)> {
        let rest = alias
            .strip_prefix("berth:")?
            .strip_prefix(self.instance.as_str())?
            .strip_prefix(':')?;
        let (name, id) = rest.rsplit_once(':')?;
        Some((name.to_string(), IncarnationId::parse(id)?))
    }

    /// The nftables table (family inet) this instance owns.
    pub fn nft_table(&self) -> &str {
        &self.table
    }
}

/// 4 hex digits of sha256(`<instance>/<network>`).
fn network_tag(instance: &str, network: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        format!("{instance}/{network}").as_bytes(),
    ))[..4]
        .to_string()
}

/// The bridge of a named network whose config does not name one: `<instance>-<network>` when
/// that fits in 14 bytes, else the first 9 bytes of the instance, `-` and a 4-hex tag of both.
/// Never 15 bytes, so never the shape of a veth ([`Names::is_own_veth`]); always starting with
/// the instance (or its first 9 bytes), so the leak check and `berth doctor` attribute it.
pub fn network_bridge(instance: &str, network: &str) -> String {
    let plain = format!("{instance}-{network}");
    if plain.len() <= 14 {
        return plain;
    }
    let head = &instance[..instance.len().min(9)];
    format!("{head}-{}", network_tag(instance, network))
}

/// Checks an instance name: it prefixes kernel object names, so it is short and plain. The
/// rule lives in the spec crate, which validates the config file.
pub fn validate_instance(instance: &str) -> Result<(), String> {
    berth_spec::names::validate_instance(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_fits_ifnamsiz_and_is_recognised() {
        let n = Names::new("berth");
        let id = IncarnationId::random();
        let v = n.veth(&id);
        assert_eq!(v.len(), 15);
        assert!(n.is_own_veth(&v));
        assert!(!Names::new("other").is_own_veth(&v));
    }

    #[test]
    fn keys_and_aliases_roundtrip() {
        let n = Names::new("t1");
        let id = IncarnationId::parse("0123456789ab").unwrap();
        let key = Names::container_key("web-1", &id);
        assert_eq!(
            Names::parse_container_key(&key),
            Some(("web-1", id.clone()))
        );
        assert_eq!(Names::parse_container_key("web"), None);
        assert_eq!(Names::parse_container_key("-0123456789ab"), None);
        let alias = n.link_alias("web-1", &id);
        assert_eq!(
            n.parse_link_alias(&alias),
            Some(("web-1".into(), id.clone()))
        );
        assert_eq!(Names::new("t").parse_link_alias(&alias), None);
        assert_eq!(n.cgroup("web-1", &id), "t1/web-1-0123456789ab");
        let unit = n.scope_unit("web-1", &id);
        assert_eq!(unit, "berth-t1_web-1-0123456789ab.scope");
        assert_eq!(n.parse_scope_unit(&unit), Some("web-1-0123456789ab"));
        // Another instance whose name starts the same is not ours.
        assert_eq!(Names::new("t").parse_scope_unit(&unit), None);
        assert_eq!(n.parse_scope_unit("berth-t1_web.scope"), None);
        assert_eq!(Names::new("t1-web").parse_scope_unit(&unit), None);
    }

    #[test]
    fn network_names_are_their_own() {
        let n = Names::new("berth");
        let b = n.for_network("backend");
        assert_eq!(b.nft_table(), "berth-backend");
        assert_eq!(n.nft_table(), "berth");
        let id = IncarnationId::random();
        assert!(b.is_own_veth(&b.veth(&id)));
        assert!(!n.is_own_veth(&b.veth(&id)));
        assert!(!b.is_own_veth(&n.veth(&id)));
        assert_eq!(b.link_alias("web", &id), n.link_alias("web", &id));
        assert_eq!(network_bridge("berth", "backend"), "berth-backend");
        assert_eq!(network_bridge("btnet1a2b3c4", "backend").len(), 14);
    }

    proptest::proptest! {
        /// Every derived bridge is a valid interface name that starts with the instance (or
        /// its first 9 bytes), is never shaped like a veth, and differs between networks.
        #[test]
        fn derived_bridges(
            instance in "[a-z][a-z0-9-]{0,11}",
            a in "[a-z][a-z0-9-]{0,31}",
            b in "[a-z][a-z0-9-]{0,31}",
        ) {
            let x = network_bridge(&instance, &a);
            proptest::prop_assert!(!x.is_empty() && x.len() <= 14, "{}", x);
            proptest::prop_assert!(x.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
            proptest::prop_assert!(x.starts_with(&instance[..instance.len().min(9)]));
            proptest::prop_assert!(!Names::new(&instance).is_own_veth(&x));
            proptest::prop_assert!(!Names::new(&instance).for_network(&a).is_own_veth(&x));
            if a != b {
                // Plain names differ by construction; a hashed one may meet another (1 in
                // 65536, or a network named like the tag): the agent refuses that at start
                // (network::NetDef::from_config).
                let y = network_bridge(&instance, &b);
                if x == format!("{instance}-{a}") && y == format!("{instance}-{b}") {
                    proptest::prop_assert_ne!(&x, &y);
                }
            }
        }

        /// A network's veths and tables never collide with the default network's.
        #[test]
        fn network_veths_are_apart(instance in "[a-z][a-z0-9-]{0,11}", net in "[a-z][a-z0-9-]{0,31}") {
            let d = Names::new(&instance);
            let n = d.for_network(&net);
            proptest::prop_assert_ne!(d.nft_table(), n.nft_table());
            let id = IncarnationId::parse("0123456789ab").unwrap();
            // The tags are 4 hex digits of different inputs: equal only by a hash collision.
            if d.veth(&id) != n.veth(&id) {
                proptest::prop_assert!(!d.is_own_veth(&n.veth(&id)));
            }
        }
    }

    #[test]
    fn ids() {
        let id = IncarnationId::random();
        assert_eq!(IncarnationId::parse(id.as_str()), Some(id));
        assert_eq!(IncarnationId::parse("xyz"), None);
        assert_eq!(IncarnationId::parse("0123456789AB"), None);
    }

    #[test]
    fn instances() {
        assert!(validate_instance("berth").is_ok());
        assert!(validate_instance("t-1").is_ok());
        for bad in ["", "1a", "Berth", "a_b", "abcdefghijklm"] {
            assert!(validate_instance(bad).is_err(), "{bad}");
        }
    }
}
