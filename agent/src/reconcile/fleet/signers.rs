//! ssh-keygen's ALLOWED SIGNERS file (`ssh-keygen(1)`, the format git's `gpg.ssh.allowedSignersFile`
//! uses), read strictly, and the questions trust asks of it: which lines carry this key, does a
//! principal match a line, does a line allow the `git` namespace, is its key valid at a time.
//!
//! ```text
//! # principals [options] keytype base64-key [comment]
//! alice@example.com ssh-ed25519 AAAAC3Nza...
//! "ci@example.com,release@example.com" namespaces="git",valid-before="20271231Z" ssh-ed25519 AAAA...
//! ```
//!
//! Written by hand because no crate reads this format (ssh-key reads keys, not these lines);
//! pattern matching follows OpenSSH's `match_pattern_list` (`*`, `?`, `!negation`).

use std::fmt;

use ssh_key::PublicKey;
use ssh_key::public::KeyData;

/// A valid-after/valid-before time. Without a trailing `Z` it is the host's local time, as
/// ssh-keygen reads it; the caller says what the local offset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    Utc(i64),
    /// Seconds of the civil date and time read as if it were UTC.
    Local(i64),
}

impl Stamp {
    /// Seconds since the epoch, with `local_offset` (seconds east of UTC) for local times.
    pub fn at(self, local_offset: i64) -> i64 {
        match self {
            Stamp::Utc(t) => t,
            Stamp::Local(t) => t - local_offset,
        }
    }
}

/// One line of the file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based, for messages.
    pub line: usize,
    /// The principals pattern list, as written (`a@x,*@y,!z@y`).
    pub principals: String,
    /// `namespaces="..."`: a pattern list; `None`: every namespace.
    pub namespaces: Option<String>,
    pub valid_after: Option<Stamp>,
    pub valid_before: Option<Stamp>,
    pub key: PublicKey,
}

impl Entry {
    pub fn allows_principal(&self, principal: &str) -> bool {
        match_pattern_list(principal, &self.principals)
    }

    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_deref()
            .is_none_or(|list| match_pattern_list(namespace, list))
    }

    /// Whether the key may sign at `time` (both bounds inclusive, as ssh-keygen has them).
    pub fn valid_at(&self, time: i64, local_offset: i64) -> Validity {
        if let Some(a) = self.valid_after
            && time < a.at(local_offset)
        {
            return Validity::NotYet;
        }
        if let Some(b) = self.valid_before
            && time > b.at(local_offset)
        {
            return Validity::Expired;
        }
        Validity::Valid
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    NotYet,
    Expired,
}

/// A parsed allowed signers file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    pub entries: Vec<Entry>,
}

/// A problem with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl AllowedSigners {
    /// Parses the whole file; every bad line is reported (a file with one is not used at all:
    /// a typo must not silently drop a key, nor keep one a removed option restricted).
    pub fn parse(text: &str) -> Result<AllowedSigners, Vec<LineError>> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(mut e) => {
                    e.line = i + 1;
                    entries.push(e);
                }
                Err(message) => errors.push(LineError {
                    line: i + 1,
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(AllowedSigners { entries })
        } else {
            Err(errors)
        }
    }

    /// The lines that carry exactly this key.
    pub fn lines_for<'a>(&'a self, key: &'a KeyData) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.key.key_data() == key)
    }
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let (principals, rest) = next_field(line).ok_or("no principals")?;
    if principals.is_empty() {
        return Err("empty principals".into());
    }
    let rest = rest.trim_start();
    let (first, after) = next_field(rest).ok_or("no key")?;
    let (options, key_text) = if is_key_type(&first) {
        (None, rest)
    } else {
        (Some(first), after.trim_start())
    };
    let mut entry = Entry {
        line: 0,
        principals,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        key: parse_key(key_text)?,
    };
    if let Some(opts) = options {
        for opt in split_options(&opts)? {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(dequote(v)?)),
                None => (opt.as_str(), None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("cert-authority", None) => {
                    return Err(
                        "cert-authority lines are not supported: list the signing keys themselves"
                            .into(),
                    );
                }
                ("namespaces", Some(v)) => entry.namespaces = Some(v),
                ("valid-after", Some(v)) => entry.valid_after = Some(parse_time(&v)?),
                ("valid-before", Some(v)) => entry.valid_before = Some(parse_time(&v)?),
                (n @ ("namespaces" | "valid-after" | "valid-before"), None) => {
                    return Err(format!("option {n} needs a value"));
                }
                (n, _) => return Err(format!("unsupported option {n:?}")),
            }
        }
    }
    Ok(entry)
}

/// The next whitespace-separated field; a field may be double-quoted (and then hold spaces)
/// or hold quoted parts (`namespaces="a b"`). Returns the field (one level of quotes kept for
/// options, removed for a wholly quoted field) and the rest.
fn next_field(s: &str) -> Option<(String, &str)> {
    if s.is_empty() {
        return None;
    }
    if let Some(inner) = s.strip_prefix('"') {
        let end = inner.find('"')?;
        return Some((inner[..end].to_string(), &inner[end + 1..]));
    }
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Some((s[..i].to_string(), &s[i..])),
            _ => {}
        }
    }
    (!quoted).then(|| (s.to_string(), ""))
}

fn split_options(opts: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in opts.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote in options".into());
    }
    out.push(cur);
    if out.iter().any(String::is_empty) {
        return Err("empty option".into());
    }
    Ok(out)
}

fn dequote(v: &str) -> Result<String, String> {
    let inner = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .ok_or_else(|| format!("option value {v} must be quoted"))?;
    if inner.contains('"') {
        return Err(format!("stray quote in {v}"));
    }
    Ok(inner.to_string())
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-")
        || s.starts_with("ecdsa-sha2-")
        || s.starts_with("sk-ssh-")
        || s.starts_with("sk-ecdsa-")
}

fn parse_key(text: &str) -> Result<PublicKey, String> {
    let mut parts = text.split_whitespace();
    let (kind, b64) = (
        parts.next().ok_or("no key")?,
        parts.next().ok_or("no key data")?,
    );
    if !is_key_type(kind) {
        return Err(format!("unknown key type {kind:?}"));
    }
    if kind.contains("-cert-v01@") {
        return Err("certificates are not supported: list the signing keys themselves".into());
    }
    PublicKey::from_openssh(&format!("{kind} {b64}"))
        .map_err(|e| format!("unreadable {kind} key: {e}"))
}

/// `YYYYMMDD[Z]`, `YYYYMMDDHHMM[Z]`, `YYYYMMDDHHMMSS[Z]`.
pub fn parse_time(s: &str) -> Result<Stamp, String> {
    let bad = || format!("invalid time {s:?}: expected YYYYMMDD[HHMM[SS]][Z]");
    let (digits, utc) = match s.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (s, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| -> i64 { digits[r].parse().unwrap_or(-1) };
    let (y, mo, d) = (n(0..4), n(4..6), n(6..8));
    let (h, mi, sec) = match digits.len() {
        8 => (0, 0, 0),
        12 => (n(8..10), n(10..12), 0),
        _ => (n(8..10), n(10..12), n(12..14)),
    };
    if !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&d)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..60).contains(&sec)
    {
        return Err(bad());
    }
    let t = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    Ok(if utc { Stamp::Utc(t) } else { Stamp::Local(t) })
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// OpenSSH's `match_pattern_list`: a comma-separated list of `*`/`?` patterns, where a match
/// of a `!`-negated one refuses outright and otherwise one positive match is needed.
pub fn match_pattern_list(s: &str, list: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',') {
        let (negated, p) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if match_pattern(s.as_bytes(), p.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `*` matches any run (also empty), `?` one byte; everything else itself.
fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, no recursion on hostile input.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use super::super::testdata::{ALICE as ED_A, MALLORY as ED_B};

    #[test]
    fn lines_with_and_without_options() {
        let text = format!(
            "# fleet signers\n\nalice@example.com {ED_A} alice's laptop\n\
             \"ci@example.com,*@release.example.com\" namespaces=\"git,file\",valid-after=\"20260101\",valid-before=\"20271231235959Z\" {ED_B}\n\
             \x20 bob@example.com VALID-BEFORE=\"20250101Z\" {ED_B}\n"
        );
        let s = AllowedSigners::parse(&text).unwrap();
        assert_eq!(s.entries.len(), 3);
        let a = &s.entries[0];
        assert_eq!((a.line, a.principals.as_str()), (3, "alice@example.com"));
        assert!(a.namespaces.is_none() && a.valid_after.is_none());
        let ci = &s.entries[1];
        assert_eq!(ci.principals, "ci@example.com,*@release.example.com");
        assert_eq!(ci.namespaces.as_deref(), Some("git,file"));
        assert_eq!(ci.valid_after, Some(Stamp::Local(1_767_225_600)));
        assert_eq!(ci.valid_before, Some(Stamp::Utc(1_830_297_599)));
        assert!(ci.allows_principal("x@release.example.com"));
        assert!(!ci.allows_principal("alice@example.com"));
        assert_eq!(s.entries[2].valid_before, Some(Stamp::Utc(1_735_689_600)));
        let key_b = s.entries[1].key.key_data().clone();
        assert_eq!(s.lines_for(&key_b).count(), 2);
    }

    #[test]
    fn every_bad_line_is_reported() {
        let text = format!(
            "ok@x {ED_A}\n\
             nokey@x\n\
             ca@x cert-authority {ED_A}\n\
             x@x whatever=\"1\" {ED_A}\n\
             x@x valid-before=\"2025\" {ED_A}\n\
             x@x valid-before=20250101 {ED_A}\n\
             x@x ssh-ed25519 AAAAnotbase64!!\n\
             x@x ssh-ed25519-cert-v01@openssh.com AAAA\n\
             \"unterminated {ED_A}\n"
        );
        let errs = AllowedSigners::parse(&text).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9], "{errs:#?}");
        assert!(
            errs[1]
                .message
                .contains("cert-authority lines are not supported")
        );
        assert!(errs[2].message.contains("unsupported option \"whatever\""));
        assert!(errs[3].message.contains("invalid time \"2025\""));
        assert!(errs[4].message.contains("must be quoted"));
        assert_eq!(errs[0].to_string(), format!("line 2: {}", errs[0].message));
    }

    #[test]
    fn validity_windows() {
        let s = AllowedSigners::parse(&format!(
            "a@x valid-after=\"20260101Z\",valid-before=\"20260201Z\" {ED_A}\n"
        ))
        .unwrap();
        let e = &s.entries[0];
        let jan1 = 1_767_225_600;
        assert_eq!(e.valid_at(jan1 - 1, 0), Validity::NotYet);
        assert_eq!(e.valid_at(jan1, 0), Validity::Valid);
        assert_eq!(e.valid_at(jan1 + 31 * 86_400, 0), Validity::Valid);
        assert_eq!(e.valid_at(jan1 + 31 * 86_400 + 1, 0), Validity::Expired);
        // Local time two hours east of UTC: midnight local is 22:00 UTC the day before.
        let l = AllowedSigners::parse(&format!("a@x valid-after=\"20260101\" {ED_A}\n")).unwrap();
        assert_eq!(l.entries[0].valid_at(jan1 - 7200, 7200), Validity::Valid);
        assert_eq!(l.entries[0].valid_at(jan1 - 7201, 7200), Validity::NotYet);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("19700101Z"), Ok(Stamp::Utc(0)));
        assert_eq!(parse_time("20000229Z"), Ok(Stamp::Utc(951_782_400)));
        assert_eq!(parse_time("203801190314Z"), Ok(Stamp::Utc(2_147_483_640)));
        assert_eq!(parse_time("20380119031407z"), Ok(Stamp::Utc(2_147_483_647)));
        for bad in [
            "2025",
            "20250230",
            "20251301",
            "202501012400",
            "2025010112",
            "x0250101",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        assert!(match_pattern_list("alice@example.com", "alice@example.com"));
        assert!(match_pattern_list(
            "alice@example.com",
            "bob@x,*@example.com"
        ));
        assert!(!match_pattern_list(
            "alice@example.com",
            "*@example.com,!alice@*"
        ));
        assert!(!match_pattern_list("alice@example.com", "!bob@*"));
        assert!(match_pattern_list("a1", "a?"));
        assert!(!match_pattern_list("a12", "a?"));
        assert!(match_pattern_list("", "*"));
        assert!(!match_pattern_list("x", ""));
        assert!(match_pattern_list("git", "file,git"));
    }

    /// A reference matcher (plain recursion) to check the iterative one against.
    fn reference(s: &[u8], p: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, _) => s.is_empty(),
            (Some(b'*'), _) => reference(s, &p[1..]) || (!s.is_empty() && reference(&s[1..], p)),
            (Some(b'?'), Some(_)) => reference(&s[1..], &p[1..]),
            (Some(c), Some(d)) if c == d => reference(&s[1..], &p[1..]),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn pattern_matching_is_globbing(s in "[ab@.]{0,8}", p in "[ab@.*?]{0,6}") {
            prop_assert_eq!(match_pattern(s.as_bytes(), p.as_bytes()), reference(s.as_bytes(), p.as_bytes()));
        }

        #[test]
        fn civil_days_are_consecutive(y in 1900i64..2200, m in 1i64..=12) {
            let last = days_in_month(y, m);
            let first = days_from_civil(y, m, 1);
            prop_assert_eq!(days_from_civil(y, m, last) - first, last - 1);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            prop_assert_eq!(days_from_civil(ny, nm, 1), first + last);
        }
    }
}
