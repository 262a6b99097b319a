//! The reconciler: observe, plan (pure), execute.
//!
//! [`model`] holds the data the planner reads, [`plan`] the policy, [`backoff`] the delays.

pub mod backoff;
pub mod model;
pub mod plan;

pub use model::{Desired, Millis, Observed};
pub use plan::{Action, Plan, plan};
