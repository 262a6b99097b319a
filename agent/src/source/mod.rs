//! The spec source: the spec dir, read, checked and watched, as full snapshots.
//!
//! - [`dir`]: the spec dir as the agent's snapshot source, with the policy applied.
//! - [`load`]: a plain function of a path that reads and parses every spec of a directory.
//! - [`perms`]: who may own spec files (sshd's StrictModes).
//! - [`watch`]: inotify, any event meaning "rescan".
//! - [`git`]: `[source]`, specs from a signed git repository, materialised into `specs_dir`.

pub mod dir;
pub mod git;
pub mod load;
pub mod perms;
pub mod watch;
