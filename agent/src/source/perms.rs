//! Who may write specs: sshd's StrictModes for the spec dir.
//!
//! A user who can write a spec can run a privileged container, so spec files, drop-ins and the
//! dirs holding them must be owned by root or a trusted owner and not writable by group or
//! others. A file that fails the check is refused with the reason; its container keeps its last
//! valid spec.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

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

    /// Checks a path (following symlinks: what matters is the file that gets read).
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.check_mode(meta.uid(), meta.mode())
            .map_err(|why| format!("{}: refused: {why}", path.display()))
    }
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
