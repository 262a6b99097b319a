//! A commit's spec files on disk: the tree under `path` written into a new private dir, then
//! swapped in as `specs_dir` (a symlink replaced by rename: the spec watcher sees the swap
//! through the parent, the loader reads one whole tree or the other).
//!
//! Only spec files are trusted out of the repository: regular files and symlinks that stay
//! inside `path`; `.git` entries and submodules are skipped; files over the spec size limit,
//! other kinds of entry and too large or too deep trees refuse the commit. `rollout.toml` at
//! the root is the rollout, not a spec, and is not written.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use berth_spec::rollout::ROLLOUT_FILE;

use super::command::{GitError, Object, Objects};
use crate::reconcile::fleet::commit::{Commit, CommitId};
use crate::source::load::MAX_FILE_SIZE;

/// The most entries (files, dirs, links) written for one commit.
pub const MAX_ENTRIES: usize = 10_000;
/// The most bytes written for one commit.
pub const MAX_TOTAL: u64 = 64 << 20;
/// The deepest nesting below `path`.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The commit's tree breaks the rules: refuse the commit.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{0}")]
    Other(String),
}

/// One tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub name: Vec<u8>,
    pub id: String,
}

/// Parses a raw tree object (`<octal mode> <name>\0<binary id>` entries).
pub fn parse_tree(raw: &[u8], id_len: usize) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("tree entry without a mode")?;
        let mode = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or("tree entry with a bad mode")?;
        let nul = sp
            + 1
            + rest[sp + 1..]
                .iter()
                .position(|&b| b == 0)
                .ok_or("tree entry without a name end")?;
        let name = rest[sp + 1..nul].to_vec();
        let end = nul + 1 + id_len;
        if rest.len() < end {
            return Err("tree entry cut short".into());
        }
        out.push(Entry {
            mode,
            name,
            id: hex::encode(&rest[nul + 1..end]),
        });
        rest = &rest[end..];
    }
    Ok(out)
}

/// What an entry is, by git's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Submodule,
    Other,
}

fn kind(mode: u32) -> Kind {
    match mode {
        0o040000 => Kind::Dir,
        0o100644 | 0o100755 | 0o100664 => Kind::File,
        0o120000 => Kind::Symlink,
        0o160000 => Kind::Submodule,
        _ => Kind::Other,
    }
}

/// Totals of a written tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub files: usize,
    pub bytes: u64,
}

/// Writes the tree of `commit` under `path` into `dest` (which must not exist), private to
/// root: dirs 0700, files 0600. On a refusal or error `dest` is removed again.
pub fn materialise(
    objects: &mut Objects,
    commit: &Commit,
    path: &str,
    dest: &Path,
) -> Result<Written, TreeError> {
    let result = write_tree(objects, commit, path, dest);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn write_tree(
    objects: &mut Objects,
    commit: &Commit,
    path: &str,
    dest: &Path,
) -> Result<Written, TreeError> {
    let id_len = commit.id.as_str().len() / 2;
    let refuse = |why: String| TreeError::Refused(why);
    let mut tree = commit.tree.as_str().to_string();
    let mut walked = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let raw = read_tree(objects, &tree)?;
        let entries = parse_tree(&raw, id_len).map_err(TreeError::Other)?;
        walked = if walked.is_empty() {
            part.to_string()
        } else {
            format!("{walked}/{part}")
        };
        match entries.iter().find(|e| e.name == part.as_bytes()) {
            Some(e) if kind(e.mode) == Kind::Dir => tree = e.id.clone(),
            Some(_) => return Err(refuse(format!("has no directory {walked}/ (path)"))),
            None => return Err(refuse(format!("has no {walked}/ (path)"))),
        }
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|e| TreeError::Other(format!("cannot create {}: {e}", dest.display())))?;
    let mut w = Writer {
        objects,
        id_len,
        written: Written::default(),
        entries: 0,
        links: Vec::new(),
    };
    w.dir(&tree, dest, Path::new(""), 0)?;
    let links = std::mem::take(&mut w.links);
    check_links(dest, &links)?;
    Ok(w.written)
}

fn read_tree(objects: &mut Objects, id: &str) -> Result<Vec<u8>, TreeError> {
    objects
        .read_kind(id, "tree")
        .map_err(TreeError::Other)?
        .ok_or_else(|| TreeError::Other(format!("tree {id} is missing from the repository")))
}

struct Writer<'a> {
    objects: &'a mut Objects,
    id_len: usize,
    written: Written,
    entries: usize,
    /// Symlinks written, relative to the root, checked once everything is on disk.
    links: Vec<PathBuf>,
}

impl Writer<'_> {
    fn dir(&mut self, tree: &str, at: &Path, rel: &Path, depth: usize) -> Result<(), TreeError> {
        if depth > MAX_DEPTH {
            return Err(TreeError::Refused(format!(
                "nests directories deeper than {MAX_DEPTH} ({})",
                rel.display()
            )));
        }
        let raw = read_tree(self.objects, tree)?;
        for e in parse_tree(&raw, self.id_len).map_err(TreeError::Other)? {
            let name = std::str::from_utf8(&e.name).map_err(|_| {
                TreeError::Refused(format!(
                    "has a file name that is not UTF-8 in {}/",
                    rel.display()
                ))
            })?;
            let shown = rel.join(name);
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                return Err(TreeError::Refused(format!("has an entry named {name:?}")));
            }
            // A repository inside the spec path is not spec files; git itself skips it too.
            if name.eq_ignore_ascii_case(".git") {
                continue;
            }
            if depth == 0 && name == ROLLOUT_FILE {
                continue;
            }
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(TreeError::Refused(format!(
                    "has more than {MAX_ENTRIES} entries under path"
                )));
            }
            let target = at.join(name);
            match kind(e.mode) {
                Kind::Dir => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&target)
                        .map_err(|err| io_err(&target, err))?;
                    self.dir(&e.id, &target, &shown, depth + 1)?;
                }
                Kind::File => {
                    let data = self.blob(&e.id, &shown, MAX_FILE_SIZE)?;
                    self.add_bytes(data.len() as u64)?;
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&target)
                        .map_err(|err| io_err(&target, err))?;
                    f.write_all(&data).map_err(|err| io_err(&target, err))?;
                    self.written.files += 1;
                }
                Kind::Symlink => {
                    let data = self.blob(&e.id, &shown, 4096)?;
                    let link = String::from_utf8(data)
                        .ok()
                        .filter(|l| !l.is_empty() && !l.contains('\0'))
                        .ok_or_else(|| {
                            TreeError::Refused(format!(
                                "has an unreadable symlink {}",
                                shown.display()
                            ))
                        })?;
                    if !stays_inside(&shown, Path::new(&link)) {
                        return Err(TreeError::Refused(format!(
                            "has symlink {} -> {link}, which points out of path",
                            shown.display()
                        )));
                    }
                    std::os::unix::fs::symlink(&link, &target)
                        .map_err(|err| io_err(&target, err))?;
                    self.links.push(shown);
                }
                // Submodules are never fetched: there is nothing of theirs to write.
                Kind::Submodule => {}
                Kind::Other => {
                    return Err(TreeError::Refused(format!(
                        "has {} with mode {:o}, neither a file, a dir nor a symlink",
                        shown.display(),
                        e.mode
                    )));
                }
            }
        }
        Ok(())
    }

    fn blob(&mut self, id: &str, shown: &Path, max: u64) -> Result<Vec<u8>, TreeError> {
        match self.objects.read(id, max)? {
            Object::Found { kind, data } if kind == "blob" => Ok(data),
            Object::Found { kind, .. } => Err(TreeError::Other(format!(
                "{} is a {kind}, not a blob",
                shown.display()
            ))),
            Object::TooLarge { size, .. } => Err(TreeError::Refused(format!(
                "has {} of {size} bytes, over the limit of {max}",
                shown.display()
            ))),
            Object::Missing => Err(TreeError::Other(format!(
                "{} ({id}) is missing from the repository",
                shown.display()
            ))),
        }
    }

    fn add_bytes(&mut self, n: u64) -> Result<(), TreeError> {
        self.written.bytes += n;
        if self.written.bytes > MAX_TOTAL {
            return Err(TreeError::Refused(format!(
                "holds more than {MAX_TOTAL} bytes under path"
            )));
        }
        Ok(())
    }
}

fn io_err(p: &Path, e: std::io::Error) -> TreeError {
    TreeError::Other(format!("cannot write {}: {e}", p.display()))
}

/// Whether a symlink at `link` (relative to the root) with target `to` stays under the root
/// when read as written (absolute targets never do).
pub fn stays_inside(link: &Path, to: &Path) -> bool {
    if to.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in to.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Symlinks that look inside may still leave through another symlink (`a -> .` then
/// `b -> a/..`): resolve each one on disk now that the whole tree is written. A link that
/// resolves to nothing is refused too (what it names could appear later, outside).
fn check_links(root: &Path, links: &[PathBuf]) -> Result<(), TreeError> {
    let canon_root = fs::canonicalize(root).map_err(|e| io_err(root, e))?;
    for l in links {
        match fs::canonicalize(root.join(l)) {
            Ok(p) if p.starts_with(&canon_root) => {}
            Ok(_) => {
                return Err(TreeError::Refused(format!(
                    "has symlink {}, which resolves out of path",
                    l.display()
                )));
            }
            Err(_) => {
                return Err(TreeError::Refused(format!(
                    "has symlink {}, which points to nothing inside path",
                    l.display()
                )));
            }
        }
    }
    Ok(())
}

/// Points `specs_dir` at `tree` in one rename. berth owns `specs_dir` with a source: a
/// symlink (or nothing, or an empty dir) is replaced; a dir with files in it is refused, so
/// that nobody's hand-written specs vanish.
pub fn swap_specs_dir(specs_dir: &Path, tree: &Path) -> Result<(), String> {
    match fs::symlink_metadata(specs_dir) {
        Ok(m) if m.file_type().is_symlink() => {}
        Ok(m) if m.is_dir() => {
            if fs::read_dir(specs_dir)
                .map_err(|e| e.to_string())?
                .next()
                .is_some()
            {
                return Err(format!(
                    "specs_dir {} is a directory with files in it; with [source] berth owns \
                     specs_dir (it becomes a link to the applied commit's specs): move them into \
                     the repository, or point specs_dir elsewhere",
                    specs_dir.display()
                ));
            }
            fs::remove_dir(specs_dir)
                .map_err(|e| format!("cannot replace {}: {e}", specs_dir.display()))?;
        }
        Ok(_) => {
            return Err(format!(
                "specs_dir {} is neither a directory nor a symlink",
                specs_dir.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot look at specs_dir {}: {e}",
                specs_dir.display()
            ));
        }
    }
    let parent = specs_dir
        .parent()
        .ok_or_else(|| format!("specs_dir {} has no parent", specs_dir.display()))?;
    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let name = specs_dir
        .file_name()
        .ok_or_else(|| format!("specs_dir {} has no name", specs_dir.display()))?
        .to_string_lossy();
    // Hidden and ending in .tmp: the loader and the watcher's leftovers rule both skip it.
    let tmp = parent.join(format!(".{name}.berth-swap.tmp"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(tree, &tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    fs::rename(&tmp, specs_dir).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot swap {}: {e}", specs_dir.display())
    })?;
    crate::fsutil::sync_dir(parent).map_err(|e| format!("cannot sync {}: {e}", parent.display()))
}

/// Removes materialised trees not in `keep` (and half-written ones).
pub fn prune_trees(trees_dir: &Path, keep: &BTreeSet<CommitId>) {
    let Ok(rd) = fs::read_dir(trees_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let kept = CommitId::parse(&name).is_ok_and(|id| keep.contains(&id));
        if !kept {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_parse() {
        let mut raw = Vec::new();
        raw.extend_from_slice(b"100644 web.toml\0");
        raw.extend_from_slice(&[0xab; 20]);
        raw.extend_from_slice(b"40000 sub\0");
        raw.extend_from_slice(&[0x01; 20]);
        let t = parse_tree(&raw, 20).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].mode, t[0].name.as_slice()),
            (0o100644, &b"web.toml"[..])
        );
        assert_eq!(t[0].id, "ab".repeat(20));
        assert_eq!(kind(t[1].mode), Kind::Dir);
        assert!(parse_tree(&raw[..raw.len() - 1], 20).is_err());
        assert!(parse_tree(b"10x644 a\0", 20).is_err());
    }

    #[test]
    fn symlinks_stay_inside_lexically() {
        let ok = [
            ("web.toml", "base/web.toml"),
            ("a/b.toml", "../c.toml"),
            ("a/b", "./x/../y"),
        ];
        for (l, t) in ok {
            assert!(stays_inside(Path::new(l), Path::new(t)), "{l} -> {t}");
        }
        let bad = [
            ("web.toml", "../x"),
            ("a/b", "../../x"),
            ("x", "/etc/shadow"),
            ("a/b", "c/../../../x"),
        ];
        for (l, t) in bad {
            assert!(!stays_inside(Path::new(l), Path::new(t)), "{l} -> {t}");
        }
    }

    #[test]
    fn links_through_links_are_caught_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("tree");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("real.toml"), "x").unwrap();
        std::os::unix::fs::symlink(".", root.join("here")).unwrap();
        std::os::unix::fs::symlink("here/../outside", root.join("sneaky")).unwrap();
        fs::write(d.path().join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink("real.toml", root.join("good")).unwrap();
        std::os::unix::fs::symlink("nothing", root.join("dangling")).unwrap();
        assert!(stays_inside(
            Path::new("sneaky"),
            Path::new("here/../outside")
        ));
        assert!(check_links(&root, &[PathBuf::from("good"), PathBuf::from("here")]).is_ok());
        let e = check_links(&root, &[PathBuf::from("sneaky")]).unwrap_err();
        assert!(e.to_string().contains("resolves out of path"), "{e}");
        let e = check_links(&root, &[PathBuf::from("dangling")]).unwrap_err();
        assert!(e.to_string().contains("points to nothing"), "{e}");
    }

    #[test]
    fn swaps_links_and_refuses_a_dir_with_files() {
        let d = tempfile::tempdir().unwrap();
        let (t1, t2) = (d.path().join("t1"), d.path().join("t2"));
        fs::create_dir(&t1).unwrap();
        fs::create_dir(&t2).unwrap();
        let specs = d.path().join("etc/specs");
        swap_specs_dir(&specs, &t1).unwrap();
        assert_eq!(fs::read_link(&specs).unwrap(), t1);
        swap_specs_dir(&specs, &t2).unwrap();
        assert_eq!(fs::read_link(&specs).unwrap(), t2);
        // An empty dir is taken over; one with files is left alone.
        let other = d.path().join("other");
        fs::create_dir(&other).unwrap();
        swap_specs_dir(&other, &t1).unwrap();
        assert!(
            fs::symlink_metadata(&other)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let full = d.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("web.toml"), "x").unwrap();
        let e = swap_specs_dir(&full, &t1).unwrap_err();
        assert!(e.contains("berth owns specs_dir"), "{e}");
        assert!(full.join("web.toml").exists());
        // Nothing left over beside it.
        let names: Vec<String> = fs::read_dir(d.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["specs"]);
    }
}
