//! Reading files out of an image archive: a directory, or a tar indexed once so each blob is
//! read by seeking, never by extracting the archive. A compressed tar (`docker save | gzip`,
//! zstd) is first inflated into an unlinked file beside the store, which no crash can leak.
//!
//! An archive from the watched import dir is opened from an fd its owner was judged on, and a
//! layout dir's files are opened beneath it without following symlinks, each judged on its
//! own fd (see [`Archive::from_judged`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::source::perms::TrustedOwners;
use crate::store::unpack::MAX_HEADER_BYTES;
use crate::store::unpack::budget::Budgeted;

/// An archive's files by relative path (`index.json`, `blobs/sha256/<hex>`).
pub enum Archive {
    Dir {
        path: PathBuf,
        /// For a dir from the import dir: its fd, and who may own the files in it.
        judged: Option<(OwnedFd, TrustedOwners)>,
    },
    Tar {
        /// The tar, or `/proc/self/fd/N` of `_held`: each read opens its own description,
        /// so concurrent readers never share an offset.
        path: PathBuf,
        /// path -> (offset of the data, size)
        files: HashMap<String, (u64, u64)>,
        /// The inflated copy, or the judged tar itself, kept open for `path`.
        _held: Option<File>,
    },
}

/// Where a compressed archive is inflated, and the free space that must stay.
pub struct Scratch {
    pub dir: PathBuf,
    pub min_free: u64,
}

/// The most entries an archive may have: `docker save` writes about four per layer and an OCI
/// layout one per blob, so an honest archive of `max_layers` layers has a few hundred; each
/// entry costs the index memory, so millions of empty ones would grow it without bound.
pub const MAX_ARCHIVE_ENTRIES: u64 = 65_536;

/// Names longer than this are never looked up (blob paths are under 100 bytes), so not kept:
/// the index holds at most [`MAX_ARCHIVE_ENTRIES`] names (and link targets) of this size.
const MAX_KEPT_NAME: usize = 1024;

/// How often inflating looks at the free space left.
const SPACE_CHECK_EVERY: u64 = 64 << 20;

/// Normalises an archive path: no leading `./` or `/`, and refuses `..`.
pub fn clean(p: &str) -> Option<String> {
    let mut out = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

impl Archive {
    pub fn open(path: &Path, scratch: &Scratch) -> io::Result<Archive> {
        if path.is_dir() {
            return Ok(Archive::Dir {
                path: path.to_path_buf(),
                judged: None,
            });
        }
        Self::tar(File::open(path)?, path.to_path_buf(), None, scratch)
    }

    /// An archive from an fd whose owner and mode were judged already (a file or a layout
    /// dir, opened without following a symlink); a dir's files are judged as they are opened.
    pub fn from_judged(
        file: File,
        owners: &TrustedOwners,
        scratch: &Scratch,
    ) -> io::Result<Archive> {
        if file.metadata()?.is_dir() {
            return Ok(Archive::Dir {
                path: PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
                judged: Some((OwnedFd::from(file), owners.clone())),
            });
        }
        // Kept open for the path (the index below consumes `file`); opening the path gives
        // each reader a description of its own, on this very inode.
        let held = file.try_clone()?;
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
        Self::tar(file, by_fd, Some(held), scratch)
    }

    fn tar(
        mut f: File,
        path: PathBuf,
        held: Option<File>,
        scratch: &Scratch,
    ) -> io::Result<Archive> {
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic)?;
        f.rewind()?;
        let inflated = if magic[..n].starts_with(&[0x1f, 0x8b]) {
            let gz = flate2::read::MultiGzDecoder::new(io::BufReader::new(&f));
            Some(inflate(gz, scratch)?)
        } else if magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(inflate(zstd::stream::read::Decoder::new(&f)?, scratch)?)
        } else {
            None
        };
        let (f, path) = match &inflated {
            Some(t) => {
                let fd_path = PathBuf::from(format!("/proc/self/fd/{}", t.as_raw_fd()));
                (File::open(&fd_path)?, fd_path)
            }
            None => (f, path),
        };
        let mut files = HashMap::new();
        let mut links = Vec::new();
        // The index is built from hostile input too (an archive is an image): its headers are
        // read under the unpacker's budget, its entries counted, long names not kept.
        let (budgeted, budget) = Budgeted::new(f);
        let mut tar = tar::Archive::new(budgeted);
        let mut entries = tar.entries()?;
        let mut count = 0u64;
        loop {
            let next = budget.during_headers(MAX_HEADER_BYTES, || entries.next());
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| io::Error::other(budget.explain(e).to_string()))?;
            count += 1;
            if count > MAX_ARCHIVE_ENTRIES {
                return Err(io::Error::other(format!(
                    "more than {MAX_ARCHIVE_ENTRIES} entries, far beyond any image archive"
                )));
            }
            let name = std::str::from_utf8(&entry.path_bytes())
                .ok()
                .filter(|n| n.len() <= MAX_KEPT_NAME)
                .and_then(clean);
            if let Some(name) = name {
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        files.insert(name, (entry.raw_file_position(), entry.size()));
                    }
                    // Old `docker save` links repeated layers to their first copy.
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        if let Some(target) =
                            entry.link_name_bytes().filter(|t| t.len() <= MAX_KEPT_NAME)
                        {
                            links.push((name, String::from_utf8_lossy(&target).into_owned()));
                        }
                    }
                    _ => {}
                }
            }
            // The data is skipped here, outside the header budget.
            io::copy(&mut entry, &mut io::sink())?;
        }
        for (name, target) in links {
            let base = match name.rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/{target}"),
                None => target.clone(),
            };
            let resolved = if target.starts_with('/') {
                clean(&target)
            } else {
                clean_rel(&base)
            };
            if let Some(t) = resolved.and_then(|t| files.get(&t).copied()) {
                files.insert(name, t);
            }
        }
        Ok(Archive::Tar {
            path,
            files,
            _held: inflated.or(held),
        })
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Archive::Dir { .. })
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            Archive::Dir { .. } => self.dir_file(name).is_ok(),
            Archive::Tar { files, .. } => clean(name).is_some_and(|n| files.contains_key(&n)),
        }
    }

    /// A file's size.
    pub fn size(&self, name: &str) -> io::Result<u64> {
        let n = clean(name).ok_or_else(|| bad_name(name))?;
        match self {
            Archive::Dir { .. } => Ok(self.dir_file(name)?.metadata()?.len()),
            Archive::Tar { files, .. } => {
                files.get(&n).map(|(_, s)| *s).ok_or_else(|| missing(name))
            }
        }
    }

    /// A regular file of a layout dir, opened read-only. In a judged dir: beneath it only,
    /// through no symlink, and owned as the policy wants (judged on the fd).
    fn dir_file(&self, name: &str) -> io::Result<File> {
        let n = clean(name).ok_or_else(|| bad_name(name))?;
        let Archive::Dir { path, judged } = self else {
            return Err(io::Error::other("not a layout dir"));
        };
        let not_found = |e: io::Error| {
            if e.kind() == io::ErrorKind::NotFound {
                missing(name)
            } else {
                e
            }
        };
        let f = match judged {
            None => File::open(path.join(&n)).map_err(not_found)?,
            Some((dir, owners)) => {
                let fd = rustix::fs::openat2(
                    dir,
                    n.as_str(),
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
                )
                .map_err(|e| not_found(io::Error::from(e)))
                .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
                let f = File::from(fd);
                let m = f.metadata()?;
                owners
                    .check_mode(m.uid(), m.mode())
                    .map_err(|why| io::Error::other(format!("{name}: refused: {why}")))?;
                f
            }
        };
        if !f.metadata()?.is_file() {
            return Err(missing(name));
        }
        Ok(f)
    }

    /// A stream of one file.
    pub fn open_file(&self, name: &str) -> io::Result<io::Take<File>> {
        let n = clean(name).ok_or_else(|| bad_name(name))?;
        match self {
            Archive::Dir { .. } => {
                let f = self.dir_file(name)?;
                let len = f.metadata()?.len();
                Ok(f.take(len))
            }
            Archive::Tar { path, files, .. } => {
                let (off, size) = *files.get(&n).ok_or_else(|| missing(name))?;
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(off))?;
                Ok(f.take(size))
            }
        }
    }

    /// A small file whole (at most `max` bytes).
    pub fn read_small(&self, name: &str, max: u64) -> io::Result<Vec<u8>> {
        if self.size(name)? > max {
            return Err(io::Error::other(format!(
                "{name} is larger than {max} bytes"
            )));
        }
        let mut out = Vec::new();
        self.open_file(name)?.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Inflates a compressed archive into an unlinked file in the scratch dir, stopping before
/// the filesystem drops below its reserve (a small gzip can hold a huge tar).
fn inflate(mut r: impl Read, scratch: &Scratch) -> io::Result<File> {
    let mut out = unlinked_file_in(&scratch.dir)?;
    let mut buf = vec![0u8; 256 << 10];
    let (mut total, mut next_check) = (0u64, 0u64);
    loop {
        if total >= next_check {
            let free = crate::store::space::available(&scratch.dir)?;
            if !crate::store::space::fits(SPACE_CHECK_EVERY, free, scratch.min_free) {
                return Err(io::Error::other(format!(
                    "inflating the archive would leave less than {} bytes free on {} ([images] min_free); {total} bytes inflated so far",
                    scratch.min_free,
                    scratch.dir.display()
                )));
            }
            next_check = total + SPACE_CHECK_EVERY;
        }
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io::Error::other(format!("decompressing the archive: {e}"))),
        };
        std::io::Write::write_all(&mut out, &buf[..n])?;
        total += n as u64;
    }
    out.rewind()?;
    Ok(out)
}

/// A file with no name (O_TMPFILE), else one unlinked right after it is made.
fn unlinked_file_in(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmpfile {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = dir.join(format!(".import-{}-{n}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)?;
            std::fs::remove_file(&p)?;
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// Resolves `a/b/../c` lexically (for link targets inside the archive).
fn clean_rel(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

fn missing(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{name} is missing from the archive"),
    )
}

fn bad_name(name: &str) -> io::Error {
    io::Error::other(format!("refusing archive path {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(
            clean("./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean("/index.json").as_deref(), Some("index.json"));
        assert_eq!(clean("../etc/passwd"), None);
        assert_eq!(clean("."), None);
        assert_eq!(clean_rel("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(clean_rel("../x"), None);
    }

    #[test]
    fn inflating_stops_at_the_free_space_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("a.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &[0u8; 4096]).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let scratch = Scratch {
            dir: dir.path().to_path_buf(),
            min_free: u64::MAX / 2,
        };
        let e = Archive::open(&gz, &scratch).err().expect("refused");
        assert!(e.to_string().contains("min_free"), "{e}");
    }
}
