//! Resolves a container's user and supplementary groups from the text of its own /etc/passwd
//! and /etc/group, as Docker does: names must exist there, numeric ids need not.

use berth_spec::model::{User, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary gid excluded.
    pub groups: Vec<u32>,
    /// From the passwd entry; `/` when the user has none.
    pub home: String,
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

/// Resolves `user` (None = root) against the container's passwd and group files' text (empty
/// when a file is missing).
pub fn resolve(user: Option<&User>, passwd: &str, group: &str) -> Result<Credentials, String> {
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
        Some(UserId::Id(g)) => *g,
        Some(UserId::Name(n)) => group_entries(group)
            .find(|g| g.name == n)
            .map(|g| g.gid)
            .ok_or_else(|| {
                format!("unable to find group {n}: no matching entries in group file")
            })?,
        None => entry.as_ref().map(|e| e.gid).unwrap_or(0),
    };
    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    // Supplementary groups come from membership by name, only when the user has an entry.
    let mut groups: Vec<u32> = match &entry {
        Some(e) => group_entries(group)
            .filter(|g| g.members.contains(&e.name))
            .map(|g| g.gid)
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    groups.sort_unstable();
    groups.dedup();
    Ok(Credentials {
        uid,
        gid,
        groups,
        home,
    })
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
    fn root_by_default() {
        let c = resolve(None, PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (0, 0, "/root"));
        assert!(c.groups.is_empty());
        let c = resolve(None, "", "").unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (0, 0, "/"));
    }

    #[test]
    fn names_resolve_with_supplementary_groups() {
        let c = resolve(Some(&user(UserId::Name("app".into()), None)), PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid), (1000, 1000));
        assert_eq!(c.groups, [10, 29]);
        assert_eq!(c.home, "/home/app");
        let c = resolve(
            Some(&user(
                UserId::Name("app".into()),
                Some(UserId::Name("audio".into())),
            )),
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!((c.gid, c.groups.clone()), (29, vec![10]));
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let c = resolve(
            Some(&user(UserId::Id(4242), Some(UserId::Id(7)))),
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!((c.uid, c.gid, c.groups.len()), (4242, 7, 0));
        let c = resolve(Some(&user(UserId::Id(1000), None)), PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid), (1000, 1000));
        let c = resolve(Some(&user(UserId::Id(1001), None)), PASSWD, GROUP).unwrap();
        assert_eq!(c.home, "/");
    }

    #[test]
    fn unknown_names_fail() {
        let e = resolve(
            Some(&user(UserId::Name("ghost".into()), None)),
            PASSWD,
            GROUP,
        )
        .unwrap_err();
        assert!(e.contains("ghost"), "{e}");
        let e = resolve(
            Some(&user(UserId::Id(0), Some(UserId::Name("nope".into())))),
            PASSWD,
            GROUP,
        )
        .unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
