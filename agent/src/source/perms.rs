//! Who may write specs: sshd's StrictModes for the spec dir.
//!
//! A user who can write a spec can run a privileged container, so spec files, drop-ins, env
//! files and every dir on the way to them must be owned by root or a trusted owner and not
//! writable by group or others. A file is judged by what `fstat` said of the very file that
//! was read (the loader records it), never by looking its path up again afterwards; dirs are
//! judged by walking every dir the path traverses from `/`, following symlinks, as sshd walks
//! to `/`: whoever can write one of them can swap what lies below. A file that fails is
//! refused with the reason; its container keeps its last valid spec.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one walk before it gives up (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Owners allowed besides root, resolved to uids once.
#[derive(Debug, Clone, Default)]
pub struct TrustedOwners {
    uids: Vec<u32>,
}

impl TrustedOwners {
    /// Resolves names (or numeric uids) from the agent config; an unknown name is an error.
    pub fn resolve(names: &[String]) -> Result<Self, String> {
        let mut uids = vec![0];
        for n in names {
            let uid = match n.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => match nix::unistd::User::from_name(n) {
                    Ok(Some(u)) => u.uid.as_raw(),
                    Ok(None) => return Err(format!("trusted_owners: no such user {n:?}")),
                    Err(e) => return Err(format!("trusted_owners: cannot look up {n:?}: {e}")),
                },
            };
            uids.push(uid);
        }
        Ok(TrustedOwners { uids })
    }

    /// The policy on one file's owner and mode.
    pub fn check_mode(&self, uid: u32, mode: u32) -> Result<(), String> {
        if !self.uids.contains(&uid) {
            return Err(format!(
                "owned by uid {uid}, which is neither root nor in trusted_owners"
            ));
        }
        if mode & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {:04o}): run chmod go-w on it",
                mode & 0o7777
            ));
        }
        Ok(())
    }

    /// The policy on a dir the walk passes through (not the last): as a file's, except that
    /// a sticky dir may be writable by others (like /tmp): they cannot rename or remove what
    /// they do not own, and what the walk enters next is itself checked.
    fn check_passing(&self, uid: u32, mode: u32) -> Result<(), String> {
        if mode & libc::S_ISVTX != 0 {
            return self.check_mode(uid, mode & !0o022);
        }
        self.check_mode(uid, mode)
    }

    /// Checks a path by looking it up now (following symlinks). For what was read, prefer
    /// [`Self::check_mode`] on the reader's own fstat.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.check_mode(meta.uid(), meta.mode())
            .map_err(|why| format!("{}: refused: {why}", path.display()))
    }

    /// Walks every dir traversed to reach `dir` from `/`, symlinks followed (their targets
    /// walked too), and checks each: the ones passed through with [`Self::check_passing`],
    /// `dir` itself strictly (a sticky spec dir still lets others add specs).
    pub fn check_dir_chain(&self, dir: &Path) -> Result<(), String> {
        self.walk(dir, Target::Dir)
    }

    /// Like [`Self::check_dir_chain`] for the dir a file is reached through: every dir the
    /// path traverses, the file's own dir included (strictly), symlinks of the path and of the
    /// file itself followed; the file is not judged here (its reader's fstat is).
    pub fn check_file_chain(&self, file: &Path) -> Result<(), String> {
        self.walk(file, Target::File)
    }

    fn walk(&self, path: &Path, target: Target) -> Result<(), String> {
        let last_is_dir = target == Target::Dir;
        let shown = path.display();
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("{shown}: {e}"))?
                .join(path)
        };
        // Components still to walk, in order (reversed, so the next is at the end).
        let mut todo: Vec<Vec<u8>> = components(&absolute);
        todo.reverse();
        let mut at = PathBuf::from("/");
        let mut links = 0;
        self.check_dir(&at, Walked::of(todo.is_empty() && last_is_dir))?;
        while let Some(c) = todo.pop() {
            if c == b".." {
                at.pop();
                continue;
            }
            let next = at.join(std::ffi::OsStr::from_bytes(&c));
            let meta = std::fs::symlink_metadata(&next)
                .map_err(|e| format!("{shown}: {}: {e}", next.display()))?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("{shown}: too many symlinks"));
                }
                let target = std::fs::read_link(&next)
                    .map_err(|e| format!("{shown}: {}: {e}", next.display()))?;
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                continue;
            }
            let last = todo.is_empty();
            if last && !last_is_dir {
                // The file itself: judged by its reader's fstat.
                return Ok(());
            }
            if !meta.is_dir() {
                return Err(format!("{shown}: {} is not a directory", next.display()));
            }
            at = next;
            self.check_dir(&at, Walked::of(last && last_is_dir))?;
        }
        Ok(())
    }

    fn check_dir(&self, dir: &Path, walked: Walked) -> Result<(), String> {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let judged = match walked {
            Walked::To => self.check_mode(meta.uid(), meta.mode()),
            Walked::Through => self.check_passing(meta.uid(), meta.mode()),
        };
        judged.map_err(|why| format!("{}: refused: {why}", dir.display()))
    }
}

/// How a dir of a walked path is judged: the dir walked to holds what is read (its owner and
/// mode as a file's); a dir walked through only must not let others swap what lies below.
#[derive(Debug, Clone, Copy)]
enum Walked {
    To,
    Through,
}

impl Walked {
    fn of(is_the_target: bool) -> Walked {
        if is_the_target {
            Walked::To
        } else {
            Walked::Through
        }
    }
}

/// The named components of a path (`.` dropped, `..` kept), as bytes.
fn components(p: &Path) -> Vec<Vec<u8>> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            Component::ParentDir => Some(b"..".to_vec()),
            _ => None,
        })
        .collect()
}

/// What a walked path ends in: a dir (judged strictly) or a file (judged by its reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Dir,
    File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let t = TrustedOwners::resolve(&["65534".into()]).unwrap();
        assert!(t.check_mode(0, 0o644).is_ok());
        assert!(t.check_mode(65534, 0o600).is_ok());
        assert!(t.check_mode(0, 0o755).is_ok());
        assert!(t.check_mode(1000, 0o644).unwrap_err().contains("uid 1000"));
        assert!(t.check_mode(0, 0o664).unwrap_err().contains("0664"));
        assert!(t.check_mode(0, 0o646).is_err());
        assert!(TrustedOwners::resolve(&["no-such-user-here".into()]).is_err());
        assert!(TrustedOwners::resolve(&["root".into()]).is_ok());
    }

    #[test]
    fn sticky_dirs_may_be_passed_through_but_not_be_the_last() {
        let t = TrustedOwners::resolve(&[]).unwrap();
        assert!(t.check_passing(0, 0o41777).is_ok());
        assert!(t.check_passing(0, 0o40777).is_err());
        assert!(t.check_passing(1000, 0o41777).is_err());
        assert!(t.check_mode(0, 0o41777).is_err());
    }

    #[test]
    fn walks_every_dir_through_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let t = TrustedOwners::resolve(&[]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let good = tmp.path().join("good/specs");
        std::fs::create_dir_all(&good).unwrap();
        let open = tmp.path().join("open/specs");
        std::fs::create_dir_all(&open).unwrap();
        set(&tmp.path().join("open"), 0o777);
        assert!(t.check_dir_chain(&good).is_ok());
        let e = t.check_dir_chain(&open).unwrap_err();
        assert!(e.contains("/open: refused") && e.contains("0777"), "{e}");
        // A link in an open dir to a good dir: the link could be swapped.
        std::os::unix::fs::symlink(&good, tmp.path().join("open/link")).unwrap();
        assert!(t.check_dir_chain(&tmp.path().join("open/link")).is_err());
        // A link in a good dir to a dir under an open one: the target's chain counts.
        std::os::unix::fs::symlink(&open, tmp.path().join("good/link")).unwrap();
        assert!(t.check_dir_chain(&tmp.path().join("good/link")).is_err());
        std::os::unix::fs::symlink("specs", tmp.path().join("good/rel")).unwrap();
        assert!(t.check_dir_chain(&tmp.path().join("good/rel")).is_ok());
        // A sticky world-writable dir on the way is fine; as the dir itself it is not.
        set(&tmp.path().join("open"), 0o1777);
        assert!(t.check_dir_chain(&open).is_ok());
        assert!(t.check_dir_chain(&tmp.path().join("open")).is_err());
        // Files: the chain to them, not the file.
        let f = good.join("web.toml");
        std::fs::write(&f, "").unwrap();
        set(&f, 0o666);
        assert!(t.check_file_chain(&f).is_ok());
        set(&good, 0o777);
        assert!(t.check_file_chain(&f).is_err());
    }

    #[test]
    fn checks_real_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.toml");
        std::fs::write(&p, "image = \"x\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = TrustedOwners::resolve(&[]).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(t.check(&p).is_ok());
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = t.check(&p).unwrap_err();
        assert!(e.contains("web.toml") && e.contains("chmod go-w"), "{e}");
    }
}
