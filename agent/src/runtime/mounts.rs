//! Everything mounted inside the container's root before pivot_root: /proc, a small /dev, a
//! read-only /sys, the /etc files, the spec's mounts and devices, masked and read-only paths.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use rustix::fs::{FileType, Mode};

use super::config::{ContainerConfig, MountSource};
use super::rootfs::{Create, fd_path, open_in_root};

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

fn ctx(what: &str, e: impl Into<io::Error>) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn mount_at(
    root: &File,
    target: &str,
    create: Create,
    source: Option<&Path>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let fd =
        open_in_root(root, target, create).map_err(|e| ctx(&format!("mountpoint {target}"), e))?;
    mount(source, &fd_path(&fd), fstype, flags, data)
        .map_err(|e| ctx(&format!("mount {target}"), e))
}

/// Remounts the bind mount at `target` read-only (keeping the flags the kernel locks).
fn remount_ro(root: &File, target: &str, extra: MsFlags) -> io::Result<()> {
    let fd = open_in_root(root, target, Create::Nothing)?;
    mount(
        None::<&str>,
        &fd_path(&fd),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra,
        None::<&str>,
    )
    .map_err(|e| ctx(&format!("remount {target} read-only"), e))
}

/// Mounts everything under the root `root` (open as a directory).
pub fn setup(root: &File, cfg: &ContainerConfig) -> io::Result<()> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let privileged = cfg.security.privileged;
    mount_at(
        root,
        "/proc",
        Create::Dir,
        Some(Path::new("proc")),
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;
    setup_dev(root)?;
    let sys_flags = if privileged {
        nosuid_nodev_noexec
    } else {
        nosuid_nodev_noexec | MsFlags::MS_RDONLY
    };
    mount_at(
        root,
        "/sys",
        Create::Dir,
        Some(Path::new("sysfs")),
        Some("sysfs"),
        sys_flags,
        None,
    )?;

    for (file, host) in [
        ("/etc/hostname", &cfg.etc.hostname),
        ("/etc/hosts", &cfg.etc.hosts),
        ("/etc/resolv.conf", &cfg.etc.resolv_conf),
    ] {
        if let Some(host) = host {
            mount_at(
                root,
                file,
                Create::File,
                Some(host),
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }

    for m in &cfg.mounts {
        match &m.source {
            MountSource::Bind(src) | MountSource::Volume(src) => {
                let meta = std::fs::metadata(src)
                    .map_err(|e| ctx(&format!("bind source {}", src.display()), e))?;
                let create = if meta.is_dir() {
                    Create::Dir
                } else {
                    Create::File
                };
                mount_at(
                    root,
                    &m.target,
                    create,
                    Some(src),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                if m.read_only {
                    remount_ro(root, &m.target, MsFlags::empty())?;
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
                mount_at(
                    root,
                    &m.target,
                    Create::Dir,
                    Some(Path::new("tmpfs")),
                    Some("tmpfs"),
                    flags,
                    Some(&data),
                )?;
            }
        }
    }

    for d in &cfg.devices {
        let meta = std::fs::metadata(&d.host)
            .map_err(|e| ctx(&format!("device {}", d.host.display()), e))?;
        let kind = if meta.file_type().is_block_device() {
            FileType::BlockDevice
        } else if meta.file_type().is_char_device() {
            FileType::CharacterDevice
        } else {
            return Err(io::Error::other(format!(
                "{} is not a device node",
                d.host.display()
            )));
        };
        mknod_in_root(
            root,
            &d.container.to_string_lossy(),
            kind,
            meta.mode() & 0o7777,
            meta.rdev(),
        )?;
    }

    if privileged {
        host_devices(root)?;
    }

    if !privileged {
        for p in MASKED_PATHS {
            mask(root, p)?;
        }
        for p in READONLY_PATHS {
            match open_in_root(root, p, Create::Nothing) {
                Ok(fd) => {
                    let path = fd_path(&fd);
                    mount(
                        Some(&path),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(|e| ctx(&format!("bind {p}"), e))?;
                    remount_ro(root, p, nosuid_nodev_noexec)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx(p, e)),
            }
        }
    }
    Ok(())
}

fn mask(root: &File, p: &str) -> io::Result<()> {
    let fd = match open_in_root(root, p, Create::Nothing) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ctx(p, e)),
    };
    let is_dir = rustix::fs::fstat(&fd)
        .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)?;
    let target = fd_path(&fd);
    if is_dir {
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
    } else {
        let null = open_in_root(root, "/dev/null", Create::Nothing)?;
        mount(
            Some(&fd_path(&null)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    }
    .map_err(|e| ctx(&format!("mask {p}"), e))
}

fn setup_dev(root: &File) -> io::Result<()> {
    mount_at(
        root,
        "/dev",
        Create::Dir,
        Some(Path::new("tmpfs")),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in DEV_NODES {
        let dev = rustix::fs::makedev(*major, *minor);
        mknod_in_root(
            root,
            &format!("/dev/{name}"),
            FileType::CharacterDevice,
            0o666,
            dev,
        )?;
    }
    mount_at(
        root,
        "/dev/pts",
        Create::Dir,
        Some(Path::new("devpts")),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mount_at(
        root,
        "/dev/shm",
        Create::Dir,
        Some(Path::new("shm")),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    mount_at(
        root,
        "/dev/mqueue",
        Create::Dir,
        Some(Path::new("mqueue")),
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    let dev = open_in_root(root, "/dev", Create::Nothing)?;
    let dev = rustix::fs::openat(
        &dev,
        ".",
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(target, &dev, link).map_err(|e| ctx(&format!("/dev/{link}"), e))?;
    }
    Ok(())
}

/// Dirs of the host's /dev whose nodes a privileged container does not get: its own pts,
/// shm and mqueue stand there, and the rest are runtime bookkeeping (as Docker skips them).
const HOST_DEV_SKIP: &[&str] = &["pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev"];

/// `privileged = true`: every device node of the host's /dev (still visible: the root is not
/// pivoted yet), with its owner and mode, as Docker's `--privileged` gives; nodes the
/// container's own /dev already has stay as they are.
fn host_devices(root: &File) -> io::Result<()> {
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let name = e.file_name();
                if !(dir == Path::new("/dev") && HOST_DEV_SKIP.iter().any(|s| name == *s)) {
                    stack.push(path);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                continue;
            };
            // The console is the container's own business.
            if path == Path::new("/dev/console") {
                continue;
            }
            let target = path.to_string_lossy();
            if open_in_root(root, &target, Create::Nothing).is_ok() {
                continue;
            }
            mknod_in_root(root, &target, kind, meta.mode() & 0o7777, meta.rdev())?;
            let fd = open_in_root(root, &target, Create::Nothing)?;
            // An O_PATH fd: chown through AT_EMPTY_PATH.
            rustix::fs::chownat(
                &fd,
                "",
                Some(rustix::fs::Uid::from_raw(meta.uid())),
                Some(rustix::fs::Gid::from_raw(meta.gid())),
                rustix::fs::AtFlags::EMPTY_PATH,
            )
            .map_err(|e| ctx(&format!("chown {target}"), e))?;
        }
    }
    Ok(())
}

fn mknod_in_root(root: &File, path: &str, kind: FileType, perm: u32, dev: u64) -> io::Result<()> {
    let rel = super::rootfs::relative(path);
    let parent = rel
        .parent()
        .map(|p| format!("/{}", p.display()))
        .unwrap_or_else(|| "/".into());
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::other(format!("bad device path {path}")))?;
    let pfd = open_in_root(root, &parent, Create::Dir)?;
    let dir = rustix::fs::openat(
        &pfd,
        ".",
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match rustix::fs::mknodat(dir.as_fd(), name, kind, Mode::from_bits_truncate(perm), dev) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(ctx(&format!("mknod {path}"), e)),
    }
    // mknod honours the umask; the mode must be exact.
    rustix::fs::chmodat(
        &dir,
        name,
        Mode::from_bits_truncate(perm),
        rustix::fs::AtFlags::empty(),
    )
    .map_err(|e| ctx(&format!("chmod {path}"), e))
}

/// What of the cgroup tree a container sees at /sys/fs/cgroup (see [`mount_cgroup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupView {
    /// One cgroup2 mount.
    Unified,
    /// These v1 hierarchies, each named by its controller set (`cpu,cpuacct`).
    Legacy(Vec<String>),
}

/// Mounts the container's own cgroup at /sys/fs/cgroup (read-only unless `writable`, as Docker
/// gives privileged containers), so that runtimes can read their limits. Called after
/// pivot_root from inside the container's cgroup namespace: each cgroup mount is rooted at the
/// container's cgroup, and nothing of the host's tree above it is reachable. v1 gets a small
/// tmpfs with one mount per hierarchy the container was placed in, and a link per co-mounted
/// controller as the host has them (`cpu -> cpu,cpuacct`).
pub fn mount_cgroup(view: &CgroupView, writable: bool) -> io::Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = if writable {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    let top = Path::new("/sys/fs/cgroup");
    match view {
        CgroupView::Unified => mount(
            Some("cgroup2"),
            top,
            Some("cgroup2"),
            flags | ro,
            None::<&str>,
        )
        .map_err(|e| ctx("mount cgroup2 at /sys/fs/cgroup", e)),
        CgroupView::Legacy(hierarchies) => {
            mount(
                Some("tmpfs"),
                top,
                Some("tmpfs"),
                flags,
                Some("mode=755,size=64k"),
            )
            .map_err(|e| ctx("mount tmpfs at /sys/fs/cgroup", e))?;
            for h in hierarchies {
                let dir = top.join(h);
                std::fs::create_dir(&dir).map_err(|e| ctx(&format!("mkdir {h}"), e))?;
                mount(
                    Some("cgroup"),
                    &dir,
                    Some("cgroup"),
                    flags | ro,
                    Some(h.as_str()),
                )
                .map_err(|e| ctx(&format!("mount cgroup {h}"), e))?;
                if h.contains(',') {
                    for c in h.split(',') {
                        std::os::unix::fs::symlink(h, top.join(c))
                            .map_err(|e| ctx(&format!("link {c}"), e))?;
                    }
                }
            }
            mount(
                None::<&str>,
                top,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags | ro,
                None::<&str>,
            )
            .map_err(|e| ctx("remount /sys/fs/cgroup", e))
        }
    }
}
