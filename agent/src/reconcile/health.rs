//! Health checks as a pure state machine: results in, state out, with the time passed in.
//!
//! Docker's semantics: `starting` until the first success; a failure during `start_period`
//! does not count; `retries` consecutive failures after it make the container `unhealthy`; one
//! success makes it `healthy` again.

use std::time::Duration;

use berth_spec::ContainerSpec;
use berth_spec::model::HealthCheck;

use super::model::{HealthState, Millis};

/// The check that applies: the spec's, else the image's, unless the spec disables it.
pub fn effective(spec: &ContainerSpec, image_health: Option<&HealthCheck>) -> Option<HealthCheck> {
    if spec.extra.health.disable {
        return None;
    }
    spec.extra
        .health
        .check
        .clone()
        .or_else(|| image_health.cloned())
}

/// One container's health, as the checks so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    pub state: HealthState,
    /// Consecutive failures counted (outside the start period).
    pub failures: u32,
    /// When the last check finished.
    pub last: Option<Millis>,
    /// The last check's output, for `berth status`.
    pub output: String,
}

/// One run of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    pub result: CheckResult,
    /// What it printed, or why it failed (for `berth status` and the event log).
    pub output: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Passed,
    Failed,
}

impl CheckRun {
    pub fn passed(output: String) -> Self {
        CheckRun {
            result: CheckResult::Passed,
            output,
        }
    }
    pub fn failed(output: String) -> Self {
        CheckRun {
            result: CheckResult::Failed,
            output,
        }
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            state: HealthState::Starting,
            failures: 0,
            last: None,
            output: String::new(),
        }
    }

    /// Folds in one result; returns the new state if it changed.
    pub fn record(
        &mut self,
        run: CheckRun,
        started_at: Millis,
        now: Millis,
        check: &HealthCheck,
    ) -> Option<HealthState> {
        let before = self.state;
        self.last = Some(now);
        self.output = run.output;
        if run.result == CheckResult::Passed {
            self.failures = 0;
            self.state = HealthState::Healthy;
        } else if now >= started_at.plus(check.start_period) || self.state == HealthState::Healthy {
            self.failures += 1;
            if self.failures >= check.retries.max(1) {
                self.state = HealthState::Unhealthy;
            }
        }
        (self.state != before).then_some(self.state)
    }

    /// When the next check is due: soon after the start (so dependants waiting for `healthy`
    /// don't wait a whole interval), then every interval.
    pub fn next_due(&self, started_at: Millis, check: &HealthCheck) -> Millis {
        match self.last {
            None => started_at.plus(check.interval.min(FIRST_CHECK_AFTER)),
            Some(t) => t.plus(check.interval),
        }
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

/// The first check runs this soon after a start (or after the interval, if shorter).
pub const FIRST_CHECK_AFTER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(retries: u32, start_period: u64) -> HealthCheck {
        HealthCheck {
            command: vec!["true".into()],
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            retries,
            start_period: Duration::from_secs(start_period),
        }
    }

    #[test]
    fn starting_healthy_unhealthy_and_back() {
        let c = check(3, 0);
        let mut t = Tracker::new();
        assert_eq!(t.state, HealthState::Starting);
        assert_eq!(
            t.record(CheckRun::failed("x".into()), Millis(0), Millis(1000), &c),
            None
        );
        assert_eq!(
            t.record(CheckRun::failed("x".into()), Millis(0), Millis(2000), &c),
            None
        );
        assert_eq!(
            t.record(CheckRun::failed("x".into()), Millis(0), Millis(3000), &c),
            Some(HealthState::Unhealthy)
        );
        assert_eq!(
            t.record(CheckRun::passed("ok".into()), Millis(0), Millis(4000), &c),
            Some(HealthState::Healthy)
        );
        assert_eq!(t.failures, 0);
        assert_eq!(
            t.record(CheckRun::failed("x".into()), Millis(0), Millis(5000), &c),
            None
        );
        assert_eq!(t.state, HealthState::Healthy, "one failure is not enough");
    }

    #[test]
    fn start_period_failures_do_not_count() {
        let c = check(1, 30);
        let mut t = Tracker::new();
        t.record(
            CheckRun::failed(String::new()),
            Millis(0),
            Millis(29_999),
            &c,
        );
        assert_eq!(t.state, HealthState::Starting);
        assert_eq!(t.failures, 0);
        t.record(
            CheckRun::failed(String::new()),
            Millis(0),
            Millis(30_000),
            &c,
        );
        assert_eq!(t.state, HealthState::Unhealthy);
    }

    #[test]
    fn schedule() {
        let c = check(3, 0);
        let mut t = Tracker::new();
        assert_eq!(t.next_due(Millis(100), &c), Millis(1100));
        t.record(
            CheckRun::passed(String::new()),
            Millis(100),
            Millis(1200),
            &c,
        );
        assert_eq!(t.next_due(Millis(100), &c), Millis(11_200));
    }

    #[test]
    fn effective_check() {
        let mut spec =
            ContainerSpec::with_defaults("a", berth_spec::ImageSource::parse("x").unwrap());
        let image = check(3, 0);
        assert_eq!(effective(&spec, Some(&image)), Some(image.clone()));
        spec.extra.health.disable = true;
        assert_eq!(effective(&spec, Some(&image)), None);
        spec.extra.health.disable = false;
        spec.extra.health.check = Some(check(1, 5));
        assert_eq!(effective(&spec, Some(&image)), Some(check(1, 5)));
    }
}
