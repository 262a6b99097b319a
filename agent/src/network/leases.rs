//! Address leases on disk, so that an address is never handed out twice, even across a kill -9.
//!
//! ```text
//! <state_dir>/network/
//!   leases/<ip>.json     {"name", "id", "ports"}: one file per address in use
//!   hints/<name>.json    {"ip", "released"}: the address a name held last
//! ```
//!
//! A lease is written (and fsynced) before its address is configured anywhere, and it is created
//! with link(2) from a complete temp file, which fails if the address's file exists: a crash at
//! any instant leaves either no lease (nothing was configured) or a whole one, and two
//! allocations can never both win one address. The published ports ride along in the lease so
//! that berth's nftables table can be rebuilt from disk alone when someone flushes it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_spec::model::PortMapping;
use serde::{Deserialize, Serialize};

use super::error::NetError;
use super::ipam::{self, AllocError, Choice, Hint, Holder, Subnet};
use crate::fsutil;
use crate::names::IncarnationId;

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
    hints: BTreeMap<String, Hint>,
}

/// The lease store of one state dir. Its lock serialises allocations within the process; the
/// agent's state-dir lock keeps other processes out, and link(2) would stop them anyway.
#[derive(Debug)]
pub struct Ipam {
    subnet: Subnet,
    leases_dir: PathBuf,
    hints_dir: PathBuf,
    state: Mutex<State>,
}

impl Ipam {
    /// Opens (creating if needed) the store under `network_dir` and reads it.
    pub fn open(network_dir: &Path, subnet: Subnet) -> Result<Ipam, NetError> {
        let ipam = Ipam {
            subnet,
            leases_dir: network_dir.join("leases"),
            hints_dir: network_dir.join("hints"),
            state: Mutex::new(State::default()),
        };
        for dir in [&ipam.leases_dir, &ipam.hints_dir] {
            fs::create_dir_all(dir).map_err(|e| NetError::io("create", dir, e))?;
        }
        ipam.reload()?;
        Ok(ipam)
    }

    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }

    /// Re-reads the store from disk (the disk is the truth; memory is a cache of it).
    pub fn reload(&self) -> Result<(), NetError> {
        let mut state = State::default();
        for (path, lease) in read_dir_json::<Lease>(&self.leases_dir)? {
            if path.file_stem().and_then(|s| s.to_str()) == Some(&lease.ip.to_string()) {
                state.leases.insert(lease.ip, lease);
            }
        }
        for (path, hint) in read_dir_json::<HintFile>(&self.hints_dir)? {
            if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                state.hints.insert(
                    name.to_string(),
                    Hint {
                        ip: hint.ip,
                        released: hint.released,
                    },
                );
            }
        }
        *self.state.lock().unwrap() = state;
        Ok(())
    }

    /// Every lease, by address.
    pub fn leases(&self) -> Vec<Lease> {
        self.state.lock().unwrap().leases.values().cloned().collect()
    }

    /// The lease of one incarnation, if it holds one.
    pub fn lease_of(&self, name: &str, id: &IncarnationId) -> Option<Lease> {
        let state = self.state.lock().unwrap();
        state
            .leases
            .values()
            .find(|l| l.name == name && &l.id == id)
            .cloned()
    }

    /// Leases an address to `name`/`id` (its current one if it holds one) and makes the lease
    /// durable before returning it.
    pub fn allocate(
        &self,
        name: &str,
        id: &IncarnationId,
        wanted: Option<IpAddr>,
    ) -> Result<Lease, NetError> {
        let mut state = self.state.lock().unwrap();
        let who = Holder {
            name: name.to_string(),
            id: id.clone(),
        };
        loop {
            let held: BTreeMap<IpAddr, Holder> = state
                .leases
                .iter()
                .map(|(ip, l)| (*ip, l.holder()))
                .collect();
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
            // A lease file we did not know of: take it into account and choose again.
            let path = self.lease_path(ip);
            match fsutil::read_json::<Lease>(&path) {
                Ok(Some(other)) if other.ip == ip => {
                    state.leases.insert(ip, other);
                }
                Ok(_) | Err(_) => {
                    return Err(NetError::io(
                        "read lease",
                        path,
                        io::Error::other("lease file exists but cannot be read"),
                    ));
                }
            }
        }
    }

    /// Records the ports a container publishes (empty: none) in its lease.
    pub fn set_ports(
        &self,
        name: &str,
        id: &IncarnationId,
        ports: &[PortMapping],
    ) -> Result<Lease, NetError> {
        let mut state = self.state.lock().unwrap();
        let lease = state
            .leases
            .values_mut()
            .find(|l| l.name == name && &l.id == id)
            .ok_or_else(|| NetError::NoLease {
                name: name.to_string(),
            })?;
        if lease.ports != ports {
            let mut updated = lease.clone();
            updated.ports = ports.to_vec();
            let path = self.lease_path(updated.ip);
            fsutil::atomic_write_json(&path, &updated)
                .map_err(|e| NetError::io("write lease", &path, e))?;
            *lease = updated;
        }
        Ok(lease.clone())
    }

    /// Writes a lease as given (repair: re-creating a lease a running container's address
    /// proves). Fails if another container holds the address.
    pub fn restore(&self, lease: &Lease) -> Result<(), NetError> {
        let mut state = self.state.lock().unwrap();
        if let Some(other) = state.leases.get(&lease.ip)
            && (other.name != lease.name || other.id != lease.id)
        {
            return Err(NetError::AddressTaken {
                name: lease.name.clone(),
                ip: lease.ip,
                holder: other.name.clone(),
            });
        }
        let path = self.lease_path(lease.ip);
        fsutil::atomic_write_json(&path, lease).map_err(|e| NetError::io("write lease", &path, e))?;
        state.leases.insert(lease.ip, lease.clone());
        Ok(())
    }

    /// Releases whatever `name`/`id` holds, remembering the address for the name's next
    /// incarnation. Releasing nothing is fine.
    pub fn release(&self, name: &str, id: &IncarnationId) -> Result<Option<IpAddr>, NetError> {
        let mut state = self.state.lock().unwrap();
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

    /// Releases the lease of an address, whoever holds it.
    pub fn release_ip(&self, ip: IpAddr) -> Result<(), NetError> {
        let mut state = self.state.lock().unwrap();
        self.release_locked(&mut state, ip)
    }

    fn release_locked(&self, state: &mut State, ip: IpAddr) -> Result<(), NetError> {
        let Some(lease) = state.leases.get(&ip).cloned() else {
            return Ok(());
        };
        let released = state.hints.values().map(|h| h.released).max().unwrap_or(0) + 1;
        let hint_path = self.hints_dir.join(format!("{}.json", lease.name));
        // The hint first: losing it to a crash costs only the preference, never correctness.
        fsutil::atomic_write_json(&hint_path, &HintFile { ip, released })
            .map_err(|e| NetError::io("write hint", &hint_path, e))?;
        state.hints.insert(lease.name.clone(), Hint { ip, released });
        let path = self.lease_path(ip);
        fsutil::remove_file_if_exists(&path).map_err(|e| NetError::io("remove lease", &path, e))?;
        fsutil::sync_dir(&self.leases_dir).map_err(|e| NetError::io("sync", &self.leases_dir, e))?;
        state.leases.remove(&ip);
        Ok(())
    }

    /// Removes temp files a crash left behind.
    pub fn remove_stale_temps(&self) -> Result<(), NetError> {
        for dir in [&self.leases_dir, &self.hints_dir] {
            let entries = fs::read_dir(dir).map_err(|e| NetError::io("read", dir, e))?;
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with('.') {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    fn lease_path(&self, ip: IpAddr) -> PathBuf {
        self.leases_dir.join(format!("{ip}.json"))
    }

    /// Writes a complete temp file, then links it to the lease's name: atomic and exclusive.
    fn create_exclusive(&self, lease: &Lease) -> Result<bool, NetError> {
        let path = self.lease_path(lease.ip);
        let tmp = self.leases_dir.join(format!(
            ".{}.{}.{:?}.tmp",
            lease.ip,
            std::process::id(),
            std::thread::current().id()
        ));
        let result = (|| -> io::Result<bool> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            let mut data = serde_json::to_vec_pretty(lease).map_err(io::Error::other)?;
            data.push(b'\n');
            f.write_all(&data)?;
            f.sync_all()?;
            let won = match fs::hard_link(&tmp, &path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            };
            fs::remove_file(&tmp)?;
            fsutil::sync_dir(&self.leases_dir)?;
            Ok(won)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| NetError::io("create lease", path, e))
    }

    fn alloc_error(&self, name: &str, e: AllocError) -> NetError {
        let name = name.to_string();
        match e {
            AllocError::Ipv6(ip) => {
                NetError::Ipv6Unsupported(format!("static address {ip} for container {name}"))
            }
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

/// Reads every `*.json` in `dir`; a file that does not parse is an error naming it.
fn read_dir_json<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<(PathBuf, T)>, NetError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io("read", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetError::io("read", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match fsutil::read_json::<T>(&path) {
            Ok(Some(v)) => out.push((path, v)),
            Ok(None) => {}
            Err(e) => return Err(NetError::io("parse", path, e)),
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
        assert_eq!(files.len(), 3, "one file per lease and no temp files");
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
    fn set_ports_without_lease_is_an_error_naming_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), Subnet::parse("10.40.0.0/24").unwrap()).unwrap();
        let e = ipam.set_ports("ghost", &id(1), &[]).unwrap_err();
        assert!(e.to_string().contains("ghost"), "{e}");
    }
}
