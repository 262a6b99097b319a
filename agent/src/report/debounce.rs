//! A burst of changes becomes one message: publish once things have been quiet for a moment,
//! and never later than a bound after the first change (a loop that changes state every
//! pass still reports).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    max: Duration,
    /// The first and the last change since the last publish.
    pending: Option<(Instant, Instant)>,
}

impl Debounce {
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Debounce {
            quiet,
            max,
            pending: None,
        }
    }

    pub fn touch(&mut self, now: Instant) {
        self.pending = Some(match self.pending {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// When to publish, if something changed.
    pub fn due(&self) -> Option<Instant> {
        self.pending
            .map(|(first, last)| (last + self.quiet).min(first + self.max))
    }

    pub fn clear(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_after_the_last_change_bounded_by_the_first() {
        let q = Duration::from_millis(200);
        let mut d = Debounce::new(q, Duration::from_secs(1));
        assert_eq!(d.due(), None);
        let t0 = Instant::now();
        d.touch(t0);
        assert_eq!(d.due(), Some(t0 + q));
        d.touch(t0 + Duration::from_millis(150));
        assert_eq!(d.due(), Some(t0 + Duration::from_millis(350)));
        // A change every 100 ms for ever still publishes a second after the first.
        for i in 2..20 {
            d.touch(t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(d.due(), Some(t0 + Duration::from_secs(1)));
        d.clear();
        assert_eq!(d.due(), None);
    }
}
