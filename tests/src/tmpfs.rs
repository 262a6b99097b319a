//! A size-limited tmpfs mounted over a test's state dir, to make a disk fill up on demand.
//! Dropping it unmounts it (lazily: a process still inside cannot keep it mounted) and removes
//! the dir it covered, so a failed test leaves no mount behind.

use std::ffi::CString;
use std::path::{Path, PathBuf};

pub struct Tmpfs {
    pub path: PathBuf,
    /// Removed too once unmounted: the temp dir of a test object that dropped first and could
    /// not remove a dir with a mount on it.
    also_remove: Option<PathBuf>,
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes at `path` (created if missing).
    pub fn mount(path: &Path, size: u64) -> Tmpfs {
        Self::mount_opts(path, &format!("size={size},mode=0755"))
    }

    /// Mounts a tmpfs of `size` bytes and at most `inodes` inodes at `path`.
    pub fn mount_with_inodes(path: &Path, size: u64, inodes: u64) -> Tmpfs {
        Self::mount_opts(path, &format!("size={size},nr_inodes={inodes},mode=0755"))
    }

    fn mount_opts(path: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let opts = CString::new(opts).unwrap();
        // SAFETY: valid C strings; mounting on a dir the test made.
        let rc = unsafe {
            libc::mount(
                c"berth-test".as_ptr(),
                c(path).as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs on {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs {
            path: path.to_path_buf(),
            also_remove: None,
        }
    }

    /// Removes `dir` (the enclosing temp dir) as well when dropped.
    pub fn removing(mut self, dir: &Path) -> Tmpfs {
        self.also_remove = Some(dir.to_path_buf());
        self
    }

    /// Grows (or shrinks) the filesystem: space returns.
    pub fn resize(&self, size: u64) {
        let opts = CString::new(format!("size={size}")).unwrap();
        // SAFETY: as in `mount`.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c(&self.path).as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "remount: {}", std::io::Error::last_os_error());
    }

    /// Fills what is left with a file (`<path>/filler`) until the disk is full; removing it
    /// gives the space back.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", p.display()),
            }
        }
        // The last partial block too.
        while f.write(&[0xa5]).is_ok_and(|n| n == 1) {}
        p
    }

    /// Free bytes left.
    pub fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.path).unwrap();
        st.f_bavail * st.f_frsize
    }

    /// Free inodes left.
    pub fn free_inodes(&self) -> u64 {
        rustix::fs::statvfs(&self.path).unwrap().f_favail
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: unmounting the mount we made.
        unsafe { libc::umount2(c(&self.path).as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.path);
        if let Some(d) = &self.also_remove {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
