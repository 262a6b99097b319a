//! Address leases on disk, so that an address is never handed out twice, even across a kill -9.
//!
//! ```text
//! <state_dir>/network/
//!   leases/<ip>               symlink to "<id>:<name>": one per address in use
//!   ports/<name>-<id>.json    the ports a running container publishes
//!   hints/<name>.json         {"ip", "released"}: the address a name held last
//! ```
//!
//! A lease is a symlink whose target names its holder: symlink(2) creates it whole and fails if
//! the address's entry exists, so two allocations can never both win one address, and a crash
//! at any instant leaves either no lease or a complete one. It is made before the address is
//! configured anywhere.
//!
//! Durability: a kill -9 loses nothing (the page cache outlives the process), so allocation does
//! not fsync (on this kind of disk an fsync costs more than the whole network setup). A power
//! loss can lose the newest leases, but it also takes down every netns, veth and address they
//! describe: after the reboot nothing is in use, so nothing can be handed out twice; a container
//! may get another address than before. The ports files are caches of what the reconciler
//! publishes, kept so that the table can be rebuilt from disk alone when someone flushes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_spec::model::PortMapping;
use serde::{Deserialize, Serialize};

use super::error::NetError;
use super::ipam::{self, AllocError, Choice, Hint, Holder, Subnet};
use crate::names::{IncarnationId, Names};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: IpAddr,
    pub name: String,
    pub id: IncarnationId,
    /// Published ports while the container runs; empty while it is stopped.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

impl Lease {
    fn holder(&self) -> Holder {
        Holder {
            name: self.name.clone(),
            id: self.id.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct HintFile {
    ip: IpAddr,
    released: u64,
}

#[derive(Debug, Default)]
struct State {
    leases: BTreeMap<IpAddr, Lease>,
    /// Entries under leases/ that do not parse (tampering): their addresses stay taken until a
    /// sweep removes them.
    unreadable: BTreeSet<IpAddr>,
    hints: BTreeMap<String, Hint>,
}

/// The lease store of one state dir. Its lock serialises allocations within the process; the
/// agent's state-dir lock keeps other processes out, and symlink(2) would stop them anyway.
#[derive(Debug)]
pub struct Ipam {
    subnet: Subnet,
    leases_dir: PathBuf,
    ports_dir: PathBuf,
    hints_dir: PathBuf,
    state: Mutex<State>,
}

impl Ipam {
    /// Opens (creating if needed) the store under `network_dir` and reads it.
    pub fn open(network_dir: &Path, subnet: Subnet) -> Result<Ipam, NetError> {
        let ipam = Ipam {
            subnet,
            leases_dir: network_dir.join("leases"),
            ports_dir: network_dir.join("ports"),
            hints_dir: network_dir.join("hints"),
            state: Mutex::new(State::default()),
        };
        for dir in [&ipam.leases_dir, &ipam.ports_dir, &ipam.hints_dir] {
            crate::fsutil::create_private_dir_all(dir)
                .map_err(|e| NetError::io("create", dir, e))?;
        }
        ipam.reload()?;
        Ok(ipam)
    }

    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the store from disk (the disk is the truth; memory is a cache of it).
    pub fn reload(&self) -> Result<(), NetError> {
        // Held while reading, so that no allocation lands between the read and the swap.
        let mut guard = self.state();
        let mut state = State::default();
        for (file_name, path) in list_dir(&self.leases_dir)? {
            let Ok(ip) = file_name.parse::<IpAddr>() else {
                continue;
            };
            match fs::read_link(&path).ok().and_then(|t| parse_target(&t)) {
                Some((id, name)) => {
                    let ports = self.read_ports(&name, &id);
                    state.leases.insert(
                        ip,
                        Lease {
                            ip,
                            name,
                            id,
                            ports,
                        },
                    );
                }
                None => {
                    state.unreadable.insert(ip);
                }
            }
        }
        for (file_name, path) in list_dir(&self.hints_dir)? {
            let Some(name) = file_name.strip_suffix(".json") else {
                continue;
            };
            // A hint is only a preference: one that does not parse is ignored.
            if let Ok(Some(h)) = crate::fsutil::read_json::<HintFile>(&path) {
                state.hints.insert(
                    name.to_string(),
                    Hint {
                        ip: h.ip,
                        released: h.released,
                    },
                );
            }
        }
        *guard = state;
        Ok(())
    }

    fn read_ports(&self, name: &str, id: &IncarnationId) -> Vec<PortMapping> {
        crate::fsutil::read_json::<Vec<PortMapping>>(&self.ports_path(name, id))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Every lease, by address.
    pub fn leases(&self) -> Vec<Lease> {
        self.state().leases.values().cloned().collect()
    }

    /// Addresses under leases/ whose entry does not parse.
    pub fn unreadable(&self) -> Vec<IpAddr> {
        self.state().unreadable.iter().copied().collect()
    }

    /// The lease of one incarnation, if it holds one.
    pub fn lease_of(&self, name: &str, id: &IncarnationId) -> Option<Lease> {
        self.state()
            .leases
            .values()
            .find(|l| l.name == name && &l.id == id)
            .cloned()
    }

    /// Leases an address to `name`/`id` (its current one if it holds one); the lease exists on
    /// disk before this returns.
    pub fn allocate(
        &self,
        name: &str,
        id: &IncarnationId,
        wanted: Option<IpAddr>,
    ) -> Result<Lease, NetError> {
        let mut state = self.state();
        let who = Holder {
            name: name.to_string(),
            id: id.clone(),
        };
        loop {
            let mut held: BTreeMap<IpAddr, Holder> = state
                .leases
                .iter()
                .map(|(ip, l)| (*ip, l.holder()))
                .collect();
            for ip in &state.unreadable {
                held.insert(
                    *ip,
                    Holder {
                        name: format!("(unreadable lease {})", self.lease_path(*ip).display()),
                        id: IncarnationId::parse("000000000000").expect("valid id"),
                    },
                );
            }
            let choice = ipam::choose(&self.subnet, &held, &state.hints, &who, wanted)
                .map_err(|e| self.alloc_error(name, e))?;
            let ip = match choice {
                Choice::Held(ip) => return Ok(state.leases[&ip].clone()),
                Choice::New(ip) => ip,
            };
            let lease = Lease {
                ip,
                name: name.to_string(),
                id: id.clone(),
                ports: Vec::new(),
            };
            if self.create_exclusive(&lease)? {
                state.leases.insert(ip, lease.clone());
                return Ok(lease);
            }
            // An entry we did not know of (another store on the same dir): learn it, choose again.
            let path = self.lease_path(ip);
            match fs::read_link(&path).ok().and_then(|t| parse_target(&t)) {
                Some((id, name)) => {
                    state.leases.insert(
                        ip,
                        Lease {
                            ip,
                            name,
                            id,
                            ports: Vec::new(),
                        },
                    );
                }
                None => {
                    state.unreadable.insert(ip);
                }
            }
        }
    }

    /// Records the ports a container publishes (empty: none).
    pub fn set_ports(
        &self,
        name: &str,
        id: &IncarnationId,
        ports: &[PortMapping],
    ) -> Result<Lease, NetError> {
        let mut state = self.state();
        let lease = state
            .leases
            .values_mut()
            .find(|l| l.name == name && &l.id == id)
            .ok_or_else(|| NetError::NoLease {
                name: name.to_string(),
            })?;
        if lease.ports != ports {
            let path = self.ports_path(name, id);
            if ports.is_empty() {
                crate::fsutil::remove_file_if_exists(&path)
            } else {
                crate::fsutil::atomic_replace(&path, &json(&ports.to_vec()))
            }
            .map_err(|e| NetError::io("write ports", &path, e))?;
            lease.ports = ports.to_vec();
        }
        Ok(lease.clone())
    }

    /// Writes a lease as given (repair: putting back the lease a container's address proves).
    /// Fails if another container holds the address.
    pub fn restore(&self, lease: &Lease) -> Result<(), NetError> {
        {
            let mut state = self.state();
            if let Some(other) = state.leases.get(&lease.ip) {
                if other.name != lease.name || other.id != lease.id {
                    return Err(NetError::AddressTaken {
                        name: lease.name.clone(),
                        ip: lease.ip,
                        holder: other.name.clone(),
                    });
                }
            } else if !self.create_exclusive(lease)? {
                drop(state);
                self.reload()?;
                return Err(NetError::AddressTaken {
                    name: lease.name.clone(),
                    ip: lease.ip,
                    holder: "a lease made meanwhile".into(),
                });
            } else {
                state.leases.insert(
                    lease.ip,
                    Lease {
                        ports: Vec::new(),
                        ..lease.clone()
                    },
                );
            }
        }
        self.set_ports(&lease.name, &lease.id, &lease.ports)
            .map(drop)
    }

    /// Releases whatever `name`/`id` holds, remembering the address for the name's next
    /// incarnation. Releasing nothing is fine.
    pub fn release(&self, name: &str, id: &IncarnationId) -> Result<Option<IpAddr>, NetError> {
        let mut state = self.state();
        let Some(ip) = state
            .leases
            .values()
            .find(|l| l.name == name && &l.id == id)
            .map(|l| l.ip)
        else {
            return Ok(None);
        };
        self.release_locked(&mut state, ip)?;
        Ok(Some(ip))
    }

    /// Releases the lease of an address, whoever holds it (an unreadable one too).
    pub fn release_ip(&self, ip: IpAddr) -> Result<(), NetError> {
        let mut state = self.state();
        if state.unreadable.remove(&ip) {
            let path = self.lease_path(ip);
            crate::fsutil::remove_file_if_exists(&path)
                .map_err(|e| NetError::io("remove lease", &path, e))?;
        }
        self.release_locked(&mut state, ip)
    }

    fn release_locked(&self, state: &mut State, ip: IpAddr) -> Result<(), NetError> {
        let Some(lease) = state.leases.get(&ip).cloned() else {
            return Ok(());
        };
        let released = state.hints.values().map(|h| h.released).max().unwrap_or(0) + 1;
        let hint_path = self.hints_dir.join(format!("{}.json", lease.name));
        crate::fsutil::atomic_replace(&hint_path, &json(&HintFile { ip, released }))
            .map_err(|e| NetError::io("write hint", &hint_path, e))?;
        state
            .hints
            .insert(lease.name.clone(), Hint { ip, released });
        let ports = self.ports_path(&lease.name, &lease.id);
        crate::fsutil::remove_file_if_exists(&ports)
            .map_err(|e| NetError::io("remove ports", &ports, e))?;
        // The lease last: until it is gone, the address stays taken.
        let path = self.lease_path(ip);
        crate::fsutil::remove_file_if_exists(&path)
            .map_err(|e| NetError::io("remove lease", &path, e))?;
        state.leases.remove(&ip);
        Ok(())
    }

    /// Removes temp files a crash left behind, and ports files without a lease.
    pub fn remove_stale_temps(&self) -> Result<(), NetError> {
        let state = self.state();
        let live: BTreeSet<String> = state
            .leases
            .values()
            .map(|l| format!("{}.json", Names::container_key(&l.name, &l.id)))
            .collect();
        for dir in [&self.leases_dir, &self.ports_dir, &self.hints_dir] {
            for (name, path) in list_dir(dir)? {
                let orphan_ports = dir == &self.ports_dir && !live.contains(&name);
                if name.starts_with('.') || orphan_ports {
                    let _ = fs::remove_file(path);
                }
            }
        }
        Ok(())
    }

    fn lease_path(&self, ip: IpAddr) -> PathBuf {
        self.leases_dir.join(ip.to_string())
    }

    fn ports_path(&self, name: &str, id: &IncarnationId) -> PathBuf {
        self.ports_dir
            .join(format!("{}.json", Names::container_key(name, id)))
    }

    /// symlink(2) is atomic and fails if the entry exists: the lease appears whole, once.
    fn create_exclusive(&self, lease: &Lease) -> Result<bool, NetError> {
        let path = self.lease_path(lease.ip);
        match std::os::unix::fs::symlink(format!("{}:{}", lease.id, lease.name), &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(NetError::io("create lease", path, e)),
        }
    }

    fn alloc_error(&self, name: &str, e: AllocError) -> NetError {
        let name = name.to_string();
        match e {
            AllocError::OutsideSubnet(ip) => NetError::OutsideSubnet {
                name,
                ip,
                subnet: self.subnet.to_string(),
            },
            AllocError::Reserved(ip) => NetError::Reserved { name, ip },
            AllocError::Taken { ip, holder } => NetError::AddressTaken {
                name,
                ip,
                holder: holder.name,
            },
            AllocError::HoldsOther { held, wanted } => NetError::AddressTaken {
                name: name.clone(),
                ip: wanted,
                holder: format!("{name} itself, which already holds {held}"),
            },
            AllocError::Exhausted => NetError::Exhausted {
                name,
                subnet: self.subnet.to_string(),
            },
        }
    }
}

/// `<id>:<name>`, the target of a lease symlink.
fn parse_target(target: &Path) -> Option<(IncarnationId, String)> {
    let (id, name) = target.to_str()?.split_once(':')?;
    Some((IncarnationId::parse(id)?, name.to_string())).filter(|(_, n)| !n.is_empty())
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut data = serde_json::to_vec_pretty(value).expect("serialisable");
    data.push(b'\n');
    data
}

/// (file name, path) of each entry of `dir`; a missing dir is empty.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, NetError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io("read", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetError::io("read", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::model::Protocol;

    fn id(n: u8) -> IncarnationId {
        IncarnationId::parse(&format!("{n:012x}")).unwrap()
    }

    #[test]
    fn leases_survive_reopen_and_release_leaves_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = Subnet::parse("10.40.0.0/24").unwrap();
        let ipam = Ipam::open(dir.path(), subnet).unwrap();
        let a = ipam.allocate("web", &id(1), None).unwrap();
        let b = ipam.allocate("db", &id(2), None).unwrap();
        assert_ne!(a.ip, b.ip);
        assert_eq!(ipam.allocate("web", &id(1), None).unwrap(), a);
        let port = PortMapping {
            host_ip: None,
            host: 8080,
            container: 80,
            protocol: Protocol::Tcp,
        };
        ipam.set_ports("web", &id(1), &[port]).unwrap();

        let reopened = Ipam::open(dir.path(), subnet).unwrap();
        assert_eq!(reopened.lease_of("web", &id(1)).unwrap().ports, vec![port]);
        assert_eq!(reopened.release("web", &id(1)).unwrap(), Some(a.ip));
        assert_eq!(reopened.release("web", &id(1)).unwrap(), None);
        // The next incarnation of web gets its address back; a newcomer does not.
        let c = reopened.allocate("cache", &id(3), None).unwrap();
        assert_ne!(c.ip, a.ip);
        let again = reopened.allocate("web", &id(4), None).unwrap();
        assert_eq!(again.ip, a.ip);
        let files: Vec<_> = fs::read_dir(dir.path().join("leases")).unwrap().collect();
        assert_eq!(files.len(), 3, "one entry per lease");
        assert!(
            fs::read_dir(dir.path().join("ports"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_lease_file_written_by_someone_else_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = Subnet::parse("10.40.0.0/24").unwrap();
        let first = Ipam::open(dir.path(), subnet).unwrap();
        let second = Ipam::open(dir.path(), subnet).unwrap();
        let a = first.allocate("web", &id(1), None).unwrap();
        // `second` read the store before `web` existed; link(2) stops it taking the address.
        let b = second.allocate("db", &id(2), None).unwrap();
        assert_ne!(a.ip, b.ip);
    }

    #[test]
    fn an_unreadable_lease_keeps_its_address_taken_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = Subnet::parse("10.40.0.0/29").unwrap(); // .2 to .6
        std::fs::create_dir_all(dir.path().join("leases")).unwrap();
        std::os::unix::fs::symlink("garbage", dir.path().join("leases/10.40.0.2")).unwrap();
        let ipam = Ipam::open(dir.path(), subnet).unwrap();
        assert_eq!(
            ipam.unreadable(),
            vec!["10.40.0.2".parse::<IpAddr>().unwrap()]
        );
        let e = ipam
            .allocate("web", &id(1), Some("10.40.0.2".parse().unwrap()))
            .unwrap_err();
        assert!(e.to_string().contains("unreadable lease"), "{e}");
        assert_ne!(
            ipam.allocate("db", &id(2), None).unwrap().ip.to_string(),
            "10.40.0.2"
        );
        ipam.release_ip("10.40.0.2".parse().unwrap()).unwrap();
        assert!(ipam.unreadable().is_empty());
    }

    #[test]
    fn set_ports_without_lease_is_an_error_naming_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), Subnet::parse("10.40.0.0/24").unwrap()).unwrap();
        let e = ipam.set_ports("ghost", &id(1), &[]).unwrap_err();
        assert!(e.to_string().contains("ghost"), "{e}");
    }
}
