//! Specs from a signed git repository (`[source]`): fetch, judge, materialise, swap.
//!
//! A sync fetches the branch (shallow the first time, then only what is new) into the source's
//! own bare repository, judges the tip with the pure rules of [`crate::reconcile::fleet`]
//! (every commit since the last verified one signed by an allowed key, fast-forward only, a
//! rollout's `from` verified too), picks the commit this host applies (the tip, or `from`
//! outside a rollout), writes that commit's spec files into a new dir and swaps `specs_dir`
//! to it. The rest of the agent only sees a spec dir that changed. A failed fetch or a refused
//! tip changes nothing on the host: the last applied commit stays.
//!
//! Why Debian's `git` and not gitoxide's `gix` in-process (measured on this project's 2-core
//! CI machine): gix with the features a fetch over https needs adds 121 crates (aws-lc-sys
//! among them, 264 CPU-seconds alone), ~375 CPU-seconds to a cold release build and 10.3 MB to
//! the binary; a fetch's pack handling would then count in the agent's RSS (20 MB target); and
//! gix spawns `git-upload-pack` for `file://`, `ssh` for `ssh://`, and reads no bundles, so git
//! would be needed anyway. git runs as a short-lived child with everything it could take from
//! the repository or the host turned off ([`command`]); berth parses commits and trees, verifies
//! signatures and writes files itself.
//!
//! On disk (`<state_dir>/source/`, private to root): `repo.git` (bare; refs
//! `refs/berth/{remote,bundle,verified,applied}`), `trees/<commit>/` (materialised spec
//! trees: the applied one, the one before, the rollout's other side), `state.json`,
//! `bundles/` (import dir bundles already handled), `home/` (an empty `$HOME` for git).

pub mod command;
pub mod service;
pub mod tree;

use std::collections::BTreeSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_spec::config::SourceConfig;
use berth_spec::rollout::{ROLLOUT_FILE, Rollout, parse_rollout};
use berth_spec::{Config, HostFacts};
use sha2::{Digest, Sha256};

use self::command::{
    APPLIED_REF, BUNDLE_REF, Depth, Git, Objects, REMOTE_REF, Remote, VERIFIED_REF,
};
use crate::events::EventLog;
use crate::metrics::{Metrics, ReasonLabel};
use crate::reconcile::fleet::commit::{Commit, CommitId};
use crate::reconcile::fleet::history::{self, CommitStore, FromVerdict, Trust, Verdict};
use crate::reconcile::fleet::rollout::{self, Target};
use crate::reconcile::fleet::signature::{self, Clock};
use crate::reconcile::fleet::signers::AllowedSigners;
use crate::reconcile::fleet::{Reason, Refusal};
use crate::status::{
    AppliedCommit, ImportResult, RefusedTip, RolloutView, SourceState, SourceStatus,
};

/// How many refused tips status keeps.
const REFUSED_KEPT: usize = 20;

/// Where a tip came from.
#[derive(Debug, Clone)]
enum Origin {
    Fetch,
    Bundle(PathBuf),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Fetch => "fetch".into(),
            Origin::Bundle(p) => format!("bundle {}", p.display()),
        }
    }
}

/// What one sync or import came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new commit's specs were swapped in.
    Applied(CommitId),
    /// Nothing new (the remote or bundle had no new commit, or it changes nothing here).
    UpToDate,
    /// The tip was refused.
    Refused(Box<RefusedTip>),
    /// The fetch or import did not work (network, auth, a broken bundle, a full disk).
    Failed(String),
}

/// Directories of the source under the state dir.
pub struct SourceDirs {
    pub root: PathBuf,
}

impl SourceDirs {
    pub fn new(state_dir: &Path) -> Self {
        SourceDirs {
            root: state_dir.join("source"),
        }
    }
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo.git")
    }
    pub fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }
    pub fn tree(&self, c: &CommitId) -> PathBuf {
        self.trees().join(c.as_str())
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn bundles(&self) -> PathBuf {
        self.root.join("bundles")
    }
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }
}

/// The source: its config, its repository, what it has applied.
pub struct GitSource {
    config: SourceConfig,
    specs_dir: PathBuf,
    host: HostFacts,
    dirs: SourceDirs,
    git: Git,
    state: SourceState,
    events: Arc<EventLog>,
    metrics: Arc<Metrics>,
    /// The last refused tip and the allowed_signers it was judged with: not judged again
    /// (nor counted, nor announced) until either changes.
    judged: Option<(CommitId, [u8; 32])>,
    /// The applied commit is checked against the disk and the rollout once after start.
    checked_since_start: bool,
    /// What `state.json` holds, to write it only when more than fetch times changed (an idle
    /// poll a minute must not wear an edge device's flash).
    saved: SourceState,
}

impl GitSource {
    /// Opens the source of `config` (which has a `[source]`); reads its persisted state.
    pub fn open(
        config: &Config,
        host: HostFacts,
        events: Arc<EventLog>,
        metrics: Arc<Metrics>,
    ) -> Result<GitSource, String> {
        let sc = config
            .git_source
            .clone()
            .ok_or("the agent config has no [source]")?;
        let dirs = SourceDirs::new(&config.state_dir);
        for d in [dirs.root.clone(), dirs.trees(), dirs.bundles(), dirs.home()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let state = match crate::fsutil::read_json::<SourceState>(&dirs.state()) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("source state unreadable, starting afresh: {e}");
                SourceState::default()
            }
        };
        let git = Git::new(&dirs.repo(), &dirs.home());
        let mut src = GitSource {
            config: sc,
            specs_dir: config.specs_dir.clone(),
            host,
            dirs,
            git,
            state,
            events,
            metrics,
            judged: None,
            checked_since_start: false,
            saved: SourceState::default(),
        };
        src.saved = src.state.clone();
        src.metrics.set_source(&src.state);
        src.metrics.count_refusals(Reason::ALL.map(Reason::as_str));
        Ok(src)
    }

    /// Emits events into `events` (the agent's log) from now on.
    pub fn with_events(mut self, events: Arc<EventLog>) -> Self {
        self.events = events;
        self
    }

    /// Runs another git binary (tests).
    pub fn with_git_binary(mut self, bin: &Path) -> Self {
        self.git = self.git.clone().with_binary(bin);
        self
    }

    pub fn state(&self) -> &SourceState {
        &self.state
    }

    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    pub fn has_remote(&self) -> bool {
        self.config.git.is_some()
    }

    pub fn host_id(&self) -> Option<&str> {
        self.host.host_id.as_deref()
    }

    /// The status as `berth source` shows it.
    pub fn status(&self) -> SourceStatus {
        status_of(&self.config, &self.host, &self.state)
    }

    /// Fetches the remote and applies what it brings (or nothing, when there is no remote).
    pub fn sync(&mut self, clock: Clock) -> Outcome {
        let remote = match Remote::from_config(&self.config) {
            Ok(Some(r)) => r,
            Ok(None) => return self.recheck(clock),
            Err(e) => return self.fetch_failed(e),
        };
        self.state.last_fetch = Some(now_rfc3339());
        if let Err(e) = self.git.init() {
            return self.fetch_failed(e.to_string());
        }
        let depth = if self.state.verified.is_none()
            && self.git.resolve(REMOTE_REF).ok().flatten().is_none()
        {
            Depth::TipOnly
        } else {
            Depth::New
        };
        if let Err(e) = self
            .git
            .fetch(&remote, &self.config.branch, depth, self.config.timeout)
        {
            return self.fetch_failed(e.to_string());
        }
        let tip = match self.git.resolve(REMOTE_REF) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return self
                    .fetch_failed(format!("the remote has no branch {}", self.config.branch));
            }
            Err(e) => return self.fetch_failed(e.to_string()),
        };
        if self.state.fetch_failures > 0 {
            self.events.emit(
                None,
                "source",
                format!(
                    "fetch works again after {} failure(s)",
                    self.state.fetch_failures
                ),
            );
        }
        self.state.fetch_failures = 0;
        self.state.last_error = None;
        self.state.last_success = self.state.last_fetch.clone();
        let outcome = self.consider(tip, Origin::Fetch, Some(&remote), clock);
        self.save();
        outcome
    }

    /// Imports a `git bundle` (offline updates): the same judgement as a fetched tip.
    pub fn import_bundle(&mut self, bundle: &Path, clock: Clock) -> Outcome {
        let outcome = (|| {
            self.git.init().map_err(|e| e.to_string())?;
            let bundle = std::fs::canonicalize(bundle)
                .map_err(|e| format!("cannot read bundle {}: {e}", bundle.display()))?;
            self.git
                .fetch_bundle(&bundle, &self.config.branch, self.config.timeout)
                .map_err(|e| format!("bundle {}: {e}", bundle.display()))?;
            let tip = self
                .git
                .resolve(BUNDLE_REF)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("bundle {} gave no commit", bundle.display()))?;
            Ok::<_, String>((bundle, tip))
        })();
        let outcome = match outcome {
            Ok((bundle, tip)) => self.consider(tip, Origin::Bundle(bundle), None, clock),
            Err(e) => {
                self.state.last_error = Some(e.clone());
                self.events.emit(None, "source-error", e.clone());
                Outcome::Failed(e)
            }
        };
        self.save();
        outcome
    }

    /// Imports the bundles (`*.bundle`) in `dir` not handled before (or changed since).
    pub fn import_dir(&mut self, dir: &Path, clock: Clock) -> Vec<ImportResult> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_bundle_name(p))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            use std::os::unix::fs::MetadataExt;
            let Ok(m) = std::fs::metadata(&p) else {
                continue;
            };
            if !m.is_file() {
                continue;
            }
            let stamp = format!("{} {} {}", m.len(), m.mtime(), m.mtime_nsec());
            let marker = self.dirs.bundles().join(format!(
                "{}.seen",
                hex::encode(Sha256::digest(p.as_os_str().as_encoded_bytes()))
            ));
            if std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
                continue;
            }
            let outcome = self.import_bundle(&p, clock);
            let _ = crate::fsutil::atomic_write(&marker, stamp.as_bytes());
            out.push(import_result(&p, &outcome, self.state.tip.clone()));
        }
        out
    }

    /// Without a fetch: makes sure the applied commit's specs are in place (after a start, or
    /// a lost tree), judging nothing new.
    fn recheck(&mut self, clock: Clock) -> Outcome {
        let Some(v) = self.state.verified.clone() else {
            return Outcome::UpToDate;
        };
        let outcome = self.consider(v, Origin::Fetch, None, clock);
        self.save();
        outcome
    }

    fn fetch_failed(&mut self, e: String) -> Outcome {
        self.state.fetch_failures += 1;
        self.metrics.source_fetch_failures.inc();
        if self.state.last_error.as_deref() != Some(e.as_str()) {
            self.events.emit(
                None,
                "source-error",
                format!("fetch failed (the applied commit stays): {e}"),
            );
        }
        self.state.last_error = Some(e.clone());
        self.save();
        Outcome::Failed(e)
    }

    /// Judges `tip` and applies what this host should run.
    fn consider(
        &mut self,
        tip: CommitId,
        origin: Origin,
        remote: Option<&Remote>,
        clock: Clock,
    ) -> Outcome {
        self.state.tip = Some(tip.clone());
        let (signers, digest) = match self.load_signers() {
            Ok(s) => s,
            Err(e) => {
                self.state.last_error = Some(e.clone());
                self.events.emit(None, "source-error", e.clone());
                return Outcome::Failed(e);
            }
        };
        let pin = self
            .config
            .trust_on_first_use
            .as_deref()
            .and_then(|p| CommitId::parse(p).ok());
        let trust = match &signers {
            Some(s) => Trust::Signed {
                signers: s,
                pin: pin.as_ref(),
            },
            None => Trust::Unsigned,
        };
        if self.judged.as_ref() == Some(&(tip.clone(), digest)) {
            return Outcome::UpToDate;
        }
        let new_tip = self.state.verified.as_ref() != Some(&tip);
        if !new_tip && self.checked_since_start && self.applied_in_place() {
            return Outcome::UpToDate;
        }
        let mut objects = match self.git.objects() {
            Ok(o) => o,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let decided = if new_tip {
            self.judge_tip(&mut objects, &tip, trust, remote, clock)
        } else {
            self.decide_target(&mut objects, &tip, trust, remote, clock)
                .map(|(t, c)| (t, c, None))
        };
        let (target, tip_commit, signer_of_tip) = match decided {
            Ok(x) => x,
            Err(Judged::Refused(r)) => return self.refuse(&tip, r, &origin, digest),
            Err(Judged::Failed(e)) => {
                self.state.last_error = Some(e.clone());
                self.events.emit(None, "source-error", e.clone());
                return Outcome::Failed(e);
            }
        };
        if let Err(j) = self.ensure_sides(&mut objects, &target, &tip) {
            return match j {
                Judged::Refused(r) => self.refuse(&tip, r, &origin, digest),
                Judged::Failed(e) => {
                    self.state.last_error = Some(e.clone());
                    Outcome::Failed(e)
                }
            };
        }
        if new_tip && let Err(e) = self.mark_verified(&tip, &tip_commit, &origin) {
            return Outcome::Failed(e);
        }
        self.checked_since_start = true;
        self.state.rollout = rollout_view(&target);
        let outcome = self.apply(&mut objects, &target, &tip, signer_of_tip, trust, clock);
        self.metrics.set_source(&self.state);
        outcome
    }

    /// Writes (and so checks) both sides of a rollout on every host alike: a tree one host
    /// refuses, all refuse.
    fn ensure_sides(
        &mut self,
        objects: &mut Objects,
        target: &Target,
        tip: &CommitId,
    ) -> Result<(), Judged> {
        let mut sides = vec![target.commit.clone()];
        if let Some(p) = &target.rollout {
            sides.push(if p.included {
                p.from.clone()
            } else {
                tip.clone()
            });
        }
        for c in &sides {
            self.ensure_tree(objects, c)?;
        }
        Ok(())
    }

    /// A new tip passed: its ref and state say so, once.
    fn mark_verified(
        &mut self,
        tip: &CommitId,
        tip_commit: &Commit,
        origin: &Origin,
    ) -> Result<(), String> {
        self.git
            .set_ref(VERIFIED_REF, tip)
            .map_err(|e| e.to_string())?;
        self.state.verified = Some(tip.clone());
        self.judged = None;
        self.events.emit(
            None,
            "source-verified",
            format!(
                "verified {} {:?} ({})",
                tip.short(),
                tip_commit.subject,
                origin.describe()
            ),
        );
        Ok(())
    }

    /// A new tip: the history rules, then its rollout and target.
    fn judge_tip(
        &mut self,
        objects: &mut Objects,
        tip: &CommitId,
        trust: Trust<'_>,
        remote: Option<&Remote>,
        clock: Clock,
    ) -> Result<(Target, Commit, Option<signature::Signer>), Judged> {
        let mut deepened = false;
        loop {
            let verdict = history::judge(objects, self.state.verified.as_ref(), tip, trust, clock)
                .map_err(Judged::Failed)?;
            match verdict {
                Verdict::UpToDate => {
                    let (t, c) = self.decide_target(objects, tip, trust, remote, clock)?;
                    return Ok((t, c, None));
                }
                Verdict::Accept { tip: c, verified } => {
                    let signer = verified.first().and_then(|(_, s)| s.clone());
                    let (t, c2) = self.decide_target(objects, &c.id, trust, remote, clock)?;
                    return Ok((t, c2, signer));
                }
                Verdict::Refuse(r) => return Err(Judged::Refused(r)),
                Verdict::NeedHistory(missing) => {
                    if deepened || !self.deepen(remote, objects)? {
                        return Err(Judged::Refused(Refusal {
                            commit: tip.clone(),
                            reason: Reason::IncompleteHistory,
                            detail: format!(
                                "needs commit {} to be judged, which the repository does not have",
                                missing.short()
                            ),
                        }));
                    }
                    deepened = true;
                }
            }
        }
    }

    /// Fetches the whole history (a walk needed more); `false` when there is no remote.
    fn deepen(&mut self, remote: Option<&Remote>, objects: &mut Objects) -> Result<bool, Judged> {
        let Some(remote) = remote else {
            return Ok(false);
        };
        self.git
            .fetch(
                remote,
                &self.config.branch,
                Depth::Full,
                self.config.timeout,
            )
            .map_err(|e| Judged::Failed(e.to_string()))?;
        // The running cat-file may not see packs that arrived after it started.
        *objects = self
            .git
            .objects()
            .map_err(|e| Judged::Failed(e.to_string()))?;
        Ok(true)
    }

    /// The verified tip's rollout, its `from` judged, and the commit this host applies.
    fn decide_target(
        &mut self,
        objects: &mut Objects,
        tip: &CommitId,
        trust: Trust<'_>,
        remote: Option<&Remote>,
        clock: Clock,
    ) -> Result<(Target, Commit), Judged> {
        let commit = objects
            .commit(tip)
            .map_err(Judged::Failed)?
            .ok_or_else(|| Judged::Failed(format!("commit {tip} vanished from the repository")))?;
        let rollout = self.read_rollout(objects, &commit)?;
        if let Some(r) = &rollout {
            let from = CommitId::parse(&r.from).map_err(Judged::Failed)?;
            let mut deepened = false;
            loop {
                match history::judge_from(objects, tip, &from, trust, clock)
                    .map_err(Judged::Failed)?
                {
                    FromVerdict::Ok => break,
                    FromVerdict::Refuse(r) => return Err(Judged::Refused(r)),
                    FromVerdict::NeedHistory(missing) => {
                        if deepened || !self.deepen(remote, objects)? {
                            return Err(Judged::Refused(Refusal {
                                commit: tip.clone(),
                                reason: Reason::BadRollout,
                                detail: format!(
                                    "has rollout.toml from = {}, and commit {} is not in the repository",
                                    from.short(),
                                    missing.short()
                                ),
                            }));
                        }
                        deepened = true;
                    }
                }
            }
        }
        let target = rollout::target(tip, rollout.as_ref(), self.host.host_id.as_deref())
            .map_err(Judged::Failed)?;
        Ok((target, commit))
    }

    /// `rollout.toml` at the root of `path` in this commit, parsed; invalid refuses the commit.
    fn read_rollout(
        &self,
        objects: &mut Objects,
        commit: &Commit,
    ) -> Result<Option<Rollout>, Judged> {
        let file = if self.config.path.is_empty() {
            ROLLOUT_FILE.to_string()
        } else {
            format!("{}/{ROLLOUT_FILE}", self.config.path)
        };
        let Some(text) = read_file(objects, commit, &file)? else {
            return Ok(None);
        };
        let refuse = |detail: String| {
            Judged::Refused(Refusal {
                commit: commit.id.clone(),
                reason: Reason::BadRollout,
                detail,
            })
        };
        let text = String::from_utf8(text)
            .map_err(|_| refuse(format!("has a {file} that is not UTF-8")))?;
        parse_rollout(Path::new(&file), &text)
            .map(Some)
            .map_err(|d| {
                refuse(format!(
                    "has an invalid {file}: {}",
                    d.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })
    }

    /// Writes `commit`'s tree under `trees/` unless it is there already.
    fn ensure_tree(&mut self, objects: &mut Objects, commit: &CommitId) -> Result<(), Judged> {
        let dest = self.dirs.tree(commit);
        if dest.is_dir() {
            return Ok(());
        }
        let c = objects
            .commit(commit)
            .map_err(Judged::Failed)?
            .ok_or_else(|| Judged::Failed(format!("commit {commit} is not in the repository")))?;
        let tmp = self.dirs.trees().join(format!(".tmp-{}", commit.as_str()));
        let _ = std::fs::remove_dir_all(&tmp);
        match tree::materialise(objects, &c, &self.config.path, &tmp) {
            Ok(_) => {}
            Err(tree::TreeError::Refused(why)) => {
                return Err(Judged::Refused(Refusal {
                    commit: commit.clone(),
                    reason: Reason::BadTree,
                    detail: why,
                }));
            }
            Err(e) => return Err(Judged::Failed(e.to_string())),
        }
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            Judged::Failed(format!("cannot place {}: {e}", dest.display()))
        })
    }

    /// Whether `specs_dir` points at the applied commit's tree.
    fn applied_in_place(&self) -> bool {
        let Some(a) = &self.state.applied else {
            return false;
        };
        let tree = self.dirs.tree(&a.commit);
        tree.is_dir() && std::fs::read_link(&self.specs_dir).is_ok_and(|l| l == tree)
    }

    fn apply(
        &mut self,
        objects: &mut Objects,
        target: &Target,
        tip: &CommitId,
        signer_of_tip: Option<signature::Signer>,
        trust: Trust<'_>,
        clock: Clock,
    ) -> Outcome {
        let keep: BTreeSet<CommitId> = [
            Some(target.commit.clone()),
            target.rollout.as_ref().map(|p| p.from.clone()),
            Some(tip.clone()),
            self.state.applied.as_ref().map(|a| a.commit.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.state.applied.as_ref().map(|a| &a.commit) == Some(&target.commit)
            && self.applied_in_place()
        {
            tree::prune_trees(&self.dirs.trees(), &keep);
            return Outcome::UpToDate;
        }
        let tree_dir = self.dirs.tree(&target.commit);
        if let Err(e) = tree::swap_specs_dir(&self.specs_dir, &tree_dir) {
            self.state.last_error = Some(e.clone());
            self.events.emit(None, "source-error", e.clone());
            return Outcome::Failed(e);
        }
        let commit = match objects.commit(&target.commit) {
            Ok(Some(c)) => c,
            _ => return Outcome::Failed(format!("commit {} vanished", target.commit)),
        };
        let signer = if target.commit == *tip && signer_of_tip.is_some() {
            signer_of_tip
        } else {
            match trust {
                Trust::Signed { signers, .. } => signature::verify(&commit, signers, clock).ok(),
                Trust::Unsigned => None,
            }
        };
        let _ = self.git.set_ref(APPLIED_REF, &target.commit);
        let before = self.state.applied.take();
        self.state.previous = before.as_ref().map(|a| a.commit.clone());
        self.state.applied = Some(AppliedCommit {
            commit: target.commit.clone(),
            subject: commit.subject.clone(),
            author: commit.author.clone(),
            signer: signer.clone(),
            applied_at: now_rfc3339(),
        });
        let mut keep = keep;
        keep.extend(self.state.previous.clone());
        tree::prune_trees(&self.dirs.trees(), &keep);
        let by = signer
            .map(|s| format!(", signed by {} ({})", s.principal, s.fingerprint))
            .unwrap_or_default();
        let why = match &target.rollout {
            Some(p) if p.included => format!("; in rollout {}", p.id),
            Some(p) => format!("; outside rollout {}: its from commit", p.id),
            None => String::new(),
        };
        self.events.emit(
            None,
            "source-applied",
            format!(
                "applied {} {:?}{by}{why}",
                target.commit.short(),
                commit.subject
            ),
        );
        self.save();
        let _ = self.git.housekeep();
        Outcome::Applied(target.commit.clone())
    }

    fn refuse(&mut self, tip: &CommitId, r: Refusal, origin: &Origin, digest: [u8; 32]) -> Outcome {
        self.judged = Some((tip.clone(), digest));
        self.metrics
            .source_refused
            .get_or_create(&ReasonLabel {
                reason: r.reason.as_str().into(),
            })
            .inc();
        let refused = RefusedTip {
            tip: tip.clone(),
            commit: r.commit.clone(),
            reason: r.reason,
            detail: r.detail.clone(),
            via: origin.describe(),
            time: now_rfc3339(),
        };
        self.events.emit(
            None,
            "source-refused",
            format!(
                "refused {} ({}): {r}; {} stays applied",
                tip.short(),
                origin.describe(),
                self.state
                    .applied
                    .as_ref()
                    .map_or("nothing".to_string(), |a| a.commit.short().to_string())
            ),
        );
        self.state.refused.insert(0, refused.clone());
        self.state.refused.truncate(REFUSED_KEPT);
        self.save();
        Outcome::Refused(Box::new(refused))
    }

    /// The allowed signers (`None` with allow_unsigned) and a digest of the file, read anew
    /// for every judgement so an edited file counts at once.
    fn load_signers(&self) -> Result<(Option<AllowedSigners>, [u8; 32]), String> {
        let Some(path) = &self.config.allowed_signers else {
            return Ok((None, [0; 32]));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read allowed_signers {}: {e}", path.display()))?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let signers = AllowedSigners::parse(&text).map_err(|errs| {
            format!(
                "allowed_signers {}: {}",
                path.display(),
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        if signers.entries.is_empty() {
            return Err(format!("allowed_signers {} lists no key", path.display()));
        }
        Ok((Some(signers), digest))
    }

    fn save(&mut self) {
        let times_only = SourceState {
            last_fetch: self.saved.last_fetch.clone(),
            last_success: self.saved.last_success.clone(),
            ..self.state.clone()
        } == self.saved;
        if times_only {
            return;
        }
        match crate::fsutil::atomic_write_json(&self.dirs.state(), &self.state) {
            Ok(()) => self.saved = self.state.clone(),
            Err(e) => tracing::warn!("cannot save the source state: {e}"),
        }
    }
}

/// Why a tip is not taken: a refusal (the tip's fault) or a failure (the host's or git's).
enum Judged {
    Refused(Refusal),
    Failed(String),
}

/// One file of a commit by its path (`a/b/rollout.toml`); `None` when there is none.
fn read_file(
    objects: &mut Objects,
    commit: &Commit,
    path: &str,
) -> Result<Option<Vec<u8>>, Judged> {
    let id_len = commit.id.as_str().len() / 2;
    let mut tree = commit.tree.as_str().to_string();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let raw = objects
            .read_kind(&tree, "tree")
            .map_err(Judged::Failed)?
            .ok_or_else(|| Judged::Failed(format!("tree {tree} is missing")))?;
        let entries = tree::parse_tree(&raw, id_len).map_err(Judged::Failed)?;
        let Some(e) = entries.iter().find(|e| e.name == part.as_bytes()) else {
            return Ok(None);
        };
        if i + 1 == parts.len() {
            if e.mode != 0o100644 && e.mode != 0o100755 {
                return Err(Judged::Refused(Refusal {
                    commit: commit.id.clone(),
                    reason: Reason::BadRollout,
                    detail: format!("has a {path} that is not a regular file"),
                }));
            }
            return match objects
                .read(&e.id, crate::source::load::MAX_FILE_SIZE)
                .map_err(|e| Judged::Failed(e.to_string()))?
            {
                command::Object::Found { data, .. } => Ok(Some(data)),
                command::Object::TooLarge { .. } => Err(Judged::Refused(Refusal {
                    commit: commit.id.clone(),
                    reason: Reason::BadRollout,
                    detail: format!("has a {path} over the size limit"),
                })),
                command::Object::Missing => Err(Judged::Failed(format!(
                    "{path} of {} is missing",
                    commit.id
                ))),
            };
        }
        tree = e.id.clone();
    }
    Ok(None)
}

fn is_bundle_name(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !name.starts_with('.') && name.ends_with(".bundle")
}

/// Whether the import dir scanner of images should leave this file to the source.
pub fn is_bundle(p: &Path) -> bool {
    is_bundle_name(p)
}

/// What `berth source import` prints for an outcome.
pub fn import_result(bundle: &Path, outcome: &Outcome, tip: Option<CommitId>) -> ImportResult {
    let (word, message) = match outcome {
        Outcome::Applied(c) => ("applied", format!("applied {c}")),
        Outcome::UpToDate => ("up-to-date", "nothing new to apply".to_string()),
        Outcome::Refused(r) => (
            "refused",
            format!(
                "refused {}: {}: commit {} {}",
                r.tip, r.reason, r.commit, r.detail
            ),
        ),
        Outcome::Failed(e) => ("failed", e.clone()),
    };
    ImportResult {
        bundle: bundle.display().to_string(),
        tip,
        outcome: word.into(),
        message,
    }
}

/// The status of a source from its config and state (the agent's, or read from disk).
pub fn status_of(config: &SourceConfig, host: &HostFacts, state: &SourceState) -> SourceStatus {
    let mut warnings = Vec::new();
    if config.allow_unsigned {
        warnings.push(
            "allow_unsigned = true: commits are applied without any signature check".to_string(),
        );
    }
    if host.host_id.is_none() {
        warnings.push(
            "no host id (host_id unset, /etc/machine-id unreadable): match.hosts never match and \
             rollouts keep this host on their from commit"
                .to_string(),
        );
    }
    SourceStatus {
        remote: config.git.clone(),
        branch: config.branch.clone(),
        path: config.path.clone(),
        host_id: host.host_id.clone(),
        labels: host.labels.clone(),
        warnings,
        state: state.clone(),
    }
}

/// The persisted state of the source of `config`, for `berth source` without an agent.
pub fn read_status(config: &Config, host: &HostFacts) -> Option<SourceStatus> {
    let sc = config.git_source.as_ref()?;
    let dirs = SourceDirs::new(&config.state_dir);
    let state = crate::fsutil::read_json::<SourceState>(&dirs.state())
        .ok()
        .flatten()
        .unwrap_or_default();
    Some(status_of(sc, host, &state))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Now, and the host's offset from UTC (for allowed_signers times without a `Z`).
pub fn clock_now() -> Clock {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Clock {
        now,
        local_offset: local_offset(now),
    }
}

fn local_offset(t: i64) -> i64 {
    let time = t as libc::time_t;
    // SAFETY: localtime_r writes only the tm we hand it; an all-zero tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let ok = unsafe { !libc::localtime_r(&time, &mut tm).is_null() };
    if ok { tm.tm_gmtoff } else { 0 }
}

/// The rollout this host takes part in, as `berth source` shows it.
fn rollout_view(target: &Target) -> Option<RolloutView> {
    target.rollout.as_ref().map(|p| RolloutView {
        id: p.id.clone(),
        from: p.from.clone(),
        percent: berth_spec::rollout::Percent::from_hundredths(p.percent_hundredths)
            .map(|x| x.to_string())
            .unwrap_or_default(),
        bucket: p.bucket,
        included: p.included,
        applies: target.commit.clone(),
    })
}
