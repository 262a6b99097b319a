//! Processes that enter a container (the shim's clone, `berth exec`'s helper) never run from
//! the host's binary: they re-exec themselves from a copy nothing can write, so a container
//! that reaches their `/proc/<pid>/exe` (a `#!/proc/self/exe` target, an ELF interpreter the
//! image supplies, a racing opener) finds no way to the host's file (CVE-2019-5736).
//!
//! The copy is runc's (libcontainer/exeseal): the binary's directory as the top layer of a
//! private, read-only overlayfs that no mount namespace shows (fsmount without move_mount), so
//! the exe is a file of that overlay: writes fail with EROFS and nothing leads from it to the
//! real inode; it costs no copy. Where overlayfs cannot be used, a sealed memfd copy
//! (F_SEAL_WRITE and friends) does the same at the cost of the binary's size in memory.
//! The helpers also make themselves non-dumpable before they join a container (see `exec`),
//! so their `/proc/<pid>` is not the container's to open in the first place.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// Set across the re-exec, so that a copy that turns out unsealed fails instead of looping.
const REEXEC_MARK: &str = "_BERTH_EXESEAL";
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Whether the running executable is a copy no container can write: a file on a read-only
/// overlayfs, or a memfd sealed against writes.
pub fn is_sealed() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    sealed_file(exe.as_fd())
}

fn sealed_file(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    // f_type's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let on_ro_overlay = rustix::fs::fstatfs(fd)
        .is_ok_and(|s| s.f_type as i64 == OVERLAYFS_SUPER_MAGIC)
        && rustix::fs::fstatvfs(fd)
            .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
    let seals = rustix::fs::fcntl_get_seals(fd).unwrap_or(rustix::fs::SealFlags::empty());
    let memfd_sealed = seals.contains(
        rustix::fs::SealFlags::WRITE
            | rustix::fs::SealFlags::SHRINK
            | rustix::fs::SealFlags::GROW
            | rustix::fs::SealFlags::SEAL,
    );
    on_ro_overlay || memfd_sealed
}

/// Re-executes the running program from a sealed copy with the same arguments and
/// environment; returns `Ok` at once when it already runs from one, else only on failure.
pub fn ensure_sealed() -> io::Result<()> {
    if is_sealed() {
        // SAFETY: single-threaded at this point (called first thing by the binaries).
        unsafe { std::env::remove_var(REEXEC_MARK) };
        return Ok(());
    }
    if std::env::var_os(REEXEC_MARK).is_some() {
        return Err(io::Error::other(
            "the re-executed copy of the binary is not sealed",
        ));
    }
    let exe = std::fs::read_link("/proc/self/exe")?;
    let sealed = match overlay_copy(&exe) {
        Ok(fd) => fd,
        Err(_) => memfd_copy(&exe)?,
    };
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::other("an argument has a NUL"))?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != REEXEC_MARK)
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::other("an environment variable has a NUL"))?;
    env.push(CString::new(format!("{REEXEC_MARK}=1")).expect("no NUL"));
    let argv_p: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let env_p: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let empty: &CStr = c"";
    // Raw syscall: processes go through libc, and glibc wraps execveat only since 2.34 (nix's
    // execveat is this same raw call).
    // SAFETY: NUL-terminated arrays of pointers into CStrings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            sealed.as_raw_fd(),
            empty.as_ptr(),
            argv_p.as_ptr(),
            env_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(io::Error::last_os_error())
}

/// `exe` through a detached read-only overlayfs whose top layer is its directory.
fn overlay_copy(exe: &Path) -> io::Result<OwnedFd> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let name = exe
        .file_name()
        .ok_or_else(|| io::Error::other("the executable has no file name"))?;
    // Overlayfs without an upper layer needs two lower ones; the second is an empty dir of
    // our own, gone as soon as the superblock exists.
    let empty = EmptyDir::new()?;
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // Decided from the kernel's release, not by trying: a refused `lowerdir+` costs a kernel
    // log line, and this runs at every `berth exec` and shim start.
    match super::rootfs::LowerDirs::detect() {
        super::rootfs::LowerDirs::Append => {
            rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", dir)?;
            rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", empty.path())?;
        }
        super::rootfs::LowerDirs::OptionString => {
            // Before 6.8: one option, `:` separated, with `:` and `\` escaped.
            let mut s = escape_lower(dir.as_os_str());
            s.push(':');
            s.push_str(&escape_lower(empty.path().as_os_str()));
            rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir", s.as_str())?;
        }
    }
    // Spares dmesg a warning when the layers sit on different filesystems.
    let _ = rustix::mount::fsconfig_set_string(fs.as_fd(), "xino", "off");
    rustix::mount::fsconfig_create(fs.as_fd())?;
    let mnt = rustix::mount::fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )?;
    drop(empty);
    let fd = rustix::fs::openat(
        &mnt,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if !sealed_file(fd.as_fd()) {
        return Err(io::Error::other("the overlay copy is writable"));
    }
    Ok(fd)
}

fn escape_lower(p: &OsStr) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, ':' | '\\' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A sealed in-memory copy of `exe`.
fn memfd_copy(exe: &Path) -> io::Result<OwnedFd> {
    let src = std::fs::File::open(exe)?;
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    // MFD_EXEC (6.3+) keeps a `vm.memfd_noexec = 1` host from making the copy unexecutable.
    let memfd = rustix::fs::memfd_create("berth-sealed", flags | rustix::fs::MemfdFlags::EXEC)
        .or_else(|_| rustix::fs::memfd_create("berth-sealed", flags))?;
    let mut dst = std::fs::File::from(memfd);
    std::io::copy(&mut &src, &mut dst)?;
    rustix::fs::fcntl_add_seals(
        &dst,
        rustix::fs::SealFlags::WRITE
            | rustix::fs::SealFlags::SHRINK
            | rustix::fs::SealFlags::GROW
            | rustix::fs::SealFlags::SEAL,
    )?;
    Ok(dst.into())
}

/// A fresh empty 0700 directory, removed on drop.
struct EmptyDir(PathBuf);

impl EmptyDir {
    fn new() -> io::Result<EmptyDir> {
        let mut template = b"/tmp/berth-exeseal-XXXXXX\0".to_vec();
        // SAFETY: mkdtemp rewrites the X's of a NUL-terminated buffer we own.
        let r = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
        if r.is_null() {
            return Err(io::Error::last_os_error());
        }
        template.pop();
        Ok(EmptyDir(PathBuf::from(OsStr::from_bytes(&template))))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_dirs_are_escaped() {
        assert_eq!(escape_lower(OsStr::new("/a:b\\c,d")), "/a\\:b\\\\c\\,d");
    }

    #[test]
    fn copies_are_sealed_and_the_original_is_not() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let original = std::fs::File::open(&exe).unwrap();
        assert!(!sealed_file(original.as_fd()));
        let size = original.metadata().unwrap().len();
        for copy in [overlay_copy(&exe).unwrap(), memfd_copy(&exe).unwrap()] {
            assert!(sealed_file(copy.as_fd()));
            let f = std::fs::File::from(copy);
            assert_eq!(f.metadata().unwrap().len(), size);
            // Not writable through /proc, which is how a container would try.
            let via_proc = format!("/proc/self/fd/{}", f.as_raw_fd());
            let w = std::fs::OpenOptions::new().write(true).open(&via_proc);
            let writable = w.is_ok_and(|mut w| std::io::Write::write(&mut w, b"x").is_ok());
            assert!(!writable, "a sealed copy took a write");
        }
    }
}
