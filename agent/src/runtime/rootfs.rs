//! The container's root: an overlayfs over the image layers, and path resolution that never
//! leaves it (openat2 RESOLVE_IN_ROOT), so a symlink in an image cannot aim a mount at the host.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

/// Mounts an overlay of `layers` (bottom first) with `upper`/`work` at `target`.
///
/// Uses the new mount API's `lowerdir+`, one layer per call, so no option string can outgrow a
/// page however many layers there are; kernels before 6.8 get the classic string, with paths
/// made relative to the layers' common parent when the absolute ones would not fit.
pub fn mount_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    match mount_overlay_fsconfig(layers, upper, work, target) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount_overlay_legacy(layers, upper, work, target)
        }
        r => r,
    }
}

fn mount_overlay_fsconfig(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in layers.iter().rev() {
        fsconfig_set_string(fs.as_fd(), "lowerdir+", l)?;
    }
    fsconfig_set_string(fs.as_fd(), "upperdir", upper)?;
    fsconfig_set_string(fs.as_fd(), "workdir", work)?;
    fsconfig_create(fs.as_fd())?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )?;
    move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

fn mount_overlay_legacy(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    let join = |ls: Vec<String>| ls.join(":");
    let abs: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        join(abs),
        upper.display(),
        work.display()
    );
    let page = 4096;
    let mut old_cwd = None;
    if data.len() >= page {
        let parent = layers[0].parent().unwrap_or(Path::new("/"));
        if layers.iter().all(|l| l.parent() == Some(parent)) {
            old_cwd = Some(std::env::current_dir()?);
            std::env::set_current_dir(parent)?;
            let rel: Vec<String> = layers
                .iter()
                .rev()
                .map(|l| {
                    l.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            data = format!(
                "lowerdir={},upperdir={},workdir={}",
                join(rel),
                upper.display(),
                work.display()
            );
        }
    }
    let r = nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(io::Error::from);
    if let Some(cwd) = old_cwd {
        std::env::set_current_dir(cwd)?;
    }
    r
}

/// What to create at a path inside the root when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Nothing,
    Dir,
    File,
}

/// Opens `path` (absolute, as the container sees it) inside `root` as an O_PATH fd, creating
/// missing directories (and the last component as `create` says) on the way. Symlinks resolve
/// as if `root` were `/`.
pub fn open_in_root(root: &impl AsFd, path: &str, create: Create) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |p: &Path| {
        rustix::fs::openat2(root, p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), how)
            .map_err(io::Error::from)
    };
    match open(&rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create != Create::Nothing => {}
        Err(e) => return Err(e),
    }
    let mut cur = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let parent = if cur.as_os_str().is_empty() {
            open(Path::new("."))?
        } else {
            open(&cur)?
        };
        cur.push(c);
        match open(&cur) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The parent was resolved inside the root, so creating by name under it stays inside.
        let dir = rustix::fs::openat(
            &parent,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let name = c.as_os_str();
        if last && create == Create::File {
            match rustix::fs::openat(
                &dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(_) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            match rustix::fs::mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    open(&rel)
}

/// `/a/../b/./c` as a relative path without `..` escaping (`..` at the top stays at the top).
pub fn relative(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The magic-link path that names an O_PATH fd, for syscalls that take a path.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_never_climbs() {
        assert_eq!(relative("/a/../../b/./c"), PathBuf::from("b/c"));
        assert_eq!(relative("/"), PathBuf::from("."));
        assert_eq!(relative("../../etc"), PathBuf::from("etc"));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("dots")).unwrap();
        let rfd = std::fs::File::open(&root).unwrap();
        let fd = open_in_root(&rfd, "/up/made/here", Create::Dir).unwrap();
        assert!(root.join("made/here").is_dir());
        let target = std::fs::read_link(fd_path(&fd)).unwrap();
        assert!(target.starts_with(&root), "{}", target.display());
        open_in_root(&rfd, "/dots/x", Create::File).unwrap();
        assert!(root.join("x").is_file());
        assert!(open_in_root(&rfd, "/missing", Create::Nothing).is_err());
    }
}
