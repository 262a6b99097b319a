//! The container's mount setup as data: which filesystems, binds, nodes and masks, in which
//! order, with which flags. `mounts::setup` carries the steps out against the kernel; the
//! sequence itself (the heart of isolation) is decided here without touching anything but the
//! host facts it asks for, so its order and arguments are tested as data, without root.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use rustix::fs::FileType;

use super::config::{ContainerConfig, MountSource};
use super::rootfs::Create;

/// Paths the payload may not read (a tmpfs over dirs, /dev/null over files), as podman's list.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
];

/// Paths the payload may read but not write.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The character devices every container's /dev gets: (name, major, minor).
pub const DEV_NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// `MOUNT_ATTR_*` of mount_setattr(2).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// One step of the setup, inside the container's root (paths as the container sees them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new filesystem.
    Mount {
        target: String,
        create: Create,
        source: &'static str,
        fstype: &'static str,
        flags: MsFlags,
        data: Option<String>,
    },
    /// A host path bound with the mounts below it, `MOUNT_ATTR_*` set before it is attached.
    Bind {
        target: String,
        create: Create,
        source: PathBuf,
        attrs: u64,
    },
    /// A device node with exactly these permission bits.
    Node {
        target: String,
        kind: FileType,
        perm: u32,
        dev: u64,
    },
    /// /dev's symlinks (ptmx, fd, stdin, stdout, stderr).
    DevLinks,
    /// `privileged`: every device node of the host's /dev.
    HostDevices,
    /// Unreadable: a read-only empty tmpfs over a dir, the host's /dev/null over a file.
    Mask(&'static str),
    /// Readable, not writable: bound onto itself read-only, nosuid, nodev, noexec.
    ReadOnly(&'static str),
}

/// What the plan needs to know of the host (the real answer reads the filesystem).
pub trait HostFacts {
    /// Whether a bind source is a directory (else it is bound as a file).
    fn is_dir(&self, path: &Path) -> io::Result<bool>;
    /// A device node's kind (`None`: not a device node), permission bits and number.
    fn device(&self, path: &Path) -> io::Result<Option<(FileType, u32, u64)>>;
}

fn ctx(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn mount(
    target: &str,
    source: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&str>,
) -> Step {
    Step::Mount {
        target: target.to_string(),
        create: Create::Dir,
        source,
        fstype,
        flags,
        data: data.map(str::to_string),
    }
}

/// The steps, in the order they must run: the kernel filesystems, /dev, the /etc files, the
/// spec's mounts and devices, and last the masks and read-only paths, so that nothing mounted
/// later can cover one of them.
pub fn plan(cfg: &ContainerConfig, host: &impl HostFacts) -> io::Result<Vec<Step>> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let privileged = cfg.security.privileged;
    let mut steps = vec![mount("/proc", "proc", "proc", nosuid_nodev_noexec, None)];
    dev(&mut steps);
    let sys_flags = if privileged {
        nosuid_nodev_noexec
    } else {
        nosuid_nodev_noexec | MsFlags::MS_RDONLY
    };
    steps.push(mount("/sys", "sysfs", "sysfs", sys_flags, None));
    for (file, from) in [
        ("/etc/hostname", &cfg.etc.hostname),
        ("/etc/hosts", &cfg.etc.hosts),
        ("/etc/resolv.conf", &cfg.etc.resolv_conf),
    ] {
        if let Some(from) = from {
            // Read-only: these are the agent's files on the host's disk.
            steps.push(Step::Bind {
                target: file.to_string(),
                create: Create::File,
                source: from.clone(),
                attrs: MOUNT_ATTR_RDONLY,
            });
        }
    }
    for m in &cfg.mounts {
        steps.push(match &m.source {
            MountSource::Bind(src) | MountSource::Volume(src) => {
                let is_dir = host
                    .is_dir(src)
                    .map_err(|e| ctx(&format!("bind source {}", src.display()), e))?;
                Step::Bind {
                    target: m.target.clone(),
                    create: if is_dir { Create::Dir } else { Create::File },
                    source: src.clone(),
                    attrs: if m.read_only { MOUNT_ATTR_RDONLY } else { 0 },
                }
            }
            MountSource::Tmpfs { size } => {
                let data = match size {
                    Some(s) => format!("mode=1777,size={s}"),
                    None => "mode=1777".into(),
                };
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                if m.read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                mount(&m.target, "tmpfs", "tmpfs", flags, Some(&data))
            }
        });
    }
    for d in &cfg.devices {
        let Some((kind, perm, dev)) = host
            .device(&d.host)
            .map_err(|e| ctx(&format!("device {}", d.host.display()), e))?
        else {
            return Err(io::Error::other(format!(
                "{} is not a device node",
                d.host.display()
            )));
        };
        steps.push(Step::Node {
            target: d.container.to_string_lossy().into_owned(),
            kind,
            perm,
            dev,
        });
    }
    if privileged {
        steps.push(Step::HostDevices);
    } else {
        steps.extend(MASKED_PATHS.iter().map(|p| Step::Mask(p)));
        steps.extend(READONLY_PATHS.iter().map(|p| Step::ReadOnly(p)));
    }
    Ok(steps)
}

/// A small /dev of its own: a tmpfs with the basic nodes, devpts, shm, mqueue and the links.
fn dev(steps: &mut Vec<Step>) {
    steps.push(mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    ));
    for (name, major, minor) in DEV_NODES {
        steps.push(Step::Node {
            target: format!("/dev/{name}"),
            kind: FileType::CharacterDevice,
            perm: 0o666,
            dev: rustix::fs::makedev(*major, *minor),
        });
    }
    steps.push(mount(
        "/dev/pts",
        "devpts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    ));
    steps.push(mount(
        "/dev/shm",
        "shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    ));
    steps.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    ));
    steps.push(Step::DevLinks);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::names::IncarnationId;
    use crate::runtime::config::{DeviceSpec, MountSpec};

    /// A host of named paths: dirs, files and device nodes.
    #[derive(Default)]
    struct Facts {
        dirs: Vec<PathBuf>,
        devices: BTreeMap<PathBuf, Option<(FileType, u32, u64)>>,
    }

    impl HostFacts for Facts {
        fn is_dir(&self, path: &Path) -> io::Result<bool> {
            Ok(self.dirs.iter().any(|d| d == path))
        }
        fn device(&self, path: &Path) -> io::Result<Option<(FileType, u32, u64)>> {
            self.devices
                .get(path)
                .copied()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    fn config() -> ContainerConfig {
        ContainerConfig::minimal("c", IncarnationId::random(), Vec::new(), &["/bin/true"])
    }

    fn targets(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Mount { target, .. } | Step::Bind { target, .. } => target.clone(),
                Step::Node { target, .. } => format!("node {target}"),
                Step::DevLinks => "links".into(),
                Step::HostDevices => "host devices".into(),
                Step::Mask(p) => format!("mask {p}"),
                Step::ReadOnly(p) => format!("ro {p}"),
            })
            .collect()
    }

    #[test]
    fn an_unprivileged_container_gets_its_own_dev_a_readonly_sys_and_every_mask() {
        let steps = plan(&config(), &Facts::default()).unwrap();
        let t = targets(&steps);
        let head: Vec<&str> = t.iter().take(12).map(String::as_str).collect();
        assert_eq!(
            head,
            [
                "/proc",
                "/dev",
                "node /dev/null",
                "node /dev/zero",
                "node /dev/full",
                "node /dev/random",
                "node /dev/urandom",
                "node /dev/tty",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "links"
            ]
        );
        let Step::Mount { flags, .. } = &steps[12] else {
            panic!("{:?}", steps[12]);
        };
        assert_eq!(t[12], "/sys");
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
        let masks: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mask(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(masks, MASKED_PATHS);
        assert!(t.iter().any(|s| s == "ro /proc/sys"));
        assert!(!steps.contains(&Step::HostDevices));
        // No device of the host's: /dev/null is c 1:3, and every node is 0666.
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, Step::Node { target, dev, perm: 0o666, .. }
            if target == "/dev/null" && *dev == rustix::fs::makedev(1, 3)))
        );
    }

    #[test]
    fn masks_come_after_everything_a_spec_can_mount() {
        let mut cfg = config();
        cfg.etc.hosts = Some("/run/berth/hosts".into());
        cfg.mounts = vec![
            MountSpec {
                source: MountSource::Bind("/srv/data".into()),
                target: "/proc/kcore".into(),
                read_only: false,
            },
            MountSpec {
                source: MountSource::Tmpfs {
                    size: Some(16 << 20),
                },
                target: "/sys/firmware".into(),
                read_only: true,
            },
        ];
        cfg.devices = vec![DeviceSpec {
            host: "/dev/fuse".into(),
            container: "/dev/fuse".into(),
            permissions: "rw".into(),
        }];
        let facts = Facts {
            dirs: vec!["/srv/data".into()],
            devices: [(
                PathBuf::from("/dev/fuse"),
                Some((
                    FileType::CharacterDevice,
                    0o666,
                    rustix::fs::makedev(10, 229),
                )),
            )]
            .into(),
        };
        let steps = plan(&cfg, &facts).unwrap();
        let first_mask = steps
            .iter()
            .position(|s| matches!(s, Step::Mask(_)))
            .unwrap();
        // A spec mount over a masked path is covered again by the mask, never the reverse.
        assert!(
            steps[first_mask..]
                .iter()
                .all(|s| matches!(s, Step::Mask(_) | Step::ReadOnly(_))),
            "{:?}",
            &steps[first_mask..]
        );
        assert!(steps.contains(&Step::Bind {
            target: "/etc/hosts".into(),
            create: Create::File,
            source: "/run/berth/hosts".into(),
            attrs: MOUNT_ATTR_RDONLY,
        }));
        assert!(steps.contains(&Step::Bind {
            target: "/proc/kcore".into(),
            create: Create::Dir,
            source: "/srv/data".into(),
            attrs: 0,
        }));
        assert!(steps.contains(&Step::Mount {
            target: "/sys/firmware".into(),
            create: Create::Dir,
            source: "tmpfs",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
            data: Some("mode=1777,size=16777216".into()),
        }));
        assert!(steps.contains(&Step::Node {
            target: "/dev/fuse".into(),
            kind: FileType::CharacterDevice,
            perm: 0o666,
            dev: rustix::fs::makedev(10, 229),
        }));
    }

    #[test]
    fn privileged_gets_the_hosts_devices_a_writable_sys_and_no_masks() {
        let mut cfg = config();
        cfg.security.privileged = true;
        let steps = plan(&cfg, &Facts::default()).unwrap();
        assert!(steps.contains(&Step::HostDevices));
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Mask(_) | Step::ReadOnly(_)))
        );
        let sys = steps
            .iter()
            .find_map(|s| match s {
                Step::Mount { target, flags, .. } if target == "/sys" => Some(*flags),
                _ => None,
            })
            .unwrap();
        assert!(!sys.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn a_bad_source_or_device_is_an_error_naming_it() {
        let mut cfg = config();
        cfg.devices = vec![DeviceSpec {
            host: "/etc/passwd".into(),
            container: "/dev/x".into(),
            permissions: "r".into(),
        }];
        let facts = Facts {
            devices: [(PathBuf::from("/etc/passwd"), None)].into(),
            ..Facts::default()
        };
        let e = plan(&cfg, &facts).unwrap_err().to_string();
        assert!(e.contains("/etc/passwd is not a device node"), "{e}");
        cfg.devices[0].host = "/dev/missing".into();
        let e = plan(&cfg, &facts).unwrap_err().to_string();
        assert!(e.contains("device /dev/missing"), "{e}");
    }
}
