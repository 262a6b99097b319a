//! Published host ports, held by the shim as bound sockets for the container's lifetime: the
//! port cannot be taken by another program while the container runs, and the hold survives
//! agent restarts. Traffic itself goes through the network part's DNAT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ty = match proto {
        Protocol::Tcp => libc::SOCK_STREAM,
        Protocol::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: a plain socket call.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
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
