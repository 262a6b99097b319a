//! Applying one tar entry to a layer root: create it as the header says, with owner, mode,
//! xattrs and times; turn whiteouts into overlayfs whiteouts; let the last entry for a path win.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use berth_spec::Digest;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::path::{EntryPath, NameKind, classify, join};
use super::root::{LayerRoot, existing, os, remove_all};
use super::space::Guard;
use super::{Limits, UnpackError};

/// The most memory kept for directory times (paths as keys). A layer with more directories
/// than fit keeps the unpack time on the rest: times only, nothing a container runs on.
const MAX_DIR_TIMES_BYTES: usize = 16 << 20;
/// What one remembered directory costs besides its path (the map's slot, the time).
const DIR_TIME_OVERHEAD: usize = 64;

/// Why applying an entry stopped: a limit of the whole layer, or this entry's own failure.
enum Stop {
    Limit(UnpackError),
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

impl From<rustix::io::Errno> for Stop {
    fn from(e: rustix::io::Errno) -> Self {
        Stop::Io(e.into())
    }
}

/// Owner, mode, times and xattrs of an entry, with PAX overrides applied.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// What the unpacker remembers between entries.
pub struct Unpacker {
    pub root: LayerRoot,
    /// Directory times, set once every entry is written (creating a file changes its dir's
    /// mtime). Keyed by path so the last entry wins; at most [`MAX_DIR_TIMES_BYTES`].
    dir_times: HashMap<Vec<u8>, Timespec>,
    dir_times_bytes: usize,
    buf: Vec<u8>,
    /// Every entry seen, of any type.
    pub entries: u64,
    /// Bytes written into files so far.
    written: u64,
    limits: Limits,
    space: Guard,
    /// Every regular file's content digest, by path (the last entry for a path wins): the
    /// store's index of what it can reuse in a partial pull.
    pub files: HashMap<Vec<u8>, (Digest, u64)>,
    euid: u32,
    egid: u32,
}

impl Unpacker {
    pub fn new(root: LayerRoot) -> Self {
        Self::with_limits(root, Limits::default())
    }

    pub fn with_limits(root: LayerRoot, limits: Limits) -> Self {
        Unpacker {
            root,
            dir_times: HashMap::new(),
            dir_times_bytes: 0,
            buf: vec![0; 256 << 10],
            entries: 0,
            written: 0,
            limits,
            space: Guard::new(limits.min_free),
            files: HashMap::new(),
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
        }
    }

    pub fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        if self.entries >= self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        self.entries += 1;
        self.space
            .entry(self.root.fd())?
            .map_err(UnpackError::Reserve)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let fail = |reason: String| UnpackError::Entry {
            path: shown.clone(),
            reason,
        };
        let path = EntryPath::parse(&raw).map_err(|e| fail(format!("refused: {e}")))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let meta = meta(entry).map_err(|e| fail(e.to_string()))?;
        self.apply_entry(entry, &path, kind, &meta)
            .map_err(|e| match e {
                Stop::Limit(e) => e,
                Stop::Io(e) => fail(e.to_string()),
            })
    }

    /// Remembers a directory's time for [`Self::finish`], within the memory budget.
    fn remember_dir_time(&mut self, path: Vec<u8>, mtime: Timespec) {
        if let Some(t) = self.dir_times.get_mut(&path) {
            *t = mtime;
            return;
        }
        let cost = path.len() + DIR_TIME_OVERHEAD;
        if self.dir_times_bytes + cost > MAX_DIR_TIMES_BYTES {
            if self.dir_times_bytes <= MAX_DIR_TIMES_BYTES {
                tracing::warn!(
                    "a layer with more directories than {} MiB of bookkeeping: the rest keep the unpack time as mtime",
                    MAX_DIR_TIMES_BYTES >> 20
                );
                // Warned once.
                self.dir_times_bytes = MAX_DIR_TIMES_BYTES + 1;
            }
            return;
        }
        self.dir_times_bytes += cost;
        self.dir_times.insert(path, mtime);
    }

    /// One entry, in named steps: the layer root's own metadata, overlay markers, a regular
    /// file, or another kind of file made in place of whatever the path held.
    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &EntryPath,
        kind: EntryType,
        meta: &Meta,
    ) -> Result<(), Stop> {
        let Some(name) = &path.name else {
            return self.layer_root(kind, meta);
        };
        if self.overlay_marker(path, name)? == Marker::Applied {
            return Ok(());
        }
        if matches!(
            kind,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
        ) {
            return self.regular_file(entry, path, name, meta);
        }
        let found = self.clear_the_way(path, name, kind)?;
        let dir = self.root.parent_dir(&path.parent)?;
        let dir = dir.as_fd();
        match kind {
            EntryType::Directory => self.directory(dir, path, name, found, meta)?,
            EntryType::Symlink => symlink(entry, dir, name, meta)?,
            EntryType::Link => self.hardlink(entry, dir, name)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                node(entry, kind, dir, name, meta)?
            }
            other => {
                tracing::warn!(entry = %path, kind = ?other, "skipping tar entry of unsupported type");
            }
        }
        Ok(())
    }

    /// `./`: the layer root's own metadata.
    fn layer_root(&mut self, kind: EntryType, meta: &Meta) -> Result<(), Stop> {
        if kind != EntryType::Directory {
            return Err(io::Error::other("the root entry is not a directory").into());
        }
        let fd = self.root.resolve_dir(b"")?;
        set_owner_mode_xattrs(&fd, meta)?;
        self.remember_dir_time(Vec::new(), meta.mtime);
        Ok(())
    }

    /// AUFS metadata (skipped), an opaque-dir marker and whiteouts, in overlayfs' terms.
    fn overlay_marker(&mut self, path: &EntryPath, name: &[u8]) -> Result<Marker, Stop> {
        match classify(name) {
            NameKind::Plain => return Ok(Marker::None),
            NameKind::AufsMeta => {}
            NameKind::Opaque => {
                let dir = self.root.parent_dir(&path.parent)?;
                rustix::fs::fsetxattr(
                    dir.as_fd(),
                    "trusted.overlay.opaque",
                    b"y",
                    XattrFlags::empty(),
                )?;
            }
            NameKind::Whiteout(target) => {
                let dir = self.root.parent_dir(&path.parent)?;
                if existing(dir.as_fd(), target)?.is_some() {
                    remove_all(dir.as_fd(), target)?;
                    self.root.invalidate();
                }
                rustix::fs::mknodat(
                    dir.as_fd(),
                    os(target),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )?;
            }
        }
        Ok(Marker::Applied)
    }

    /// Anything but a dir onto a dir replaces what was there (the last entry wins); returns
    /// what the path held.
    fn clear_the_way(
        &mut self,
        path: &EntryPath,
        name: &[u8],
        kind: EntryType,
    ) -> Result<Option<FileType>, Stop> {
        let dir = self.root.parent_dir(&path.parent)?;
        let found = existing(dir.as_fd(), name)?;
        if let Some(t) = found
            && !(t == FileType::Directory && kind == EntryType::Directory)
        {
            remove_all(dir.as_fd(), name)?;
            self.root.invalidate();
        }
        Ok(found)
    }

    fn directory(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &EntryPath,
        name: &[u8],
        found: Option<FileType>,
        meta: &Meta,
    ) -> Result<(), Stop> {
        if found != Some(FileType::Directory) {
            rustix::fs::mkdirat(dir, os(name), Mode::from_raw_mode(0o700))?;
        }
        let fd = rustix::fs::openat(
            dir,
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        set_owner_mode_xattrs(&fd, meta)?;
        self.remember_dir_time(path.full_bytes(), meta.mtime);
        Ok(())
    }

    /// A hardlink whose target resolves inside this layer's root, so it can only be a file
    /// this layer made: never one outside it.
    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        dir: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<(), Stop> {
        let raw = entry
            .link_name_bytes()
            .ok_or_else(|| io::Error::other("hardlink without a target"))?
            .into_owned();
        let target = EntryPath::parse(&raw)
            .map_err(|e| io::Error::other(format!("hardlink target refused: {e}")))?;
        let Some(tname) = &target.name else {
            return Err(io::Error::other("hardlink to the layer root").into());
        };
        let tdir = self.root.resolve_dir(&join(&target.parent)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("hardlink target /{}: {e}", String::from_utf8_lossy(&raw)),
            )
        })?;
        match existing(tdir.as_fd(), tname)? {
            None => {
                return Err(io::Error::other(format!(
                    "hardlink target /{} is not in this layer",
                    String::from_utf8_lossy(&raw)
                ))
                .into());
            }
            Some(FileType::Directory) => {
                return Err(io::Error::other("hardlink to a directory").into());
            }
            Some(_) => {}
        }
        rustix::fs::linkat(tdir.as_fd(), os(tname), dir, os(name), AtFlags::empty())?;
        Ok(())
    }

    /// A regular file, the common case, in as few syscalls as it allows: created (O_EXCL, so
    /// nothing existing is ever written through) with its final permission bits, owner and
    /// mode set only when creation could not already give them.
    fn regular_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &EntryPath,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), Stop> {
        let create = |dir: BorrowedFd<'_>| {
            rustix::fs::openat(
                dir,
                os(name),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(meta.mode & 0o777),
            )
        };
        let dir = self.root.parent_dir(&path.parent)?;
        let fd = match create(dir.as_fd()) {
            Ok(fd) => fd,
            // The last entry wins: whatever is there (a file, a symlink, a tree) goes first.
            Err(rustix::io::Errno::EXIST) => {
                remove_all(dir.as_fd(), name)?;
                self.root.invalidate();
                let dir = self.root.parent_dir(&path.parent)?;
                create(dir.as_fd())?
            }
            Err(e) => return Err(e.into()),
        };
        let mut file = File::from(fd);
        let mut hash = Sha256::new();
        let size = self.copy(entry, &mut file, &mut hash)?;
        let mut at = path.parent.clone();
        at.push(name.to_vec());
        self.files.insert(
            join(&at),
            (Digest::from_sha256(hash.finalize().into()), size),
        );
        let fd = OwnedFd::from(file);
        // A new file belongs to us and our group, unless its dir is setgid.
        let chown = meta.uid != self.euid || meta.gid != self.egid || self.root.parent_is_setgid();
        if chown {
            // chown clears setuid and file capabilities: owner first, then mode and xattrs.
            let (u, g) = ids(meta);
            rustix::fs::fchown(&fd, u, g)?;
        }
        if chown || meta.mode & 0o7000 != 0 || meta.mode & umask() != 0 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode))?;
        }
        set_xattrs(&fd, meta)?;
        rustix::fs::futimens(&fd, &times(meta.mtime))?;
        Ok(())
    }

    /// Sets every directory's times, now that nothing more is created inside them.
    pub fn finish(&mut self) -> io::Result<()> {
        for (path, mtime) in self.dir_times.drain() {
            match self.root.resolve_dir(&path) {
                Ok(fd) => rustix::fs::futimens(&fd, &times(mtime))?,
                // Replaced by a later entry: that entry's times stand.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether an entry was an overlay marker, applied in full.
#[derive(Debug, PartialEq, Eq)]
enum Marker {
    None,
    Applied,
}

fn symlink<R: Read>(
    entry: &tar::Entry<'_, R>,
    dir: BorrowedFd<'_>,
    name: &[u8],
    meta: &Meta,
) -> Result<(), Stop> {
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| io::Error::other("symlink without a target"))?
        .into_owned();
    rustix::fs::symlinkat(os(&target), dir, os(name))?;
    chown_at(dir, name, meta)?;
    rustix::fs::utimensat(dir, os(name), &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// A device node or a fifo.
fn node<R: Read>(
    entry: &tar::Entry<'_, R>,
    kind: EntryType,
    dir: BorrowedFd<'_>,
    name: &[u8],
    meta: &Meta,
) -> Result<(), Stop> {
    let ft = match kind {
        EntryType::Char => FileType::CharacterDevice,
        EntryType::Block => FileType::BlockDevice,
        _ => FileType::Fifo,
    };
    let h = entry.header();
    // A fifo has no device numbers; some writers leave those fields blank.
    let dev = if ft == FileType::Fifo {
        0
    } else {
        rustix::fs::makedev(
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        )
    };
    rustix::fs::mknodat(dir, os(name), ft, Mode::empty(), dev)?;
    chown_at(dir, name, meta)?;
    // A node we just made, not a symlink: following it is not possible.
    rustix::fs::chmodat(
        dir,
        os(name),
        Mode::from_raw_mode(meta.mode),
        AtFlags::empty(),
    )?;
    rustix::fs::utimensat(dir, os(name), &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

impl Unpacker {
    /// A file's contents, counted against the layer's byte limit and the space reserve, and
    /// hashed (the partial-pull index). Returns its size.
    fn copy<R: Read>(
        &mut self,
        from: &mut R,
        to: &mut File,
        hash: &mut Sha256,
    ) -> Result<u64, Stop> {
        let mut total = 0;
        loop {
            let n = match from.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.written += n as u64;
            if self.written > self.limits.max_file_bytes {
                return Err(Stop::Limit(UnpackError::TooLarge {
                    limit: self.limits.max_file_bytes,
                }));
            }
            self.space
                .wrote(n as u64, self.root.fd())?
                .map_err(|r| Stop::Limit(UnpackError::Reserve(r)))?;
            to.write_all(&self.buf[..n])?;
            hash.update(&self.buf[..n]);
            total += n as u64;
        }
    }
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn ids(meta: &Meta) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
}

fn chown_at(dir: std::os::fd::BorrowedFd<'_>, name: &[u8], meta: &Meta) -> io::Result<()> {
    let (u, g) = ids(meta);
    rustix::fs::chownat(dir, os(name), u, g, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn set_owner_mode_xattrs(fd: &OwnedFd, meta: &Meta) -> io::Result<()> {
    let (u, g) = ids(meta);
    rustix::fs::fchown(fd, u, g)?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
    set_xattrs(fd, meta)
}

/// The process umask, read once (`umask(2)` can only be read by changing it, which would race
/// other threads creating files). Unknown counts as "may clear anything".
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

fn set_xattrs(fd: &OwnedFd, meta: &Meta) -> io::Result<()> {
    for (name, value) in &meta.xattrs {
        match rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            // A filesystem without that namespace: the image still runs, minus the attribute.
            Err(rustix::io::Errno::OPNOTSUPP) => {
                tracing::debug!(xattr = %name, "xattr not supported here; skipped");
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("xattr {name}: {e}"))),
        }
    }
    Ok(())
}

/// Whether an image may set this xattr. `trusted.overlay.*` would let a layer forge overlayfs
/// metadata (opaque dirs, redirects); opacity comes only from `.wh..wh..opq`.
fn allowed_xattr(name: &str) -> bool {
    !name.starts_with("trusted.overlay.") && name != "security.selinux"
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let mut m = Meta {
        mode: h.mode()? & 0o7777,
        uid: u32::try_from(h.uid()?).map_err(|_| io::Error::other("uid out of range"))?,
        gid: u32::try_from(h.gid()?).map_err(|_| io::Error::other("gid out of range"))?,
        mtime: Timespec {
            tv_sec: i64::try_from(h.mtime()?).unwrap_or(0),
            tv_nsec: 0,
        },
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if allowed_xattr(name) {
                    m.xattrs.push((name.to_string(), value.to_vec()));
                }
            } else {
                let text = std::str::from_utf8(value).unwrap_or("");
                match key {
                    "uid" => m.uid = text.parse().map_err(|_| io::Error::other("bad PAX uid"))?,
                    "gid" => m.gid = text.parse().map_err(|_| io::Error::other("bad PAX gid"))?,
                    "mtime" => m.mtime = parse_pax_time(text).unwrap_or(m.mtime),
                    _ => {}
                }
            }
        }
    }
    if m.uid == u32::MAX || m.gid == u32::MAX {
        return Err(io::Error::other("uid or gid -1"));
    }
    Ok(m)
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.123456789`.
fn parse_pax_time(s: &str) -> Option<Timespec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
    };
    Some(Timespec { tv_sec, tv_nsec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time("x").is_none());
    }

    #[test]
    fn overlay_xattrs_are_refused() {
        assert!(!allowed_xattr("trusted.overlay.opaque"));
        assert!(!allowed_xattr("trusted.overlay.redirect"));
        assert!(allowed_xattr("security.capability"));
        assert!(allowed_xattr("user.note"));
    }
}
