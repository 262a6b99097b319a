//! The kernel edge of unpacking: a layer root whose paths are only ever resolved by openat2
//! with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so absolute and `../..` symlinks stay inside
//! the layer, and every change is an `*at()` call on one final name, never following it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::path::join;

pub struct LayerRoot {
    root: OwnedFd,
    /// The last parent dir resolved (tar entries come grouped by directory) and whether it
    /// is setgid (new files then take its group).
    cache: Option<(Vec<u8>, Rc<OwnedFd>, bool)>,
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

impl LayerRoot {
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(LayerRoot { root, cache: None })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Forgets cached dir fds: called whenever an entry removes or replaces something, since a
    /// cached fd could then name a dir no longer in the tree.
    pub fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Opens `rel` (a relative path, empty for the root) as a directory, resolved inside root.
    pub fn resolve_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.root,
                os(rel),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                // The kernel asks for a retry when a rename raced the lookup.
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                // Old kernels and sandboxes without openat2: fail closed, never fall back.
                Err(Errno::NOSYS) => {
                    return Err(io::Error::other(
                        "openat2 is unavailable (kernel 5.6+ needed); refusing to unpack without it",
                    ));
                }
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// The directory `comps` inside root, creating missing components (mode 0755, as Docker
    /// does for parents a layer does not list).
    pub fn parent_dir(&mut self, comps: &[Vec<u8>]) -> io::Result<Rc<OwnedFd>> {
        let key = join(comps);
        if let Some((k, fd, _)) = &self.cache
            && *k == key
        {
            return Ok(fd.clone());
        }
        let fd = match self.resolve_dir(&key) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.create_dirs(comps)?,
            Err(e) => return Err(e),
        };
        let setgid = rustix::fs::fstat(&fd)?.st_mode & libc::S_ISGID != 0;
        let fd = Rc::new(fd);
        self.cache = Some((key, fd.clone(), setgid));
        Ok(fd)
    }

    /// Whether the dir last returned by [`Self::parent_dir`] is setgid.
    pub fn parent_is_setgid(&self) -> bool {
        self.cache.as_ref().is_none_or(|c| c.2)
    }

    fn create_dirs(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let mut parent = self.resolve_dir(b"")?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            match self.resolve_dir(&prefix) {
                Ok(fd) => parent = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match rustix::fs::mkdirat(&parent, os(&comps[i]), Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            return Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                format!(
                                    "/{} is a dangling symlink",
                                    String::from_utf8_lossy(&prefix)
                                ),
                            ));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    // umask may have trimmed the mode; the new dir is ours, not a symlink.
                    rustix::fs::chmodat(
                        &parent,
                        os(&comps[i]),
                        Mode::from_raw_mode(0o755),
                        AtFlags::empty(),
                    )?;
                    parent = self.resolve_dir(&prefix)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(parent)
    }
}

/// The type of `name` in `dir`, without following it; `None` when absent.
pub fn existing(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir` and, for a directory, everything below it, never following a
/// symlink.
pub fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match existing(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = rustix::fs::openat(
                dir,
                os(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut names = Vec::new();
            for entry in rustix::fs::Dir::read_from(&sub)? {
                let entry = entry?;
                let n = entry.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            for n in names {
                remove_all(sub.as_fd(), &n)?;
            }
            rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)?;
            Ok(())
        }
        Some(_) => Ok(rustix::fs::unlinkat(dir, os(name), AtFlags::empty())?),
    }
}
