//! Published host ports, held by the shim as bound sockets for the container's lifetime: the
//! port cannot be taken by another program while the container runs, and the hold survives
//! agent restarts. Traffic itself goes through the network part's DNAT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;

use berth_spec::model::Protocol;

use super::config::HostPort;

/// Binds every port; the first failure names the port.
pub fn hold(ports: &[HostPort]) -> Result<Vec<OwnedFd>, String> {
    ports
        .iter()
        .map(|p| {
            let ip = p.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            bind(SocketAddr::new(ip, p.port), p.protocol).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    format!("host port {p} is in use")
                } else {
                    format!("cannot hold host port {p}: {e}")
                }
            })
        })
        .collect()
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
        }])
        .unwrap_err();
        assert_eq!(e, format!("host port 127.0.0.1:{port}/tcp is in use"));
        drop(taken);
        let held = hold(&[HostPort {
            ip: Some("127.0.0.1".parse().unwrap()),
            port,
            protocol: Protocol::Tcp,
        }])
        .unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        drop(held);
    }
}
