//! Trust in a spec repository, as pure functions: which commits a host may apply.
//!
//! - [`commit`]: commit ids and the commit format (parents, committer, signature, signed bytes).
//! - [`signers`]: ssh-keygen's allowed signers file and its pattern lists.
//! - [`signature`]: the policy for one commit (signed, listed key, principal, namespace, time).
//! - [`history`]: fast-forward only, and every commit between the last verified one and a new
//!   tip, over any commit graph (the edge reads git's objects; tests use maps).
//! - [`rollout`]: which commit this host applies, given the tip's `rollout.toml`.
//! - [`schedule`]: when to fetch next (interval, per-host jitter, backoff after failures).
//!
//! Nothing here does I/O; `source::git` fetches, reads objects, and materialises trees.

pub mod commit;
pub mod history;
pub mod rollout;
pub mod schedule;
pub mod signature;
pub mod signers;

use serde::{Deserialize, Serialize};

pub use commit::CommitId;

/// Why a commit (and so a tip) is not applied. A new reason goes into [`Reason::ALL`] too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A commit in the range has no signature.
    Unsigned,
    /// Signed by a key allowed_signers does not list (for this committer, in namespace git).
    UnknownSigner,
    /// A signature that does not verify, or in the wrong namespace.
    BadSignature,
    /// The key is outside its valid-after/valid-before window.
    ExpiredKey,
    /// The tip does not descend from the last verified commit (a force-push, a replay).
    NotFastForward,
    /// The commits between the last verified one and the tip cannot all be read.
    IncompleteHistory,
    /// More commits than berth walks in one update.
    TooManyCommits,
    /// `rollout.toml` is invalid, or its `from` is not a verified ancestor of the tip.
    BadRollout,
    /// The tree breaks the rules for spec files (a symlink out of `path`, a huge file, no
    /// `path` at all).
    BadTree,
}

impl Reason {
    /// Every reason (the metrics count each from 0).
    pub const ALL: [Reason; 9] = [
        Reason::Unsigned,
        Reason::UnknownSigner,
        Reason::BadSignature,
        Reason::ExpiredKey,
        Reason::NotFastForward,
        Reason::IncompleteHistory,
        Reason::TooManyCommits,
        Reason::BadRollout,
        Reason::BadTree,
    ];

    /// The label value in metrics and the word in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::UnknownSigner => "unknown_signer",
            Reason::BadSignature => "bad_signature",
            Reason::ExpiredKey => "expired_key",
            Reason::NotFastForward => "not_fast_forward",
            Reason::IncompleteHistory => "incomplete_history",
            Reason::TooManyCommits => "too_many_commits",
            Reason::BadRollout => "bad_rollout",
            Reason::BadTree => "bad_tree",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal, naming the commit at fault (which may be below the tip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub commit: CommitId,
    pub reason: Reason,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: commit {} {}",
            self.reason,
            self.commit.short(),
            self.detail
        )
    }
}

#[cfg(test)]
mod reason_tests {
    use super::Reason;

    #[test]
    fn all_names_every_reason_once() {
        let words: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(words.len(), Reason::ALL.len());
        // Exhaustive: a new variant stops this compiling; add it here and to ALL.
        let counted = |r: Reason| match r {
            Reason::Unsigned
            | Reason::UnknownSigner
            | Reason::BadSignature
            | Reason::ExpiredKey
            | Reason::NotFastForward
            | Reason::IncompleteHistory
            | Reason::TooManyCommits
            | Reason::BadRollout
            | Reason::BadTree => 1,
        };
        assert_eq!(Reason::ALL.into_iter().map(counted).sum::<usize>(), 9);
    }
}

/// Real objects from `git commit -S` with ssh-keygen keys (made once with Debian's git; see
/// the test names for what each one is).
#[cfg(test)]
pub(crate) mod testdata {
    pub const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINWLvu+ELAezX4lpUmG5kvToHaGngiR3uG3/smgyB0GF";
    pub const MALLORY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRyYcZHcdRK7PDBT4UDAfynB8hCiOJVizZjGtjAWYpi";
    pub const CI: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDpFdXxHMh+A6NiH5NPFkmEvzEjdvHyQi5hVvhbYzhdWezjIQk3mSHDPvLU9FKK2JurYPkDbeBjD0Y9IIg879og=";

    /// Signed by alice, committer alice@example.com.
    pub const FIRST_SIGNED: &str = "894c9a27665887c9d936edb61454d5214df25f84";
    /// No signature.
    pub const UNSIGNED: &str = "c2df19a3dd1c6323da0e6f5b9eb57a320dfab393";
    /// Signed by mallory's key, committer alice@example.com.
    pub const MALLORY_SIGNED: &str = "2d265c646d21e1f68b39c760f6d8422ca4918d51";
    /// Signed by the ECDSA key, committer ci@example.com.
    pub const CI_ECDSA: &str = "58ccccb528bf1848496c1f22f11829dcd2a40b35";
    /// FIRST_SIGNED's payload signed by alice in namespace "file" (ssh-keygen -Y sign -n file).
    pub const FILE_NAMESPACE: &str = "file-namespace";

    /// The id to parse the object under, and its bytes.
    pub fn raw(name: &str) -> (String, &'static [u8]) {
        let bytes: &'static [u8] = match name {
            FIRST_SIGNED => include_bytes!("testdata/894c9a27665887c9d936edb61454d5214df25f84"),
            UNSIGNED => include_bytes!("testdata/c2df19a3dd1c6323da0e6f5b9eb57a320dfab393"),
            MALLORY_SIGNED => include_bytes!("testdata/2d265c646d21e1f68b39c760f6d8422ca4918d51"),
            CI_ECDSA => include_bytes!("testdata/58ccccb528bf1848496c1f22f11829dcd2a40b35"),
            FILE_NAMESPACE => include_bytes!("testdata/file-namespace"),
            other => panic!("no test object {other}"),
        };
        let id = if name == FILE_NAMESPACE {
            FIRST_SIGNED
        } else {
            name
        };
        (id.to_string(), bytes)
    }
}
