//! The few kernel settings the bridge needs, written through /proc/sys of the calling thread's
//! network namespace (never by running `sysctl`).

use std::fs;
use std::io;
use std::path::PathBuf;

/// A setting berth changes, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub path: PathBuf,
    pub value: &'static str,
}

/// What the bridge needs:
/// - `ipv4/ip_forward`: containers reach out and published ports are reached through routing.
///   IPv4 decides forwarding by the *incoming* interface, and traffic to a published port comes in
///   on any host interface, so this is host-wide (as with Docker and podman).
/// - `conf/<bridge>/forwarding`: the same for the bridge, in case the global switch is later
///   turned off for other interfaces only.
/// - `conf/<bridge>/route_localnet`: lets the host reach a published port on 127.0.0.1, whose
///   packets leave through the bridge with a loopback source until masqueraded. The input-chain
///   guard in berth's table keeps containers from using it to reach the host's loopback.
///
/// An IPv6-only bridge gets none of these three: route_localnet there would have no loopback
/// guard in the table (the guard is part of a network's IPv4 rules).
///
/// With an IPv6 subnet on the bridge, also:
/// - `ipv6/conf/all/forwarding`: the kernel forwards IPv6 only when this global switch is on
///   (the per-interface value decides router behaviour, not forwarding), so this too is
///   host-wide. It also makes every interface whose `accept_ra` is 1 stop accepting router
///   advertisements: a host that configures IPv6 from RAs wants `accept_ra = 2` on its uplink
///   (docs/network.md).
/// - `ipv6/conf/<bridge>/forwarding`: the bridge is a router for its containers.
/// - `ipv6/conf/<bridge>/accept_dad = 0`: the gateway address is usable at once (it is also
///   added with `IFA_F_NODAD`; this covers the bridge's link-local address).
pub fn bridge_settings(bridge: &str, stack: Stack) -> Vec<Setting> {
    let conf = |key: &str| PathBuf::from(format!("/proc/sys/net/ipv4/conf/{bridge}/{key}"));
    let conf6 = |key: &str| PathBuf::from(format!("/proc/sys/net/ipv6/conf/{bridge}/{key}"));
    let mut out = Vec::new();
    if stack != Stack::V6 {
        out.extend([
            Setting {
                path: "/proc/sys/net/ipv4/ip_forward".into(),
                value: "1",
            },
            Setting {
                path: conf("forwarding"),
                value: "1",
            },
            Setting {
                path: conf("route_localnet"),
                value: "1",
            },
        ]);
    }
    if stack != Stack::V4 {
        out.extend([
            Setting {
                path: "/proc/sys/net/ipv6/conf/all/forwarding".into(),
                value: "1",
            },
            Setting {
                path: conf6("forwarding"),
                value: "1",
            },
            Setting {
                path: conf6("accept_dad"),
                value: "0",
            },
        ]);
    }
    out
}

/// Which families a bridge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    V4,
    Dual,
    V6,
}

/// Writes each setting whose current value differs. Returns the ones it changed.
pub fn apply(settings: &[Setting]) -> io::Result<Vec<Setting>> {
    let mut changed = Vec::new();
    for s in settings {
        let current = fs::read_to_string(&s.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", s.path.display())))?;
        if current.trim() != s.value {
            fs::write(&s.path, s.value)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", s.path.display())))?;
            changed.push(s.clone());
        }
    }
    Ok(changed)
}
