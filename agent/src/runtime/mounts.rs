//! Everything mounted inside the container's root before pivot_root: /proc, a small /dev, a
//! read-only /sys, the /etc files, the spec's mounts and devices, masked and read-only paths.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use rustix::fs::{FileType, Mode};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use super::config::ContainerConfig;
pub use super::mount_plan::{DEV_NODES, MASKED_PATHS, READONLY_PATHS};
use super::mount_plan::{
    HostFacts, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, Step,
};
use super::rootfs::{Create, fd_path, open_in_root};

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

/// `struct mount_attr` of mount_setattr(2), which no crate wraps.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// What a bind mount is made of: a host path (the spec's, the agent's files), or an fd
/// already resolved.
enum BindSource<'a> {
    Path(&'a Path),
    Fd(&'a OwnedFd),
}

/// Binds `source` (with the mounts below it) onto `target` in the root, then sets `attrs`
/// (`MOUNT_ATTR_*`) on the whole tree before it is attached: the target is resolved once, the
/// new tree is one fd from open_tree to move_mount, and nothing is looked up again by path
/// (an old remount by path could be aimed elsewhere in between). Kernels before 5.12 (no
/// mount_setattr) get the classic bind and remount, with its weaker guarantees.
fn bind(
    root: &File,
    target: &str,
    create: Create,
    source: BindSource<'_>,
    attrs: u64,
) -> io::Result<()> {
    let dest =
        open_in_root(root, target, create).map_err(|e| ctx(&format!("mountpoint {target}"), e))?;
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE;
    let tree = match source {
        BindSource::Path(p) => rustix::mount::open_tree(rustix::fs::CWD, p, flags),
        BindSource::Fd(fd) => {
            rustix::mount::open_tree(fd, "", flags | OpenTreeFlags::AT_EMPTY_PATH)
        }
    };
    let tree = match tree {
        Ok(t) => t,
        Err(rustix::io::Errno::NOSYS) => return bind_legacy(root, target, source, attrs),
        Err(e) => return Err(ctx(&format!("bind {target}"), e)),
    };
    if attrs != 0 {
        let attr = MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // Raw syscall: neither nix nor rustix has mount_setattr.
        // SAFETY: mount_setattr reads one struct of the size passed, alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return bind_legacy(root, target, source, attrs);
            }
            return Err(ctx(&format!("make {target} read-only"), e));
        }
    }
    rustix::mount::move_mount(
        &tree,
        "",
        &dest,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| ctx(&format!("mount {target}"), e))
}

/// [`bind`] before mount_setattr: bind, then remount the top mount by path.
fn bind_legacy(root: &File, target: &str, source: BindSource<'_>, attrs: u64) -> io::Result<()> {
    let dest = open_in_root(root, target, Create::Nothing)?;
    let src = match source {
        BindSource::Path(p) => p.to_path_buf(),
        BindSource::Fd(fd) => fd_path(fd),
    };
    mount(
        Some(&src),
        &fd_path(&dest),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| ctx(&format!("bind {target}"), e))?;
    if attrs & MOUNT_ATTR_RDONLY == 0 {
        return Ok(());
    }
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (a, f) in [
        (MOUNT_ATTR_NOSUID, MsFlags::MS_NOSUID),
        (MOUNT_ATTR_NODEV, MsFlags::MS_NODEV),
        (MOUNT_ATTR_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if attrs & a != 0 {
            flags |= f;
        }
    }
    let fd = open_in_root(root, target, Create::Nothing)?;
    mount(
        None::<&str>,
        &fd_path(&fd),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|e| ctx(&format!("remount {target} read-only"), e))
}

/// The host's /dev/null, opened before pivot_root and checked to be the null device: what
/// masks bind over files (never the container's own /dev/null, CVE-2025-31133).
fn host_null() -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ctx("the host's /dev/null", e))?;
    let st = rustix::fs::fstat(&fd)?;
    let is_null = FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
        && rustix::fs::major(st.st_rdev) == 1
        && rustix::fs::minor(st.st_rdev) == 3;
    if !is_null {
        return Err(io::Error::other(
            "the host's /dev/null is not the null device (c 1:3)",
        ));
    }
    Ok(fd)
}

/// Mounts everything under the root `root` (open as a directory): the steps of
/// [`super::mount_plan::plan`], in its order.
pub fn setup(root: &File, cfg: &ContainerConfig) -> io::Result<()> {
    let steps = super::mount_plan::plan(cfg, &TheHost)?;
    // Opened once, at the first mask.
    let mut null = None;
    for step in &steps {
        run(root, step, &mut null)?;
    }
    Ok(())
}

/// The real host, as the plan asks about it.
struct TheHost;

impl HostFacts for TheHost {
    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        Ok(std::fs::metadata(path)?.is_dir())
    }

    fn device(&self, path: &Path) -> io::Result<Option<(FileType, u32, u64)>> {
        let meta = std::fs::metadata(path)?;
        let kind = if meta.file_type().is_block_device() {
            FileType::BlockDevice
        } else if meta.file_type().is_char_device() {
            FileType::CharacterDevice
        } else {
            return Ok(None);
        };
        Ok(Some((kind, meta.mode() & 0o7777, meta.rdev())))
    }
}

/// Carries out one step against the kernel.
fn run(root: &File, step: &Step, null: &mut Option<OwnedFd>) -> io::Result<()> {
    match step {
        Step::Mount {
            target,
            create,
            source,
            fstype,
            flags,
            data,
        } => mount_at(
            root,
            target,
            *create,
            Some(Path::new(source)),
            Some(fstype),
            *flags,
            data.as_deref(),
        ),
        Step::Bind {
            target,
            create,
            source,
            attrs,
        } => bind(root, target, *create, BindSource::Path(source), *attrs),
        Step::Node {
            target,
            kind,
            perm,
            dev,
        } => mknod_in_root(root, target, *kind, *perm, *dev),
        Step::DevLinks => dev_links(root),
        Step::HostDevices => host_devices(root),
        Step::Mask(p) => {
            let null = match null {
                Some(fd) => fd,
                None => null.insert(host_null()?),
            };
            mask(root, p, null)
        }
        Step::ReadOnly(p) => match open_in_root(root, p, Create::Nothing) {
            Ok(fd) => bind(
                root,
                p,
                Create::Nothing,
                BindSource::Fd(&fd),
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ctx(p, e)),
        },
    }
}

fn mask(root: &File, p: &str, null: &OwnedFd) -> io::Result<()> {
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
        mount(
            Some(&fd_path(null)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    }
    .map_err(|e| ctx(&format!("mask {p}"), e))
}

/// /dev's symlinks, made in the /dev tmpfs just mounted.
fn dev_links(root: &File) -> io::Result<()> {
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

/// Makes device node `path` inside the root. Whatever the image has there (a file, or a symlink
/// that would lead the mode change anywhere, the host included, since this runs before
/// pivot_root) is replaced, as a mount covers what it lands on; a directory is an error. The
/// mode is set through an O_PATH|O_NOFOLLOW fd that fstat shows is the node just made.
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
    let mode = Mode::from_bits_truncate(perm);
    let mknod = || rustix::fs::mknodat(dir.as_fd(), name, kind, mode, dev);
    match mknod() {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty())
                .map_err(|e| ctx(&format!("replace {path} with the device"), e))?;
            mknod().map_err(|e| ctx(&format!("mknod {path}"), e))?;
        }
        Err(e) => return Err(ctx(&format!("mknod {path}"), e)),
    }
    let node = rustix::fs::openat(
        &dir,
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ctx(&format!("open {path}"), e))?;
    let st = rustix::fs::fstat(&node)?;
    if FileType::from_raw_mode(st.st_mode) != kind || st.st_rdev != dev {
        return Err(io::Error::other(format!(
            "{path} is not the device node just made"
        )));
    }
    // mknod honours the umask; the mode must be exact. The magic link names this very inode.
    std::fs::set_permissions(
        fd_path(&node),
        std::os::unix::fs::PermissionsExt::from_mode(perm),
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

/// Whether a container may write its cgroup's files (privileged ones may).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupAccess {
    ReadOnly,
    Writable,
}

/// Mounts the container's own cgroup at /sys/fs/cgroup (read-only unless `Writable`, as Docker
/// gives privileged containers), so that runtimes can read their limits. Called after
/// pivot_root from inside the container's cgroup namespace: each cgroup mount is rooted at the
/// container's cgroup, and nothing of the host's tree above it is reachable. v1 gets a small
/// tmpfs with one mount per hierarchy the container was placed in, and a link per co-mounted
/// controller as the host has them (`cpu -> cpu,cpuacct`).
pub fn mount_cgroup(view: &CgroupView, access: CgroupAccess) -> io::Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = match access {
        CgroupAccess::Writable => MsFlags::empty(),
        CgroupAccess::ReadOnly => MsFlags::MS_RDONLY,
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
