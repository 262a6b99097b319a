//! `berth doctor`: everything of this instance that no record explains (what a crash or a bug
//! left), and store blobs whose bytes don't match their digest. The test suite's leak check.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Host;
use crate::names::{IncarnationId, Names};
use crate::network::TableState;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `shim`, `bundle`, `etc`, `cgroup`, `container-dir`, `link`, `netns`, `lease`,
    /// `nft-element`, `bridge`, `nft-table`, `mount`, `process`, `blob`, `unpack-temp`.
    pub kind: String,
    pub what: String,
}

/// Whether `doctor` only reports or also removes what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    ReportOnly,
    Fix,
}

/// Whether an agent holds the state dir while `doctor` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Running,
    NotRunning,
}

impl Host {
    /// Lists what doctor finds; with [`Repair::Fix`], removes it too (and returns what it
    /// found). With [`Agent::Running`] an agent owns the bridge and table, so they are not
    /// leftovers even with no container, and an unpack in progress is not a crash's.
    pub fn doctor(&self, repair: Repair, agent: Agent) -> Vec<Finding> {
        let agent_running = agent == Agent::Running;
        let known = self.known();
        let keys: BTreeSet<String> = known
            .iter()
            .map(|(n, id)| Names::container_key(n, id))
            .collect();
        let mut found: Vec<Finding> = self
            .find_orphans()
            .into_iter()
            .map(|o| Finding {
                kind: o.kind.into(),
                what: o.what,
            })
            .collect();
        found.extend(self.network_findings(&known, &keys, agent_running));
        let mounts = self.stray_mounts();
        found.extend(mounts.iter().map(|m| Finding {
            kind: "mount".into(),
            what: m.display().to_string(),
        }));
        let procs = self.stray_shims(&keys);
        found.extend(procs.iter().map(|(pid, key)| Finding {
            kind: "process".into(),
            what: format!("{pid} (shim of {key})"),
        }));
        // An unpack in progress looks like one a crash left: only without an agent is it one.
        let temps = if agent_running {
            Vec::new()
        } else {
            self.unpack_temps()
        };
        found.extend(temps.iter().map(|t| Finding {
            kind: "unpack-temp".into(),
            what: t.display().to_string(),
        }));
        let blobs = self.corrupt_blobs();
        found.extend(blobs.iter().map(|b| Finding {
            kind: "blob".into(),
            what: b.display().to_string(),
        }));
        if repair == Repair::Fix && !found.is_empty() {
            for (pid, _) in &procs {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            for m in &mounts {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
            self.sweep();
            for b in &blobs {
                let _ = std::fs::remove_file(b);
            }
            for t in &temps {
                let _ = crate::fsutil::remove_dir_all_if_exists(t);
            }
            if known.is_empty() && !agent_running {
                for net in self.networks() {
                    if let Err(e) = net.remove_host() {
                        tracing::warn!("removing the bridge and table of {:?}: {e}", net.name());
                    }
                }
                self.runtime.prune_cgroups();
            }
        }
        found
    }

    fn network_findings(
        &self,
        known: &BTreeSet<(String, IncarnationId)>,
        keys: &BTreeSet<String>,
        agent_running: bool,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        for net in self.networks() {
            out.extend(self.network_findings_of(net, known, keys, agent_running));
        }
        out
    }

    /// One network's findings; netns are looked at through the default network only (they
    /// are the containers', whichever networks they join).
    fn network_findings_of(
        &self,
        net: &crate::network::Network,
        known: &BTreeSet<(String, IncarnationId)>,
        keys: &BTreeSet<String>,
        agent_running: bool,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut obs = match net.observe() {
            Ok(o) => o,
            Err(e) => {
                out.push(Finding {
                    kind: "network".into(),
                    what: format!("cannot observe {:?}: {e}", net.name()),
                });
                return out;
            }
        };
        if !net.is_default() {
            obs.netns.clear();
        }
        let f = |kind: &str, what: String| Finding {
            kind: kind.into(),
            what,
        };
        for l in obs.links {
            if l.owner.as_ref().is_none_or(|o| !known.contains(o)) {
                out.push(f("link", l.ifname));
            }
        }
        for (name, id) in obs.netns {
            if !known.contains(&(name.clone(), id.clone())) {
                out.push(f(
                    "netns",
                    self.layout.netns(&name, &id).display().to_string(),
                ));
            }
        }
        for l in obs.leases.into_iter().chain(obs.leases6) {
            if !known.contains(&(l.name.clone(), l.id.clone())) {
                out.push(f("lease", format!("{} ({})", l.ip, l.name)));
            }
        }
        for e in obs.elements {
            if !keys.contains(&e.owner) {
                out.push(f(
                    "nft-element",
                    format!(
                        "{}/{} -> {}:{} ({})",
                        e.host_port,
                        e.protocol.as_str(),
                        e.to_ip,
                        e.to_port,
                        e.owner
                    ),
                ));
            }
        }
        if known.is_empty() && !agent_running {
            if obs.bridge_present {
                out.push(f(
                    "bridge",
                    format!("{} (no container uses it)", net.bridge()),
                ));
            }
            if obs.table != TableState::Missing {
                out.push(f(
                    "nft-table",
                    format!("inet {} (no container uses it)", net.table()),
                ));
            }
        }
        out
    }

    /// Mounts under the state or run dir other than netns files (the network's findings list
    /// those of no known incarnation). The dirs themselves may be mount points (a state dir on
    /// its own disk).
    fn stray_mounts(&self) -> Vec<PathBuf> {
        let netns_dir = self.layout.netns_dir();
        let is_netns = |p: &Path| {
            p.parent() == Some(netns_dir.as_path())
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(Names::parse_container_key)
                    .is_some()
        };
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mount_path)
            .filter(|p| {
                let under = |d: &Path| p.starts_with(d) && p != d;
                under(&self.layout.state_dir) || under(&self.layout.run_dir)
            })
            .filter(|p| !is_netns(p))
            .collect()
    }

    /// `berth-shim` processes serving a shim dir of this instance that no record explains.
    fn stray_shims(&self, keys: &BTreeSet<String>) -> Vec<(i32, String)> {
        let shims = self.layout.shims_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if !args.first().is_some_and(|a| a.ends_with(b"berth-shim")) {
                continue;
            }
            for a in &args[1..] {
                let p = Path::new(std::str::from_utf8(a).unwrap_or(""));
                if let Ok(rest) = p.strip_prefix(&shims) {
                    let key = rest
                        .components()
                        .next()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned());
                    if let Some(key) = key
                        && !keys.contains(&key)
                    {
                        out.push((pid, key));
                    }
                }
            }
        }
        out
    }

    /// Unpacks a crash interrupted: `layers/sha256/.tmp-*` (the store removes them when it
    /// opens for writing; doctor may run first).
    fn unpack_temps(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.layout.layers_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .map(|e| e.path())
            .collect()
    }

    /// Blob files whose sha256 does not match their name.
    fn corrupt_blobs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.layout.blobs_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if file_sha256(&e.path()).is_some_and(|h| h != name) {
                out.push(e.path());
            }
        }
        out
    }
}

fn file_sha256(p: &Path) -> Option<String> {
    let mut f = std::fs::File::open(p).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape_mount_path("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
