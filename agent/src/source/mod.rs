//! The spec source: the desired set of containers, read from the spec directory.
//!
//! - [`load`]: a plain function of a path that reads and parses every spec of a directory.

pub mod load;
