//! Fast-forward only, and every commit verified: what stands between the last verified commit
//! and a new tip, and whether the tip may be taken.
//!
//! The walk works over any [`CommitStore`]: the agent's reads git's objects, the tests' are maps.
//! A commit the store does not have (beyond a shallow fetch's boundary) makes the answer
//! [`Walk::Incomplete`], never a guess: the caller fetches more history and asks again.

use std::collections::{BTreeSet, VecDeque};

use super::commit::{Commit, CommitId};
use super::signature::{self, Clock, Signer};
use super::signers::AllowedSigners;
use super::{Reason, Refusal};

/// The most commits one update verifies; a longer range is refused (a hostile remote could
/// otherwise make every poll walk forever).
pub const MAX_RANGE: usize = 10_000;
/// The most ancestors of the base commit walked to tell old commits from new ones.
pub const MAX_ANCESTORS: usize = 200_000;

/// Where commits come from.
pub trait CommitStore {
    /// The commit, or `None` when this repository does not have it.
    fn commit(&mut self, id: &CommitId) -> Result<Option<Commit>, String>;
}

/// How a tip relates to a base.
#[derive(Debug)]
pub enum Walk {
    /// The tip is the base.
    UpToDate,
    /// The base descends from the tip: an older commit (a replay, a force-push back).
    Behind,
    /// The tip descends from the base: every commit reachable from the tip and not from the
    /// base, newest first.
    Ahead(Vec<Commit>),
    /// Neither descends from the other (a rewritten history).
    Diverged,
    /// This commit is needed and the store does not have it.
    Incomplete(CommitId),
    /// More than [`MAX_RANGE`] commits (or [`MAX_ANCESTORS`]).
    TooLong,
}

/// Relates `tip` to `base`. Sound with a partial store: `Ahead` lists at least every commit
/// reachable from the tip and not from the base (more only when the base's own history is cut
/// short), and `Behind`/`Diverged` are only said when true.
pub fn walk(store: &mut dyn CommitStore, tip: &CommitId, base: &CommitId) -> Result<Walk, String> {
    if tip == base {
        return Ok(Walk::UpToDate);
    }
    // The base's ancestors this store can show.
    let mut old: BTreeSet<CommitId> = BTreeSet::new();
    let mut queue = VecDeque::from([base.clone()]);
    while let Some(id) = queue.pop_front() {
        if !old.insert(id.clone()) {
            continue;
        }
        if old.len() > MAX_ANCESTORS {
            return Ok(Walk::TooLong);
        }
        if let Some(c) = store.commit(&id)? {
            queue.extend(c.parents);
        }
    }
    if old.contains(tip) {
        return Ok(Walk::Behind);
    }
    let mut new = Vec::new();
    let mut seen: BTreeSet<CommitId> = BTreeSet::new();
    let mut reached_base = false;
    let mut queue = VecDeque::from([tip.clone()]);
    while let Some(id) = queue.pop_front() {
        if old.contains(&id) {
            reached_base |= id == *base;
            continue;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(c) = store.commit(&id)? else {
            return Ok(Walk::Incomplete(id));
        };
        if new.len() >= MAX_RANGE {
            return Ok(Walk::TooLong);
        }
        queue.extend(c.parents.iter().cloned());
        new.push(c);
    }
    Ok(if reached_base {
        Walk::Ahead(new)
    } else {
        Walk::Diverged
    })
}

/// What makes a commit trusted.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// Every commit signed by a key in allowed_signers; `pin` (trust_on_first_use) is the one
    /// commit taken without, as the first run's anchor.
    Signed {
        signers: &'a AllowedSigners,
        pin: Option<&'a CommitId>,
    },
    /// `allow_unsigned = true`: fast-forward only, no signature checked.
    Unsigned,
}

impl Trust<'_> {
    /// Checks one commit; `Ok(None)` when it is trusted without a signature.
    fn check(&self, c: &Commit, clock: Clock) -> Result<Option<Signer>, Refusal> {
        match self {
            Trust::Unsigned => Ok(None),
            Trust::Signed { pin: Some(p), .. } if *p == &c.id => Ok(None),
            Trust::Signed { signers, .. } => signature::verify(c, signers, clock).map(Some),
        }
    }
}

/// The verdict on a new tip.
#[derive(Debug)]
pub enum Verdict {
    /// Nothing new: the tip is the verified commit.
    UpToDate,
    /// Take it: the tip and the signer of each newly verified commit (newest first).
    Accept {
        tip: Box<Commit>,
        verified: Vec<(CommitId, Option<Signer>)>,
    },
    Refuse(Refusal),
    /// Fetch more history (this commit is missing) and judge again.
    NeedHistory(CommitId),
}

/// Judges `tip` against the last verified commit (`None` on the first run).
pub fn judge(
    store: &mut dyn CommitStore,
    verified: Option<&CommitId>,
    tip: &CommitId,
    trust: Trust<'_>,
    clock: Clock,
) -> Result<Verdict, String> {
    let refuse = |commit: &CommitId, reason, detail: String| {
        Ok(Verdict::Refuse(Refusal {
            commit: commit.clone(),
            reason,
            detail,
        }))
    };
    let (base, base_name) = match (verified, trust) {
        (Some(v), _) => (v, "the last verified commit"),
        (None, Trust::Signed { pin: Some(p), .. }) => (p, "the trust_on_first_use commit"),
        (None, _) => {
            // First run: the tip alone, signed (or anything, with allow_unsigned).
            let Some(c) = store.commit(tip)? else {
                return Ok(Verdict::NeedHistory(tip.clone()));
            };
            return Ok(match trust.check(&c, clock) {
                Ok(signer) => Verdict::Accept {
                    verified: vec![(c.id.clone(), signer)],
                    tip: Box::new(c),
                },
                Err(r) => Verdict::Refuse(r),
            });
        }
    };
    let commits = match walk(store, tip, base)? {
        Walk::UpToDate if verified.is_some() => return Ok(Verdict::UpToDate),
        Walk::UpToDate => {
            // The first run, at the pinned commit itself.
            let Some(c) = store.commit(tip)? else {
                return Ok(Verdict::NeedHistory(tip.clone()));
            };
            return Ok(Verdict::Accept {
                verified: vec![(c.id.clone(), None)],
                tip: Box::new(c),
            });
        }
        Walk::Behind => {
            return refuse(
                tip,
                Reason::NotFastForward,
                format!("is older than {base_name} {}", base.short()),
            );
        }
        Walk::Diverged => {
            return refuse(
                tip,
                Reason::NotFastForward,
                format!("does not descend from {base_name} {}", base.short()),
            );
        }
        Walk::Incomplete(id) => return Ok(Verdict::NeedHistory(id)),
        Walk::TooLong => {
            return refuse(
                tip,
                Reason::TooManyCommits,
                format!("is more than {MAX_RANGE} commits past {base_name}"),
            );
        }
        Walk::Ahead(commits) => commits,
    };
    let mut verified_now = Vec::with_capacity(commits.len());
    // Oldest first, so the refusal names the first bad commit of the range.
    for c in commits.iter().rev() {
        match trust.check(c, clock) {
            Ok(signer) => verified_now.push((c.id.clone(), signer)),
            Err(r) => return Ok(Verdict::Refuse(r)),
        }
    }
    verified_now.reverse();
    let tip_commit = commits
        .into_iter()
        .next()
        .expect("a range ahead holds the tip");
    Ok(Verdict::Accept {
        tip: Box::new(tip_commit),
        verified: verified_now,
    })
}

/// The verdict on a rollout's `from`.
#[derive(Debug, PartialEq, Eq)]
pub enum FromVerdict {
    Ok,
    Refuse(Refusal),
    NeedHistory(CommitId),
}

/// A rollout's `from` must be the tip or an ancestor of it, itself trusted, and every commit
/// between it and the tip too: it is applied like any verified commit.
pub fn judge_from(
    store: &mut dyn CommitStore,
    tip: &CommitId,
    from: &CommitId,
    trust: Trust<'_>,
    clock: Clock,
) -> Result<FromVerdict, String> {
    let bad = |detail: String| {
        Ok(FromVerdict::Refuse(Refusal {
            commit: tip.clone(),
            reason: Reason::BadRollout,
            detail,
        }))
    };
    if tip == from {
        return Ok(FromVerdict::Ok);
    }
    let Some(from_commit) = store.commit(from)? else {
        return Ok(FromVerdict::NeedHistory(from.clone()));
    };
    let commits = match walk(store, tip, from)? {
        Walk::Ahead(c) => c,
        Walk::Incomplete(id) => return Ok(FromVerdict::NeedHistory(id)),
        Walk::TooLong => {
            return bad(format!(
                "has rollout.toml from = {} more than {MAX_RANGE} commits back",
                from.short()
            ));
        }
        Walk::UpToDate | Walk::Behind | Walk::Diverged => {
            return bad(format!(
                "has rollout.toml from = {}, which is not an ancestor of it",
                from.short()
            ));
        }
    };
    for c in std::iter::once(&from_commit).chain(commits.iter().rev()) {
        if let Err(r) = trust.check(c, clock) {
            return bad(format!(
                "has rollout.toml from = {}, and {} ({}: {})",
                from.short(),
                if c.id == *from {
                    "that commit is not trusted".to_string()
                } else {
                    format!("commit {} between them is not trusted", c.id.short())
                },
                r.reason,
                r.detail
            ));
        }
    }
    Ok(FromVerdict::Ok)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::commit::parse_commit;
    use super::super::testdata;
    use super::*;

    /// A store over a map; ids are made from small numbers.
    #[derive(Default)]
    struct MapStore {
        commits: BTreeMap<CommitId, Commit>,
        /// Ids the store pretends not to have (a shallow boundary).
        missing: BTreeSet<CommitId>,
        reads: usize,
    }

    impl CommitStore for MapStore {
        fn commit(&mut self, id: &CommitId) -> Result<Option<Commit>, String> {
            self.reads += 1;
            if self.missing.contains(id) {
                return Ok(None);
            }
            Ok(self.commits.get(id).cloned())
        }
    }

    fn cid(n: usize) -> CommitId {
        CommitId::parse(&format!("{n:040x}")).unwrap()
    }

    fn plain(n: usize, parents: &[usize]) -> Commit {
        Commit {
            id: cid(n),
            tree: cid(999_999),
            parents: parents.iter().map(|&p| cid(p)).collect(),
            author: "a <a@x>".into(),
            committer_email: "a@x".into(),
            committer_time: 0,
            subject: format!("c{n}"),
            signature: None,
        }
    }

    fn store(graph: &[(usize, &[usize])]) -> MapStore {
        let mut s = MapStore::default();
        for (n, p) in graph {
            s.commits.insert(cid(*n), plain(*n, p));
        }
        s
    }

    const CLOCK: Clock = Clock {
        now: 1_780_100_000,
        local_offset: 0,
    };

    fn ids(w: Walk) -> Vec<usize> {
        match w {
            Walk::Ahead(c) => {
                let mut v: Vec<usize> = c
                    .iter()
                    .map(|c| usize::from_str_radix(c.id.as_str(), 16).unwrap())
                    .collect();
                v.sort();
                v
            }
            other => panic!("not ahead: {other:?}"),
        }
    }

    #[test]
    fn linear_merges_replays_and_rewrites() {
        // 1 - 2 - 3 - 4 - 6 (merge of 4 and 5); 5 branches from 2; 7 rewrites from 2.
        let mut s = store(&[
            (1, &[]),
            (2, &[1]),
            (3, &[2]),
            (4, &[3]),
            (5, &[2]),
            (6, &[4, 5]),
            (7, &[2]),
        ]);
        assert_eq!(ids(walk(&mut s, &cid(4), &cid(2)).unwrap()), vec![3, 4]);
        // The side branch forked below the base is new too.
        assert_eq!(ids(walk(&mut s, &cid(6), &cid(4)).unwrap()), vec![5, 6]);
        assert!(matches!(
            walk(&mut s, &cid(4), &cid(4)).unwrap(),
            Walk::UpToDate
        ));
        assert!(matches!(
            walk(&mut s, &cid(2), &cid(4)).unwrap(),
            Walk::Behind
        ));
        assert!(matches!(
            walk(&mut s, &cid(7), &cid(4)).unwrap(),
            Walk::Diverged
        ));
        // A missing commit on the way is asked for, not guessed around.
        s.missing.insert(cid(5));
        assert!(
            matches!(walk(&mut s, &cid(6), &cid(4)).unwrap(), Walk::Incomplete(i) if i == cid(5))
        );
    }

    #[test]
    fn shallow_base_history_asks_for_more() {
        // The host fetched 3 with depth 1: 2 and below are missing, but 3 names 2 as its
        // parent. 6 merges a branch (5) forked at 2: known old, no more history needed.
        let mut s = store(&[(3, &[2]), (4, &[3]), (5, &[2]), (6, &[4, 5])]);
        s.missing.insert(cid(2));
        assert_eq!(ids(walk(&mut s, &cid(6), &cid(3)).unwrap()), vec![4, 5, 6]);
        // A branch forked further down (at 1) cannot be told from new: ask for 1.
        s.commits.insert(cid(8), plain(8, &[1]));
        s.commits.insert(cid(9), plain(9, &[4, 8]));
        assert!(
            matches!(walk(&mut s, &cid(9), &cid(3)).unwrap(), Walk::Incomplete(i) if i == cid(1))
        );
        assert_eq!(ids(walk(&mut s, &cid(4), &cid(3)).unwrap()), vec![4]);
    }

    #[test]
    fn long_ranges_are_refused() {
        let graph: Vec<(usize, Vec<usize>)> = (1..=MAX_RANGE + 2)
            .map(|n| (n, if n == 1 { vec![] } else { vec![n - 1] }))
            .collect();
        let mut s = MapStore::default();
        for (n, p) in &graph {
            s.commits.insert(cid(*n), plain(*n, p));
        }
        assert!(matches!(
            walk(&mut s, &cid(MAX_RANGE + 2), &cid(1)).unwrap(),
            Walk::TooLong
        ));
        assert_eq!(
            ids(walk(&mut s, &cid(MAX_RANGE + 1), &cid(1)).unwrap()).len(),
            MAX_RANGE
        );
    }

    fn real(name: &str) -> Commit {
        let (id, raw) = testdata::raw(name);
        parse_commit(&CommitId::parse(&id).unwrap(), raw).unwrap()
    }

    /// The four real commits form a chain: signed (alice) <- unsigned <- mallory <- ci.
    fn real_store() -> MapStore {
        let mut s = MapStore::default();
        for n in [
            testdata::FIRST_SIGNED,
            testdata::UNSIGNED,
            testdata::MALLORY_SIGNED,
            testdata::CI_ECDSA,
        ] {
            let c = real(n);
            s.commits.insert(c.id.clone(), c);
        }
        s
    }

    fn signers() -> AllowedSigners {
        AllowedSigners::parse(&format!(
            "alice@example.com {}\nci@example.com {}\n",
            testdata::ALICE,
            testdata::CI
        ))
        .unwrap()
    }

    fn id(s: &str) -> CommitId {
        CommitId::parse(s).unwrap()
    }

    #[test]
    fn judge_names_the_first_bad_commit_of_the_range() {
        let mut s = real_store();
        let signers = signers();
        let trust = Trust::Signed {
            signers: &signers,
            pin: None,
        };
        // First run: only the tip must be signed.
        let v = judge(&mut s, None, &id(testdata::CI_ECDSA), trust, CLOCK).unwrap();
        assert!(
            matches!(v, Verdict::Accept { ref verified, .. } if verified.len() == 1),
            "{v:?}"
        );
        let v = judge(&mut s, None, &id(testdata::UNSIGNED), trust, CLOCK).unwrap();
        assert!(matches!(v, Verdict::Refuse(ref r) if r.reason == Reason::Unsigned));
        // From the signed root to the ci tip: the unsigned commit in the middle refuses it.
        let v = judge(
            &mut s,
            Some(&id(testdata::FIRST_SIGNED)),
            &id(testdata::CI_ECDSA),
            trust,
            CLOCK,
        )
        .unwrap();
        match v {
            Verdict::Refuse(r) => {
                assert_eq!(r.reason, Reason::Unsigned);
                assert_eq!(r.commit, id(testdata::UNSIGNED));
            }
            other => panic!("{other:?}"),
        }
        // From past the unsigned one: mallory's commit is next.
        let v = judge(
            &mut s,
            Some(&id(testdata::UNSIGNED)),
            &id(testdata::CI_ECDSA),
            trust,
            CLOCK,
        )
        .unwrap();
        assert!(
            matches!(v, Verdict::Refuse(ref r) if r.reason == Reason::UnknownSigner && r.commit == id(testdata::MALLORY_SIGNED)),
            "{v:?}"
        );
        let v = judge(
            &mut s,
            Some(&id(testdata::MALLORY_SIGNED)),
            &id(testdata::CI_ECDSA),
            trust,
            CLOCK,
        )
        .unwrap();
        match v {
            Verdict::Accept { tip, verified } => {
                assert_eq!(tip.id, id(testdata::CI_ECDSA));
                assert_eq!(verified[0].1.as_ref().unwrap().principal, "ci@example.com");
            }
            other => panic!("{other:?}"),
        }
        // Back to an older signed commit: refused, whatever its signature.
        let v = judge(
            &mut s,
            Some(&id(testdata::CI_ECDSA)),
            &id(testdata::FIRST_SIGNED),
            trust,
            CLOCK,
        )
        .unwrap();
        assert!(
            matches!(v, Verdict::Refuse(ref r) if r.reason == Reason::NotFastForward),
            "{v:?}"
        );
        let v = judge(
            &mut s,
            Some(&id(testdata::CI_ECDSA)),
            &id(testdata::CI_ECDSA),
            trust,
            CLOCK,
        )
        .unwrap();
        assert!(matches!(v, Verdict::UpToDate));
        // allow_unsigned: fast-forward only.
        let v = judge(
            &mut s,
            Some(&id(testdata::FIRST_SIGNED)),
            &id(testdata::CI_ECDSA),
            Trust::Unsigned,
            CLOCK,
        )
        .unwrap();
        assert!(
            matches!(v, Verdict::Accept { ref verified, .. } if verified.len() == 3 && verified.iter().all(|(_, s)| s.is_none()))
        );
        let v = judge(
            &mut s,
            Some(&id(testdata::CI_ECDSA)),
            &id(testdata::UNSIGNED),
            Trust::Unsigned,
            CLOCK,
        )
        .unwrap();
        assert!(matches!(v, Verdict::Refuse(ref r) if r.reason == Reason::NotFastForward));
    }

    #[test]
    fn trust_on_first_use_anchors_the_first_run() {
        let mut s = real_store();
        let signers = signers();
        let pin = id(testdata::MALLORY_SIGNED);
        let trust = Trust::Signed {
            signers: &signers,
            pin: Some(&pin),
        };
        // The pin itself, unsigned by a listed key: taken.
        let v = judge(&mut s, None, &pin, trust, CLOCK).unwrap();
        assert!(matches!(v, Verdict::Accept { .. }), "{v:?}");
        // Past it, signed: taken.
        let v = judge(&mut s, None, &id(testdata::CI_ECDSA), trust, CLOCK).unwrap();
        assert!(matches!(v, Verdict::Accept { .. }), "{v:?}");
        // Before it (though signed): refused.
        let v = judge(&mut s, None, &id(testdata::FIRST_SIGNED), trust, CLOCK).unwrap();
        assert!(
            matches!(v, Verdict::Refuse(ref r) if r.reason == Reason::NotFastForward && r.detail.contains("trust_on_first_use")),
            "{v:?}"
        );
        // A pin the store has not got yet: fetch more.
        let far = cid(42);
        let trust = Trust::Signed {
            signers: &signers,
            pin: Some(&far),
        };
        let v = judge(&mut s, None, &id(testdata::CI_ECDSA), trust, CLOCK).unwrap();
        assert!(
            matches!(v, Verdict::NeedHistory(_) | Verdict::Refuse(_)),
            "{v:?}"
        );
    }

    #[test]
    fn rollout_from_must_be_a_trusted_ancestor() {
        let mut s = real_store();
        let signers = signers();
        let trust = Trust::Signed {
            signers: &signers,
            pin: None,
        };
        let tip = id(testdata::CI_ECDSA);
        assert_eq!(
            judge_from(&mut s, &tip, &tip, trust, CLOCK).unwrap(),
            FromVerdict::Ok
        );
        // mallory's commit is `from`: not trusted itself.
        let v = judge_from(&mut s, &tip, &id(testdata::MALLORY_SIGNED), trust, CLOCK).unwrap();
        assert!(
            matches!(v, FromVerdict::Refuse(ref r) if r.reason == Reason::BadRollout && r.detail.contains("that commit is not trusted")),
            "{v:?}"
        );
        // From the signed root: the commits between are not all trusted.
        let v = judge_from(&mut s, &tip, &id(testdata::FIRST_SIGNED), trust, CLOCK).unwrap();
        assert!(
            matches!(v, FromVerdict::Refuse(ref r) if r.detail.contains("between them")),
            "{v:?}"
        );
        // Not an ancestor.
        let v = judge_from(&mut s, &id(testdata::FIRST_SIGNED), &tip, trust, CLOCK).unwrap();
        assert!(
            matches!(v, FromVerdict::Refuse(ref r) if r.detail.contains("not an ancestor")),
            "{v:?}"
        );
        // Unknown to the store: fetch more.
        let v = judge_from(&mut s, &tip, &cid(7), trust, CLOCK).unwrap();
        assert_eq!(v, FromVerdict::NeedHistory(cid(7)));
        // allow_unsigned: ancestry alone.
        let v = judge_from(
            &mut s,
            &tip,
            &id(testdata::FIRST_SIGNED),
            Trust::Unsigned,
            CLOCK,
        )
        .unwrap();
        assert_eq!(v, FromVerdict::Ok);
    }

    /// Random DAGs: node i's parents are among 0..i.
    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (2usize..40).prop_flat_map(|n| {
            (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(vec![]).boxed()
                    } else {
                        prop::collection::vec(0..i, 0..=2)
                            .prop_map(|mut v| {
                                v.dedup();
                                v
                            })
                            .boxed()
                    }
                })
                .collect::<Vec<_>>()
        })
    }

    fn reach(g: &[Vec<usize>], from: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(g[n].iter().copied());
            }
        }
        seen
    }

    fn graph_store(g: &[Vec<usize>], missing: &BTreeSet<usize>) -> MapStore {
        let mut s = MapStore::default();
        for (i, p) in g.iter().enumerate() {
            s.commits.insert(cid(i), plain(i, p));
        }
        s.missing = missing.iter().map(|&m| cid(m)).collect();
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// With every commit present, the walk is exactly the definition.
        #[test]
        fn walk_is_set_difference(g in dag(), a in 0usize..40, b in 0usize..40) {
            let (tip, base) = (a % g.len(), b % g.len());
            let mut s = graph_store(&g, &BTreeSet::new());
            let rt = reach(&g, tip);
            let rb = reach(&g, base);
            match walk(&mut s, &cid(tip), &cid(base)).unwrap() {
                Walk::UpToDate => prop_assert_eq!(tip, base),
                Walk::Behind => prop_assert!(tip != base && rb.contains(&tip)),
                Walk::Diverged => prop_assert!(!rt.contains(&base) && !rb.contains(&tip)),
                Walk::Ahead(c) => {
                    prop_assert!(rt.contains(&base) && tip != base);
                    let got: BTreeSet<usize> = c.iter().map(|c| usize::from_str_radix(c.id.as_str(), 16).unwrap()).collect();
                    let want: BTreeSet<usize> = rt.difference(&rb).copied().collect();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(c[0].id.clone(), cid(tip));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// With commits missing, the walk never claims what it cannot show: `Ahead` covers the
        /// true range, `Behind` and `Diverged` hold.
        #[test]
        fn walk_is_sound_when_history_is_cut(
            g in dag(),
            a in 0usize..40,
            b in 0usize..40,
            missing in prop::collection::btree_set(0usize..40, 0..6),
        ) {
            let (tip, base) = (a % g.len(), b % g.len());
            let missing: BTreeSet<usize> = missing.into_iter().filter(|m| *m != tip && *m != base).collect();
            let mut s = graph_store(&g, &missing);
            let rt = reach(&g, tip);
            let rb = reach(&g, base);
            match walk(&mut s, &cid(tip), &cid(base)).unwrap() {
                Walk::UpToDate => prop_assert_eq!(tip, base),
                Walk::Behind => prop_assert!(rb.contains(&tip)),
                Walk::Diverged => prop_assert!(!rt.contains(&base)),
                Walk::Ahead(c) => {
                    prop_assert!(rt.contains(&base));
                    let got: BTreeSet<usize> = c.iter().map(|c| usize::from_str_radix(c.id.as_str(), 16).unwrap()).collect();
                    let want: BTreeSet<usize> = rt.difference(&rb).copied().collect();
                    prop_assert!(got.is_superset(&want), "{:?} misses some of {:?}", got, want);
                    prop_assert!(got.is_subset(&rt));
                    prop_assert!(got.iter().all(|n| !missing.contains(n)));
                }
                Walk::Incomplete(id) => {
                    let n = usize::from_str_radix(id.as_str(), 16).unwrap();
                    prop_assert!(missing.contains(&n) && rt.contains(&n));
                }
                Walk::TooLong => prop_assert!(false, "tiny graphs are never too long"),
            }
        }

        /// A range is taken only if every commit in it is trusted: mark random commits as
        /// "signed" through allow-lists and compare with the definition.
        #[test]
        fn judge_accepts_only_fully_trusted_fast_forwards(
            g in dag(),
            a in 0usize..40,
            b in 0usize..40,
            pinned in 0usize..40,
        ) {
            let (tip, base) = (a % g.len(), b % g.len());
            let mut s = graph_store(&g, &BTreeSet::new());
            let signers = AllowedSigners::default();
            let pin = cid(pinned % g.len());
            // No commit is signed: with allow_unsigned everything fast-forward is taken; with
            // signatures required only the pin itself (on a first run) is.
            let v = judge(&mut s, Some(&cid(base)), &cid(tip), Trust::Unsigned, CLOCK).unwrap();
            let ff = reach(&g, tip).contains(&base);
            match v {
                Verdict::UpToDate => prop_assert_eq!(tip, base),
                Verdict::Accept { .. } => prop_assert!(ff && tip != base),
                Verdict::Refuse(r) => {
                    prop_assert_eq!(r.reason, Reason::NotFastForward);
                    prop_assert!(!ff);
                }
                Verdict::NeedHistory(_) => prop_assert!(false),
            }
            let trust = Trust::Signed { signers: &signers, pin: Some(&pin) };
            let v = judge(&mut s, None, &cid(tip), trust, CLOCK).unwrap();
            match v {
                Verdict::Accept { .. } => prop_assert_eq!(cid(tip), pin.clone()),
                Verdict::Refuse(_) => prop_assert!(cid(tip) != pin),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
