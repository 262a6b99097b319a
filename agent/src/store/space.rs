//! Free space on the state dir's filesystem.

use std::io;
use std::path::Path;

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
pub fn available(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether writing `needed` bytes keeps at least `min_free` free.
pub fn fits(needed: u64, available: u64, min_free: u64) -> bool {
    needed.checked_add(min_free).is_some_and(|n| available >= n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_keeps_the_reserve() {
        assert!(fits(10, 100, 90));
        assert!(!fits(11, 100, 90));
        assert!(!fits(u64::MAX, u64::MAX, 1));
        assert!(fits(0, 0, 0));
    }

    #[test]
    fn reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available(dir.path()).unwrap() > 0);
    }
}
