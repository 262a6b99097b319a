//! Tar entry paths, split into components before anything touches the disk (pure).
//!
//! A leading `/` is dropped (as GNU tar and Docker do), `.` and empty components are skipped,
//! and `..` anywhere refuses the entry: the kernel would contain it (RESOLVE_IN_ROOT), but no
//! honest layer needs it.

use std::fmt;

/// An entry path inside the layer root: parent components and a final name, or the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath {
    pub parent: Vec<Vec<u8>>,
    /// `None` for the root (`./`).
    pub name: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("contains a '..' component")]
    DotDot,
    #[error("contains a NUL byte")]
    Nul,
}

impl EntryPath {
    pub fn parse(raw: &[u8]) -> Result<EntryPath, PathError> {
        if raw.contains(&0) {
            return Err(PathError::Nul);
        }
        let mut comps: Vec<Vec<u8>> = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err(PathError::DotDot),
                c => comps.push(c.to_vec()),
            }
        }
        let name = comps.pop();
        Ok(EntryPath {
            parent: comps,
            name,
        })
    }

    /// The parent as a relative path (`a/b`), empty for the root.
    pub fn parent_bytes(&self) -> Vec<u8> {
        join(&self.parent)
    }

    /// The whole path as a relative path (`a/b/c`).
    pub fn full_bytes(&self) -> Vec<u8> {
        let mut all = self.parent.clone();
        all.extend(self.name.clone());
        join(&all)
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.full_bytes()))
    }
}

pub fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// What an entry's final name says about overlay semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameKind<'a> {
    Plain,
    /// `.wh..wh..opq`: the parent dir hides everything below it in lower layers.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted from lower layers.
    Whiteout(&'a [u8]),
    /// Other `.wh..wh.` names are aufs bookkeeping (hard-link dirs); skipped, as Docker does.
    AufsMeta,
}

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

pub fn classify(name: &[u8]) -> NameKind<'_> {
    if name == OPAQUE_MARKER {
        NameKind::Opaque
    } else if name.starts_with(b".wh..wh.") {
        NameKind::AufsMeta
    } else if let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX) {
        if rest.is_empty() || rest == b"." || rest == b".." {
            NameKind::AufsMeta
        } else {
            NameKind::Whiteout(rest)
        }
    } else {
        NameKind::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> EntryPath {
        EntryPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn splits_and_normalises() {
        assert_eq!(
            p("./usr/bin/sh"),
            EntryPath {
                parent: vec![b"usr".to_vec(), b"bin".to_vec()],
                name: Some(b"sh".to_vec())
            }
        );
        assert_eq!(p("/etc//passwd"), p("etc/passwd"));
        assert_eq!(p("etc/"), p("etc"));
        assert_eq!(
            p("./"),
            EntryPath {
                parent: vec![],
                name: None
            }
        );
        assert_eq!(p("a/./b").full_bytes(), b"a/b");
        assert_eq!(p("a/b/c").parent_bytes(), b"a/b");
        assert_eq!(p("x").to_string(), "/x");
    }

    #[test]
    fn refuses_dotdot_and_nul() {
        for bad in ["..", "../etc/passwd", "a/../../b", "a/..", "/../x"] {
            assert_eq!(
                EntryPath::parse(bad.as_bytes()),
                Err(PathError::DotDot),
                "{bad}"
            );
        }
        assert_eq!(EntryPath::parse(b"a\0b"), Err(PathError::Nul));
        // Names that merely start with dots are fine.
        assert!(EntryPath::parse(b"...").is_ok());
        assert!(EntryPath::parse(b"..a").is_ok());
    }

    #[test]
    fn whiteouts() {
        assert_eq!(classify(b".wh..wh..opq"), NameKind::Opaque);
        assert_eq!(classify(b".wh.foo"), NameKind::Whiteout(b"foo"));
        assert_eq!(classify(b".wh..wh.plnk"), NameKind::AufsMeta);
        assert_eq!(classify(b".wh."), NameKind::AufsMeta);
        assert_eq!(classify(b".wh..."), NameKind::AufsMeta);
        assert_eq!(classify(b"foo.wh.x"), NameKind::Plain);
    }

    proptest! {
        #[test]
        fn components_are_single_safe_names(raw in prop::collection::vec(
            prop::sample::select(vec![&b"a"[..], b"/", b".", b"..", b"b", b"\xff", b"//"]), 0..12)) {
            let raw: Vec<u8> = raw.concat();
            if let Ok(e) = EntryPath::parse(&raw) {
                for c in e.parent.iter().chain(e.name.iter()) {
                    prop_assert!(!c.is_empty());
                    prop_assert!(c != b"." && c != b"..");
                    prop_assert!(!c.contains(&b'/'));
                }
                prop_assert!(!e.full_bytes().starts_with(b"/"));
            } else {
                prop_assert!(raw.split(|&b| b == b'/').any(|c| c == b".."));
            }
        }
    }
}
