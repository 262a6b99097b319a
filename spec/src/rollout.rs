//! Staged rollouts: `rollout.toml` at the root of a source repository's spec path, and the
//! bucket that decides, on each host alone, whether it is in.
//!
//! ```toml
//! id = "2026-12-web-1.28"   # a new id re-buckets the fleet
//! from = "9c1e..."          # the full commit id hosts outside the rollout apply
//! percent = 10              # 0-100, two decimals at most
//! ```
//!
//! A host is in when `sha256(host_id || "\0" || id)`, read as a big-endian integer, mod 10000
//! is below `percent * 100`. Raising `percent` keeps every host that was in (the bucket does
//! not move); `percent = 0` takes every host back to `from`.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decode::Cx;
use crate::diag::{self, Diagnostic, SourceFile};
use crate::sections::opt;
use crate::tree::{self, Kind, Node};

/// The file's name, at the root of the source's `path`; it is never a container spec there.
pub const ROLLOUT_FILE: &str = "rollout.toml";
pub const ROLLOUT_KEYS: &[&str] = &["id", "from", "percent"];

/// The number of buckets: a percent with two decimals picks whole buckets.
pub const BUCKETS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    /// A full commit id (lower-case hex).
    pub from: String,
    pub percent: Percent,
}

/// A share of the fleet in hundredths of a percent (0..=10000): whole buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(u16);

impl Percent {
    pub const ZERO: Percent = Percent(0);
    pub const ALL: Percent = Percent(10_000);

    /// From hundredths of a percent; `None` above 100%.
    pub fn from_hundredths(h: u16) -> Option<Percent> {
        (u32::from(h) <= BUCKETS).then_some(Percent(h))
    }

    pub fn hundredths(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            x if x % 10 == 0 => write!(f, "{whole}.{}%", x / 10),
            x => write!(f, "{whole}.{x:02}%"),
        }
    }
}

/// This host's bucket for a rollout id: 0..10000.
pub fn bucket(host_id: &str, rollout_id: &str) -> u16 {
    let mut h = Sha256::new();
    h.update(host_id.as_bytes());
    h.update([0u8]);
    h.update(rollout_id.as_bytes());
    let digest = h.finalize();
    // The 256-bit big-endian integer mod 10000, a byte at a time (Horner's rule).
    let r = digest
        .iter()
        .fold(0u32, |r, &b| (r * 256 + u32::from(b)) % BUCKETS);
    r as u16
}

impl Rollout {
    /// Whether the host with this id is in the rollout.
    pub fn includes(&self, host_id: &str) -> bool {
        bucket(host_id, &self.id) < self.percent.0
    }
}

/// Whether `s` is a full commit id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
pub fn is_full_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses a `rollout.toml`, every problem reported with `file:line:column`.
pub fn parse_rollout(path: &Path, text: &str) -> Result<Rollout, Vec<Diagnostic>> {
    let files = [SourceFile::new(path, text)];
    let root = tree::parse(&files, 0)?;
    let mut cx = Cx::new(&files);
    let r = decode(&mut cx, &root);
    let mut diags = cx.diags;
    match r {
        Some(r) if diags.is_empty() => Ok(r),
        _ => {
            diag::sort(&mut diags);
            Err(diags)
        }
    }
}

fn decode(cx: &mut Cx<'_>, root: &Node) -> Option<Rollout> {
    let t = cx.table(root, "", ROLLOUT_KEYS)?;
    let id = opt(cx, t, "", "id", |cx, v, k| {
        let s = cx.text(v, k)?;
        if s.len() > 200 || s.chars().any(char::is_control) {
            cx.error(v.span, k, "at most 200 characters, no control characters");
            return None;
        }
        Some(s.to_string())
    });
    let from = opt(cx, t, "", "from", |cx, v, k| {
        let s = cx.str(v, k)?;
        if !is_full_commit_id(s) {
            cx.error(
                v.span,
                k,
                format!("{s:?} is not a full commit id (40 lower-case hex digits)"),
            );
            return None;
        }
        Some(s.to_string())
    });
    let percent = opt(cx, t, "", "percent", |cx, v, k| {
        let hundredths = match &v.kind {
            Kind::Int(Ok(i)) if (0..=100).contains(i) => Some(*i as u16 * 100),
            Kind::Float(f) if (0.0..=100.0).contains(f) => {
                let h = (f * 100.0).round();
                ((h - f * 100.0).abs() < 1e-6).then_some(h as u16)
            }
            _ => None,
        };
        if hundredths.is_none() {
            cx.error(
                v.span,
                k,
                "expected a number from 0 to 100, with two decimals at most",
            );
        }
        hundredths.and_then(Percent::from_hundredths)
    });
    let missing = |cx: &mut Cx<'_>, key: &str| {
        if t.get(key).is_none() {
            cx.error(root.span, key, "missing required key");
        }
    };
    for key in ROLLOUT_KEYS {
        missing(cx, key);
    }
    Some(Rollout {
        id: id.ok()??,
        from: from.ok()??,
        percent: percent.ok()??,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rollout, Vec<String>> {
        parse_rollout(Path::new("rollout.toml"), text)
            .map_err(|d| d.iter().map(ToString::to_string).collect())
    }

    const C: &str = "9c1e0e4a5b6c7d8e9f00112233445566778899aa";

    #[test]
    fn parses_and_refuses() {
        let r = parse(&format!("id = \"w-1\"\nfrom = \"{C}\"\npercent = 10\n")).unwrap();
        assert_eq!(r.percent.hundredths(), 1000);
        assert_eq!(r.percent.to_string(), "10%");
        let r = parse(&format!("id = \"w\"\nfrom = \"{C}\"\npercent = 2.5\n")).unwrap();
        assert_eq!(r.percent.hundredths(), 250);
        assert_eq!(r.percent.to_string(), "2.5%");
        let r = parse(&format!("id = \"w\"\nfrom = \"{C}\"\npercent = 0.05\n")).unwrap();
        assert_eq!(r.percent.to_string(), "0.05%");

        let e = parse("id = \"\"\nfrom = \"9c1e\"\npercent = 101\nextra = 1\n").unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].contains("rollout.toml:1:6: error: id: must not be empty"));
        assert!(e[1].contains("from: \"9c1e\" is not a full commit id"));
        assert!(e[2].contains("percent: expected a number from 0 to 100"));
        assert!(e[3].contains("extra: unknown key"));
        let e = parse("percent = 1.234\n").unwrap_err();
        assert!(e.iter().any(|l| l.contains("id: missing required key")));
        assert!(e.iter().any(|l| l.contains("from: missing required key")));
        assert!(e.iter().any(|l| l.contains("two decimals at most")));
        assert!(
            parse(&format!(
                "id = \"w\"\nfrom = \"{}\"\npercent = 1\n",
                C.to_uppercase()
            ))
            .is_err()
        );
    }

    #[test]
    fn bucket_is_the_big_endian_digest_mod_10000() {
        // Computed independently: python3 -c 'import hashlib;
        // print(int.from_bytes(hashlib.sha256(b"edge-0042\0r1").digest(), "big") % 10000)'
        assert_eq!(bucket("edge-0042", "r1"), 5753);
        assert_eq!(bucket("", ""), 8157);
    }

    #[test]
    fn bucket_is_stable_and_in_range() {
        for i in 0..1000 {
            let id = format!("host-{i}");
            let b = bucket(&id, "r");
            assert!(u32::from(b) < BUCKETS);
            assert_eq!(b, bucket(&id, "r"));
        }
    }

    /// Over 10,000 host ids, the share in is within a few percent of `percent`, for every
    /// percent a rollout is likely to use.
    #[test]
    fn distribution_follows_percent() {
        let hosts: Vec<String> = (0..10_000).map(|i| format!("{i:032x}")).collect();
        for p in [1u16, 5, 10, 25, 50, 75, 90, 100] {
            let r = Rollout {
                id: "2026-12-web-1.28".into(),
                from: C.into(),
                percent: Percent::from_hundredths(p * 100).unwrap(),
            };
            let n = hosts.iter().filter(|h| r.includes(h)).count() as f64;
            let share = n / 100.0;
            assert!(
                (share - f64::from(p)).abs() <= 1.0,
                "{p}%: {share}% of hosts in"
            );
        }
        let none = Rollout {
            id: "x".into(),
            from: C.into(),
            percent: Percent::ZERO,
        };
        assert!(hosts.iter().all(|h| !none.includes(h)));
        let all = Rollout {
            percent: Percent::ALL,
            ..none
        };
        assert!(hosts.iter().all(|h| all.includes(h)));
    }

    /// Two rollout ids pick independent sets: the overlap of two 25% rollouts is close to
    /// 25% of 25%, not 25% (the same hosts first every time).
    #[test]
    fn ids_bucket_independently() {
        let hosts: Vec<String> = (0..10_000).map(|i| format!("edge-{i:05}")).collect();
        let quarter = |id: &str| Rollout {
            id: id.into(),
            from: C.into(),
            percent: Percent::from_hundredths(2500).unwrap(),
        };
        let (a, b) = (quarter("web-1"), quarter("web-2"));
        let both = hosts
            .iter()
            .filter(|h| a.includes(h) && b.includes(h))
            .count() as f64;
        let share = both / 100.0;
        assert!((share - 6.25).abs() <= 1.0, "overlap {share}%");
        // And the buckets of one host across ids are not correlated either.
        let same = hosts
            .iter()
            .filter(|h| bucket(h, "web-1") / 100 == bucket(h, "web-2") / 100)
            .count() as f64;
        assert!(
            (same / 100.0 - 1.0).abs() <= 0.5,
            "{same} hosts share a percentile"
        );
    }

    #[test]
    fn widening_keeps_those_in() {
        let hosts: Vec<String> = (0..2000).map(|i| format!("h{i}")).collect();
        let at = |p: u16| Rollout {
            id: "r".into(),
            from: C.into(),
            percent: Percent::from_hundredths(p).unwrap(),
        };
        for (lo, hi) in [
            (0, 1),
            (100, 1000),
            (1000, 2500),
            (2500, 10000),
            (1234, 1235),
        ] {
            for h in &hosts {
                if at(lo).includes(h) {
                    assert!(at(hi).includes(h), "{h} left when widening {lo} -> {hi}");
                }
            }
        }
    }
}
