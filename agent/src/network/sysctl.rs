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
pub fn bridge_settings(bridge: &str) -> Vec<Setting> {
    let conf = |key: &str| PathBuf::from(format!("/proc/sys/net/ipv4/conf/{bridge}/{key}"));
    vec![
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
    ]
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
