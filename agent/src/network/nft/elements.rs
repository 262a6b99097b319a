//! Published ports as elements of berth's maps: their wire encoding (keys and data are
//! concatenations padded to 32 bits, ports big-endian, the owner as an nft comment) and the
//! batches that add and delete them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_spec::model::{PortMapping, Protocol};
use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage,
};

use super::expr;
use super::ruleset::{MAP_ANY4, MAP_ANY6, MAP_IP4, MAP_IP6, Msg};

/// A published port as it lives in a map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortElement {
    /// `None`: any of the host's addresses.
    pub host_ip: Option<IpAddr>,
    pub protocol: Protocol,
    pub host_port: u16,
    pub to_ip: IpAddr,
    pub to_port: u16,
    /// `<name>-<id>` of the container it belongs to.
    pub owner: String,
}

impl PortElement {
    /// The map it lives in.
    pub fn map(&self) -> &'static str {
        match (self.host_ip, self.to_ip) {
            (Some(_), IpAddr::V4(_)) => MAP_IP4,
            (None, IpAddr::V4(_)) => MAP_ANY4,
            (Some(_), IpAddr::V6(_)) => MAP_IP6,
            (None, IpAddr::V6(_)) => MAP_ANY6,
        }
    }

    /// What identifies it in its map (two containers cannot share a key).
    pub fn key_tuple(&self) -> (Option<IpAddr>, Protocol, u16) {
        (self.host_ip, self.protocol, self.host_port)
    }

    fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(12);
        if let Some(ip) = self.host_ip {
            push_addr(&mut k, ip);
        }
        k.extend_from_slice(&[proto_number(self.protocol), 0, 0, 0]);
        push_port(&mut k, self.host_port);
        k
    }

    fn data(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(8);
        push_addr(&mut d, self.to_ip);
        push_port(&mut d, self.to_port);
        d
    }

    fn attributes(&self, parts: Parts) -> Vec<SetElementAttribute> {
        let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(self.key()))];
        if parts == Parts::KeyAndData {
            attrs.push(SetElementAttribute::Data(DataAttribute::Value(self.data())));
            attrs.push(SetElementAttribute::UserData(expr::comment(&self.owner)));
        }
        attrs
    }

    /// Decodes an element dumped from one of berth's maps.
    pub fn decode(
        map: &str,
        key: &[u8],
        data: &[u8],
        userdata: Option<&[u8]>,
    ) -> Option<PortElement> {
        let (host_ip, rest) = match map {
            MAP_IP4 => (Some(IpAddr::V4(read_v4(key)?)), key.get(4..)?),
            MAP_IP6 => (Some(IpAddr::V6(read_v6(key)?)), key.get(16..)?),
            MAP_ANY4 | MAP_ANY6 => (None, key),
            _ => return None,
        };
        let protocol = match *rest.first()? {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => return None,
        };
        let host_port = u16::from_be_bytes(rest.get(4..6)?.try_into().ok()?);
        let (to_ip, port_at) = match map {
            MAP_IP4 | MAP_ANY4 => (IpAddr::V4(read_v4(data)?), 4),
            _ => (IpAddr::V6(read_v6(data)?), 16),
        };
        let to_port = u16::from_be_bytes(data.get(port_at..port_at + 2)?.try_into().ok()?);
        Some(PortElement {
            host_ip,
            protocol,
            host_port,
            to_ip,
            to_port,
            owner: userdata.and_then(expr::parse_comment).unwrap_or_default(),
        })
    }
}

fn read_v4(b: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?))
}

fn read_v6(b: &[u8]) -> Option<Ipv6Addr> {
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?))
}

fn push_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

/// Concatenated fields are padded to 32 bits; ports are big-endian.
fn push_port(out: &mut Vec<u8>, port: u16) {
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// A container's published ports as elements, given its addresses on the network that
/// publishes them (one of each family at most). A port without `host_ip` answers on the
/// host's addresses of every family the container has here; `0.0.0.0` and `::` on every
/// address of their family; any other `host_ip` on that address only. A port of a family the
/// container lacks here is another network's to publish (the host publishes IPv6 ports on the
/// first routed network with IPv6 when the primary has none; the spec check makes sure there
/// is one): skipped.
pub fn elements_for(owner: &str, to: &[IpAddr], ports: &[PortMapping]) -> Vec<PortElement> {
    let of_family = |v6: bool| to.iter().copied().find(|ip| ip.is_ipv6() == v6);
    let mut out = Vec::new();
    for p in ports {
        let element = |host_ip: Option<IpAddr>, to_ip: IpAddr| PortElement {
            host_ip,
            protocol: p.protocol,
            host_port: p.host,
            to_ip,
            to_port: p.container,
            owner: owner.to_string(),
        };
        match p.host_ip {
            None => out.extend(to.iter().map(|ip| element(None, *ip))),
            // The kernel cannot DNAT [::1] to a container: the shim relays it.
            Some(IpAddr::V6(host)) if host.is_loopback() => {}
            Some(host) => {
                if let Some(to_ip) = of_family(host.is_ipv6()) {
                    out.push(element((!host.is_unspecified()).then_some(host), to_ip));
                }
            }
        }
    }
    out
}

/// Adds elements, one message per map. Adding an element that exists with the same data is a
/// no-op; with other data (another container's port) the whole batch fails.
pub fn add_elements(table: &str, elements: &[PortElement]) -> Vec<Msg> {
    per_map(table, elements, Parts::KeyAndData)
        .into_iter()
        .map(|body| Msg {
            body: NfTablesMessage::NewSetElement(body),
            flags: NLM_F_CREATE,
        })
        .collect()
}

/// Deletes elements (each must exist, or the whole batch fails with ENOENT).
pub fn delete_elements(table: &str, elements: &[PortElement]) -> Vec<Msg> {
    per_map(table, elements, Parts::KeyOnly)
        .into_iter()
        .map(|body| Msg {
            body: NfTablesMessage::DeleteSetElement(body),
            flags: 0,
        })
        .collect()
}

/// What of an element a message carries: an add needs its data (the DNAT target and owner), a
/// delete only its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parts {
    KeyOnly,
    KeyAndData,
}

fn per_map(table: &str, elements: &[PortElement], parts: Parts) -> Vec<SetElementMessage> {
    let mut maps: Vec<&'static str> = elements.iter().map(|e| e.map()).collect();
    maps.sort();
    maps.dedup();
    maps.into_iter()
        .map(|map| SetElementMessage {
            attributes: vec![
                SetElementList::Table(table.to_string()),
                SetElementList::Set(map.to_string()),
                SetElementList::Elements(
                    elements
                        .iter()
                        .filter(|e| e.map() == map)
                        .map(|e| ListAttribute::Element(e.attributes(parts)))
                        .collect(),
                ),
            ],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn bytes(m: &NfTablesMessage) -> String {
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        hex::encode(buf)
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

    // Vectors captured from `nft -f` (nftables 1.0.6) with `strace -e write=`: the bodies after
    // the 4-byte nfgenmsg header.
    #[test]
    fn element_matches_nft() {
        let msgs = add_elements("probe", &[web()]);
        assert_eq!(
            bytes(&msgs[0].body),
            "0a00010070726f62650000000d000200707562345f616e7900000000\
             400003803c000180100001800c000100060000001f900000100002800c0001000ad2010200500000\
             1700060000117765623a3031323334353637383961620000"
        );
    }

    #[test]
    fn elements_decode_back() {
        let mut e = web();
        e.owner = "web-0123456789ab".into();
        let ip = PortElement {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            protocol: Protocol::Udp,
            host_port: 5353,
            ..e.clone()
        };
        for el in [e, ip] {
            assert_decodes_back(el);
        }
    }

    /// What the kernel would hand back for an element decodes to the same element.
    fn assert_decodes_back(el: PortElement) {
        let decoded = PortElement::decode(
            el.map(),
            &el.key(),
            &el.data(),
            Some(&expr::comment(&el.owner)),
        );
        assert_eq!(decoded, Some(el));
    }

    #[test]
    fn ipv6_elements_decode_back() {
        let v6 = PortElement {
            to_ip: "fd00:b::2".parse().unwrap(),
            owner: "web-0123456789ab".into(),
            ..web()
        };
        let ip = PortElement {
            host_ip: Some("2001:db8::7".parse().unwrap()),
            ..v6.clone()
        };
        assert_eq!((v6.map(), ip.map()), (MAP_ANY6, MAP_IP6));
        assert_eq!((v6.key().len(), v6.data().len()), (8, 20));
        assert_eq!((ip.key().len(), ip.data().len()), (24, 20));
        for el in [v6, ip] {
            assert_decodes_back(el);
        }
    }

    #[test]
    fn ports_go_to_each_family_the_container_has() {
        let port = |host_ip: Option<&str>| PortMapping {
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host: 8080,
            container: 80,
            protocol: Protocol::Tcp,
        };
        let v4: IpAddr = "10.1.0.2".parse().unwrap();
        let v6: IpAddr = "fd00:b::2".parse().unwrap();
        let maps = |to: &[IpAddr], host_ip: Option<&str>| {
            elements_for("web-0123456789ab", to, &[port(host_ip)])
                .iter()
                .map(|e| (e.map(), e.to_ip))
                .collect::<Vec<_>>()
        };
        assert_eq!(maps(&[v4, v6], None), [(MAP_ANY4, v4), (MAP_ANY6, v6)]);
        assert_eq!(maps(&[v6], None), [(MAP_ANY6, v6)]);
        assert_eq!(maps(&[v4, v6], Some("::")), [(MAP_ANY6, v6)]);
        assert_eq!(maps(&[v4, v6], Some("0.0.0.0")), [(MAP_ANY4, v4)]);
        assert_eq!(maps(&[v4, v6], Some("2001:db8::1")), [(MAP_IP6, v6)]);
        assert_eq!(maps(&[v4], Some("127.0.0.1")), [(MAP_IP4, v4)]);
        // Another network's to publish.
        assert_eq!(maps(&[v4], Some("::")), []);
        assert_eq!(maps(&[v6], Some("192.0.2.1")), []);
        // [::1] is the shim's relay's, never an element.
        assert_eq!(maps(&[v4, v6], Some("::1")), []);
    }
}
