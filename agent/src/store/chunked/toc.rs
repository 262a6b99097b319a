//! What a zstd:chunked layer says about itself, and which bytes of it a partial pull needs.
//! Pure: no I/O.
//!
//! A zstd:chunked blob (containers/storage) is a plain zstd stream of the layer's tar, cut into
//! frames so that every regular file's content starts a frame of its own: tar headers (and
//! padding) sit in the frames between file contents. After the last data frame a skippable
//! frame holds the table of contents (TOC): per regular file its sha256 and the compressed
//! range `[offset, endOffset)` of its content. The manifest annotates the layer with where the
//! TOC is and its digest, so the TOC is as trustworthy as the manifest.
//!
//! Decompressing the frames in order gives the whole tar back, so a partial pull fetches the
//! header frames and the contents it lacks, takes the other contents from files it already
//! holds, and rebuilds the exact tar stream: its sha256 is checked against the config's diff id
//! as for a full pull. The TOC's names are never used: paths come from the verified tar.

use std::collections::BTreeMap;

use berth_spec::Digest;
use serde::Deserialize;

/// Annotations naming the TOC's position (`offset:length:uncompressed length:type`), new
/// containers/storage spelling first.
const POSITION_KEYS: [&str; 2] = [
    "io.github.containers.zstd-chunked.manifest-position",
    "io.containers.zstd-chunked.manifest-position",
];
/// Annotations with the digest of the TOC's compressed bytes.
const CHECKSUM_KEYS: [&str; 2] = [
    "io.github.containers.zstd-chunked.manifest-checksum",
    "io.containers.zstd-chunked.manifest-checksum",
];
/// The TOC's type in the position annotation: zstd-compressed JSON.
const TOC_TYPE_ZSTD: u64 = 1;
/// A skippable zstd frame's header (magic and length) before the TOC.
pub const SKIPPABLE_HEADER: u64 = 8;
/// The largest TOC berth reads (compressed, and uncompressed).
pub const MAX_TOC: u64 = 64 << 20;

/// Where a layer's TOC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocLocation {
    pub offset: u64,
    pub length: u64,
    pub uncompressed: u64,
    /// The digest of the compressed TOC bytes.
    pub digest: Digest,
}

/// The TOC's location from a layer's annotations: `None` for a layer that is not zstd:chunked,
/// an error for one whose annotations are unusable (it is then pulled whole).
pub fn locate(
    annotations: &BTreeMap<String, String>,
    blob_size: u64,
) -> Option<Result<TocLocation, String>> {
    let pos = POSITION_KEYS.iter().find_map(|k| annotations.get(*k))?;
    Some((|| -> Result<TocLocation, String> {
        let digest = CHECKSUM_KEYS
            .iter()
            .find_map(|k| annotations.get(*k))
            .ok_or("no manifest-checksum annotation")?;
        let digest = Digest::parse(digest)?;
        let parts: Vec<u64> = pos
            .split(':')
            .map(|p| p.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("invalid manifest-position {pos:?}"))?;
        let [offset, length, uncompressed, kind] = parts[..] else {
            return Err(format!("invalid manifest-position {pos:?}"));
        };
        if kind != TOC_TYPE_ZSTD {
            return Err(format!("TOC type {kind} is not zstd"));
        }
        if offset < SKIPPABLE_HEADER || offset.checked_add(length).is_none_or(|end| end > blob_size)
        {
            return Err(format!(
                "TOC at {offset}+{length} is outside the {blob_size}-byte blob"
            ));
        }
        if length > MAX_TOC || uncompressed > MAX_TOC {
            return Err(format!(
                "TOC of {uncompressed} bytes is over the {MAX_TOC}-byte limit"
            ));
        }
        Ok(TocLocation {
            offset,
            length,
            uncompressed,
            digest,
        })
    })())
}

#[derive(Deserialize)]
struct RawToc {
    version: u32,
    #[serde(default)]
    entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    offset: u64,
    #[serde(default, rename = "endOffset")]
    end_offset: u64,
}

/// A regular file's content in the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRange {
    /// Compressed range `[start, end)`: whole zstd frames.
    pub start: u64,
    pub end: u64,
    /// Uncompressed bytes.
    pub size: u64,
    /// The digest of the content.
    pub digest: Digest,
}

/// The regular files with content, in blob order, checked to be well-formed: whole frames,
/// ascending, not overlapping, all before the TOC.
pub fn parse(json: &[u8], toc: &TocLocation) -> Result<Vec<FileRange>, String> {
    let raw: RawToc = serde_json::from_slice(json).map_err(|e| format!("TOC: {e}"))?;
    if raw.version != 1 {
        return Err(format!("TOC version {} is not 1", raw.version));
    }
    let data_end = toc.offset - SKIPPABLE_HEADER;
    let mut files: Vec<FileRange> = Vec::new();
    for e in raw.entries {
        if e.kind != "reg" || e.size == 0 {
            continue;
        }
        let digest = Digest::parse(&e.digest).map_err(|r| format!("TOC entry digest: {r}"))?;
        if e.overlaps(files.last()) {
            return Err(format!(
                "TOC entry at {} overlaps or precedes the one before",
                e.offset
            ));
        }
        if e.offset >= e.end_offset || e.end_offset > data_end {
            return Err(format!(
                "TOC entry range {}-{} is not inside the data frames (0-{data_end})",
                e.offset, e.end_offset
            ));
        }
        files.push(FileRange {
            start: e.offset,
            end: e.end_offset,
            size: e.size,
            digest,
        });
    }
    Ok(files)
}

impl RawEntry {
    /// Whether this entry starts before the previous file's content ends.
    fn overlaps(&self, prev: Option<&FileRange>) -> bool {
        prev.is_some_and(|p| self.offset < p.end)
    }
}

/// One piece of the rebuilt tar stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Frames of tar headers and padding, `[start, end)` of the blob (always fetched).
    Frames { start: u64, end: u64 },
    /// The content of `files[i]`, from the blob (fetched) or from a file in the store.
    File { index: usize, from: Source },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Fetched,
    Store,
}

/// What a partial pull does: the segments to rebuild from, and the byte ranges to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub segments: Vec<Segment>,
    /// `[start, end)` ranges, ascending and disjoint.
    pub fetch: Vec<(u64, u64)>,
    /// Content bytes (uncompressed) taken from the store.
    pub reused: u64,
    pub reused_files: usize,
}

impl Plan {
    pub fn fetch_bytes(&self) -> u64 {
        self.fetch.iter().map(|(s, e)| e - s).sum()
    }
}

/// Plans the rebuild: every header frame is fetched; a file's content is fetched unless
/// `have` says the store holds it. Ranges closer than `merge_gap` are fetched as one (a range
/// costs a part header; a tiny gap costs less than that).
pub fn plan(
    files: &[FileRange],
    toc: &TocLocation,
    have: impl Fn(&FileRange) -> bool,
    merge_gap: u64,
) -> Plan {
    let data_end = toc.offset - SKIPPABLE_HEADER;
    let mut segments = Vec::new();
    let mut want: Vec<(u64, u64)> = Vec::new();
    let (mut reused, mut reused_files) = (0, 0);
    let mut pos = 0;
    for (index, f) in files.iter().enumerate() {
        if f.start > pos {
            segments.push(Segment::Frames {
                start: pos,
                end: f.start,
            });
            want.push((pos, f.start));
        }
        let from = if have(f) {
            reused += f.size;
            reused_files += 1;
            Source::Store
        } else {
            want.push((f.start, f.end));
            Source::Fetched
        };
        segments.push(Segment::File { index, from });
        pos = f.end;
    }
    if data_end > pos {
        segments.push(Segment::Frames {
            start: pos,
            end: data_end,
        });
        want.push((pos, data_end));
    }
    Plan {
        segments,
        fetch: merge(want, merge_gap),
        reused,
        reused_files,
    }
}

/// Sorted, disjoint ranges; neighbours less than `gap` apart become one.
pub fn merge(mut ranges: Vec<(u64, u64)>, gap: u64) -> Vec<(u64, u64)> {
    ranges.retain(|(s, e)| e > s);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(gap) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ann(pos: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (POSITION_KEYS[1].to_string(), pos.to_string()),
            (
                CHECKSUM_KEYS[1].to_string(),
                format!("sha256:{}", "a".repeat(64)),
            ),
        ])
    }

    const D: &str = "sha256:98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4";

    #[test]
    fn locates_the_toc() {
        assert_eq!(locate(&BTreeMap::new(), 10), None);
        let l = locate(&ann("4060776:5733:20606:1"), 4066557)
            .unwrap()
            .unwrap();
        assert_eq!((l.offset, l.length, l.uncompressed), (4060776, 5733, 20606));
        for bad in ["1:2:3", "x:1:1:1", "100:10:10:2", "4:2:2:1", "100:10:10:1"] {
            assert!(locate(&ann(bad), 105).unwrap().is_err(), "{bad}");
        }
        let mut no_sum = ann("100:1:1:1");
        no_sum.remove(CHECKSUM_KEYS[1]);
        assert!(locate(&no_sum, 200).unwrap().is_err());
    }

    fn toc() -> TocLocation {
        TocLocation {
            offset: 1008,
            length: 10,
            uncompressed: 10,
            digest: Digest::parse(D).unwrap(),
        }
    }

    #[test]
    fn parses_and_checks_entries() {
        let j = format!(
            r#"{{"version":1,"entries":[{{"type":"dir","name":"./"}},
            {{"type":"reg","name":"a","size":3,"digest":"{D}","offset":100,"endOffset":120}},
            {{"type":"reg","name":"empty","size":0}},
            {{"type":"chunk","name":"a","offset":110}},
            {{"type":"reg","name":"b","size":9,"digest":"{D}","offset":130,"endOffset":990}}]}}"#
        );
        let f = parse(j.as_bytes(), &toc()).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[1].start, f[1].end, f[1].size), (130, 990, 9));
        let overlap = j.replace("\"offset\":130", "\"offset\":119");
        assert!(parse(overlap.as_bytes(), &toc()).is_err());
        let past = j.replace("990", "1001");
        assert!(
            parse(past.as_bytes(), &toc())
                .unwrap_err()
                .contains("inside")
        );
        let bad = j.replace(D, "sha256:x");
        assert!(parse(bad.as_bytes(), &toc()).is_err());
        assert!(parse(br#"{"version":2}"#, &toc()).is_err());
    }

    #[test]
    fn plans_headers_and_missing_files() {
        let f = |start, end, size| FileRange {
            start,
            end,
            size,
            digest: Digest::parse(D).unwrap(),
        };
        let files = [f(100, 200, 50), f(250, 600, 400), f(600, 700, 90)];
        let p = plan(&files, &toc(), |x| x.start == 250, 0);
        assert_eq!(
            p.segments,
            vec![
                Segment::Frames { start: 0, end: 100 },
                Segment::File {
                    index: 0,
                    from: Source::Fetched
                },
                Segment::Frames {
                    start: 200,
                    end: 250
                },
                Segment::File {
                    index: 1,
                    from: Source::Store
                },
                Segment::File {
                    index: 2,
                    from: Source::Fetched
                },
                Segment::Frames {
                    start: 700,
                    end: 1000
                },
            ]
        );
        assert_eq!(p.fetch, vec![(0, 250), (600, 1000)]);
        assert_eq!((p.reused, p.reused_files), (400, 1));
        assert_eq!(p.fetch_bytes(), 650);
    }

    proptest! {
        /// Every byte of the data frames is in exactly one segment, in order; a byte is fetched
        /// unless it belongs to a reused file; merged ranges are disjoint and ascending.
        #[test]
        fn plans_cover_the_blob(
            sizes in proptest::collection::vec((0u64..50, 1u64..80, any::<bool>()), 0..20),
            tail in 0u64..40,
            gap in 0u64..30,
        ) {
            let mut files = Vec::new();
            let mut pos = 0;
            for (hdr, len, _) in &sizes {
                let start = pos + hdr;
                files.push(FileRange { start, end: start + len, size: *len, digest: Digest::parse(D).unwrap() });
                pos = start + len;
            }
            let t = TocLocation { offset: pos + tail + SKIPPABLE_HEADER, length: 1, uncompressed: 1, digest: Digest::parse(D).unwrap() };
            let reuse: Vec<bool> = sizes.iter().map(|s| s.2).collect();
            let p = plan(&files, &t, |f| reuse[files.iter().position(|x| x == f).unwrap()], gap);
            let mut at = 0;
            for s in &p.segments {
                let (a, b, fetched) = match s {
                    Segment::Frames { start, end } => (*start, *end, true),
                    Segment::File { index, from } => (files[*index].start, files[*index].end, *from == Source::Fetched),
                };
                prop_assert_eq!(a, at);
                prop_assert!(b > a);
                if fetched {
                    prop_assert!(p.fetch.iter().any(|(s, e)| *s <= a && b <= *e));
                }
                at = b;
            }
            prop_assert_eq!(at, pos + tail);
            for w in p.fetch.windows(2) {
                prop_assert!(w[0].1 + gap < w[1].0);
            }
            let reused: u64 = files.iter().zip(&reuse).filter(|(_, r)| **r).map(|(f, _)| f.size).sum();
            prop_assert_eq!(p.reused, reused);
        }
    }
}
