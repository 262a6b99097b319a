//! Hostile and tricky layers against the unpacker itself: refused or contained, never
//! followed, and nothing written outside the layer dir.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_agent::store::unpack::{UnpackError, unpack};
use berth_e2e::image::{Entry, tar_bytes};

struct Case {
    dir: tempfile::TempDir,
    /// A host dir outside the layer that hostile entries aim at.
    outside: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"original").unwrap();
        Case {
            dir: tempfile::tempdir().unwrap(),
            outside,
        }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn out(&self) -> String {
        self.outside.path().display().to_string()
    }
    fn unpack(&self, entries: &[Entry]) -> Result<(), UnpackError> {
        let tar = tar_bytes(entries);
        unpack(self.root(), tar.as_slice()).map(|_| ())
    }
    fn outside_untouched(&self) {
        let names: Vec<String> = std::fs::read_dir(self.outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["victim"], "something was written outside the layer");
        assert_eq!(
            std::fs::read(self.outside.path().join("victim")).unwrap(),
            b"original"
        );
    }
}

#[test]
fn dotdot_is_refused() {
    let c = Case::new();
    let rel = format!("../../../../../../../..{}/pwned", c.out());
    let err = c.unpack(&[Entry::file(&rel, b"x")]).unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    c.outside_untouched();
}

#[test]
fn absolute_paths_are_contained() {
    let c = Case::new();
    let abs = format!("{}/pwned", c.out());
    c.unpack(&[Entry::file(&abs, b"x")]).unwrap();
    c.outside_untouched();
    assert_eq!(
        std::fs::read(c.root().join(abs.trim_start_matches('/'))).unwrap(),
        b"x"
    );
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let c = Case::new();
    // Absolute and relative links to the host dir, then files written "through" them.
    let err = c
        .unpack(&[
            Entry::symlink("abs", &c.out()),
            Entry::file("abs/pwned", b"x"),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("dangling"), "{err}");
    let c2 = Case::new();
    let err = c2
        .unpack(&[
            Entry::symlink("rel", &format!("../../../../../../..{}", c2.out())),
            Entry::file("rel/pwned", b"x"),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("dangling"), "{err}");
    c.outside_untouched();
    c2.outside_untouched();

    // A link to a dir that exists in the layer: followed, inside the root, as real images need.
    let c3 = Case::new();
    c3.unpack(&[
        Entry::dir("etc"),
        Entry::symlink("link", "/etc"),
        Entry::symlink("up", "../../../etc"),
        Entry::file("link/a", b"a"),
        Entry::file("up/b", b"b"),
    ])
    .unwrap();
    assert_eq!(std::fs::read(c3.root().join("etc/a")).unwrap(), b"a");
    assert_eq!(std::fs::read(c3.root().join("etc/b")).unwrap(), b"b");
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let c = Case::new();
    let victim = format!("{}/victim", c.out());
    c.unpack(&[Entry::symlink("f", &victim), Entry::file("f", b"new")])
        .unwrap();
    c.outside_untouched();
    let md = std::fs::symlink_metadata(c.root().join("f")).unwrap();
    assert!(md.is_file());
    assert_eq!(std::fs::read(c.root().join("f")).unwrap(), b"new");
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let c = Case::new();
    let victim = format!("{}/victim", c.out());
    let before = std::fs::metadata(&victim).unwrap().nlink();
    let err = c.unpack(&[Entry::hardlink("h", &victim)]).unwrap_err();
    assert!(
        err.to_string().contains("not in this layer") || err.to_string().contains("No such file"),
        "{err}"
    );
    let err = c
        .unpack(&[Entry::hardlink("h2", "../../../../../etc/passwd")])
        .unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), before);
    // Through a symlink to the host dir: resolved inside the layer, where it does not exist.
    let c2 = Case::new();
    let err = c2
        .unpack(&[
            Entry::symlink("d", &c2.out()),
            Entry::hardlink("h", "d/victim"),
        ])
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    c.outside_untouched();
    c2.outside_untouched();
}

#[test]
fn last_entry_wins_and_types_replace_each_other() {
    let c = Case::new();
    c.unpack(&[
        Entry::file("x", b"first"),
        Entry::file("x", b"second"),
        Entry::dir("d"),
        Entry::file("d/inner", b"i"),
        Entry::file("d", b"now a file"),
        Entry::file("s", b"file"),
        Entry::symlink("s", "target"),
        Entry::Dir {
            path: "m".into(),
            mode: 0o700,
            uid: 0,
            gid: 0,
        },
        Entry::Dir {
            path: "m".into(),
            mode: 0o750,
            uid: 5,
            gid: 6,
        },
    ])
    .unwrap();
    assert_eq!(std::fs::read(c.root().join("x")).unwrap(), b"second");
    assert_eq!(std::fs::read(c.root().join("d")).unwrap(), b"now a file");
    assert_eq!(
        std::fs::read_link(c.root().join("s")).unwrap().to_str(),
        Some("target")
    );
    let m = std::fs::metadata(c.root().join("m")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 5, 6));
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let c = Case::new();
    c.unpack(&[
        Entry::dir("a"),
        Entry::whiteout("a/gone"),
        Entry::opaque("b"),
    ])
    .unwrap();
    let md = std::fs::symlink_metadata(c.root().join("a/gone")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), 0);
    assert!(!c.root().join("a/.wh.gone").exists());
    let mut v = [0u8; 4];
    let n = rustix::fs::getxattr(c.root().join("b"), "trusted.overlay.opaque", &mut v).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(!c.root().join("b/.wh..wh..opq").exists());
}

#[test]
fn forged_overlay_xattrs_are_dropped() {
    let c = Case::new();
    c.unpack(&[Entry::File {
        path: "f".into(),
        data: b"x".to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: vec![
            ("trusted.overlay.redirect".into(), b"/etc".to_vec()),
            ("user.ok".into(), b"1".to_vec()),
        ],
    }])
    .unwrap();
    let mut v = [0u8; 16];
    assert!(rustix::fs::getxattr(c.root().join("f"), "trusted.overlay.redirect", &mut v).is_err());
    assert_eq!(
        rustix::fs::getxattr(c.root().join("f"), "user.ok", &mut v).unwrap(),
        1
    );
}

#[test]
fn dir_mtimes_are_set_after_their_contents() {
    let c = Case::new();
    c.unpack(&[Entry::dir("d"), Entry::file("d/f", b"x")])
        .unwrap();
    let m = std::fs::metadata(c.root().join("d")).unwrap();
    assert_eq!(m.mtime(), berth_e2e::image::MTIME as i64);
}

#[test]
fn owners_and_modes_hold_whatever_the_umask_and_setgid_dirs() {
    let c = Case::new();
    c.unpack(&[
        Entry::Dir {
            path: "g".into(),
            mode: 0o2775,
            uid: 0,
            gid: 5,
        },
        Entry::file("g/root-owned", b"x"),
        Entry::File {
            path: "open".into(),
            data: b"x".to_vec(),
            mode: 0o666,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
        Entry::File {
            path: "sgid".into(),
            data: b"x".to_vec(),
            mode: 0o2755,
            uid: 7,
            gid: 8,
            xattrs: vec![],
        },
    ])
    .unwrap();
    let m = std::fs::metadata(c.root().join("g/root-owned")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, 0, 0o644),
        "not the setgid dir's group"
    );
    let m = std::fs::metadata(c.root().join("open")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o666, "not trimmed by the umask");
    let m = std::fs::metadata(c.root().join("sgid")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (7, 8, 0o2755));
}
