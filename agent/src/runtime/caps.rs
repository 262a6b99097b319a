//! Capabilities: podman's 11 defaults, `cap_add`/`cap_drop`/`privileged`, and setting the five
//! sets in the order the kernel requires.
//!
//! Policy (podman's and Docker's since CVE-2022-24769): the bounding set is the granted set; root
//! gets it as effective and permitted; inheritable and ambient stay empty, except that caps a
//! spec adds explicitly with `cap_add` are also made inheritable and ambient, so that a non-root
//! user keeps them across execve (as `podman run --user 1000 --cap-add ...` does).

use std::io;

use berth_spec::model::Security;

pub const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// podman's default set: Docker's 14 minus MKNOD, NET_RAW and AUDIT_WRITE.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

pub fn cap_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAP_NAMES.iter().position(|n| *n == full).map(|n| n as u32)
}

/// A set of capabilities as a bit mask (bit n = capability n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn all() -> Self {
        CapSet((1u64 << CAP_NAMES.len()) - 1)
    }
    pub fn has(self, cap: u32) -> bool {
        self.0 & (1 << cap) != 0
    }
    pub fn has_name(self, name: &str) -> bool {
        cap_number(name).is_some_and(|c| self.has(c))
    }
    pub fn names(self) -> Vec<&'static str> {
        (0..CAP_NAMES.len())
            .filter(|c| self.has(*c as u32))
            .map(|c| CAP_NAMES[c])
            .collect()
    }
}

/// The five sets for a container process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: CapSet,
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
    pub ambient: CapSet,
}

/// Computes the sets for `security` and a process running as `uid`.
pub fn compute(security: &Security, uid: u32) -> Result<CapSets, String> {
    let parse = |names: &[String]| -> Result<(CapSet, bool), String> {
        let mut set = CapSet(0);
        let mut all = false;
        for n in names {
            if n.eq_ignore_ascii_case("ALL") {
                all = true;
                continue;
            }
            let c = cap_number(n).ok_or_else(|| format!("unknown capability {n:?}"))?;
            set.0 |= 1 << c;
        }
        Ok((set, all))
    };
    let (add, add_all) = parse(&security.cap_add)?;
    let (drop, drop_all) = parse(&security.cap_drop)?;
    let granted = if security.privileged {
        CapSet::all()
    } else {
        let mut s = CapSet(0);
        for n in DEFAULT_CAPS {
            s.0 |= 1 << cap_number(n).expect("default cap");
        }
        if drop_all {
            s = CapSet(0);
        }
        s.0 &= !drop.0;
        if add_all {
            s = CapSet::all();
        }
        s.0 |= add.0;
        s
    };
    let explicit = if add_all {
        granted
    } else {
        CapSet(add.0 & granted.0)
    };
    let (eff, inh) = if uid == 0 {
        (granted, explicit)
    } else {
        (explicit, explicit)
    };
    Ok(CapSets {
        bounding: granted,
        effective: eff,
        permitted: eff,
        inheritable: inh,
        ambient: inh,
    })
}

impl CapSets {
    /// Limits every set to `available` (what this process may hand on: a privileged container
    /// gets all of the runtime's own capabilities, not more).
    pub fn within(self, available: CapSet) -> CapSets {
        let f = |s: CapSet| CapSet(s.0 & available.0);
        CapSets {
            bounding: f(self.bounding),
            effective: f(self.effective),
            permitted: f(self.permitted),
            inheritable: f(self.inheritable),
            ambient: f(self.ambient),
        }
    }
}

/// The calling process's bounding set, from /proc/self/status.
pub fn own_bounding() -> CapSet {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .map(CapSet)
        .unwrap_or_else(CapSet::all)
}

/// Drops every capability outside `bounding` from the bounding set (needs CAP_SETPCAP).
pub fn drop_bounding(bounding: CapSet) -> io::Result<()> {
    let last = last_cap();
    for c in 0..=last {
        if c < 64 && bounding.has(c) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The highest capability this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAP_NAMES.len() as u32 - 1)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Sets effective, permitted and inheritable of the calling thread.
pub fn set_process_caps(sets: &CapSets) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let split = |s: CapSet| (s.0 as u32, (s.0 >> 32) as u32);
    let (e0, e1) = split(sets.effective);
    let (p0, p1) = split(sets.permitted);
    let (i0, i1) = split(sets.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // Raw syscall: privileges go through libc (beside this module's prctls), which has no
    // capset wrapper.
    // SAFETY: capset reads a v3 header and two data structs, which we own.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the ambient set (each must be permitted and inheritable already).
pub fn set_ambient(ambient: CapSet) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for c in 0..CAP_NAMES.len() as u32 {
        if ambient.has(c) {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    c as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(add: &[&str], drop: &[&str], privileged: bool) -> Security {
        Security {
            privileged,
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Security::default()
        }
    }

    #[test]
    fn defaults_are_podmans_eleven() {
        let s = compute(&Security::default(), 0).unwrap();
        assert_eq!(s.bounding.names().len(), 11);
        for absent in [
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_AUDIT_WRITE",
            "CAP_SYS_ADMIN",
        ] {
            assert!(!s.bounding.has_name(absent), "{absent}");
        }
        assert_eq!(s.effective, s.bounding);
        assert_eq!(s.permitted, s.bounding);
        assert_eq!(s.inheritable, CapSet(0));
        assert_eq!(s.ambient, CapSet(0));
    }

    #[test]
    fn add_drop_all_and_privileged() {
        let s = compute(&sec(&["CAP_NET_ADMIN"], &["CAP_CHOWN"], false), 0).unwrap();
        assert!(s.bounding.has_name("NET_ADMIN") && !s.bounding.has_name("CHOWN"));
        assert!(s.ambient.has_name("NET_ADMIN") && s.ambient.names().len() == 1);
        let s = compute(&sec(&["CAP_KILL"], &["ALL"], false), 0).unwrap();
        assert_eq!(s.bounding.names(), ["CAP_KILL"]);
        let s = compute(&sec(&[], &[], true), 0).unwrap();
        assert_eq!(s.bounding, CapSet::all());
        assert!(compute(&sec(&["CAP_BOGUS"], &[], false), 0).is_err());
    }

    #[test]
    fn non_root_keeps_only_explicit_adds() {
        let s = compute(&sec(&["NET_BIND_SERVICE"], &[], false), 1000).unwrap();
        assert_eq!(s.bounding.names().len(), 11);
        assert_eq!(s.effective.names(), ["CAP_NET_BIND_SERVICE"]);
        assert_eq!(s.ambient, s.inheritable);
        assert_eq!(s.permitted, s.effective);
        let s = compute(&Security::default(), 1000).unwrap();
        assert_eq!(s.effective, CapSet(0));
    }
}
