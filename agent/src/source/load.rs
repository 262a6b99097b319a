//! Reads a spec directory from disk into parsed specs: every `<name>.toml`, its
//! `<name>.toml.d/*.toml` drop-ins (lexical order) and the `env_files` they name.
//!
//! A plain function of a path: no watching and no ownership policy here (those sit on top, in
//! other files of `source`). Each loaded spec lists the files it was read from, so a policy can
//! check them.
//!
//! What is refused, each with its own [`FileError`]: a symlink inside the spec dir that resolves
//! outside it (a `web.toml -> /etc/shadow` must not be read as root), anything not a regular
//! file (a FIFO named `x.toml` is never opened for a blocking read, a directory named `y.toml`
//! is not a spec), files over [`MAX_FILE_SIZE`], and text that is not UTF-8. Hidden files and
//! editor leftovers (`.#x.toml`, `x.toml~`, `x.toml.swp`) are ignored, as is a `.toml.d` without
//! its base file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use berth_spec::{
    Diagnostic, HostFacts, ParsedSpec, SourceFile, SpecDefaults, check_set, parse_spec_with,
};

/// Largest spec, drop-in or env file read.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// A file that could not be read as text.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: not a regular file ({kind})", path = .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: symlink resolves outside the spec dir, to {target}", path = .path.display(), target = .target.display())]
    SymlinkEscapes { path: PathBuf, target: PathBuf },
    #[error("{path}: larger than {max} bytes", path = .path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: not UTF-8 text", path = .path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read { path: PathBuf, source: io::Error },
}

impl FileError {
    pub fn path(&self) -> &Path {
        match self {
            FileError::NotRegular { path, .. }
            | FileError::SymlinkEscapes { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::NotUtf8 { path }
            | FileError::Read { path, .. } => path,
        }
    }
}

/// Why one container's spec is not usable.
#[derive(Debug)]
pub enum SpecError {
    /// A file of it (the base or a drop-in) could not be read.
    Files(Vec<FileError>),
    /// It was read, and is invalid: every problem, with file:line:column.
    Invalid(Vec<Diagnostic>),
}

impl SpecError {
    /// One line per problem, compiler-like: `file:line:col: error: key: message`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            SpecError::Files(errs) => errs.iter().map(file_error_line).collect(),
            SpecError::Invalid(diags) => diags.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A file error in the compiler-like shape: `path: error: reason`.
pub fn file_error_line(e: &FileError) -> String {
    let full = e.to_string();
    let prefix = format!("{}: ", e.path().display());
    let reason = full.strip_prefix(&prefix).unwrap_or(&full);
    format!("{}: error: {reason}", e.path().display())
}

/// The whole directory could not be listed. Distinct from an empty directory: an agent must
/// never prune containers because its spec dir vanished or became unreadable.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("spec dir {path} does not exist", path = .path.display())]
    Missing { path: PathBuf },
    #[error("spec dir {path} is not a directory", path = .path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot read spec dir {path}: {source}", path = .path.display())]
    Unreadable { path: PathBuf, source: io::Error },
}

/// What `fstat` said of a file on the fd it was read from: what an owner policy judges, since
/// the path may lead elsewhere by the time anyone looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStat {
    pub uid: u32,
    pub mode: u32,
    /// The path named was a symlink (the file read is its target).
    pub symlink: bool,
}

/// Every file read for specs, by the path it was named by.
/// Looked up once per file per scan: hashed, since a `BTreeMap` of paths compares them component
/// by component (a fifth of a rescan of 1000 unchanged specs, measured with perf).
pub type ReadStats = std::collections::HashMap<PathBuf, ReadStat>;

/// Everything read from one spec dir.
#[derive(Debug)]
pub struct LoadedSet {
    /// The spec dir as given.
    pub dir: PathBuf,
    /// Every container name with a `<name>.toml` entry, valid or not.
    pub specs: BTreeMap<String, Result<ParsedSpec, SpecError>>,
    /// Each file the valid specs were read from (base, drop-ins, env files), as it was read.
    pub read: ReadStats,
    /// Problems across specs: a host port published twice, a `depends_on` naming a container
    /// without a file, a dependency cycle. The specs involved are valid on their own.
    pub set_diagnostics: Vec<Diagnostic>,
    /// Valid specs whose `[match]` leaves this host out, with why: absent here (not in
    /// `specs`, so a running one is pruned as if its file were deleted).
    pub not_here: BTreeMap<String, String>,
}

impl LoadedSet {
    /// Whether every spec is valid and the set has no problem.
    pub fn is_clean(&self) -> bool {
        self.set_diagnostics.is_empty() && self.specs.values().all(Result::is_ok)
    }
}

/// Loads every spec of a directory. Reads files only; checks nothing about the host.
pub fn load_dir(dir: &Path) -> Result<LoadedSet, DirError> {
    load_dir_with(dir, &SpecDefaults::default())
}

/// [`load_dir`] with the host's defaults for keys a spec leaves out (from the agent config).
pub fn load_dir_with(dir: &Path, defaults: &SpecDefaults) -> Result<LoadedSet, DirError> {
    let root = dir_root(dir)?;
    let mut read = ReadStats::new();
    let specs = spec_names(dir)?
        .into_iter()
        .map(|name| {
            let (r, stats) = load_spec(&root, dir, &name, defaults);
            read.extend(stats);
            (name, r)
        })
        .collect();
    Ok(finish(dir, specs, read))
}

/// The container names of a spec dir: every `<name>.toml` that is not hidden or a leftover.
fn spec_names(dir: &Path) -> Result<Vec<String>, DirError> {
    Ok(listing(dir)?.names)
}

/// The container names of a spec dir's `<name>.toml` entries, sorted, and which of them have
/// a `<name>.toml.d` entry beside them (the rest have no drop-ins: no stat needed to know).
struct Listing {
    names: Vec<String>,
    with_dropins: std::collections::HashSet<String>,
}

fn listing(dir: &Path) -> Result<Listing, DirError> {
    let entries = fs::read_dir(dir).map_err(|source| DirError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    let mut with_dropins = std::collections::HashSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| DirError::Unreadable {
            path: dir.to_path_buf(),
            source,
        })?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue; // A non-UTF-8 name cannot be a container name.
        };
        if ignored(file_name) {
            continue;
        }
        if let Some(name) = file_name.strip_suffix(".toml") {
            names.push(name.to_string());
        } else if let Some(name) = file_name.strip_suffix(".toml.d") {
            with_dropins.insert(name.to_string());
        }
    }
    names.sort();
    Ok(Listing {
        names,
        with_dropins,
    })
}

/// What a file was when it was last read: a change of any of these means read it again.
/// `ctime` catches writes that keep size and mtime (`rsync -t`, `cp -p`); the inode catches a
/// symlink swap (metadata follows links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// How long after a change a file's stamp is not trusted (see `LoadCache::fresh`).
const RACY_SECS: u64 = 2;

/// Valid specs from earlier scans, with what their files were then, so that a rescan of a
/// large dir only reads and parses what changed (a pass over 1000 specs stays cheap).
#[derive(Debug, Default)]
pub struct LoadCache {
    /// Packed (see [`crate::reconcile::packed`]) after a scan that added to it.
    specs: BTreeMap<String, Cached>,
}

/// A valid spec, the stamps of the files (and drop-in dir) it was read from, and their
/// owners and modes as read. A change of owner or mode changes the ctime, so the stamp.
/// Each path is held once, in `parsed.files`: with 10,000 specs, two more copies of every
/// path were megabytes.
#[derive(Debug)]
struct Cached {
    parsed: ParsedSpec,
    /// One per file of `parsed.files`, then the drop-in dir's when it existed.
    stamps: Box<[Option<Stamp>]>,
    /// Whether the drop-in dir existed (its stamp is the last one).
    dropin_dir: bool,
    reads: CachedReads,
}

#[derive(Debug)]
enum CachedReads {
    /// One per file of `parsed.files`, in order: what the loader reads in the usual case.
    OfFiles(Box<[ReadStat]>),
    /// Anything else, with the paths as read.
    Named(Box<[(PathBuf, ReadStat)]>),
}

impl Cached {
    fn new(dir: &Path, name: &str, parsed: &ParsedSpec, read: Vec<(PathBuf, ReadStat)>) -> Self {
        let dropin_dir = dir.join(format!("{name}.toml.d"));
        let dropin_exists = dropin_dir.exists();
        let stamps = parsed
            .files
            .iter()
            .map(|p| stamp(p))
            .chain(dropin_exists.then(|| stamp(&dropin_dir)))
            .collect();
        let reads = if read.len() == parsed.files.len()
            && read.iter().zip(&parsed.files).all(|((p, _), f)| p == f)
        {
            CachedReads::OfFiles(read.into_iter().map(|(_, st)| st).collect())
        } else {
            CachedReads::Named(read.into_boxed_slice())
        };
        Cached {
            parsed: parsed.clone(),
            stamps,
            dropin_dir: dropin_exists,
            reads,
        }
    }

    /// Each stamped path with its stamp.
    fn stamped<'a>(
        &'a self,
        dropin_dir: &'a Path,
    ) -> impl Iterator<Item = (&'a Path, &'a Option<Stamp>)> {
        let paths = self.parsed.files.iter().map(PathBuf::as_path);
        paths
            .chain(self.dropin_dir.then_some(dropin_dir))
            .zip(self.stamps.iter())
    }

    fn reads(&self) -> Vec<(PathBuf, ReadStat)> {
        match &self.reads {
            CachedReads::OfFiles(stats) => self
                .parsed
                .files
                .iter()
                .cloned()
                .zip(stats.iter().copied())
                .collect(),
            CachedReads::Named(named) => named.to_vec(),
        }
    }
}

impl LoadCache {
    /// The cached spec of `name` if none of its files changed; `listed_dropins`: whether the
    /// dir's listing has a `<name>.toml.d` entry.
    fn fresh(
        &self,
        dir: &Path,
        name: &str,
        listed_dropins: bool,
    ) -> Option<(ParsedSpec, Vec<(PathBuf, ReadStat)>)> {
        let cached = self.specs.get(name)?;
        // Racy stamps, as git calls them: file times are coarse (a jiffy) and inode numbers
        // are reused, so a file rewritten twice within a tick can keep its whole stamp. Only a
        // stamp older than that says the file is the one read.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let racy = |st: &Option<Stamp>| {
            st.is_none_or(|st| now.as_secs() < st.ctime.0.max(0) as u64 + RACY_SECS)
        };
        if cached.stamps.iter().any(racy) {
            return None;
        }
        // The drop-in dir's own stamp tells about drop-ins appearing or going.
        let dropin_dir = dir.join(format!("{name}.toml.d"));
        let unchanged = cached.stamped(&dropin_dir).all(|(p, st)| stamp(p) == *st)
            && cached.dropin_dir == (listed_dropins && dropin_dir.exists());
        unchanged.then(|| (cached.parsed.clone(), cached.reads()))
    }

    fn remember(
        &mut self,
        dir: &Path,
        name: &str,
        parsed: &ParsedSpec,
        read: Vec<(PathBuf, ReadStat)>,
    ) {
        self.specs
            .insert(name.to_string(), Cached::new(dir, name, parsed, read));
    }
}

/// [`load_dir_with`], reading again only the specs whose files changed since the last call
/// with the same `cache`.
pub fn load_dir_cached(
    dir: &Path,
    defaults: &SpecDefaults,
    cache: &mut LoadCache,
) -> Result<LoadedSet, DirError> {
    load_dir_cached_for(dir, defaults, cache, None)
}

/// [`load_dir_cached`] for a host: specs whose `[match]` leaves it out are set aside (in
/// `not_here`) before the checks across specs, which judge only what runs here.
pub fn load_dir_cached_for(
    dir: &Path,
    defaults: &SpecDefaults,
    cache: &mut LoadCache,
    host: Option<&HostFacts>,
) -> Result<LoadedSet, DirError> {
    let root = dir_root(dir)?;
    let listing = listing(dir)?;
    let mut specs = BTreeMap::new();
    let mut read = ReadStats::new();
    let mut remembered = false;
    for name in listing.names {
        let listed_dropins = listing.with_dropins.contains(&name);
        let result = match cache.fresh(dir, &name, listed_dropins) {
            Some((parsed, stats)) => {
                read.extend(stats);
                Ok(parsed)
            }
            None => {
                let (r, stats) = load_spec(&root, dir, &name, defaults);
                match &r {
                    Ok(parsed) => {
                        cache.remember(dir, &name, parsed, stats.clone());
                        remembered = true;
                    }
                    Err(_) => {
                        cache.specs.remove(&name);
                    }
                }
                read.extend(stats);
                r
            }
        };
        specs.insert(name, result);
    }
    cache.specs.retain(|n, _| specs.contains_key(n));
    if remembered {
        cache.specs = crate::reconcile::packed(std::mem::take(&mut cache.specs));
    }
    Ok(finish_for(dir, specs, read, host))
}

/// Loads one container's spec from `dir`: `<name>.toml`, its drop-ins, its env files.
pub fn load_one(
    dir: &Path,
    name: &str,
    defaults: &SpecDefaults,
) -> Result<Result<ParsedSpec, SpecError>, DirError> {
    let root = dir_root(dir)?;
    Ok(load_spec(&root, dir, name, defaults).0)
}

fn finish(
    dir: &Path,
    specs: BTreeMap<String, Result<ParsedSpec, SpecError>>,
    read: ReadStats,
) -> LoadedSet {
    finish_for(dir, specs, read, None)
}

fn finish_for(
    dir: &Path,
    mut specs: BTreeMap<String, Result<ParsedSpec, SpecError>>,
    read: ReadStats,
    host: Option<&HostFacts>,
) -> LoadedSet {
    let mut not_here = BTreeMap::new();
    if let Some(host) = host {
        specs.retain(|name, r| match r {
            Ok(p) => match p.spec.extra.host_match.mismatch(host) {
                Some(why) => {
                    not_here.insert(name.clone(), why);
                    false
                }
                None => true,
            },
            Err(_) => true,
        });
    }
    let set_diagnostics = check_set(&specs);
    LoadedSet {
        dir: dir.to_path_buf(),
        specs,
        read,
        set_diagnostics,
        not_here,
    }
}

/// Reads a dir for a host, as [`load_dir_with`] does, with `[match]` applied.
pub fn load_dir_for(
    dir: &Path,
    defaults: &SpecDefaults,
    host: &HostFacts,
) -> Result<LoadedSet, DirError> {
    let root = dir_root(dir)?;
    let mut read = ReadStats::new();
    let specs = spec_names(dir)?
        .into_iter()
        .map(|name| {
            let (r, stats) = load_spec(&root, dir, &name, defaults);
            read.extend(stats);
            (name, r)
        })
        .collect();
    Ok(finish_for(dir, specs, read, Some(host)))
}

/// The canonical spec dir: symlinks inside it must resolve under this.
fn dir_root(dir: &Path) -> Result<PathBuf, DirError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(DirError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DirError::Missing {
                path: dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(DirError::Unreadable {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    fs::canonicalize(dir).map_err(|source| DirError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })
}

/// Hidden files and editor leftovers: never specs.
fn ignored(file_name: &str) -> bool {
    file_name.starts_with('.')
        || file_name.starts_with('#')
        || file_name.ends_with('~')
        || [".swp", ".swo", ".swx", ".tmp", ".bak", ".orig", ".rej"]
            .iter()
            .any(|s| file_name.ends_with(s))
}

/// One container's spec, and each file read for it with what its fd's fstat said.
fn load_spec(
    root: &Path,
    dir: &Path,
    name: &str,
    defaults: &SpecDefaults,
) -> (Result<ParsedSpec, SpecError>, Vec<(PathBuf, ReadStat)>) {
    let base = dir.join(format!("{name}.toml"));
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut stats = Vec::new();
    match read_text_stat(root, &base) {
        Ok((text, st)) => {
            stats.push((base.clone(), st));
            files.push(SourceFile::new(&base, text));
        }
        Err(e) => errors.push(e),
    }
    for path in dropins(root, &dir.join(format!("{name}.toml.d")), &mut errors) {
        match read_text_stat(root, &path) {
            Ok((text, st)) => {
                stats.push((path.clone(), st));
                files.push(SourceFile::new(path, text));
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return (Err(SpecError::Files(errors)), stats);
    }
    let mut read_env = |p: &Path| match read_text_stat(root, p) {
        Ok((text, st)) => {
            stats.push((p.to_path_buf(), st));
            Ok(text)
        }
        Err(FileError::Read { source, .. }) => Err(source.to_string()),
        Err(other) => {
            let line = other.to_string();
            let prefix = format!("{}: ", other.path().display());
            Err(line.strip_prefix(&prefix).unwrap_or(&line).to_string())
        }
    };
    let parsed = parse_spec_with(name, &files, &mut read_env, defaults).map_err(SpecError::Invalid);
    (parsed, stats)
}

/// The drop-in files of a `<name>.toml.d`, in lexical order; none if it does not exist.
fn dropins(root: &Path, dropin_dir: &Path, errors: &mut Vec<FileError>) -> Vec<PathBuf> {
    match fs::symlink_metadata(dropin_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(source) => {
            errors.push(FileError::Read {
                path: dropin_dir.to_path_buf(),
                source,
            });
            return Vec::new();
        }
        Ok(_) => {}
    }
    if let Err(e) = confine(root, dropin_dir) {
        errors.push(e);
        return Vec::new();
    }
    let rd = match fs::read_dir(dropin_dir) {
        Ok(rd) => rd,
        Err(source) => {
            errors.push(FileError::Read {
                path: dropin_dir.to_path_buf(),
                source,
            });
            return Vec::new();
        }
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            (!ignored(&n) && n.ends_with(".toml")).then(|| dropin_dir.join(n))
        })
        .collect();
    out.sort();
    out
}

/// Checks that a path under the spec dir does not leave it through a symlink. Paths named
/// outside the spec dir (an absolute `env_files` entry) are taken as named.
fn confine(root: &Path, path: &Path) -> Result<(), FileError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| FileError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .join(path)
    };
    let lexical = lexical_normalise(&absolute);
    let inside = lexical.starts_with(root) || {
        // The spec dir may itself be reached through a symlink (a Kubernetes `..data` swap).
        let parent_canon = lexical
            .parent()
            .and_then(|p| fs::canonicalize(p).ok())
            .unwrap_or_default();
        parent_canon.starts_with(root)
    };
    if !inside {
        return Ok(());
    }
    let target = match fs::canonicalize(path) {
        Ok(t) => t,
        // A dangling symlink or a missing file: opening it reports the error.
        Err(_) => return Ok(()),
    };
    if target.starts_with(root) {
        Ok(())
    } else {
        Err(FileError::SymlinkEscapes {
            path: path.to_path_buf(),
            target,
        })
    }
}

fn lexical_normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Reads a file as text with the loader's rules (see the module comment).
pub fn read_text(root: &Path, path: &Path) -> Result<String, FileError> {
    read_text_stat(root, path).map(|(text, _)| text)
}

/// [`read_text`], with the owner and mode of the file read, from its own fd.
pub fn read_text_stat(root: &Path, path: &Path) -> Result<(String, ReadStat), FileError> {
    use std::os::unix::fs::MetadataExt;
    confine(root, path)?;
    let err = |source| FileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let symlink = fs::symlink_metadata(path)
        .map_err(err)?
        .file_type()
        .is_symlink();
    // Look before opening: opening a device node can have side effects.
    let meta = fs::metadata(path).map_err(err)?;
    check_type(path, &meta)?;
    // O_NONBLOCK: should the file be swapped for a FIFO after the check, open and read
    // return at once instead of blocking the agent.
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    check_type(path, &meta)?;
    if meta.len() > MAX_FILE_SIZE {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_FILE_SIZE,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_FILE_SIZE,
        });
    }
    let stat = ReadStat {
        uid: meta.uid(),
        mode: meta.mode(),
        symlink,
    };
    let text = String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    Ok((text, stat))
}

fn check_type(path: &Path, meta: &fs::Metadata) -> Result<(), FileError> {
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    };
    Err(FileError::NotRegular {
        path: path.to_path_buf(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_ignored() {
        for n in [
            ".web.toml",
            ".#web.toml",
            "web.toml~",
            "web.toml.swp",
            "#web.toml#",
        ] {
            assert!(ignored(n), "{n}");
        }
        assert!(!ignored("web.toml"));
    }

    #[test]
    fn lexical() {
        assert_eq!(
            lexical_normalise(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
