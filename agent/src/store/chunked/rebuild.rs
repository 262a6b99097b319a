//! The layer's tar stream rebuilt from a partial pull: header frames and fetched contents
//! decompressed from the scratch file (the fetched ranges, written at their blob offsets),
//! reused contents read from files in the store; every content is checked against its TOC
//! digest and size as it passes (the caller checks the whole stream against the diff id).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use berth_spec::Digest;
use sha2::{Digest as _, Sha256};

use super::toc::{FileRange, Segment, Source};

/// Opens the store's copy of a file's content.
pub type OpenLocal<'a> = &'a dyn Fn(&FileRange) -> io::Result<File>;

/// `[pos, end)` of a file, read by offset (every segment shares the scratch file).
struct Region<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A file's content, checked as it passes: exactly `size` bytes whose sha256 is `digest`.
struct Checked<R> {
    inner: R,
    hash: Sha256,
    left: u64,
    digest: Digest,
    done: bool,
}

impl<R: Read> Checked<R> {
    fn new(inner: R, f: &FileRange) -> Self {
        Checked {
            inner,
            hash: Sha256::new(),
            left: f.size,
            digest: f.digest.clone(),
            done: false,
        }
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            if !self.done {
                self.done = true;
                let mut extra = [0u8; 1];
                if self.inner.read(&mut extra)? != 0 {
                    return Err(io::Error::other(format!(
                        "content of {} is longer than its TOC entry",
                        self.digest
                    )));
                }
                let got = Digest::from_sha256(self.hash.finalize_reset().into());
                if got != self.digest {
                    return Err(io::Error::other(format!(
                        "content digest {got}, the TOC says {}",
                        self.digest
                    )));
                }
            }
            return Ok(0);
        }
        let cap = self.left.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("content of {} is shorter than its TOC entry", self.digest),
            ));
        }
        self.hash.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// The rebuilt tar stream.
pub struct Rebuild<'a> {
    segments: std::vec::IntoIter<Segment>,
    files: &'a [FileRange],
    scratch: &'a File,
    open_local: OpenLocal<'a>,
    current: Option<Box<dyn Read + 'a>>,
}

impl<'a> Rebuild<'a> {
    pub fn new(
        segments: Vec<Segment>,
        files: &'a [FileRange],
        scratch: &'a File,
        open_local: OpenLocal<'a>,
    ) -> Self {
        Rebuild {
            segments: segments.into_iter(),
            files,
            scratch,
            open_local,
            current: None,
        }
    }

    fn frames(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + 'a>> {
        let region = Region {
            file: self.scratch,
            pos: start,
            end,
        };
        Ok(Box::new(zstd::stream::read::Decoder::new(region)?))
    }

    fn open(&self, seg: Segment) -> io::Result<Box<dyn Read + 'a>> {
        match seg {
            Segment::Frames { start, end } => self.frames(start, end),
            Segment::File { index, from } => {
                let f = &self.files[index];
                let inner = match from {
                    Source::Fetched => self.frames(f.start, f.end)?,
                    Source::Store => Box::new((self.open_local)(f)?),
                };
                Ok(Box::new(Checked::new(inner, f)))
            }
        }
    }
}

impl Read for Rebuild<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.current.is_none() {
                let Some(seg) = self.segments.next() else {
                    return Ok(0);
                };
                self.current = Some(self.open(seg)?);
            }
            let n = self.current.as_mut().expect("opened above").read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunked::toc::{TocLocation, plan};

    fn sha(b: &[u8]) -> Digest {
        Digest::of(b)
    }

    /// A zstd:chunked-shaped blob: a header frame before each content frame, a trailer frame,
    /// then 8 bytes standing for the skippable TOC frame's header.
    fn blob(parts: &[(&[u8], &[u8])], trailer: &[u8]) -> (Vec<u8>, Vec<FileRange>, TocLocation) {
        let mut out = Vec::new();
        let mut files = Vec::new();
        for (hdr, content) in parts {
            out.extend(zstd::encode_all(*hdr, 1).unwrap());
            let start = out.len() as u64;
            out.extend(zstd::encode_all(*content, 1).unwrap());
            files.push(FileRange {
                start,
                end: out.len() as u64,
                size: content.len() as u64,
                digest: sha(content),
            });
        }
        out.extend(zstd::encode_all(trailer, 1).unwrap());
        out.extend([0u8; 8]);
        let toc = TocLocation {
            offset: out.len() as u64,
            length: 0,
            uncompressed: 0,
            digest: sha(b""),
        };
        (out, files, toc)
    }

    fn scratch(bytes: &[u8], keep: &[(u64, u64)]) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(bytes.len() as u64).unwrap();
        for (s, e) in keep {
            f.write_all_at(&bytes[*s as usize..*e as usize], *s)
                .unwrap();
        }
        f
    }

    #[test]
    fn rebuilds_the_stream_from_fetched_and_local_parts() {
        let parts: [(&[u8], &[u8]); 3] = [
            (&b"H1"[..], &b"alpha"[..]),
            (&b"H2"[..], &b"beta beta"[..]),
            (&b"H3"[..], &b"g"[..]),
        ];
        let (bytes, files, toc) = blob(&parts, b"END");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("beta"), b"beta beta").unwrap();
        let p = plan(&files, &toc, |f| f.size == 9, 0);
        assert_eq!(p.reused_files, 1);
        let sc = scratch(&bytes, &p.fetch);
        let open = |_: &FileRange| File::open(dir.path().join("beta"));
        let mut out = Vec::new();
        Rebuild::new(p.segments, &files, &sc, &open)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"H1alphaH2beta betaH3gEND");
    }

    #[test]
    fn a_local_file_that_differs_is_an_error() {
        let parts: [(&[u8], &[u8]); 1] = [(&b"H"[..], &b"right"[..])];
        let (bytes, files, toc) = blob(&parts, b"");
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("wrong", &b"wrong"[..]),
            ("long", &b"rightx"[..]),
            ("short", &b"righ"[..]),
        ] {
            std::fs::write(dir.path().join(name), content).unwrap();
            let p = plan(&files, &toc, |_| true, 0);
            let sc = scratch(&bytes, &p.fetch);
            let open = |_: &FileRange| File::open(dir.path().join(name));
            let mut out = Vec::new();
            let r = Rebuild::new(p.segments, &files, &sc, &open).read_to_end(&mut out);
            assert!(r.is_err(), "{name}");
        }
    }
}
