//! Byte ranges of a blob, in as few requests as the registry allows: up to
//! [`MAX_RANGES_PER_REQUEST`] ranges in one request, answered as `multipart/byteranges` (Go's
//! `http.ServeContent`, which distribution serves blobs with, does this); one range per request
//! where a server answers a multi-range request with the whole blob; an error where it ignores
//! ranges altogether, so that the caller pulls the blob whole instead. Every body is paid for
//! from the download budget (`max_download_rate`).
//!
//! By hand because no maintained crate parses `multipart/byteranges` responses for a blocking
//! client (the multipart crates parse `form-data` requests).

use std::io::{self, BufRead, BufReader, Read};

use berth_spec::{Digest, ImageReference};

use super::client::{RegistryClient, RetryHook, blob_url, check_status, header};
use super::error::RegistryError;
use super::rate::Throttled;

/// Ranges asked for in one request (the `Range` header stays a few KiB).
pub const MAX_RANGES_PER_REQUEST: usize = 128;
/// The longest header line of a multipart part berth reads.
const MAX_LINE: u64 = 4096;

/// What fetching the ranges took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeReport {
    pub requests: u32,
    /// Body bytes received (part headers excluded).
    pub bytes: u64,
}

/// Where fetched bytes go: `(offset in the blob, bytes)`.
pub type Sink<'s> = &'s mut dyn FnMut(u64, &[u8]) -> io::Result<()>;

enum Answer {
    /// Every range of the batch arrived.
    Done(u64),
    /// The server sent the whole blob instead (a 200): nothing was read.
    Whole,
}

impl RegistryClient {
    /// Fetches `ranges` (`[start, end)`, ascending, disjoint) of blob `digest` into `sink`.
    pub fn fetch_ranges(
        &self,
        image: &ImageReference,
        digest: &Digest,
        ranges: &[(u64, u64)],
        sink: Sink<'_>,
        on_retry: RetryHook<'_>,
    ) -> Result<RangeReport, RegistryError> {
        let mut report = RangeReport::default();
        let mut per_request = MAX_RANGES_PER_REQUEST;
        let mut rest = ranges;
        while !rest.is_empty() {
            let batch = &rest[..rest.len().min(per_request)];
            report.requests += 1;
            match self.fetch_batch(image, digest, batch, &mut *sink, on_retry)? {
                Answer::Done(n) => {
                    report.bytes += n;
                    rest = &rest[batch.len()..];
                }
                Answer::Whole if batch.len() > 1 => {
                    tracing::debug!(blob = %digest, "the registry answers multi-range requests whole; one range per request");
                    per_request = 1;
                }
                Answer::Whole => {
                    return Err(RegistryError::Protocol {
                        what: format!("blob {digest}"),
                        reason: "the registry does not serve byte ranges".into(),
                    });
                }
            }
        }
        Ok(report)
    }

    fn fetch_batch(
        &self,
        image: &ImageReference,
        digest: &Digest,
        batch: &[(u64, u64)],
        sink: Sink<'_>,
        on_retry: RetryHook<'_>,
    ) -> Result<Answer, RegistryError> {
        let what = format!("blob {digest} of {}/{}", image.registry, image.repository);
        let range = range_header(batch);
        let wanted: u64 = batch.iter().map(|(s, e)| e - s).sum();
        let eps = self.endpoints(&image.registry);
        self.retrying(on_retry, || {
            self.first_ok(&eps, |ep| {
                let url = blob_url(ep, image, digest);
                let resp = self.get(ep, &image.repository, &url, &[("Range", &range)])?;
                let resp = check_status(resp, ep, &image.repository, &url, &what)?;
                if resp.status().as_u16() != 206 {
                    return Ok(Answer::Whole);
                }
                let content_type = header(&resp, "content-type").unwrap_or_default();
                let single = header(&resp, "content-range");
                let body = Throttled::new(resp.into_body().into_reader(), self.rate_limit());
                let mut body = BufReader::with_capacity(64 << 10, body);
                let protocol = |reason: String| RegistryError::Protocol {
                    what: what.clone(),
                    reason,
                };
                let parts =
                    match boundary(&content_type) {
                        Some(b) => read_multipart(&mut body, &b, wanted, &mut *sink),
                        None => {
                            let (s, e) =
                                single.as_deref().and_then(parse_content_range).ok_or_else(
                                    || protocol("206 reply without a usable Content-Range".into()),
                                )?;
                            if e - s > wanted {
                                return Err(protocol(format!(
                                    "{} bytes sent for {wanted} asked",
                                    e - s
                                )));
                            }
                            copy_part(&mut body, s, e - s, &mut *sink).map(|()| vec![(s, e)])
                        }
                    }
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::InvalidData => protocol(e.to_string()),
                        _ => RegistryError::io(&url, &e),
                    })?;
                if let Some((s, e)) = batch
                    .iter()
                    .find(|(s, e)| !parts.iter().any(|(ps, pe)| ps <= s && e <= pe))
                {
                    return Err(protocol(format!(
                        "bytes {s}-{e} were asked for and not sent"
                    )));
                }
                Ok(Answer::Done(parts.iter().map(|(s, e)| e - s).sum()))
            })
        })
    }
}

/// `bytes=0-99,200-299` for `[0,100)` and `[200,300)`.
pub fn range_header(ranges: &[(u64, u64)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|(s, e)| format!("{s}-{}", e - 1))
        .collect();
    format!("bytes={}", parts.join(","))
}

/// The boundary of a `multipart/byteranges` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// `bytes 100-199/200` -> `[100, 200)`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, _) = rest.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    let (s, e): (u64, u64) = (s.trim().parse().ok()?, e.trim().parse().ok()?);
    (e >= s).then_some((s, e.checked_add(1)?))
}

fn bad(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(bad("multipart line too long or cut"));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| bad("multipart header is not UTF-8"))
}

fn copy_part<R: Read>(r: &mut R, start: u64, len: u64, sink: Sink<'_>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        sink(start + done, &buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Reads a `multipart/byteranges` body into `sink`, at most `limit` content bytes; returns
/// the ranges it held.
pub fn read_multipart<R: BufRead>(
    r: &mut R,
    boundary: &str,
    limit: u64,
    sink: Sink<'_>,
) -> io::Result<Vec<(u64, u64)>> {
    let delimiter = format!("--{boundary}");
    let end = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut total = 0u64;
    loop {
        let line = read_line(r)?.ok_or_else(|| bad("multipart body ends without its end line"))?;
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if line == end {
            return Ok(parts);
        }
        if line != delimiter {
            return Err(bad(format!("unexpected multipart line {line:?}")));
        }
        let mut range = None;
        loop {
            let h = read_line(r)?.ok_or_else(|| bad("multipart part without a body"))?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-range")
            {
                range = parse_content_range(v);
            }
        }
        let (s, e) = range.ok_or_else(|| bad("multipart part without a usable Content-Range"))?;
        total += e - s;
        if total > limit {
            return Err(bad(format!("more than the {limit} bytes asked for")));
        }
        copy_part(r, s, e - s, sink)?;
        parts.push((s, e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(range_header(&[(0, 100), (200, 201)]), "bytes=0-99,200-200");
        assert_eq!(
            boundary("multipart/byteranges; boundary=3d6b6a416f9b5"),
            Some("3d6b6a416f9b5".into())
        );
        assert_eq!(
            boundary("multipart/byteranges;boundary=\"a b\""),
            Some("a b".into())
        );
        assert_eq!(boundary("application/octet-stream"), None);
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(parse_content_range("bytes 5-4/200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    /// The shape Go's `http.ServeContent` sends.
    fn go_body(parts: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (s, data)) in parts.iter().enumerate() {
            if i > 0 {
                out.extend(b"\r\n");
            }
            out.extend(
                format!(
                    "--XYZ\r\nContent-Range: bytes {s}-{}/1000\r\nContent-Type: application/octet-stream\r\n\r\n",
                    s + data.len() as u64 - 1
                )
                .as_bytes(),
            );
            out.extend(*data);
        }
        out.extend(b"\r\n--XYZ--\r\n");
        out
    }

    #[test]
    fn reads_parts() {
        let body = go_body(&[(0, b"hello"), (100, b"\r\n--XYZ\r\nnot a delimiter")]);
        let mut got = Vec::new();
        let parts = read_multipart(&mut &body[..], "XYZ", 1000, &mut |o, b| {
            got.push((o, b.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(parts, vec![(0, 5), (100, 124)]);
        let joined: Vec<u8> = got
            .iter()
            .filter(|g| g.0 >= 100)
            .flat_map(|g| g.1.clone())
            .collect();
        assert_eq!(joined, b"\r\n--XYZ\r\nnot a delimiter");
    }

    #[test]
    fn refuses_bad_bodies() {
        let mut ok = |_: u64, _: &[u8]| -> io::Result<()> { Ok(()) };
        let body = go_body(&[(0, b"hello")]);
        assert!(
            read_multipart(&mut &body[..], "XYZ", 4, &mut ok).is_err(),
            "over the limit"
        );
        let cut = &body[..body.len() - 9];
        assert!(
            read_multipart(&mut &cut[..], "XYZ", 100, &mut ok).is_err(),
            "cut"
        );
        let no_range = b"--XYZ\r\nContent-Type: x\r\n\r\nhello\r\n--XYZ--\r\n";
        assert!(read_multipart(&mut &no_range[..], "XYZ", 100, &mut ok).is_err());
        let long = vec![b'a'; 10_000];
        assert!(read_multipart(&mut &long[..], "XYZ", 100, &mut ok).is_err());
    }
}
