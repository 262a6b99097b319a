//! Published ports as elements of berth's maps: their wire encoding (keys and data are
//! concatenations padded to 32 bits, ports big-endian, the owner as an nft comment) and the
//! batches that add and delete them.

use std::net::{IpAddr, Ipv4Addr};

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

    fn attributes(&self, with_data: bool) -> Vec<SetElementAttribute> {
        let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(self.key()))];
        if with_data {
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
            MAP_ANY4 => (None, key),
            _ => return None,
        };
        let protocol = match *rest.first()? {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => return None,
        };
        let host_port = u16::from_be_bytes(rest.get(4..6)?.try_into().ok()?);
        let to_ip = IpAddr::V4(read_v4(data)?);
        let to_port = u16::from_be_bytes(data.get(4..6)?.try_into().ok()?);
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

/// A container's published ports as elements. IPv6 is designed in (maps `pub6_*`) but not
/// wired yet: an IPv6 address is an error naming the port.
pub fn elements_for(
    owner: &str,
    to_ip: IpAddr,
    ports: &[PortMapping],
) -> Result<Vec<PortElement>, String> {
    if to_ip.is_ipv6() {
        return Err(format!("container address {to_ip} for published ports"));
    }
    ports
        .iter()
        .map(|p| {
            if let Some(ip @ IpAddr::V6(_)) = p.host_ip {
                return Err(format!("host address {ip} of published port {}", p.host));
            }
            Ok(PortElement {
                host_ip: p.host_ip,
                protocol: p.protocol,
                host_port: p.host,
                to_ip,
                to_port: p.container,
                owner: owner.to_string(),
            })
        })
        .collect()
}

/// Adds elements, one message per map. Adding an element that exists with the same data is a
/// no-op; with other data (another container's port) the whole batch fails.
pub fn add_elements(table: &str, elements: &[PortElement]) -> Vec<Msg> {
    per_map(table, elements, true)
        .into_iter()
        .map(|body| Msg {
            body: NfTablesMessage::NewSetElement(body),
            flags: NLM_F_CREATE,
        })
        .collect()
}

/// Deletes elements (each must exist, or the whole batch fails with ENOENT).
pub fn delete_elements(table: &str, elements: &[PortElement]) -> Vec<Msg> {
    per_map(table, elements, false)
        .into_iter()
        .map(|body| Msg {
            body: NfTablesMessage::DeleteSetElement(body),
            flags: 0,
        })
        .collect()
}

fn per_map(table: &str, elements: &[PortElement], with_data: bool) -> Vec<SetElementMessage> {
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
                        .map(|e| ListAttribute::Element(e.attributes(with_data)))
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
            let decoded = PortElement::decode(
                el.map(),
                &el.key(),
                &el.data(),
                Some(&expr::comment(&el.owner)),
            );
            assert_eq!(decoded, Some(el));
        }
    }

    #[test]
    fn ipv6_ports_are_refused_by_name() {
        let p = PortMapping {
            host_ip: Some("::1".parse().unwrap()),
            host: 80,
            container: 80,
            protocol: Protocol::Tcp,
        };
        let e = elements_for("web-0123456789ab", "10.1.0.2".parse().unwrap(), &[p]).unwrap_err();
        assert!(e.contains("::1"), "{e}");
    }
}
