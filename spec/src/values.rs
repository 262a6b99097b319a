//! Small value grammars of the spec: users, signals, capabilities, host names, paths, windows.

use crate::model::{User, UserId, Window};

/// `uid[:gid]`, `name[:group]`, or any mix; a number is an id.
pub fn parse_user(s: &str) -> Result<User, String> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let id = |part: &str, what: &str| -> Result<UserId, String> {
        if part.is_empty() {
            return Err(format!("invalid user {s:?}: empty {what}"));
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            return part
                .parse()
                .map(UserId::Id)
                .map_err(|_| format!("invalid user {s:?}: {what} id out of range"));
        }
        let ok = part.len() <= 32
            && !part.starts_with('-')
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'));
        if ok {
            Ok(UserId::Name(part.to_string()))
        } else {
            Err(format!(
                "invalid user {s:?}: expected uid[:gid] or a user name (letters, digits, '_', '-', '.')"
            ))
        }
    };
    Ok(User {
        user: id(user, "user")?,
        group: group.map(|g| id(g, "group")).transpose()?,
    })
}

/// A `group_add` entry: a group name, or a gid written as a string.
pub fn parse_group(s: &str) -> Result<UserId, String> {
    match parse_user(s) {
        Ok(User { user, group: None }) => Ok(user),
        _ => Err(format!(
            "invalid group {s:?}: expected a gid or a group name (letters, digits, '_', '-', '.')"
        )),
    }
}

pub fn format_group(g: &UserId) -> String {
    match g {
        UserId::Id(n) => n.to_string(),
        UserId::Name(s) => s.clone(),
    }
}

pub fn format_user(u: &User) -> String {
    let one = |id: &UserId| match id {
        UserId::Id(n) => n.to_string(),
        UserId::Name(s) => s.clone(),
    };
    match &u.group {
        Some(g) => format!("{}:{}", one(&u.user), one(g)),
        None => one(&u.user),
    }
}

const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
    "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
    "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS",
];

/// Normalises `term`, `TERM`, `SIGTERM` and `SIGRTMIN+3` to the `SIG` form.
pub fn parse_signal(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |base: &str, sign: char| {
        bare.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(sign)
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| (1..=30).contains(&n))
        })
    };
    if SIGNALS.contains(&bare) || realtime("RTMIN", '+') || realtime("RTMAX", '-') {
        Ok(format!("SIG{bare}"))
    } else {
        let hint = crate::diag::did_you_mean(bare, SIGNALS)
            .map(|m| format!(" (did you mean \"SIG{m}\"?)"))
            .unwrap_or_default();
        Err(format!("unknown signal {s:?}{hint}"))
    }
}

const CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Normalises `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` to `CAP_NET_ADMIN`; `ALL` stays `ALL`.
pub fn parse_capability(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if CAPS.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        let hint = crate::diag::did_you_mean(bare, CAPS)
            .map(|m| format!(" (did you mean \"CAP_{m}\"?)"))
            .unwrap_or_default();
        Err(format!("unknown capability {s:?}{hint}"))
    }
}

/// A host name as the kernel takes it: dot-separated labels, 63 bytes at most in all.
pub fn validate_hostname(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid hostname {s:?}: labels of letters, digits and '-' separated by '.', 63 characters at most"
        ))
    }
}

/// An absolute path, lexically normalised (`//` and trailing `/` collapsed); `.` and `..`
/// components are refused rather than resolved, because what they mean depends on symlinks.
pub fn normalise_abs_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} is not an absolute path"));
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL character"));
    }
    let mut out = String::with_capacity(s.len());
    for part in s.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!("{s:?} has a {part:?} component"));
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `"02:00-04:00"`; `24:00` may end a window; an end before the start wraps past midnight.
pub fn parse_window(s: &str) -> Result<Window, String> {
    let bad = || format!("invalid window {s:?}: expected \"HH:MM-HH:MM\" such as \"02:00-04:00\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let minute = |t: &str, end: bool| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        let total = h * 60 + m;
        (m < 60 && (h < 24 || (end && total == 1440))).then_some(total)
    };
    let start = minute(a, false).ok_or_else(bad)?;
    let end = minute(b, true).ok_or_else(bad)?;
    if start == end % 1440 {
        return Err(format!("invalid window {s:?}: start and end are the same"));
    }
    Ok(Window {
        start_minute: start,
        end_minute: end,
    })
}

pub fn format_window(w: &Window) -> String {
    format!(
        "{:02}:{:02}-{:02}:{:02}",
        w.start_minute / 60,
        w.start_minute % 60,
        w.end_minute / 60,
        w.end_minute % 60
    )
}

/// A Docker-style volume name: it names a directory under the state dir.
pub fn validate_volume_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid volume name {s:?}: letters, digits, '_', '.', '-', starting with a letter or digit (a host path must be absolute)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(
            parse_user("1000").unwrap(),
            User {
                user: UserId::Id(1000),
                group: None
            }
        );
        assert_eq!(
            parse_user("nginx:www").unwrap(),
            User {
                user: UserId::Name("nginx".into()),
                group: Some(UserId::Name("www".into()))
            }
        );
        for s in ["1000:1000", "nginx", "app:10", "0"] {
            assert_eq!(format_user(&parse_user(s).unwrap()), s);
        }
        for bad in ["", ":", "a:", ":1", "99999999999", "a b", "a/b", "-x"] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("term").unwrap(), "SIGTERM");
        assert_eq!(parse_signal("SIGQUIT").unwrap(), "SIGQUIT");
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap(), "SIGRTMIN+3");
        assert_eq!(parse_signal("rtmax-1").unwrap(), "SIGRTMAX-1");
        for bad in ["", "SIGFOO", "RTMIN+31", "RTMIN+", "15"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
        assert!(parse_signal("SIGTREM").unwrap_err().contains("SIGTERM"));
    }

    #[test]
    fn capabilities() {
        assert_eq!(parse_capability("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(parse_capability("CAP_SYS_ADMIN").unwrap(), "CAP_SYS_ADMIN");
        assert_eq!(parse_capability("all").unwrap(), "ALL");
        assert!(
            parse_capability("CAP_NET_ADMN")
                .unwrap_err()
                .contains("CAP_NET_ADMIN")
        );
        assert!(parse_capability("").is_err());
    }

    #[test]
    fn hostnames() {
        assert!(validate_hostname("web-1.example").is_ok());
        for bad in ["", "-a", "a..b", "a_b", &"a".repeat(64)] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(normalise_abs_path("/a//b/").unwrap(), "/a/b");
        assert_eq!(normalise_abs_path("/").unwrap(), "/");
        for bad in ["a", "/a/../b", "/./a", ""] {
            assert!(normalise_abs_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows() {
        let w = parse_window("02:00-04:30").unwrap();
        assert_eq!((w.start_minute, w.end_minute), (120, 270));
        assert_eq!(format_window(&w), "02:00-04:30");
        let w = parse_window("23:00-01:00").unwrap();
        assert!(w.contains(23 * 60 + 30) && w.contains(30) && !w.contains(120));
        assert_eq!(parse_window("22:00-24:00").unwrap().end_minute, 1440);
        for bad in [
            "",
            "2:00-4:00",
            "02:00",
            "25:00-01:00",
            "02:60-03:00",
            "03:00-03:00",
            "00:00-24:00x",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        assert!(validate_volume_name("cache").is_ok());
        assert!(validate_volume_name("my_vol.1-a").is_ok());
        for bad in ["", ".", "..", "a/b", "-a", ".hidden"] {
            assert!(validate_volume_name(bad).is_err(), "{bad}");
        }
    }
}
