//! Any bytes as an image layer's tar stream, unpacked into a fresh layer root: unpacking never
//! panics, and nothing is written outside the root.
//!
//! How "outside" is watched: the target runs in a private mount namespace (set up once, as
//! root) where every mount is read-only except a tmpfs at /mnt and the fuzz dir (libFuzzer's
//! corpus and artifacts). The layer root is `/mnt/a/b/root`; canary files sit at each level
//! above it. A write that escapes through `..` lands in the tmpfs and shows up as a change
//! there (a new name, a canary changed, linked or chmodded); one that escapes to any other
//! absolute path fails with EROFS, which the target reports as an escape.
//!
//! Half the inputs (first byte even) are raw tar bytes; the others are decoded into a list of
//! entries with hostile names and link targets (`..`, absolute paths, the canaries, /proc
//! magic links) and written as a tar, so the fuzzer explores paths, not tar checksums.
#![no_main]

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_agent::store::unpack;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

const SCRATCH: &str = "/mnt";
const CANARY: &[u8] = b"canary\n";

struct Canary {
    path: PathBuf,
    meta: (u32, u32, u32, i64),
}

fn setup() -> &'static Vec<Canary> {
    static CANARIES: OnceLock<Vec<Canary>> = OnceLock::new();
    CANARIES.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "layer_unpack needs root (mount namespace, mknod, chown, trusted xattrs)"
        );
        let keep = Path::new(env!("CARGO_MANIFEST_DIR"));
        // SAFETY: plain syscalls on paths we own; the namespace is this process's alone.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)");
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                "making / private",
            );
            let k = CString::new(keep.as_os_str().as_encoded_bytes()).unwrap();
            check(
                libc::mount(
                    k.as_ptr(),
                    k.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ),
                "binding the fuzz dir",
            );
            set_read_only(c"/", true, true);
            set_read_only(&k, false, true);
            let opts = c"size=256m,mode=0755";
            check(
                libc::mount(
                    c"berth-fuzz".as_ptr(),
                    c"/mnt".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    opts.as_ptr().cast(),
                ),
                "mounting the scratch tmpfs on /mnt",
            );
        }
        // The oracle itself: a write outside the scratch and fuzz dirs must now fail.
        let probe = std::env::temp_dir().join("berth-fuzz-ro-probe");
        let err = std::fs::write(&probe, b"x").expect_err("the host is still writable");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let base = Path::new(SCRATCH);
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        let mut canaries = Vec::new();
        for dir in ["", "a", "a/b"] {
            let p = base.join(dir).join("canary");
            std::fs::write(&p, CANARY).unwrap();
            canaries.push(Canary {
                meta: meta(&p),
                path: p,
            });
        }
        canaries
    })
}

fn check(rc: libc::c_int, what: &str) {
    if rc != 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
}

/// mount_setattr(2): no crate wraps it.
fn set_read_only(path: &std::ffi::CStr, ro: bool, recursive: bool) {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set: if ro { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: if ro { 0 } else { MOUNT_ATTR_RDONLY },
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the attr struct outlives the call and its size is passed along.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            if recursive { AT_RECURSIVE } else { 0 },
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(rc as libc::c_int, "mount_setattr");
}

fn meta(p: &Path) -> (u32, u32, u32, i64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mode(), m.uid(), m.gid(), m.mtime())
}

/// Every path under `dir`, relative, without descending into `skip`.
fn walk(dir: &Path, rel: &Path, skip: &Path, out: &mut BTreeSet<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        out.insert(r.clone());
        if e.path() != skip && e.file_type().unwrap().is_dir() {
            walk(&e.path(), &r, skip, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let canaries = setup();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tar = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        structured(rest)
    };
    let base = Path::new(SCRATCH);
    let root = base.join("a/b/root");
    let parents: Vec<(PathBuf, (u32, u32, u32, i64))> = ["", "a", "a/b"]
        .iter()
        .map(|d| (base.join(d), meta(&base.join(d))))
        .collect();
    std::fs::create_dir(&root).unwrap();

    let result = unpack::unpack(&root, std::io::Cursor::new(&tar));
    if let Err(e) = &result {
        let msg = e.to_string();
        assert!(
            !msg.contains("Read-only file system"),
            "the unpacker tried to write outside the layer root: {msg}"
        );
    }
    for c in canaries {
        assert_eq!(
            std::fs::read(&c.path).unwrap(),
            CANARY,
            "{} changed",
            c.path.display()
        );
        assert_eq!(
            meta(&c.path),
            c.meta,
            "{} metadata changed",
            c.path.display()
        );
        let nlink = std::fs::metadata(&c.path).unwrap().nlink();
        assert_eq!(
            nlink,
            1,
            "{} was hardlinked from the layer",
            c.path.display()
        );
    }
    for (p, m) in &parents {
        let now = meta(p);
        assert_eq!(
            (now.0, now.1, now.2),
            (m.0, m.1, m.2),
            "{} mode or owner changed",
            p.display()
        );
    }
    let mut found = BTreeSet::new();
    walk(base, Path::new(""), &root, &mut found);
    let expected: BTreeSet<PathBuf> = ["canary", "a", "a/canary", "a/b", "a/b/canary", "a/b/root"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(found, expected, "something appeared outside the layer root");
    std::fs::remove_dir_all(&root).unwrap();
});

/// Hostile path pieces: traversal, absolute paths, the canaries, whiteouts, /proc magic links.
const PARTS: &[&str] = &[
    "a",
    "b",
    "c",
    "..",
    ".",
    "",
    "root",
    "canary",
    "mnt",
    "x",
    ".wh.a",
    ".wh.c",
    ".wh..wh..opq",
    ".wh..wh.plnk",
    "proc",
    "self",
    "dev",
];
const TARGETS: &[&str] = &[
    "/mnt/canary",
    "/mnt/a/b/canary",
    "../canary",
    "../../canary",
    "../../../canary",
    "/",
    "..",
    "/proc/self/root",
    "/proc/self/cwd",
    "/proc/self/fd/3",
    "/mnt",
    "/mnt/a/b",
];

fn path(u: &mut Unstructured<'_>, absolute_ok: bool) -> String {
    let n = u.int_in_range(1..=4u8).unwrap_or(1);
    let mut parts = Vec::new();
    for _ in 0..n {
        parts.push(*u.choose(PARTS).unwrap_or(&"a"));
    }
    let mut s = parts.join("/");
    if absolute_ok && u.ratio(1, 4u8).unwrap_or(false) {
        s.insert(0, '/');
    }
    if u.ratio(1, 6u8).unwrap_or(false) {
        s.push('/');
    }
    s
}

fn target(u: &mut Unstructured<'_>) -> String {
    if u.ratio(1, 2u8).unwrap_or(false) {
        u.choose(TARGETS).unwrap_or(&"/").to_string()
    } else {
        path(u, true)
    }
}

fn structured(data: &[u8]) -> Vec<u8> {
    let mut u = Unstructured::new(data);
    let mut b = tar::Builder::new(Vec::new());
    let n = u.int_in_range(1..=12u8).unwrap_or(1);
    for _ in 0..n {
        let kind = u.int_in_range(0..=7u8).unwrap_or(0);
        let p = path(&mut u, true);
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(u.choose(&[0u64, 1000, 65534]).copied().unwrap_or(0));
        h.set_gid(0);
        h.set_mode(
            u.choose(&[0o755u32, 0o644, 0o4755, 0o777, 0])
                .copied()
                .unwrap_or(0o644),
        );
        h.set_size(0);
        let mut link = None;
        let mut body: Vec<u8> = Vec::new();
        match kind {
            0 => h.set_entry_type(tar::EntryType::Directory),
            1 | 2 => {
                h.set_entry_type(tar::EntryType::Regular);
                let len = u.int_in_range(0..=64u8).unwrap_or(0) as usize;
                body = u.bytes(len).unwrap_or(&[]).to_vec();
                h.set_size(body.len() as u64);
            }
            3 => {
                h.set_entry_type(tar::EntryType::Symlink);
                link = Some(target(&mut u));
            }
            4 => {
                h.set_entry_type(tar::EntryType::Link);
                link = Some(target(&mut u));
            }
            5 => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(u.choose(&[0u32, 1, 8]).copied().unwrap_or(0))
                    .unwrap();
                h.set_device_minor(u.choose(&[0u32, 3, 5]).copied().unwrap_or(0))
                    .unwrap();
            }
            6 => h.set_entry_type(tar::EntryType::Fifo),
            _ => {
                h.set_entry_type(tar::EntryType::Block);
                h.set_device_major(7).unwrap();
                h.set_device_minor(0).unwrap();
            }
        }
        if p.len() > 99 {
            long_record(&mut b, tar::EntryType::GNULongName, &p);
        }
        raw_name(&mut h, &p);
        if let Some(l) = &link {
            if l.len() > 99 {
                long_record(&mut b, tar::EntryType::GNULongLink, l);
            }
            let g = h.as_gnu_mut().unwrap();
            let n = l.len().min(99);
            g.linkname = [0; 100];
            g.linkname[..n].copy_from_slice(&l.as_bytes()[..n]);
        }
        h.set_cksum();
        b.append(&h, body.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// The name as given, unnormalised (tar's own setters refuse `..`).
fn raw_name(h: &mut tar::Header, p: &str) {
    let g = h.as_gnu_mut().unwrap();
    let n = p.len().min(99);
    g.name = [0; 100];
    g.name[..n].copy_from_slice(&p.as_bytes()[..n]);
}

fn long_record(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, value: &str) {
    let mut h = tar::Header::new_gnu();
    raw_name(&mut h, "././@LongLink");
    h.set_entry_type(kind);
    h.set_mode(0o644);
    let mut data = value.as_bytes().to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
}
