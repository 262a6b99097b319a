//! The spec source: the spec dir, watched, read and checked into a desired set.

pub mod perms;
pub mod watch;
