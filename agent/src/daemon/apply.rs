//! `berth apply`: waiting until a pass (or convergence) answers the request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::api::server::ApplyOptions;
use crate::reconcile::report::{settled, stuck};
use crate::status::{ApplyResult, ContainerStatus};

pub struct Waiter {
    options: ApplyOptions,
    pub(super) deadline: Option<tokio::time::Instant>,
    reply: oneshot::Sender<ApplyResult>,
}

impl Waiter {
    pub fn new(options: ApplyOptions, reply: oneshot::Sender<ApplyResult>) -> Self {
        let deadline = options
            .timeout_ms
            .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        Waiter {
            options,
            deadline,
            reply,
        }
    }

    /// The answer, once the condition holds: without `wait`, when nothing runnable is left;
    /// with `wait`, when every container is settled, one is stuck for good, or time is up.
    pub(super) fn check(
        &self,
        statuses: &Arc<Vec<ContainerStatus>>,
        quiescent: bool,
    ) -> Option<ApplyResult> {
        let timed_out = self
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d);
        let all_settled = statuses.iter().all(settled);
        let any_stuck = statuses.iter().any(stuck);
        // Nothing may still be running: with every spec deleted, "all settled" holds at once
        // while the removals have just begun.
        let done = if self.options.wait {
            (quiescent && (all_settled || any_stuck)) || timed_out
        } else {
            quiescent || timed_out
        };
        // Converged only when nothing is left to do: with every spec deleted the statuses are
        // empty (all settled) while a removal may still be pending or backing off.
        done.then(|| {
            result(
                statuses,
                quiescent,
                timed_out && !(quiescent && all_settled),
            )
        })
    }

    /// `apply --force`: update locks are overridden while this request is pending.
    pub(super) fn force(&self) -> bool {
        self.options.force
    }

    pub(super) fn answer(self, result: ApplyResult) {
        let _ = self.reply.send(result);
    }
}

fn result(statuses: &[ContainerStatus], quiescent: bool, timed_out: bool) -> ApplyResult {
    let mut problems = statuses
        .iter()
        .filter(|s| !settled(s))
        .map(|s| {
            let mut p = format!("{}: {}", s.name, s.status.as_str());
            if let Some(r) = &s.reason {
                p.push_str(&format!(" ({r})"));
            }
            if let Some(e) = &s.error {
                p.push_str(&format!(": {e}"));
            }
            p
        })
        .collect::<Vec<_>>();
    if !quiescent {
        problems.push(
            "work still pending when the wait ended (see `berth plan` and `berth events`)".into(),
        );
    }
    ApplyResult {
        converged: problems.is_empty(),
        timed_out,
        problems,
        containers: statuses.to_vec(),
    }
}
