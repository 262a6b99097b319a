//! Published host ports, held by the shim as bound sockets for the container's lifetime: the
//! port cannot be taken by another program while the container runs, and the hold survives
//! agent restarts. Traffic itself goes through the network part's DNAT, except on `[::1]`,
//! which the kernel cannot DNAT to a container: there the shim's [`proxy`](super::proxy)
//! listens, and its listener is the hold.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use berth_spec::model::Protocol;

use super::config::HostPort;
use super::proxy::Relay;

/// What the shim holds for a container's ports.
#[derive(Debug, Default)]
pub struct Held {
    /// Bound, not listening.
    pub reserved: Vec<OwnedFd>,
    /// The `[::1]` listeners, for the proxy.
    pub loopback6: Vec<Relay>,
}

/// Binds every port; the first failure names the port.
///
/// A port relayed on `[::1]` (no `host_ip`, `::` or `::1`) holds `[::1]` with its listener and
/// the IPv4 port with a bound socket on `0.0.0.0` (`::1` alone: the listener only). `::` is
/// not bound as a wildcard then: a `[::]` socket would make the `[::1]` listener's bind fail,
/// and `SO_REUSEADDR` on both would let any other program's `SO_REUSEADDR` socket share the
/// port. Without IPv6 on the host's loopback (`ipv6.disable=1`), such a port answers on IPv4
/// only, unless it asked for `::1`.
pub fn hold(ports: &[HostPort]) -> Result<Held, String> {
    let mut held = Held::default();
    for p in ports {
        let failed = |at: HostPort, e: io::Error| {
            if e.kind() == io::ErrorKind::AddrInUse {
                format!("host port {at} is in use")
            } else {
                format!("cannot hold host port {at}: {e}")
            }
        };
        let Some(to) = p.loopback6_to else {
            let ip = p.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let fd = bind(SocketAddr::new(ip, p.port), p.protocol).map_err(|e| failed(*p, e))?;
            held.reserved.push(fd);
            continue;
        };
        let only_loopback = p.ip == Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
        if !only_loopback {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), p.port);
            held.reserved
                .push(bind(v4, p.protocol).map_err(|e| failed(*p, e))?);
        }
        let at = HostPort {
            ip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ..*p
        };
        match Relay::listen(p.port, p.protocol, to) {
            Ok(relay) => held.loopback6.push(relay),
            Err(e)
                if !only_loopback
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
                    ) =>
            {
                eprintln!("berth-shim: {at} not relayed: the host has no IPv6 loopback ({e})");
            }
            Err(e) => return Err(failed(at, e)),
        }
    }
    Ok(held)
}

/// A bound, not listening, socket: it reserves the port without accepting connections that
/// DNAT did not redirect.
fn bind(addr: SocketAddr, proto: Protocol) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let ty = match proto {
        Protocol::Tcp => SocketType::STREAM,
        Protocol::Udp => SocketType::DGRAM,
    };
    let fd = rustix::net::socket_with(family, ty, SocketFlags::CLOEXEC, None)?;
    rustix::net::bind(&fd, &addr)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_hold_names_the_port() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = hold(&[HostPort {
            ip: Some("127.0.0.1".parse().unwrap()),
            port,
            protocol: Protocol::Tcp,
            loopback6_to: None,
        }])
        .unwrap_err();
        assert_eq!(e, format!("host port 127.0.0.1:{port}/tcp is in use"));
        drop(taken);
        let held = hold(&[HostPort {
            ip: Some("127.0.0.1".parse().unwrap()),
            port,
            protocol: Protocol::Tcp,
            loopback6_to: None,
        }])
        .unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        drop(held);
    }

    /// A port relayed on [::1] holds IPv4 with a bound socket and [::1] with the relay's
    /// listener; something else on [::1] makes the hold fail, naming [::1].
    #[test]
    fn a_relayed_port_holds_ipv4_and_the_ipv6_loopback() {
        let probe = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        let relayed = |ip: Option<&str>| HostPort {
            ip: ip.map(|i| i.parse().unwrap()),
            port,
            protocol: Protocol::Tcp,
            loopback6_to: Some("127.0.0.1:9".parse().unwrap()),
        };
        let e = hold(&[relayed(None)]).unwrap_err();
        assert_eq!(e, format!("host port [::1]:{port}/tcp is in use"));
        drop(probe);
        let v4 = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        let e = hold(&[relayed(None)]).unwrap_err();
        assert_eq!(e, format!("host port {port}/tcp is in use"));
        drop(v4);
        for ip in [None, Some("::")] {
            let held = hold(&[relayed(ip)]).unwrap();
            assert_eq!((held.reserved.len(), held.loopback6.len()), (1, 1));
            assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_err());
            assert!(std::net::TcpListener::bind(("::1", port)).is_err());
            assert!(std::net::TcpListener::bind(("::", port)).is_err());
        }
        let held = hold(&[relayed(Some("::1"))]).unwrap();
        assert_eq!((held.reserved.len(), held.loopback6.len()), (0, 1));
        assert!(std::net::TcpListener::bind(("::1", port)).is_err());
    }
}
