//! The container's root: an overlayfs over the image layers, and path resolution that never
//! leaves it (openat2 RESOLVE_IN_ROOT), so a symlink in an image cannot aim a mount at the host.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
/// as if `root` were `/`, dangling ones included: what they name is made inside the root (an
/// image's `/etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf`), as runc does.
pub fn open_in_root(root: &impl AsFd, path: &str, create: Create) -> io::Result<OwnedFd> {
    let mut rel = relative(path);
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
    // Each dangling symlink met restarts the walk on the path it names; as many as the
    // kernel would follow.
    let mut hops = 0;
    'walk: loop {
        let mut cur = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for (i, c) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let parent = if cur.as_os_str().is_empty() {
                open(Path::new("."))?
            } else {
                open(&cur)?
            };
            let here = cur.clone();
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
            if let Ok(target) = rustix::fs::readlinkat(&dir, name, Vec::new()) {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                let mut next = if target.is_absolute() {
                    PathBuf::from("/")
                } else {
                    Path::new("/").join(&here)
                };
                next.push(target);
                for rest in &parts[i + 1..] {
                    next.push(rest);
                }
                rel = relative(&next.to_string_lossy());
                continue 'walk;
            }
            if last && create == Create::File {
                match rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::CLOEXEC
                        | OFlags::NOFOLLOW,
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
        return open(&rel);
    }
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

    #[test]
    fn dangling_symlinks_are_made_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../run/x/f", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("etc/loop")).unwrap();
        let rfd = std::fs::File::open(&root).unwrap();
        open_in_root(&rfd, "/etc/abs", Create::File).unwrap();
        let inside = root.join(outside.strip_prefix("/").unwrap()).join("f");
        assert!(inside.is_file(), "{}", inside.display());
        assert!(!outside.exists());
        open_in_root(&rfd, "/etc/rel", Create::File).unwrap();
        assert!(root.join("run/x/f").is_file());
        let e = open_in_root(&rfd, "/etc/loop", Create::File).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }
}
