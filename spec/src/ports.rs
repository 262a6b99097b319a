//! `ports`: the short form users know from Docker (`"127.0.0.1:8080:80/udp"`, ranges
//! `"8000-8002:9000-9002"`) and tables; ranges are expanded into one mapping per port.

use std::net::IpAddr;

use crate::decode::{Cx, index, join};
use crate::model::{PortMapping, Protocol};
use crate::tree::{Kind, Node, Span};

pub(crate) const KEYS: &[&str] = &["host_ip", "host", "container", "protocol"];

/// Parsed mappings, each with the span of the entry it came from.
pub(crate) fn decode(cx: &mut Cx<'_>, n: &Node) -> Option<Vec<(PortMapping, Span)>> {
    let items = cx.array(n, "ports")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = index("ports", i);
        let parsed = match &item.kind {
            Kind::Str(s) => parse_short(s)
                .map_err(|e| cx.error(item.span, &key, e))
                .ok(),
            Kind::Table(_) => decode_table(cx, item, &key),
            _ => {
                cx.error(
                    item.span,
                    &key,
                    format!(
                        "expected a string such as \"8080:80\" or a table, found {}",
                        item.kind.describe()
                    ),
                );
                None
            }
        };
        if let Some(ms) = parsed {
            out.extend(ms.into_iter().map(|m| (m, item.span)));
        }
    }
    // Partial on error: the diagnostics already recorded fail the spec, and checks that
    // follow still see the entries that did parse.
    Some(out)
}

fn decode_table(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<Vec<PortMapping>> {
    let t = cx.table(n, key, KEYS)?;
    let mut ok = true;
    let host_ip = match t.get("host_ip") {
        Some(v) => match cx.str(v, &join(key, "host_ip")).map(parse_ip) {
            Some(Ok(ip)) => Some(ip),
            Some(Err(e)) => {
                cx.error(v.span, &join(key, "host_ip"), e);
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    let mut range = |name: &str| -> Option<(u16, u16)> {
        let k = join(key, name);
        let Some(v) = t.get(name) else {
            cx.error(n.span, key, format!("missing key {name:?}"));
            return None;
        };
        match &v.kind {
            Kind::Int(_) => cx.int(v, &k, 1, 65535).map(|p| (p as u16, p as u16)),
            Kind::Str(s) => parse_range(s).map_err(|e| cx.error(v.span, &k, e)).ok(),
            _ => {
                cx.error(
                    v.span,
                    &k,
                    format!(
                        "expected a port number or a range \"8000-8010\", found {}",
                        v.kind.describe()
                    ),
                );
                None
            }
        }
    };
    let host = range("host");
    let container = range("container");
    let protocol = match t.get("protocol") {
        Some(v) => cx.choice(
            v,
            &join(key, "protocol"),
            &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
        ),
        None => Some(Protocol::Tcp),
    };
    let (host, container, protocol) = (host?, container?, protocol?);
    if !ok {
        return None;
    }
    expand(host_ip, host, container, protocol)
        .map_err(|e| cx.error(n.span, key, e))
        .ok()
}

/// `[host_ip:]host:container[/protocol]`, each port a number or a range.
pub(crate) fn parse_short(s: &str) -> Result<Vec<PortMapping>, String> {
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, "tcp")) => (r, Protocol::Tcp),
        Some((r, "udp")) => (r, Protocol::Udp),
        Some((_, p)) => {
            return Err(format!(
                "invalid port {s:?}: unknown protocol {p:?} (tcp or udp)"
            ));
        }
        None => (s, Protocol::Tcp),
    };
    let (ip, ports) = if let Some(v6) = rest.strip_prefix('[') {
        let (ip, after) = v6
            .split_once("]:")
            .ok_or_else(|| format!("invalid port {s:?}: expected \"[IPv6]:host:container\""))?;
        (Some(ip), after)
    } else {
        match rest.matches(':').count() {
            1 => (None, rest),
            2 => {
                let (ip, after) = rest.split_once(':').expect("two colons");
                (Some(ip), after)
            }
            0 => {
                return Err(format!(
                    "invalid port {s:?}: give the host port too, as in \"{rest}:{rest}\" (berth never picks a random host port)"
                ));
            }
            _ => {
                return Err(format!(
                    "invalid port {s:?}: expected [host_ip:]host:container[/udp]; write an IPv6 address in brackets"
                ));
            }
        }
    };
    let host_ip = ip
        .map(parse_ip)
        .transpose()
        .map_err(|e| format!("invalid port {s:?}: {e}"))?;
    let (host, container) = ports.split_once(':').expect("one colon left");
    if host.is_empty() {
        return Err(format!(
            "invalid port {s:?}: empty host port (berth never picks a random host port)"
        ));
    }
    let host = parse_range(host).map_err(|e| format!("invalid port {s:?}: {e}"))?;
    let container = parse_range(container).map_err(|e| format!("invalid port {s:?}: {e}"))?;
    expand(host_ip, host, container, protocol).map_err(|e| format!("invalid port {s:?}: {e}"))
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!("{p:?} is not a port number (1-65535)")),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
        None => port(s).map(|p| (p, p)),
    }
}

fn expand(
    host_ip: Option<IpAddr>,
    host: (u16, u16),
    container: (u16, u16),
    protocol: Protocol,
) -> Result<Vec<PortMapping>, String> {
    if host.1 - host.0 != container.1 - container.0 {
        return Err(format!(
            "host range {}-{} and container range {}-{} differ in length",
            host.0, host.1, container.0, container.1
        ));
    }
    Ok((0..=host.1 - host.0)
        .map(|i| PortMapping {
            host_ip,
            host: host.0 + i,
            container: container.0 + i,
            protocol,
        })
        .collect())
}

/// The short form of one mapping (what `--show` prints).
pub(crate) fn format(m: &PortMapping) -> String {
    let ip = match m.host_ip {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    let proto = match m.protocol {
        Protocol::Tcp => "",
        Protocol::Udp => "/udp",
    };
    format!("{ip}{}:{}{proto}", m.host, m.container)
}

/// Whether two host addresses can take the same port: `None` and the unspecified addresses
/// cover every address (`::` also takes IPv4 on a dual-stack socket).
pub(crate) fn ips_overlap(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => {
            a == b
                || matches!(a, IpAddr::V6(x) if x.is_unspecified())
                || matches!(b, IpAddr::V6(x) if x.is_unspecified())
                || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortMapping {
        let v = parse_short(s).unwrap();
        assert_eq!(v.len(), 1);
        v[0]
    }

    #[test]
    fn short_forms() {
        let m = one("8080:80");
        assert_eq!(
            (m.host_ip, m.host, m.container, m.protocol),
            (None, 8080, 80, Protocol::Tcp)
        );
        let m = one("127.0.0.1:5353:53/udp");
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(m.protocol, Protocol::Udp);
        let m = one("[::1]:8443:443/tcp");
        assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
        let r = parse_short("8000-8002:9000-9002").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].host, r[2].container), (8002, 9002));
        for s in ["8080:80", "127.0.0.1:5353:53/udp", "[::1]:8443:443"] {
            assert_eq!(format(&one(s)), s);
        }
    }

    #[test]
    fn short_form_errors() {
        for (bad, why) in [
            ("80", "host port too"),
            ("0:80", "not a port"),
            ("70000:80", "not a port"),
            ("8080:80/sctp", "unknown protocol"),
            ("1.2.3:80:80", "not an IP"),
            ("::1:80:80", "brackets"),
            ("8000-8002:80", "differ in length"),
            ("8002-8000:80-82", "ends before"),
            (":80", "empty host port"),
            ("127.0.0.1::80", "empty host port"),
            ("a:b", "not a port"),
            ("+80:80", "not a port"),
        ] {
            let e = parse_short(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn overlap() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(ips_overlap(None, ip("127.0.0.1")));
        assert!(ips_overlap(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(ips_overlap(ip("::"), ip("127.0.0.1")));
        assert!(!ips_overlap(ip("0.0.0.0"), ip("::1")));
        assert!(!ips_overlap(ip("127.0.0.1"), ip("127.0.0.2")));
        assert!(ips_overlap(ip("127.0.0.1"), ip("127.0.0.1")));
    }
}
