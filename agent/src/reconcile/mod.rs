//! The pure core: what the reconciler decides, as functions of values.
//!
//! - [`model`]: the data the planner reads (desired set, observation, failures).
//! - [`plan`]: the policy, a pure function; [`backoff`]: its delays; [`report`]: statuses;
//!   [`update`], [`health`]: their rules.
//! - [`desired_set`]: the desired set from a scan and the last valid specs.
//! - [`packed()`]: the maps of one entry per spec that the agent keeps, with full nodes.
//! - [`fleet`]: trust in a spec repository (signatures, fast-forward, rollouts), for
//!   `source::git`.
//!
//! Architecture Invariant: nothing here does I/O or reads a clock: no `std::fs`, no tokio, no
//! processes or sockets, no `Instant::now`/`SystemTime::now`, no `crate::clock`; time comes in
//! as a value (`Ctx`). Scanning the source and keeping the last valid specs on disk live in
//! `crate::desired`, the
//! trait the executor implements in `crate::backend`. Checked by `agent/tests/architecture.rs`.

pub mod action;
pub mod backoff;
pub mod desired_set;
pub mod fleet;
pub mod health;
pub mod model;
mod packed;
pub mod plan;
pub mod report;
pub mod update;

pub use model::{Desired, Failures, Millis, Observed};
pub use packed::packed;
pub use plan::{Action, Ctx, Plan, plan, plan_pass, plan_with};
