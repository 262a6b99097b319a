//! Commit ids and git's commit object format, read for what trust needs: parents, tree,
//! committer, subject, and the SSH signature with the exact bytes it signs.
//!
//! Written by hand: the format is a few header lines, and the one crate that reads it (gix's
//! gix-object) comes with the whole gix family (see `source/git` for the measurement).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A full object id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitId(String);

impl CommitId {
    pub fn parse(s: &str) -> Result<CommitId, String> {
        if berth_spec::rollout::is_full_commit_id(s) {
            Ok(CommitId(s.to_string()))
        } else {
            Err(format!("{s:?} is not a full commit id"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::str::FromStr for CommitId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CommitId::parse(s)
    }
}

impl TryFrom<String> for CommitId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CommitId::parse(&s)
    }
}

impl From<CommitId> for String {
    fn from(c: CommitId) -> String {
        c.0
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A commit, as far as berth reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: CommitId,
    pub tree: CommitId,
    pub parents: Vec<CommitId>,
    /// `Name <email>`, as written.
    pub author: String,
    pub committer_email: String,
    /// Seconds since the epoch.
    pub committer_time: i64,
    /// The first line of the message.
    pub subject: String,
    pub signature: Option<Signature>,
}

/// A signature header and the bytes it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The armored signature (`-----BEGIN SSH SIGNATURE-----` ... for SSH).
    pub armored: String,
    /// The commit object with the signature header taken out: what `git commit -S` signed.
    pub payload: Vec<u8>,
}

/// Parses a raw commit object (what `git cat-file commit` prints).
pub fn parse_commit(id: &CommitId, raw: &[u8]) -> Result<Commit, String> {
    let bad = |why: &str| format!("commit {id}: {why}");
    // SHA-256 repositories sign under `gpgsig-sha256`; a SHA-1 one under `gpgsig`.
    let sig_header: &[u8] = if id.as_str().len() == 64 {
        b"gpgsig-sha256"
    } else {
        b"gpgsig"
    };
    let mut tree = None;
    let mut parents = Vec::new();
    let mut author = None;
    let mut committer = None;
    let mut armored: Option<String> = None;
    let mut payload = Vec::with_capacity(raw.len());
    let mut in_sig = false;
    let mut rest = raw;
    let mut message: &[u8] = &[];
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, next) = rest.split_at(end);
        rest = next;
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if text.is_empty() {
            // The message follows; it is signed as it stands.
            payload.extend_from_slice(line);
            payload.extend_from_slice(rest);
            message = rest;
            break;
        }
        if let Some(cont) = text.strip_prefix(b" ") {
            if in_sig {
                let sig = armored.as_mut().expect("in a signature");
                sig.push_str(std::str::from_utf8(cont).map_err(|_| bad("signature is not text"))?);
                sig.push('\n');
                continue;
            }
            payload.extend_from_slice(line);
            continue;
        }
        in_sig = false;
        let (key, value) = match text.iter().position(|&b| b == b' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, &b""[..]),
        };
        if key == sig_header {
            if armored.is_some() {
                return Err(bad("two signatures"));
            }
            let first = std::str::from_utf8(value).map_err(|_| bad("signature is not text"))?;
            armored = Some(format!("{first}\n"));
            in_sig = true;
            continue;
        }
        payload.extend_from_slice(line);
        let value_str = || std::str::from_utf8(value).map_err(|_| bad("header is not UTF-8"));
        match key {
            b"tree" if tree.is_none() => {
                tree = Some(CommitId::parse(value_str()?).map_err(|e| bad(&e))?)
            }
            b"tree" => return Err(bad("two tree lines")),
            b"parent" => parents.push(CommitId::parse(value_str()?).map_err(|e| bad(&e))?),
            b"author" if author.is_none() => {
                author = Some(String::from_utf8_lossy(value).into_owned())
            }
            b"committer" if committer.is_none() => {
                committer = Some(String::from_utf8_lossy(value).into_owned())
            }
            b"author" | b"committer" => return Err(bad("a repeated author or committer line")),
            _ => {}
        }
    }
    let tree = tree.ok_or_else(|| bad("no tree"))?;
    let committer = committer.ok_or_else(|| bad("no committer"))?;
    let (committer_email, committer_time) = ident_email_time(&committer)
        .ok_or_else(|| bad(&format!("unreadable committer {committer:?}")))?;
    let author = author.ok_or_else(|| bad("no author"))?;
    let author = match author.rfind('>') {
        Some(i) => author[..=i].to_string(),
        None => author,
    };
    let subject = String::from_utf8_lossy(message)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Commit {
        id: id.clone(),
        tree,
        parents,
        author,
        committer_email,
        committer_time,
        subject,
        signature: armored.map(|armored| Signature { armored, payload }),
    })
}

/// `Name <email> 1700000000 +0100` -> (`email`, 1700000000).
fn ident_email_time(ident: &str) -> Option<(String, i64)> {
    let open = ident.rfind('<')?;
    let close = open + ident[open..].find('>')?;
    let email = ident[open + 1..close].to_string();
    let mut after = ident[close + 1..].split_whitespace();
    let time = after.next()?.parse().ok()?;
    Some((email, time))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef01234567";
    const TREE: &str = "89abcdef0123456789abcdef0123456789abcdef";
    const P1: &str = "1111111111111111111111111111111111111111";
    const P2: &str = "2222222222222222222222222222222222222222";

    fn id(s: &str) -> CommitId {
        CommitId::parse(s).unwrap()
    }

    fn signed() -> String {
        format!(
            "tree {TREE}\nparent {P1}\nparent {P2}\nauthor A U Thor <a@example.com> 1700000000 +0100\n\
             committer C O Mitter <c@example.com> 1700000100 -0200\n\
             gpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n AAAA\n -----END SSH SIGNATURE-----\n\
             mergetag object {P2}\n type commit\n\nsubject line\n\nbody\n"
        )
    }

    #[test]
    fn reads_headers_and_cuts_out_the_signature() {
        let c = parse_commit(&id(ID), signed().as_bytes()).unwrap();
        assert_eq!(c.tree, id(TREE));
        assert_eq!(c.parents, vec![id(P1), id(P2)]);
        assert_eq!(c.author, "A U Thor <a@example.com>");
        assert_eq!(c.committer_email, "c@example.com");
        assert_eq!(c.committer_time, 1_700_000_100);
        assert_eq!(c.subject, "subject line");
        let s = c.signature.unwrap();
        assert_eq!(
            s.armored,
            "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\nAAAA\n-----END SSH SIGNATURE-----\n"
        );
        // Everything but the gpgsig header and its continuation lines, byte for byte; other
        // multi-line headers (mergetag) stay.
        let expected = format!(
            "tree {TREE}\nparent {P1}\nparent {P2}\nauthor A U Thor <a@example.com> 1700000000 +0100\n\
             committer C O Mitter <c@example.com> 1700000100 -0200\n\
             mergetag object {P2}\n type commit\n\nsubject line\n\nbody\n"
        );
        assert_eq!(String::from_utf8(s.payload).unwrap(), expected);
    }

    #[test]
    fn unsigned_and_malformed() {
        let raw =
            format!("tree {TREE}\nauthor a <a@x> 1 +0000\ncommitter c <c@x> 2 +0000\n\nroot\n");
        let c = parse_commit(&id(ID), raw.as_bytes()).unwrap();
        assert!(c.signature.is_none() && c.parents.is_empty());
        // A signature header in the message is just text.
        let raw =
            format!("tree {TREE}\nauthor a <a@x> 1 +0000\ncommitter c <c@x> 2 +0000\n\ngpgsig x\n");
        assert!(
            parse_commit(&id(ID), raw.as_bytes())
                .unwrap()
                .signature
                .is_none()
        );
        for bad in [
            "author a <a@x> 1 +0000\ncommitter c <c@x> 2 +0000\n\nno tree\n".to_string(),
            format!(
                "tree {TREE}\ntree {TREE}\nauthor a <a@x> 1 +0000\ncommitter c <c@x> 2 +0000\n\n"
            ),
            format!("tree {TREE}\nauthor a <a@x> 1 +0000\n\nno committer\n"),
            format!("tree {TREE}\nauthor a <a@x> 1 +0000\ncommitter c <c@x> soon\n\n"),
            format!(
                "tree {TREE}\nparent xyz\nauthor a <a@x> 1 +0000\ncommitter c <c@x> 2 +0000\n\n"
            ),
            format!(
                "tree {TREE}\nauthor a <a@x> 1 +0000\ncommitter c <c@x> 2 +0000\ngpgsig a\n b\ngpgsig c\n\n"
            ),
        ] {
            assert!(parse_commit(&id(ID), bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_repositories_sign_under_their_own_header() {
        let id64 = id(&"a".repeat(64));
        let tree64 = "b".repeat(64);
        let raw = format!(
            "tree {tree64}\nauthor a <a@x> 1 +0000\ncommitter c <c@x> 2 +0000\ngpgsig old\ngpgsig-sha256 new\n more\n\nm\n"
        );
        let c = parse_commit(&id64, raw.as_bytes()).unwrap();
        let s = c.signature.unwrap();
        assert_eq!(s.armored, "new\nmore\n");
        assert!(
            String::from_utf8(s.payload)
                .unwrap()
                .contains("gpgsig old\n")
        );
    }

    #[test]
    fn ids() {
        assert!(CommitId::parse(ID).is_ok());
        assert!(CommitId::parse(&ID.to_uppercase()).is_err());
        assert!(CommitId::parse("abc").is_err());
        assert_eq!(id(ID).short(), "0123456789ab");
        let json = serde_json::to_string(&id(ID)).unwrap();
        assert_eq!(serde_json::from_str::<CommitId>(&json).unwrap(), id(ID));
        assert!(serde_json::from_str::<CommitId>("\"nope\"").is_err());
    }
}
