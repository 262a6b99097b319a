//! `[images] max_download_rate`: one budget of bytes per second shared by every download of an
//! agent (all layers, all pulls), as a token bucket that readers pay after each read.
//!
//! Paying after the read (the bucket may go into debt, and the reader then sleeps it off)
//! keeps the limiter out of the read itself: no read is split, and the average over any
//! stretch longer than the burst is the rate. The burst is small (a tenth of a second's
//! worth, at least one read buffer), so the average holds over short windows too.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shared budget. Cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct RateLimit {
    inner: Arc<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes per second.
    rate: u64,
    /// The most tokens an idle bucket holds.
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens (bytes) available; negative: owed, to be slept off.
    tokens: f64,
    at: Instant,
}

/// How long a reader that took `n` bytes must wait, for a bucket of `rate` bytes/s that held
/// `tokens` after refilling (pure: the arithmetic of [`RateLimit::pay`]).
pub fn debt_wait(tokens: f64, n: u64, rate: u64) -> (f64, Duration) {
    let left = tokens - n as f64;
    if left >= 0.0 || rate == 0 {
        return (left, Duration::ZERO);
    }
    (left, Duration::from_secs_f64(-left / rate as f64))
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1);
        RateLimit {
            inner: Arc::new(Bucket {
                rate,
                burst: (rate as f64 / 10.0).max(16.0 * 1024.0),
                state: Mutex::new(State {
                    tokens: 0.0,
                    at: Instant::now(),
                }),
            }),
        }
    }

    pub fn rate(&self) -> u64 {
        self.inner.rate
    }

    /// Takes `n` bytes from the budget, sleeping while the budget is in debt.
    pub fn pay(&self, n: u64) {
        if n == 0 {
            return;
        }
        let wait = {
            let b = &self.inner;
            let mut st = b.state.lock().expect("rate limit");
            let now = Instant::now();
            let refill = now.duration_since(st.at).as_secs_f64() * b.rate as f64;
            st.at = now;
            let tokens = (st.tokens + refill).min(b.burst);
            let (left, wait) = debt_wait(tokens, n, b.rate);
            st.tokens = left;
            wait
        };
        // Sleeping outside the lock: other readers pay their own share meanwhile, and the
        // debt they add makes them wait behind this one.
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A reader whose bytes are paid for from a [`RateLimit`] (or not limited at all).
pub struct Throttled<R> {
    inner: R,
    limit: Option<RateLimit>,
}

impl<R> Throttled<R> {
    pub fn new(inner: R, limit: Option<RateLimit>) -> Self {
        Throttled { inner, limit }
    }
}

impl<R: Read> Read for Throttled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A limited reader reads small pieces, so one read never owes much more than the burst.
        let cap = match &self.limit {
            Some(l) => buf.len().min((l.rate() as usize / 20).max(4096)),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..cap])?;
        if let Some(l) = &self.limit {
            l.pay(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_slept_off_at_the_rate() {
        assert_eq!(debt_wait(100.0, 50, 10), (50.0, Duration::ZERO));
        let (left, wait) = debt_wait(0.0, 1000, 1000);
        assert_eq!(left, -1000.0);
        assert_eq!(wait, Duration::from_secs(1));
        let (_, wait) = debt_wait(-500.0, 500, 1000);
        assert_eq!(wait, Duration::from_secs(1));
    }

    #[test]
    fn readers_share_one_rate() {
        // 4 readers share 2 MiB/s: 1 MiB in all takes about half a second.
        let limit = RateLimit::new(2 << 20);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let l = limit.clone();
                s.spawn(move || {
                    let mut r = Throttled::new(io::repeat(7).take(256 << 10), Some(l));
                    io::copy(&mut r, &mut io::sink()).unwrap();
                });
            }
        });
        let took = start.elapsed().as_secs_f64();
        // The bucket starts empty, so every byte is paced: never faster than the rate (a busy
        // machine can only make it slower).
        assert!((0.45..5.0).contains(&took), "{took}");
    }

    #[test]
    fn unlimited_is_untouched() {
        let mut r = Throttled::new(io::repeat(1).take(8 << 20), None);
        let start = Instant::now();
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 8 << 20);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
