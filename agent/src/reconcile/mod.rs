//! The reconciler: observe, plan (pure), execute.
//!
//! - [`model`]: the data the planner reads; [`desired`]: scans to desired sets, with each
//!   container's last valid spec remembered.
//! - [`plan`]: the policy, a pure function; [`backoff`]: its delays; [`report`]: statuses.
//! - [`packed()`]: the maps of one entry per spec that the agent keeps, with full nodes.
//! - [`backend`]: the narrow trait the executor drives (store, runtime, network).
//! - [`fleet`]: trust in a spec repository (signatures, fast-forward, rollouts), for
//!   `source::git`.

pub mod action;
pub mod backend;
pub mod backoff;
pub mod desired;
pub mod fleet;
pub mod health;
pub mod model;
mod packed;
pub mod plan;
pub mod report;
pub mod update;

pub use model::{Desired, Millis, Observed};
pub use packed::packed;
pub use plan::{Action, Ctx, Plan, plan, plan_with};
