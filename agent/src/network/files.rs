//! The name files a container sees: /etc/hosts, /etc/resolv.conf and /etc/hostname.
//!
//! Generation is pure; [`write_container_files`] puts them in a directory the runtime
//! bind-mounts from. They are rewritten in place ([`fsutil::rewrite_in_place`]): a bind mount
//! pins the inode, so a rename would leave a running container reading the old file.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// Where the host's resolver configuration is read: systemd-resolved's list of real upstream
/// servers first (its stub at 127.0.0.53 is unreachable from a container), then the usual file.
pub const HOST_RESOLV_PATHS: [&str; 2] = ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"];

/// Used when the host has no nameserver a container can reach (Docker's choice too).
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// One line of a hosts file: a container's name and address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostEntry {
    pub name: String,
    pub ip: IpAddr,
}

/// What a container's files say about it.
#[derive(Debug, Clone)]
pub struct ContainerNames<'a> {
    /// The container's name, which is also its hostname.
    pub name: &'a str,
    /// Its address on the bridge; `None` with `network = "none"`.
    pub ip: Option<IpAddr>,
    /// Every other container on the bridge.
    pub peers: &'a [HostEntry],
    /// The host's resolv.conf text (see [`read_host_resolv`]).
    pub host_resolv: &'a str,
}

/// Where [`write_container_files`] writes a container's files in `dir`: known before they are
/// written, so that the runtime can be started while the network is attached.
pub fn container_files(dir: &Path) -> ContainerFiles {
    ContainerFiles {
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
    }
}

/// The paths [`write_container_files`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// /etc/hosts: localhost, the container itself (`ip`, then any entry of `peers` under its own
/// name: its IPv6 address), then every other container by name.
pub fn hosts_file(name: &str, ip: Option<IpAddr>, peers: &[HostEntry]) -> String {
    let mut out = String::from(
        "# written by berth; rewritten as containers come and go\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    match ip {
        Some(ip) => writeln!(out, "{ip}\t{name}").unwrap(),
        // Without a network the hostname still resolves, as on a machine without one.
        None => writeln!(out, "127.0.1.1\t{name}").unwrap(),
    }
    // Its own other addresses (its IPv6 one on a dual-stack network) come among the peers.
    for own in peers.iter().filter(|p| p.name == name && Some(p.ip) != ip) {
        writeln!(out, "{}\t{name}", own.ip).unwrap();
    }
    let mut peers: Vec<&HostEntry> = peers.iter().filter(|p| p.name != name).collect();
    peers.sort();
    // One line per address: a dual-stack peer has two (IPv4 first, as resolvers try them).
    peers.dedup();
    for p in peers {
        writeln!(out, "{}\t{}", p.ip, p.name).unwrap();
    }
    out
}

/// /etc/resolv.conf from the host's, without the loopback nameservers a container cannot reach
/// (systemd-resolved's stub, a local dnsmasq); falls back to public servers when none remain.
pub fn resolv_conf(host: &str) -> String {
    let mut nameservers = Vec::new();
    let mut others = Vec::new();
    for line in host.lines() {
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(addr) = words.next()
                    && let Ok(ip) = addr.split('%').next().unwrap_or(addr).parse::<IpAddr>()
                    && !ip.is_loopback()
                {
                    nameservers.push(ip.to_string());
                }
            }
            Some("search") | Some("domain") | Some("options") => others.push(trimmed.to_string()),
            _ => {}
        }
    }
    let fallback = nameservers.is_empty();
    if fallback {
        nameservers = FALLBACK_NAMESERVERS.iter().map(|s| s.to_string()).collect();
    }
    let mut out = String::from("# written by berth from the host's resolver configuration\n");
    if fallback {
        out.push_str("# the host has no nameserver a container can reach: using public ones\n");
    }
    for ns in nameservers {
        writeln!(out, "nameserver {ns}").unwrap();
    }
    for line in others {
        writeln!(out, "{line}").unwrap();
    }
    out
}

pub fn hostname_file(name: &str) -> String {
    format!("{name}\n")
}

/// Reads the host's resolver configuration (see [`HOST_RESOLV_PATHS`]); empty when there is
/// none, which yields the fallback servers.
pub fn read_host_resolv() -> String {
    HOST_RESOLV_PATHS
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// Writes `hosts`, `resolv.conf` and `hostname` into `dir` (created if needed, 0700: the
/// files are 0644 for the container's users, who reach them only through their bind mounts),
/// in place, not yet durable: the caller runs [`ContainerFiles::sync`] before it records
/// the container as made (the fsyncs cost milliseconds on a start's critical path).
pub fn write_container_files(dir: &Path, c: &ContainerNames<'_>) -> io::Result<ContainerFiles> {
    crate::fsutil::create_private_dir_all(dir)?;
    let files = container_files(dir);
    for (path, text) in [
        (&files.hosts, hosts_file(c.name, c.ip, c.peers)),
        (&files.resolv_conf, resolv_conf(c.host_resolv)),
        (&files.hostname, hostname_file(c.name)),
    ] {
        match std::fs::read(path) {
            Ok(old) if old == text.as_bytes() => {}
            _ => {
                fsutil::rewrite_in_place_unsynced(path, text.as_bytes())
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            }
        }
    }
    Ok(files)
}

impl ContainerFiles {
    /// fsyncs every file [`write_container_files`] wrote.
    pub fn sync(&self) -> io::Result<()> {
        for p in [&self.hosts, &self.resolv_conf, &self.hostname] {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        }
        Ok(())
    }
}

/// Rewrites just the hosts file (a peer came or went).
pub fn update_hosts(
    path: &Path,
    name: &str,
    ip: Option<IpAddr>,
    peers: &[HostEntry],
) -> io::Result<()> {
    write_if_changed(path, &hosts_file(name, ip, peers))
}

fn write_if_changed(path: &Path, text: &str) -> io::Result<()> {
    match std::fs::read(path) {
        Ok(old) if old == text.as_bytes() => Ok(()),
        _ => fsutil::rewrite_in_place(path, text.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, ip: &str) -> HostEntry {
        HostEntry {
            name: name.into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn hosts_names_self_and_peers_sorted_once() {
        let peers = [
            entry("web", "10.1.0.2"),
            entry("db", "10.1.0.3"),
            entry("cache", "10.1.0.4"),
            entry("db", "10.1.0.3"),
        ];
        let text = hosts_file("web", Some("10.1.0.2".parse().unwrap()), &peers);
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(
            lines,
            ["10.1.0.2\tweb", "10.1.0.4\tcache", "10.1.0.3\tdb"],
            "{text}"
        );
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn a_dual_stack_peer_has_a_line_per_address() {
        let peers = [
            entry("db", "fd00:b::3"),
            entry("db", "10.1.0.3"),
            entry("v6only", "fd00:c::9"),
        ];
        let text = hosts_file("web", Some("10.1.0.2".parse().unwrap()), &peers);
        let lines: Vec<&str> = text.lines().skip(4).collect();
        assert_eq!(
            lines,
            ["10.1.0.3\tdb", "fd00:b::3\tdb", "fd00:c::9\tv6only"],
            "{text}"
        );
        // Its own IPv6 address follows its IPv4 one.
        let mine = [entry("web", "fd00:b::2"), entry("web", "10.1.0.2")];
        let text = hosts_file("web", Some("10.1.0.2".parse().unwrap()), &mine);
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(lines, ["10.1.0.2\tweb", "fd00:b::2\tweb"], "{text}");
    }

    #[test]
    fn hosts_without_network_maps_the_name_to_loopback() {
        let text = hosts_file("solo", None, &[]);
        assert!(text.ends_with("127.0.1.1\tsolo\n"), "{text}");
    }

    #[test]
    fn resolv_skips_loopback_and_keeps_search() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.53\n\
                    nameserver fe80::1%eth0\nsearch example.org\noptions edns0 trust-ad\n";
        let text = resolv_conf(host);
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "nameserver 192.0.2.53",
                "nameserver fe80::1",
                "search example.org",
                "options edns0 trust-ad"
            ]
        );
    }

    #[test]
    fn resolv_falls_back_when_only_loopback_remains() {
        let text = resolv_conf("nameserver 127.0.0.53\nsearch lan\n");
        assert!(
            text.contains("nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\n"),
            "{text}"
        );
        assert!(resolv_conf("").contains("nameserver 8.8.8.8"));
    }

    #[test]
    fn rewriting_keeps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let peers = vec![entry("db", "10.1.0.3"), entry("cache", "10.1.0.4")];
        let c = ContainerNames {
            name: "web",
            ip: Some("10.1.0.2".parse().unwrap()),
            peers: &peers,
            host_resolv: "nameserver 192.0.2.1\n",
        };
        let files = write_container_files(dir.path(), &c).unwrap();
        let ino = std::fs::metadata(&files.hosts).unwrap().ino();
        update_hosts(&files.hosts, "web", c.ip, &peers[..1]).unwrap();
        let text = std::fs::read_to_string(&files.hosts).unwrap();
        assert!(!text.contains("cache"), "{text}");
        assert_eq!(std::fs::metadata(&files.hosts).unwrap().ino(), ino);
        assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "web\n");
    }
}
