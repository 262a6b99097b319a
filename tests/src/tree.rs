//! Comparing root filesystems: a snapshot of a tree (types, modes, owners, link targets, file
//! hashes, device numbers, xattrs), the layers of a berth image stacked by the real overlayfs
//! (mounted in a private mount namespace on a thread of its own, so nothing leaks), and the
//! same image unpacked by a trusted tool (`skopeo copy` + `umoci unpack`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File content hash, link target, or device numbers.
    pub content: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Seconds, for regular files and symlinks.
    pub mtime: Option<i64>,
}

pub type Snapshot = BTreeMap<String, Node>;

/// Walks `root` without following symlinks.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let (kind, content, mtime) = if ft.is_dir() {
            ("dir", String::new(), None)
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&p)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                Some(md.mtime()),
            )
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            ("file", hex::encode(Sha256::digest(&data)), Some(md.mtime()))
        } else if ft.is_char_device() {
            ("char", format!("{}", md.rdev()), None)
        } else if ft.is_block_device() {
            ("block", format!("{}", md.rdev()), None)
        } else if ft.is_fifo() {
            ("fifo", String::new(), None)
        } else {
            ("other", String::new(), None)
        };
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                content,
                xattrs: xattrs(&p),
                mtime,
            },
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names) else {
        return out;
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") || name == "security.selinux" {
            continue;
        }
        let mut v = vec![0u8; 4096];
        if let Ok(len) = rustix::fs::lgetxattr(p, name.as_str(), &mut v) {
            v.truncate(len);
            out.insert(name, v);
        }
    }
    out
}

/// Differences between two snapshots, as readable lines (empty when equal).
pub fn diff(expected: &Snapshot, actual: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => out.push(format!("missing: /{k} ({})", v.kind)),
            Some(a) if a != v => {
                out.push(format!("differs: /{k}\n  expected {v:?}\n  actual   {a:?}"))
            }
            _ => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            out.push(format!("unexpected: /{k}"));
        }
    }
    out
}

/// Mounts `layers` (bottom first) as a read-only overlay in a private mount namespace on a
/// thread of its own, snapshots the merged tree, and lets the namespace (and the mount) go
/// with the thread.
pub fn overlay_snapshot(layers: &[PathBuf]) -> Snapshot {
    let layers = layers.to_vec();
    std::thread::spawn(move || {
        let target = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        // SAFETY: unshare affects only this thread's fs/mount namespace (CLONE_NEWNS implies
        // CLONE_FS, which a thread may unshare); no pointers are passed.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNS): {}",
            std::io::Error::last_os_error()
        );
        let root = CString::new("/").unwrap();
        // SAFETY: valid C strings; nulls where the call allows them.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "making / private: {}",
            std::io::Error::last_os_error()
        );
        // overlayfs wants the top layer first; an empty dir at the bottom keeps two lowers
        // even for a one-layer image.
        let mut lowers: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        lowers.push(empty.path().display().to_string());
        let opts = CString::new(format!("lowerdir={}", lowers.join(":"))).unwrap();
        let fstype = CString::new("overlay").unwrap();
        let tgt = CString::new(target.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings for source, target, type and options.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                tgt.as_ptr(),
                fstype.as_ptr(),
                libc::MS_RDONLY,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting overlay: {}",
            std::io::Error::last_os_error()
        );
        let snap = snapshot(target.path());
        // SAFETY: tgt is a valid C string naming the mount made above.
        unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
        snap
    })
    .join()
    .unwrap()
}

/// What umoci makes of `registry/repo:tag`: copied with skopeo into an OCI layout, unpacked
/// as root. Returns the bundle dir (rootfs is `bundle/rootfs`).
pub fn umoci_unpack(registry: &str, repo: &str, tag: &str, work: &Path) -> PathBuf {
    let layout = work.join("oci");
    let bundle = work.join("bundle");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{registry}/{repo}:{tag}"))
        .arg(format!("oci:{}:{tag}", layout.display()))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy failed");
    let st = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "umoci unpack failed");
    bundle
}
