//! The spec dir's owner policy (issue 13), as sshd's StrictModes: a spec is judged by the file
//! that was read (its fd's fstat), not by its path looked up again, and every dir on the way to
//! a spec, a drop-in or an env file is checked, up to `/`, through symlinks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use berth_agent::desired::SpecSource;
use berth_agent::source::dir::DirSource;
use berth_agent::source::perms::TrustedOwners;
use berth_spec::SpecDefaults;

const NOBODY: u32 = 65534;

fn source(dir: &Path) -> DirSource {
    DirSource::new(
        dir,
        SpecDefaults::default(),
        TrustedOwners::resolve(&[]).unwrap(),
        Duration::from_secs(1),
    )
}

fn write(p: &Path, text: &str, mode: u32, uid: u32) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(p, Some(uid), Some(0)).unwrap();
}

fn mkdir(p: &Path, mode: u32, uid: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(p, Some(uid), Some(0)).unwrap();
}

/// Waits for `name` in `dir` to be closed after a read, then renames `with` over it: the name
/// leads to another file between the read and any later look at the path.
fn swap_after_read(dir: &Path, name: &str, with: &Path) -> std::thread::JoinHandle<bool> {
    // SAFETY: plain syscalls on our own fd and C strings.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let cdir = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: as above.
    let wd = unsafe { libc::inotify_add_watch(fd, cdir.as_ptr(), libc::IN_CLOSE_NOWRITE) };
    assert!(wd >= 0);
    let (target, with, name) = (dir.join(name), with.to_path_buf(), name.to_string());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a local buffer of its size.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 16 <= n as usize {
                let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
                let raw = &buf[off + 16..off + 16 + len];
                let got = raw.split(|&b| b == 0).next().unwrap_or_default();
                if got == name.as_bytes() {
                    std::fs::rename(&with, &target).unwrap();
                    // SAFETY: our fd.
                    unsafe { libc::close(fd) };
                    return true;
                }
                off += 16 + len;
            }
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        false
    })
}

/// A spec owned by an untrusted user is read; right after, the name leads to a root-owned
/// file. The spec read must be refused: its owner is judged on the fd it was read from. The
/// window is widened by 300 other specs read in between (the scan reads all, then judges).
#[test]
fn the_owner_is_judged_on_the_file_that_was_read() {
    if !berth_e2e::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("specs");
    mkdir(&dir, 0o755, 0);
    for i in 0..300 {
        write(
            &dir.join(format!("s{i:03}.toml")),
            "image = \"busybox\"\n",
            0o644,
            0,
        );
    }
    for round in 0..5 {
        write(
            &dir.join("aaa.toml"),
            "image = \"evil.example/owned-by-nobody\"\n",
            0o644,
            NOBODY,
        );
        let decoy = dir.join(".decoy");
        write(&decoy, "image = \"busybox\"\n", 0o644, 0);
        let racer = swap_after_read(&dir, "aaa.toml", &decoy);
        let scan = source(&dir).scan();
        assert!(
            racer.join().unwrap(),
            "round {round}: the read was never seen"
        );
        assert!(scan.error.is_none(), "{:?}", scan.error);
        match &scan.specs["aaa"] {
            Ok(spec) => panic!(
                "round {round}: a spec read from a file of uid {NOBODY} was accepted: {}",
                spec.image
            ),
            Err(e) => assert!(e.contains("uid 65534"), "round {round}: {e}"),
        }
        assert!(scan.specs["s000"].is_ok());
    }
}

/// Every dir on the way counts: an ancestor of the spec dir owned by another user or open to
/// others (unless sticky, like /tmp), the dirs above an env file, and the dirs a symlinked
/// spec leads through.
#[test]
fn every_dir_on_the_way_to_a_spec_is_checked() {
    if !berth_e2e::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let spec = "image = \"busybox\"\n";

    // An ancestor owned by nobody: whoever owns it can swap the spec dir.
    mkdir(&t.join("theirs"), 0o755, NOBODY);
    mkdir(&t.join("theirs/b/specs"), 0o755, 0);
    mkdir(&t.join("theirs/b"), 0o755, 0);
    write(&t.join("theirs/b/specs/web.toml"), spec, 0o644, 0);
    let scan = source(&t.join("theirs/b/specs")).scan();
    let e = scan
        .error
        .expect("an ancestor owned by uid 65534 was trusted");
    assert!(
        e.contains("/theirs: refused") && e.contains("uid 65534"),
        "{e}"
    );

    // An ancestor anyone may write (not sticky).
    mkdir(&t.join("open/specs"), 0o755, 0);
    mkdir(&t.join("open"), 0o777, 0);
    write(&t.join("open/specs/web.toml"), spec, 0o644, 0);
    let e = source(&t.join("open/specs"))
        .scan()
        .error
        .expect("0777 ancestor");
    assert!(e.contains("/open: refused") && e.contains("0777"), "{e}");

    // A sticky one (as /tmp) is passed through.
    mkdir(&t.join("sticky/specs"), 0o755, 0);
    mkdir(&t.join("sticky"), 0o1777, 0);
    write(&t.join("sticky/specs/web.toml"), spec, 0o644, 0);
    let scan = source(&t.join("sticky/specs")).scan();
    assert!(scan.error.is_none(), "{:?}", scan.error);
    assert!(scan.specs["web"].is_ok());

    // A good spec dir: an env file two levels below an open dir, and a spec that is a link
    // into an open subdir of the spec dir.
    let good = t.join("good/specs");
    mkdir(&good, 0o755, 0);
    mkdir(&t.join("envs/sub"), 0o755, 0);
    mkdir(&t.join("envs"), 0o777, 0);
    write(&t.join("envs/sub/app.env"), "A=1\n", 0o644, 0);
    write(
        &good.join("app.toml"),
        &format!("{spec}env_files = [{:?}]\n", t.join("envs/sub/app.env")),
        0o644,
        0,
    );
    mkdir(&good.join("real"), 0o777, 0);
    write(&good.join("real/linked.toml"), spec, 0o644, 0);
    std::os::unix::fs::symlink("real/linked.toml", good.join("linked.toml")).unwrap();
    write(&good.join("plain.toml"), spec, 0o644, 0);
    let scan = source(&good).scan();
    assert!(scan.error.is_none(), "{:?}", scan.error);
    assert!(scan.specs["plain"].is_ok());
    let e = scan.specs["app"]
        .as_ref()
        .expect_err("env file under an open dir");
    assert!(e.contains("/envs: refused"), "{e}");
    let e = scan.specs["linked"]
        .as_ref()
        .expect_err("a spec reached through an open dir");
    assert!(e.contains("/real: refused"), "{e}");
}
