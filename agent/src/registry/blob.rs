//! A blob as one `Read` stream that survives its connection: a dropped, stalled or failed
//! transfer reconnects with an HTTP Range from the byte it had reached, with backoff.
//!
//! The reader checks lengths (a blob longer or shorter than its descriptor is an error); the
//! caller hashes what it reads.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use berth_spec::{Digest, ImageReference};

use super::client::{RegistryClient, blob_url, check_status, header};
use super::error::RegistryError;
use super::rate::Throttled;

/// The slowest a blob may arrive, averaged over each `stall` window: a server that trickles a
/// byte now and then (slow-loris) never trips the per-read timeout, so the pace is checked too.
pub const MIN_BYTES_PER_SEC: u64 = 1024;

/// Bytes that must arrive after a failure before the retry budget starts over: a flaky link
/// that keeps moving forward still finishes, a trickle that is cut every window does not.
const PROGRESS_RESETS_FAILURES: u64 = 1 << 20;

/// Observes reconnects (for logs and metrics).
pub type ReconnectHook<'h> = &'h (dyn Fn(&RegistryError, u32, Duration) + Sync);

pub struct BlobReader<'h> {
    client: RegistryClient,
    image: ImageReference,
    digest: Digest,
    size: u64,
    offset: u64,
    body: Option<Throttled<ureq::BodyReader<'static>>>,
    /// Failures since the last real progress ([`PROGRESS_RESETS_FAILURES`] bytes): progress
    /// resets the retry budget, so a flaky link that always moves forward still finishes.
    failures: u32,
    since_failure: u64,
    /// The current pace window: when it started and the bytes it has seen.
    window: (Instant, u64),
    /// Connections opened (the first one included).
    connections: u32,
    on_reconnect: Option<ReconnectHook<'h>>,
}

impl std::fmt::Debug for BlobReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl<'h> BlobReader<'h> {
    /// A reader for `digest` (of `size` bytes) starting at byte `offset`. Nothing is sent
    /// until the first read.
    pub fn new(
        client: &RegistryClient,
        image: &ImageReference,
        digest: &Digest,
        size: u64,
        offset: u64,
    ) -> Self {
        BlobReader {
            client: client.clone(),
            image: image.clone(),
            digest: digest.clone(),
            size,
            offset,
            body: None,
            failures: 0,
            since_failure: 0,
            window: (Instant::now(), 0),
            connections: 0,
            on_reconnect: None,
        }
    }

    pub fn on_reconnect(mut self, hook: ReconnectHook<'h>) -> Self {
        self.on_reconnect = Some(hook);
        self
    }

    /// Bytes delivered so far, counting the starting offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn connections(&self) -> u32 {
        self.connections
    }

    fn what(&self) -> String {
        format!(
            "blob {} of {}/{}",
            self.digest, self.image.registry, self.image.repository
        )
    }

    /// Records a failure; sleeps before the next try, or gives up.
    fn failed(&mut self, e: RegistryError) -> io::Result<()> {
        self.body = None;
        self.since_failure = 0;
        let policy = self.client.settings().retry;
        if !e.is_transient() || self.failures + 1 >= policy.attempts {
            return Err(io::Error::other(e));
        }
        let wait = policy.delay_now(self.failures, e.retry_after());
        self.failures += 1;
        if let Some(h) = &self.on_reconnect {
            h(&e, self.failures, wait);
        }
        tracing::info!(blob = %self.digest, offset = self.offset, error = %e, ?wait, "blob transfer interrupted; resuming");
        std::thread::sleep(wait);
        Ok(())
    }

    fn open(&mut self) -> Result<ureq::BodyReader<'static>, RegistryError> {
        let eps = self.client.endpoints(&self.image.registry);
        let what = self.what();
        let offset = self.offset;
        let size = self.size;
        self.connections += 1;
        self.client.first_ok(&eps, |ep| {
            let url = blob_url(ep, &self.image, &self.digest);
            let range = format!("bytes={offset}-");
            let headers: Vec<(&str, &str)> = if offset > 0 {
                vec![("Range", range.as_str())]
            } else {
                vec![]
            };
            let resp = self
                .client
                .get(ep, &self.image.repository, &url, &headers)?;
            if resp.status().as_u16() == 416 {
                // What was delivered is all there is: the blob is shorter than its descriptor.
                return Err(RegistryError::SizeMismatch {
                    what: what.clone(),
                    expected: size,
                    actual: offset.to_string(),
                });
            }
            let resp = check_status(resp, ep, &self.image.repository, &url, &what)?;
            let status = resp.status().as_u16();
            let length = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok());
            let mut skip = 0;
            if status == 206 {
                let start = header(&resp, "content-range")
                    .and_then(|r| parse_content_range_start(&r))
                    .ok_or_else(|| RegistryError::Protocol {
                        what: what.clone(),
                        reason: "206 reply without a usable Content-Range".into(),
                    })?;
                if start != offset {
                    return Err(RegistryError::Protocol {
                        what: what.clone(),
                        reason: format!("asked for bytes from {offset}, got from {start}"),
                    });
                }
            } else {
                // The server ignored the Range: skip what we already have.
                skip = offset;
                if let Some(len) = length
                    && len != size
                {
                    return Err(RegistryError::SizeMismatch {
                        what: what.clone(),
                        expected: size,
                        actual: len.to_string(),
                    });
                }
            }
            let mut body = resp.into_body().into_reader();
            if skip > 0 {
                // Bytes the network carries are paid for, skipped or not.
                let mut paid = Throttled::new(&mut body, self.client.rate_limit());
                let copied = io::copy(&mut (&mut paid).take(skip), &mut io::sink())
                    .map_err(|e| RegistryError::io(&url, &e))?;
                if copied != skip {
                    return Err(RegistryError::io(
                        &url,
                        &io::Error::from(io::ErrorKind::UnexpectedEof),
                    ));
                }
            }
            Ok(body)
        })
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.body.is_none() && self.offset >= self.size {
                // A resumed download that had every byte already (its pull was cut short
                // between the last byte and the commit): a Range from the end would get a 416.
                return Ok(0);
            }
            if self.body.is_none() {
                match self.open() {
                    Ok(b) => {
                        self.body = Some(Throttled::new(b, self.client.rate_limit()));
                        self.window = (Instant::now(), 0);
                    }
                    Err(e) => {
                        self.failed(e)?;
                        continue;
                    }
                }
            }
            let body = self.body.as_mut().expect("opened above");
            match body.read(buf) {
                Ok(0) if self.offset >= self.size => return Ok(0),
                Ok(0) => {
                    let e = RegistryError::Transport {
                        url: self.what(),
                        reason: format!(
                            "connection closed after {} of {} bytes",
                            self.offset, self.size
                        ),
                        transient: true,
                    };
                    self.failed(e)?;
                }
                Ok(n) => {
                    if self.offset + n as u64 > self.size {
                        return Err(io::Error::other(RegistryError::SizeMismatch {
                            what: self.what(),
                            expected: self.size,
                            actual: format!("more than {}", self.size),
                        }));
                    }
                    self.offset += n as u64;
                    self.since_failure += n as u64;
                    if self.since_failure >= PROGRESS_RESETS_FAILURES {
                        self.failures = 0;
                    }
                    if let Some(e) = self.pace(n as u64) {
                        // Keep the bytes: the next read reconnects from here.
                        self.failed(e)?;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = RegistryError::io(&self.what(), &e);
                    self.failed(e)?;
                }
            }
        }
    }
}

impl BlobReader<'_> {
    /// Counts `n` bytes into the pace window; an error when the window closed too slow.
    fn pace(&mut self, n: u64) -> Option<RegistryError> {
        let stall = self.client.settings().timeouts.stall;
        self.window.1 += n;
        let elapsed = self.window.0.elapsed();
        if elapsed < stall {
            return None;
        }
        let (_, bytes) = std::mem::replace(&mut self.window, (Instant::now(), 0));
        let wanted = MIN_BYTES_PER_SEC.saturating_mul(stall.as_secs().max(1));
        (bytes < wanted && self.offset < self.size).then(|| RegistryError::Transport {
            url: self.what(),
            reason: format!(
                "too slow: {bytes} bytes in {:.0?} (at least {MIN_BYTES_PER_SEC} bytes/s expected)",
                elapsed
            ),
            transient: true,
        })
    }
}

/// `bytes 100-199/200` -> 100.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, _) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// Pulls the registry error back out of an `io::Error` made by [`BlobReader`].
pub fn registry_error(e: &io::Error) -> Option<&RegistryError> {
    e.get_ref()?.downcast_ref::<RegistryError>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
        assert_eq!(parse_content_range_start("bytes x-1/2"), None);
    }
}
