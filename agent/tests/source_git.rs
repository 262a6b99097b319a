//! The spec repository source against real git: a bare repository served by `git daemon` on
//! 127.0.0.1, commits signed by `ssh-keygen` keys (and one attacker's key), the source's own
//! repository and trees on disk. Each test has its own repository, daemon and state dir.

use std::path::PathBuf;
use std::sync::Arc;

use berth_agent::events::EventLog;
use berth_agent::metrics::Metrics;
use berth_agent::reconcile::fleet::Reason;
use berth_agent::source::git::{GitSource, Outcome, clock_now};
use berth_e2e::gitrepo::{GitDaemon, GitHttps, Sign, SigningKey, SpecRepo, SshServer};
use berth_spec::config::SourceConfig;
use berth_spec::{Config, HostFacts};

struct Fixture {
    repo: SpecRepo,
    daemon: GitDaemon,
    alice: SigningKey,
    mallory: SigningKey,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let repo = SpecRepo::new("specs");
        let dir = tempfile::Builder::new()
            .prefix("berth-src-")
            .tempdir()
            .unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let alice = SigningKey::new(&keys, "alice");
        let mallory = SigningKey::new(&keys, "mallory");
        std::fs::write(
            dir.path().join("allowed_signers"),
            alice.allowed("alice@example.com"),
        )
        .unwrap();
        let daemon = GitDaemon::start(repo.bare.parent().unwrap(), dir.path());
        Fixture {
            repo,
            daemon,
            alice,
            mallory,
            dir,
        }
    }

    fn config(&self, host: &str, extra: impl FnOnce(&mut SourceConfig)) -> Config {
        let root = self.dir.path().join(host);
        let mut source = SourceConfig {
            git: Some(self.daemon.url("fleet.git")),
            path: "specs".into(),
            allowed_signers: Some(self.dir.path().join("allowed_signers")),
            ..SourceConfig::default()
        };
        extra(&mut source);
        Config {
            specs_dir: root.join("etc/specs"),
            state_dir: root.join("state"),
            git_source: Some(source),
            ..Config::default()
        }
    }

    fn source(&self, host: &str) -> (GitSource, Config, Arc<Metrics>) {
        self.source_with(host, |_| {})
    }

    fn source_with(
        &self,
        host: &str,
        extra: impl FnOnce(&mut SourceConfig),
    ) -> (GitSource, Config, Arc<Metrics>) {
        let config = self.config(host, extra);
        let metrics = Arc::new(Metrics::new());
        let facts = HostFacts {
            host_id: Some(host.to_string()),
            labels: Default::default(),
        };
        let src = GitSource::open(
            &config,
            facts,
            Arc::new(EventLog::default()),
            metrics.clone(),
        )
        .unwrap();
        (src, config, metrics)
    }

    fn signed(&mut self, msg: &str) -> String {
        let key = SigningKey {
            private: self.alice.private.clone(),
            public: self.alice.public.clone(),
        };
        self.repo.commit(msg, Sign::With(&key))
    }
}

/// The commit `specs_dir` points at, read from the link.
fn applied_tree(config: &Config) -> Option<String> {
    let link = std::fs::read_link(&config.specs_dir).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

fn refused(o: Outcome) -> (Reason, String, String) {
    match o {
        Outcome::Refused(r) => (r.reason, r.commit.to_string(), r.tip.to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn signed_commits_apply_and_an_unsigned_one_in_the_range_refuses_the_tip() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    let c1 = f.signed("web");
    f.repo.push(false);
    let (mut src, config, metrics) = f.source("h1");
    assert_eq!(src.sync(clock_now()), Outcome::Applied(c1.parse().unwrap()));
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    let specs = &config.specs_dir;
    assert_eq!(
        std::fs::read_to_string(specs.join("web.toml")).unwrap(),
        "image = \"busybox\"\n"
    );
    let applied = src.state().applied.clone().unwrap();
    assert_eq!(applied.subject, "web");
    assert_eq!(applied.signer.unwrap().principal, "alice@example.com");
    assert!(
        metrics
            .encode()
            .contains(&format!("berth_source_commit_info{{commit=\"{c1}\"}} 1"))
    );
    // Nothing new: nothing done.
    assert_eq!(src.sync(clock_now()), Outcome::UpToDate);

    // An unsigned commit, then a signed one on top: the tip is refused for the one below it.
    f.repo.write("db.toml", "image = \"busybox\"\n");
    let c2 = f.repo.commit("unsigned db", Sign::Unsigned);
    f.repo.write("db.toml", "image = \"busybox:1\"\n");
    let c3 = f.signed("signed on top");
    f.repo.push(false);
    let (reason, commit, tip) = refused(src.sync(clock_now()));
    assert_eq!(
        (reason, commit.as_str(), tip.as_str()),
        (Reason::Unsigned, c2.as_str(), c3.as_str())
    );
    assert_eq!(
        applied_tree(&config).as_deref(),
        Some(c1.as_str()),
        "tip not applied"
    );
    assert!(!specs.join("db.toml").exists());
    assert_eq!(src.state().verified.as_ref().unwrap().as_str(), c1);
    assert!(
        metrics
            .encode()
            .contains("berth_source_refused_total{reason=\"unsigned\"} 1")
    );
    // The same tip again: not judged (nor counted) again.
    assert_eq!(src.sync(clock_now()), Outcome::UpToDate);
    assert!(
        metrics
            .encode()
            .contains("berth_source_refused_total{reason=\"unsigned\"} 1")
    );
    // Signing more commits on top never makes the unsigned one acceptable.
    f.repo.write("db.toml", "image = \"busybox:2\"\n");
    let c4 = f.signed("more");
    f.repo.push(false);
    let (reason, commit, _) = refused(src.sync(clock_now()));
    assert_eq!((reason, commit.as_str()), (Reason::Unsigned, c2.as_str()));
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    let status = src.status();
    assert_eq!(status.state.refused.len(), 2);
    assert_eq!(status.state.tip.unwrap().as_str(), c4);
}

#[test]
fn a_commit_signed_by_an_unknown_key_is_refused() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    let c1 = f.signed("web");
    f.repo.push(false);
    let (mut src, config, _) = f.source("h1");
    assert!(matches!(src.sync(clock_now()), Outcome::Applied(_)));
    f.repo.write(
        "web.toml",
        "image = \"evil\"\nsecurity = { privileged = true }\n",
    );
    let key = SigningKey {
        private: f.mallory.private.clone(),
        public: f.mallory.public.clone(),
    };
    let c2 = f.repo.commit("evil", Sign::With(&key));
    f.repo.push(false);
    let (reason, commit, _) = refused(src.sync(clock_now()));
    assert_eq!(
        (reason, commit.as_str()),
        (Reason::UnknownSigner, c2.as_str())
    );
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    assert_eq!(
        std::fs::read_to_string(config.specs_dir.join("web.toml")).unwrap(),
        "image = \"busybox\"\n"
    );
    // On a first run too: a host that never saw the repository takes nothing from it.
    let (mut fresh, fresh_config, _) = f.source("h2");
    let (reason, _, _) = refused(fresh.sync(clock_now()));
    assert_eq!(reason, Reason::UnknownSigner);
    assert!(applied_tree(&fresh_config).is_none());
}

#[test]
fn a_force_push_to_an_older_signed_commit_is_refused() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox:1\"\n");
    let c1 = f.signed("v1");
    f.repo.push(false);
    let (mut src, config, _) = f.source("h1");
    assert!(matches!(src.sync(clock_now()), Outcome::Applied(_)));
    f.repo.write("web.toml", "image = \"busybox:2\"\n");
    let c2 = f.signed("v2");
    f.repo.push(false);
    assert_eq!(src.sync(clock_now()), Outcome::Applied(c2.parse().unwrap()));
    // The remote goes back to v1 (signed, and once applied): a replay, refused.
    f.repo.reset_hard(&c1);
    f.repo.push(true);
    let (reason, commit, _) = refused(src.sync(clock_now()));
    assert_eq!(
        (reason, commit.as_str()),
        (Reason::NotFastForward, c1.as_str())
    );
    assert_eq!(applied_tree(&config).as_deref(), Some(c2.as_str()));
    // A rewritten history, signed throughout, is refused as well.
    f.repo.write("web.toml", "image = \"busybox:other\"\n");
    let c3 = f.signed("rewritten");
    f.repo.push(true);
    let (reason, commit, _) = refused(src.sync(clock_now()));
    assert_eq!(
        (reason, commit.as_str()),
        (Reason::NotFastForward, c3.as_str())
    );
    assert_eq!(applied_tree(&config).as_deref(), Some(c2.as_str()));
}

#[test]
fn a_dead_remote_keeps_the_applied_commit_and_backs_off() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    let c1 = f.signed("web");
    f.repo.push(false);
    let (mut src, config, metrics) = f.source("h1");
    assert!(matches!(src.sync(clock_now()), Outcome::Applied(_)));
    f.daemon.stop();
    for n in 1..=3 {
        match src.sync(clock_now()) {
            Outcome::Failed(e) => assert!(e.contains("fetch"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(src.state().fetch_failures, n);
    }
    assert!(src.state().last_error.is_some());
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    assert!(config.specs_dir.join("web.toml").exists());
    assert!(
        metrics
            .encode()
            .contains("berth_source_fetch_failures_total 3")
    );
    // The state survives a restart of the agent with the error and the applied commit.
    drop(src);
    let (src, _, _) = f.source("h1");
    assert_eq!(src.state().fetch_failures, 3);
    assert_eq!(src.state().applied.as_ref().unwrap().commit.as_str(), c1);
}

#[test]
fn bundles_are_judged_like_fetches_offline() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox:1\"\n");
    let c1 = f.signed("v1");
    let (mut src, config, _) = f.source_with("h1", |s| s.git = None);
    let full = f.dir.path().join("full.bundle");
    f.repo.bundle(&full, None);
    assert_eq!(
        src.import_bundle(&full, clock_now()),
        Outcome::Applied(c1.parse().unwrap())
    );
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    // An incremental bundle on top.
    f.repo.write("web.toml", "image = \"busybox:2\"\n");
    let c2 = f.signed("v2");
    let inc = f.dir.path().join("inc.bundle");
    f.repo.bundle(&inc, Some(&c1));
    assert_eq!(
        src.import_bundle(&inc, clock_now()),
        Outcome::Applied(c2.parse().unwrap())
    );
    // The same bundle again: nothing new. The old full one: a replay.
    assert_eq!(src.import_bundle(&inc, clock_now()), Outcome::UpToDate);
    let (reason, _, _) = refused(src.import_bundle(&full, clock_now()));
    assert_eq!(reason, Reason::NotFastForward);
    // An unsigned commit in a bundle is refused like a fetched one.
    f.repo.write("web.toml", "image = \"busybox:3\"\n");
    let c3 = f.repo.commit("unsigned", Sign::Unsigned);
    let bad = f.dir.path().join("bad.bundle");
    f.repo.bundle(&bad, Some(&c2));
    let (reason, commit, _) = refused(src.import_bundle(&bad, clock_now()));
    assert_eq!((reason, commit.as_str()), (Reason::Unsigned, c3.as_str()));
    assert_eq!(applied_tree(&config).as_deref(), Some(c2.as_str()));
    // Not a bundle at all.
    let junk = f.dir.path().join("junk.bundle");
    std::fs::write(&junk, "not a bundle").unwrap();
    assert!(matches!(
        src.import_bundle(&junk, clock_now()),
        Outcome::Failed(_)
    ));
    // Dropped in the import dir: imported once.
    let import = f.dir.path().join("import");
    std::fs::create_dir(&import).unwrap();
    f.repo.write("web.toml", "image = \"busybox:4\"\n");
    let c4 = f.signed("v4");
    f.repo.bundle(&import.join("next.bundle"), None);
    let results = src.import_dir(&import, clock_now());
    assert_eq!(results.len(), 1, "{results:?}");
    // c3 (unsigned) lies between c2 and c4: still refused, whatever the route.
    assert_eq!(results[0].outcome, "refused");
    assert!(
        src.import_dir(&import, clock_now()).is_empty(),
        "handled once"
    );
    let _ = c4;
}

#[test]
fn trust_on_first_use_and_allow_unsigned() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox:1\"\n");
    let c1 = f.repo.commit("unsigned history", Sign::Unsigned);
    f.repo.write("web.toml", "image = \"busybox:2\"\n");
    let c2 = f.signed("first signed");
    f.repo.push(false);
    // Without a pin, the signed tip alone is enough on a first run.
    let (mut a, _, _) = f.source("a");
    assert_eq!(a.sync(clock_now()), Outcome::Applied(c2.parse().unwrap()));
    // Pinned at the unsigned root: the range above it must be signed (it is).
    let (mut b, _, _) = f.source_with("b", |s| s.trust_on_first_use = Some(c1.clone()));
    assert_eq!(b.sync(clock_now()), Outcome::Applied(c2.parse().unwrap()));
    // allow_unsigned takes an unsigned tip, and says so.
    f.repo.write("web.toml", "image = \"busybox:3\"\n");
    let c3 = f.repo.commit("unsigned again", Sign::Unsigned);
    f.repo.push(false);
    let (mut c, _, _) = f.source_with("c", |s| {
        s.allowed_signers = None;
        s.allow_unsigned = true;
    });
    assert_eq!(c.sync(clock_now()), Outcome::Applied(c3.parse().unwrap()));
    assert!(
        c.status()
            .warnings
            .iter()
            .any(|w| w.contains("allow_unsigned"))
    );
    assert!(c.state().applied.as_ref().unwrap().signer.is_none());
}

#[test]
fn only_spec_files_are_taken_from_the_tree() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    f.repo
        .write("web.toml.d/10-host.toml", "env = { A = \"1\" }\n");
    f.repo.write("sub/db.toml", "image = \"busybox\"\n");
    std::fs::write(f.repo.work.join("README.md"), "outside path").unwrap();
    std::os::unix::fs::symlink("web.toml", f.repo.work.join("specs/alias.toml")).unwrap();
    f.signed("tree");
    // A `.git` dir inside path (git's porcelain will not commit one; plumbing does).
    let key = SigningKey {
        private: f.alice.private.clone(),
        public: f.alice.public.clone(),
    };
    let c1 = f
        .repo
        .commit_with_dot_git("sub", "with a .git inside", &key);
    f.repo.push(false);
    let (mut src, config, _) = f.source("h1");
    assert_eq!(src.sync(clock_now()), Outcome::Applied(c1.parse().unwrap()));
    let specs = &config.specs_dir;
    let mut names: Vec<String> = std::fs::read_dir(specs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["alias.toml", "sub", "web.toml", "web.toml.d"]);
    assert!(specs.join("sub/db.toml").exists());
    assert!(
        !specs.join("sub/.git").exists(),
        "a .git inside path is skipped"
    );
    assert_eq!(
        std::fs::read_link(specs.join("alias.toml")).unwrap(),
        PathBuf::from("web.toml")
    );
    // Private to root, as all state.
    use std::os::unix::fs::PermissionsExt;
    let tree = std::fs::canonicalize(specs).unwrap();
    assert_eq!(
        std::fs::metadata(&tree).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(tree.join("web.toml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // A symlink out of path refuses the commit.
    std::os::unix::fs::symlink("../README.md", f.repo.work.join("specs/leak.toml")).unwrap();
    let c2 = f.signed("leak");
    f.repo.push(false);
    let (reason, commit, _) = refused(src.sync(clock_now()));
    assert_eq!((reason, commit.as_str()), (Reason::BadTree, c2.as_str()));
    std::fs::remove_file(f.repo.work.join("specs/leak.toml")).unwrap();
    // So does a file over the spec size limit.
    f.repo.write("huge.toml", &"#".repeat(2 << 20));
    let c3 = f.signed("huge");
    f.repo.push(false);
    let (reason, commit, _) = refused(src.sync(clock_now()));
    assert_eq!((reason, commit.as_str()), (Reason::BadTree, c3.as_str()));
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    // And a commit without the spec path at all (not an empty set of specs).
    f.repo.remove("huge.toml");
    std::fs::remove_dir_all(f.repo.work.join("specs")).unwrap();
    let c4 = f.signed("no specs dir");
    f.repo.push(false);
    let (reason, commit, _) = refused(src.sync(clock_now()));
    assert_eq!((reason, commit.as_str()), (Reason::BadTree, c4.as_str()));
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
}

/// Hooks and config planted in the source's own repository, and a `$HOME/.gitconfig`, are
/// never honoured (git runs with core.hooksPath=/dev/null, no global config, fsmonitor off).
#[test]
fn hooks_and_config_planted_around_git_never_run() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    f.signed("v1");
    f.repo.push(false);
    let (mut src, config, _) = f.source("h1");
    assert!(matches!(src.sync(clock_now()), Outcome::Applied(_)));
    let repo = config.state_dir.join("source/repo.git");
    let proof = f.dir.path().join("pwned");
    let script = format!("#!/bin/sh\ntouch {}\n", proof.display());
    for hook in [
        "reference-transaction",
        "post-checkout",
        "pre-auto-gc",
        "post-merge",
    ] {
        let p = repo.join("hooks").join(hook);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let planted = f.dir.path().join("planted.sh");
    std::fs::write(&planted, &script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = format!(
        "[core]\n\tfsmonitor = {p}\n\thooksPath = {h}\n\taskPass = {p}\n[credential]\n\thelper = !{p}\n",
        p = planted.display(),
        h = repo.join("hooks").display()
    );
    let mut repo_config = std::fs::read_to_string(repo.join("config")).unwrap();
    repo_config.push_str(&cfg);
    std::fs::write(repo.join("config"), repo_config).unwrap();
    std::fs::write(config.state_dir.join("source/home/.gitconfig"), &cfg).unwrap();
    f.repo.write("web.toml", "image = \"busybox:2\"\n");
    f.signed("v2");
    f.repo.push(false);
    assert!(matches!(src.sync(clock_now()), Outcome::Applied(_)));
    assert!(!proof.exists(), "a planted hook or config ran");
}

/// One poll with nothing new costs the remote one ref advertisement and no pack.
#[test]
fn an_idle_poll_is_one_ref_advertisement() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    f.signed("v1");
    f.repo.push(false);
    let (mut src, config, _) = f.source("h1");
    assert!(matches!(src.sync(clock_now()), Outcome::Applied(_)));
    let state = config.state_dir.join("source/state.json");
    let written = std::fs::metadata(&state).unwrap().modified().unwrap();
    let before = f.daemon.work();
    let connections = f.daemon.connections();
    assert_eq!(
        before.fetches, 1,
        "the first sync fetched one pack: {before:?}"
    );
    for _ in 0..5 {
        assert_eq!(src.sync(clock_now()), Outcome::UpToDate);
    }
    let after = f.daemon.work();
    assert_eq!(f.daemon.connections() - connections, 5);
    assert_eq!(after.ls_refs - before.ls_refs, 5, "{after:?}");
    assert_eq!(
        after.fetches, before.fetches,
        "no negotiation, no pack: {after:?}"
    );
    let per_poll = (after.bytes_out - before.bytes_out) / 5;
    eprintln!(
        "idle poll: {} packet lines, {per_poll} bytes from the server",
        (after.lines_out - before.lines_out) / 5
    );
    assert!(per_poll < 2048, "{per_poll} bytes for an idle poll");
    // Nor does an idle poll write to the host's disk.
    assert_eq!(
        std::fs::metadata(&state).unwrap().modified().unwrap(),
        written
    );
}

/// A rollout picks the hosts the bucket names; halting puts them back on `from`.
#[test]
fn a_rollout_applies_the_tip_on_the_hosts_its_bucket_names() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox:1\"\n");
    let c1 = f.signed("v1");
    f.repo.write("web.toml", "image = \"busybox:2\"\n");
    f.repo.write(
        "rollout.toml",
        &format!("id = \"web-2\"\nfrom = \"{c1}\"\npercent = 50\n"),
    );
    let c2 = f.signed("v2 to half the fleet");
    f.repo.push(false);
    let hosts: Vec<String> = (0..8).map(|i| format!("edge-{i:04}")).collect();
    let mut sources: Vec<_> = hosts.iter().map(|h| f.source(h)).collect();
    for (h, (src, config, metrics)) in hosts.iter().zip(sources.iter_mut()) {
        let want = if berth_spec::rollout::bucket(h, "web-2") < 5000 {
            &c2
        } else {
            &c1
        };
        assert!(matches!(src.sync(clock_now()), Outcome::Applied(_)));
        assert_eq!(applied_tree(config).as_deref(), Some(want.as_str()), "{h}");
        assert!(!config.specs_dir.join("rollout.toml").exists());
        let r = src.state().rollout.clone().unwrap();
        assert_eq!(
            (r.included, r.applies.as_str()),
            (want == &c2, want.as_str())
        );
        assert!(metrics.encode().contains(&format!(
            "berth_rollout_in{{id=\"web-2\"}} {}",
            i32::from(want == &c2)
        )));
    }
    // Widen to 80%: every host in at 50% stays in (on the new tip), more join.
    f.repo.write(
        "rollout.toml",
        &format!("id = \"web-2\"\nfrom = \"{c1}\"\npercent = 80\n"),
    );
    let c3 = f.signed("v2 to most of the fleet");
    f.repo.push(false);
    let mut joined = 0;
    for (h, (src, config, _)) in hosts.iter().zip(sources.iter_mut()) {
        let was_in = src.state().rollout.as_ref().unwrap().included;
        let _ = src.sync(clock_now());
        let now_in = src.state().rollout.as_ref().unwrap().included;
        assert!(now_in || !was_in, "{h} left the rollout when it widened");
        joined += usize::from(now_in && !was_in);
        let want = if now_in { &c3 } else { &c1 };
        assert_eq!(applied_tree(config).as_deref(), Some(want.as_str()), "{h}");
    }
    assert!(joined > 0, "widening to 80% took in no new host");
    // Halt: percent 0 sends everyone back to v1.
    f.repo.write(
        "rollout.toml",
        &format!("id = \"web-2\"\nfrom = \"{c1}\"\npercent = 0\n"),
    );
    f.signed("halt");
    f.repo.push(false);
    for (src, config, _) in sources.iter_mut() {
        let _ = src.sync(clock_now());
        assert_eq!(applied_tree(config).as_deref(), Some(c1.as_str()));
    }
    // Complete: deleting the file puts everyone on the tip.
    f.repo.remove("rollout.toml");
    let c4 = f.signed("done");
    f.repo.push(false);
    for (src, config, metrics) in sources.iter_mut() {
        assert_eq!(src.sync(clock_now()), Outcome::Applied(c4.parse().unwrap()));
        assert_eq!(applied_tree(config).as_deref(), Some(c4.as_str()));
        assert!(!metrics.encode().contains("berth_rollout_in{"));
    }
    // A `from` that is not an ancestor refuses the tip.
    f.repo.write(
        "rollout.toml",
        &format!("id = \"x\"\nfrom = \"{}\"\npercent = 5\n", "0".repeat(40)),
    );
    let c5 = f.signed("bad rollout");
    f.repo.push(false);
    let (reason, commit, _) = refused(sources[0].0.sync(clock_now()));
    assert_eq!((reason, commit.as_str()), (Reason::BadRollout, c5.as_str()));
}

/// https with a token from a file, a private CA, and git-http-backend behind basic auth: the
/// token reaches the server (and only as a header); a wrong token or an untrusted certificate
/// fails the fetch and changes nothing.
#[test]
fn https_with_a_token_file_and_a_private_ca() {
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    let c1 = f.signed("web");
    f.repo.push(false);
    let server = GitHttps::start(
        f.repo.bare.parent().unwrap(),
        f.dir.path(),
        "fleet",
        "t0ken",
    );
    let token = f.dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let url = server.url("fleet.git");
    let (mut src, config, _) = f.source_with("h1", |s| {
        s.git = Some(url.clone());
        s.token_file = Some(token.clone());
        s.username = "fleet".into();
        s.ca_file = Some(server.ca.clone());
    });
    assert_eq!(src.sync(clock_now()), Outcome::Applied(c1.parse().unwrap()));
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    let log = server.requests();
    assert!(
        log.contains("ok GET /fleet.git/info/refs?service=git-upload-pack"),
        "{log}"
    );
    assert!(!log.contains("denied"), "{log}");
    // A rotated token that the server does not know: 401, nothing changes.
    std::fs::write(&token, "wrong\n").unwrap();
    f.repo.write("db.toml", "image = \"busybox\"\n");
    f.signed("db");
    f.repo.push(false);
    match src.sync(clock_now()) {
        Outcome::Failed(e) => assert!(e.contains("git fetch failed"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(server.requests().contains("denied GET"));
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    // Without the CA, the server's certificate is not trusted.
    std::fs::write(&token, "t0ken\n").unwrap();
    let (mut other, _, _) = f.source_with("h2", |s| {
        s.git = Some(url.clone());
        s.token_file = Some(token.clone());
        s.username = "fleet".into();
    });
    match other.sync(clock_now()) {
        Outcome::Failed(e) => assert!(e.to_lowercase().contains("certificate"), "{e}"),
        o => panic!("{o:?}"),
    }
}

/// ssh with a key file and known_hosts only (no ssh config, agent or prompt), against sshd on
/// 127.0.0.1; paths with spaces and quotes survive the command line git hands to sh. An
/// unknown host key fails the fetch.
#[test]
fn ssh_with_a_key_file_and_known_hosts() {
    // sshd lets the test's key in as the user it runs as: root, which it must be.
    if !berth_e2e::require_root() {
        return;
    }
    let mut f = Fixture::new();
    f.repo.write("web.toml", "image = \"busybox\"\n");
    let c1 = f.signed("web");
    f.repo.push(false);
    let odd = f.dir.path().join("it's a dir");
    std::fs::create_dir(&odd).unwrap();
    let client = SigningKey::new(&odd, "deploy key");
    let server = SshServer::start(f.dir.path(), &client);
    let known = odd.join("known hosts");
    std::fs::write(&known, &server.known_host).unwrap();
    let url = server.url(&f.repo.bare);
    let (mut src, config, _) = f.source_with("h1", |s| {
        s.git = Some(url.clone());
        s.ssh_key_file = Some(client.private.clone());
        s.known_hosts = Some(known.clone());
    });
    assert_eq!(src.sync(clock_now()), Outcome::Applied(c1.parse().unwrap()));
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
    // Another host key for that address: refused by ssh, nothing changes.
    let other = SigningKey::new(f.dir.path(), "other-host");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {}\n", server.port, other.public),
    )
    .unwrap();
    f.repo.write("db.toml", "image = \"busybox\"\n");
    f.signed("db");
    f.repo.push(false);
    match src.sync(clock_now()) {
        Outcome::Failed(e) => assert!(e.contains("Host key verification failed"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(applied_tree(&config).as_deref(), Some(c1.as_str()));
}
