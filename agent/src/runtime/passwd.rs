//! Resolves a container's user and groups from the text of its own /etc/passwd and /etc/group,
//! as Docker and podman do (runc's `GetExecUser`): names must exist there, numeric ids need not;
//! the primary gid is in the supplementary list too (root gets `groups=0(root)`), with the
//! groups that list the user as a member unless a group was named, and `group_add` after them.
//!
//! The files come from the image, which is not trusted: [`read_etc_file`] opens them inside the
//! current root without magic links, refuses anything but a regular file (a FIFO would hang
//! the start, `/dev/zero` eat memory) and caps what it reads.

use std::io::Read;
use std::os::fd::OwnedFd;

use berth_spec::model::{User, UserId};
use rustix::fs::{Mode, OFlags, ResolveFlags};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups for setgroups(2): the primary gid first, then membership, then
    /// `group_add`; each once.
    pub groups: Vec<u32>,
    /// From the passwd entry; `/` when the user has none.
    pub home: String,
}

/// The most of /etc/passwd or /etc/group read: far above any real file, small enough that a
/// hostile image cannot make a start eat memory.
pub const MAX_ETC_FILE: u64 = 4 << 20;

/// Reads `path` (absolute) of the current root for [`resolve`]: empty when it does not exist;
/// an error when it is not a regular file, is larger than [`MAX_ETC_FILE`], or resolves only
/// through a magic link. Symlinks resolve inside the root (absolute ones and `..` included).
pub fn read_etc_file(path: &str) -> Result<String, String> {
    read_etc_file_in(&rustix::fs::CWD, "/", path)
}

/// [`read_etc_file`] with `root` (a directory) as the root.
pub fn read_etc_file_in(
    dirfd: &impl std::os::fd::AsFd,
    root: &str,
    path: &str,
) -> Result<String, String> {
    let why = |e: &dyn std::fmt::Display| format!("{path}: {e}");
    let root: OwnedFd = rustix::fs::openat(
        dirfd,
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| why(&e))?;
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked next.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat2(
        &root,
        path.trim_start_matches('/'),
        flags,
        Mode::empty(),
        how,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(why(&e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| why(&e))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(format!("{path}: not a regular file; refusing to read it"));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_ETC_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| why(&e))?;
    if bytes.len() as u64 > MAX_ETC_FILE {
        return Err(format!(
            "{path}: larger than {} MiB; refusing to read it",
            MAX_ETC_FILE >> 20
        ));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `user` (None = root) and `group_add` against the container's passwd and group
/// files' text (empty when a file is missing).
pub fn resolve(
    user: Option<&User>,
    group_add: &[UserId],
    passwd: &str,
    group: &str,
) -> Result<Credentials, String> {
    let root = User {
        user: UserId::Id(0),
        group: None,
    };
    let user = user.unwrap_or(&root);
    let entry =
        match &user.user {
            UserId::Name(n) => Some(passwd_entries(passwd).find(|e| e.name == n).ok_or_else(
                || format!("unable to find user {n}: no matching entries in passwd file"),
            )?),
            UserId::Id(id) => passwd_entries(passwd).find(|e| e.uid == *id),
        };
    let uid = match &user.user {
        UserId::Id(id) => *id,
        UserId::Name(_) => entry.as_ref().map(|e| e.uid).unwrap_or(0),
    };
    let gid = match &user.group {
        Some(g) => group_id(g, group)?,
        None => entry.as_ref().map(|e| e.gid).unwrap_or(0),
    };
    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    let mut groups = vec![gid];
    // Membership counts only in the implicit form (no group named), for a user with an entry.
    if let (Some(e), None) = (&entry, &user.group) {
        groups.extend(
            group_entries(group)
                .filter(|g| g.members.contains(&e.name))
                .map(|g| g.gid),
        );
    }
    for g in group_add {
        groups.push(group_id(g, group)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    groups.retain(|g| seen.insert(*g));
    Ok(Credentials {
        uid,
        gid,
        groups,
        home,
    })
}

/// A group by name (it must exist in the group file) or by number (it need not).
fn group_id(g: &UserId, group: &str) -> Result<u32, String> {
    match g {
        UserId::Id(id) => Ok(*id),
        UserId::Name(n) => group_entries(group)
            .find(|e| e.name == n)
            .map(|e| e.gid)
            .ok_or_else(|| format!("unable to find group {n}: no matching entries in group file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nohome:x:1001:1001:::/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:app,daemon\n\
        app:x:1000:\n\
        audio:x:29:app\n\
        staff:x:50:\n";

    fn user(u: UserId, g: Option<UserId>) -> User {
        User { user: u, group: g }
    }

    #[test]
    fn root_by_default_with_its_groups() {
        // As Docker and podman: the primary gid is listed, then every group naming root.
        let c = resolve(None, &[], PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (0, 0, "/root"));
        assert_eq!(c.groups, [0]);
        let c = resolve(None, &[], PASSWD, "root:x:0:root\nwheel:x:10:root,app\n").unwrap();
        assert_eq!(c.groups, [0, 10]);
        let c = resolve(None, &[], "", "").unwrap();
        assert_eq!(
            (c.uid, c.gid, c.home.as_str(), c.groups),
            (0, 0, "/", vec![0])
        );
    }

    #[test]
    fn names_resolve_with_supplementary_groups() {
        let c = resolve(
            Some(&user(UserId::Name("app".into()), None)),
            &[],
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!((c.uid, c.gid), (1000, 1000));
        assert_eq!(c.groups, [1000, 10, 29]);
        assert_eq!(c.home, "/home/app");
        // A named group replaces membership (runc's explicit form): only that group.
        let c = resolve(
            Some(&user(
                UserId::Name("app".into()),
                Some(UserId::Name("audio".into())),
            )),
            &[],
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!((c.gid, c.groups.clone()), (29, vec![29]));
        // The primary group listing the user as a member counts once.
        let c = resolve(
            Some(&user(UserId::Name("app".into()), None)),
            &[],
            PASSWD,
            "app:x:1000:app\naudio:x:29:app\n",
        )
        .unwrap();
        assert_eq!(c.groups, [1000, 29]);
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let c = resolve(
            Some(&user(UserId::Id(4242), Some(UserId::Id(7)))),
            &[],
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (4242, 7, vec![7]));
        let c = resolve(Some(&user(UserId::Id(4242), None)), &[], PASSWD, GROUP).unwrap();
        assert_eq!((c.gid, c.groups), (0, vec![0]), "no entry: gid 0, as runc");
        let c = resolve(Some(&user(UserId::Id(1000), None)), &[], PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (1000, 1000, vec![1000, 10, 29]));
        let c = resolve(Some(&user(UserId::Id(1001), None)), &[], PASSWD, GROUP).unwrap();
        assert_eq!(c.home, "/");
    }

    #[test]
    fn group_add_by_name_or_number() {
        let add = [UserId::Name("staff".into()), UserId::Id(77), UserId::Id(10)];
        let c = resolve(
            Some(&user(UserId::Name("app".into()), None)),
            &add,
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!(c.groups, [1000, 10, 29, 50, 77]);
        // Also with a named group, and for a numeric user without an entry.
        let c = resolve(
            Some(&user(UserId::Id(4242), Some(UserId::Id(7)))),
            &add,
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!(c.groups, [7, 50, 77, 10]);
        let e = resolve(None, &[UserId::Name("nope".into())], PASSWD, GROUP).unwrap_err();
        assert!(e.contains("unable to find group nope"), "{e}");
    }

    #[test]
    fn unknown_names_fail() {
        let e = resolve(
            Some(&user(UserId::Name("ghost".into()), None)),
            &[],
            PASSWD,
            GROUP,
        )
        .unwrap_err();
        assert!(e.contains("ghost"), "{e}");
        let e = resolve(
            Some(&user(UserId::Id(0), Some(UserId::Name("nope".into())))),
            &[],
            PASSWD,
            GROUP,
        )
        .unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    mod files {
        use std::os::unix::fs::symlink;
        use std::time::{Duration, Instant};

        use super::super::*;

        fn root() -> tempfile::TempDir {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir(d.path().join("etc")).unwrap();
            d
        }

        fn read(d: &tempfile::TempDir) -> Result<String, String> {
            read_etc_file_in(&rustix::fs::CWD, d.path().to_str().unwrap(), "/etc/passwd")
        }

        #[test]
        fn a_regular_file_is_read_and_a_missing_one_is_empty() {
            let d = root();
            assert_eq!(read(&d).unwrap(), "");
            std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
            assert_eq!(read(&d).unwrap(), "root:x:0:0::/root:/bin/sh\n");
        }

        #[test]
        fn a_fifo_is_refused_without_waiting_for_a_writer() {
            let d = root();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                d.path().join("etc/passwd"),
                rustix::fs::FileType::Fifo,
                Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let path = d.path().to_path_buf();
            std::thread::spawn(move || {
                let r = read_etc_file_in(&rustix::fs::CWD, path.to_str().unwrap(), "/etc/passwd");
                let _ = tx.send(r);
            });
            let start = Instant::now();
            let r = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("reading a FIFO hung");
            assert!(start.elapsed() < Duration::from_secs(10));
            assert!(r.unwrap_err().contains("not a regular file"));
        }

        #[test]
        fn links_resolve_inside_the_root_and_a_device_is_refused() {
            let d = root();
            // An image's link to /dev/zero names the root's own /dev/zero, never the host's:
            // absent here, so the file counts as missing.
            symlink("/dev/zero", d.path().join("etc/passwd")).unwrap();
            assert_eq!(read(&d).unwrap(), "");
            std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
            symlink("../../../../../dev/zero", d.path().join("etc/passwd")).unwrap();
            assert_eq!(read(&d).unwrap(), "", "`..` stops at the root");
            // The root's own device node (as the container's /dev has one) is refused.
            std::fs::create_dir(d.path().join("dev")).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                d.path().join("dev/zero"),
                rustix::fs::FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(1, 5),
            )
            .expect("mknod (the tests run as root)");
            let e = read(&d).unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }

        #[test]
        fn the_current_roots_dev_zero_is_refused() {
            // What a container whose /etc/passwd links to /dev/zero meets after pivot_root.
            let e = read_etc_file_in(&rustix::fs::CWD, "/", "/dev/zero").unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }

        #[test]
        fn magic_links_are_refused() {
            let d = root();
            symlink("/proc/self/root/etc/hostname", d.path().join("etc/passwd")).unwrap();
            std::fs::create_dir_all(d.path().join("proc/self")).unwrap();
            // Inside the root /proc/self/root is an ordinary dir of the image: not the host's.
            assert_eq!(read(&d).unwrap(), "");
            // In the real root, through /proc, a magic link is refused.
            let e = read_etc_file_in(&rustix::fs::CWD, "/", "/proc/self/root/etc/hostname");
            assert!(e.is_err(), "{e:?}");
        }

        #[test]
        fn a_huge_file_is_refused_after_reading_at_most_the_cap() {
            let d = root();
            let f = std::fs::File::create(d.path().join("etc/passwd")).unwrap();
            // Sparse: 64 GiB of apparent size, no disk.
            f.set_len(64 << 30).unwrap();
            let start = Instant::now();
            let e = read(&d).unwrap_err();
            assert!(e.contains("larger than"), "{e}");
            assert!(start.elapsed() < Duration::from_secs(10));
            let f = std::fs::File::create(d.path().join("etc/passwd")).unwrap();
            f.set_len(MAX_ETC_FILE).unwrap();
            assert_eq!(
                read(&d).unwrap().len() as u64,
                MAX_ETC_FILE,
                "the cap itself is fine"
            );
        }
    }
}
