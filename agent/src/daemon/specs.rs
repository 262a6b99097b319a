//! The spec side of the loop, kept off the loop: reading the spec source and keeping each
//! container's last valid spec on disk are file I/O, so they run on a blocking thread, one job
//! at a time, and come back as an event. The loop only decides what a job should do.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tokio::sync::oneshot;

use crate::desired::{LastValid, SpecSource};
use crate::layout::Layout;
use crate::reconcile::Desired;
use crate::reconcile::desired_set::Scan;
use crate::status::PlanView;

/// The spec source and the last valid specs, with their files. Whoever holds it may touch the
/// disk: a blocking thread while a job runs, the loop (which never does) in between.
pub struct SpecStore {
    source: Box<dyn SpecSource>,
    last_valid: LastValid,
    containers_dir: PathBuf,
}

/// What a spec job does: the forgets first (a spec deleted and written again must not lose
/// the new version), then the read.
#[derive(Debug, Default)]
pub struct Job {
    forget: Vec<Forget>,
    /// Read the source, for the request of this generation.
    scan: Option<u64>,
}

/// A last valid spec that is no longer wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    /// Its container was pruned (its dir went with it).
    Pruned(String),
    /// Its file was deleted before a container existed: its update history and the temp
    /// files of writes a kill cut short go too, and the dir when nothing else is left in it
    /// (an orphan bundle is the sweep's to judge).
    Deleted(String),
}

/// A finished read of the source.
#[derive(Debug)]
pub struct Read {
    pub generation: u64,
    pub desired: Desired,
    /// A refused file changed moments ago and may be half-written: read again shortly.
    pub unsettled: bool,
    /// Why the source as a whole could not be read.
    pub error: Option<String>,
    /// Names with a last valid spec and no file (only from a readable source).
    pub orphans: BTreeSet<String>,
}

impl Job {
    /// A read of the source, for the request of this generation.
    pub fn read(generation: u64) -> Self {
        Job {
            forget: Vec::new(),
            scan: Some(generation),
        }
    }
}

impl SpecStore {
    /// Loads the last valid specs (disk: call it off the loop).
    pub fn open(source: Box<dyn SpecSource>, layout: &Layout) -> Self {
        SpecStore {
            source,
            last_valid: LastValid::load(layout),
            containers_dir: layout.containers_dir(),
        }
    }

    /// Runs a job (disk: call it off the loop).
    pub fn run(&mut self, job: Job) -> Option<Read> {
        for f in job.forget {
            self.forget(&f);
        }
        let generation = job.scan?;
        let scan: Scan = self.source.scan();
        let orphans = match scan.error {
            Some(_) => BTreeSet::new(),
            None => self
                .last_valid
                .names()
                .filter(|n| !scan.specs.contains_key(*n))
                .map(str::to_string)
                .collect(),
        };
        Some(Read {
            generation,
            desired: self.last_valid.desired(&scan),
            unsettled: scan.unsettled,
            error: scan.error,
            orphans,
        })
    }

    fn forget(&mut self, f: &Forget) {
        match f {
            Forget::Pruned(name) => self.last_valid.forget(name),
            Forget::Deleted(name) => {
                self.last_valid.forget(name);
                let dir = self.containers_dir.join(name);
                let _ = crate::fsutil::remove_file_if_exists(&dir.join("update.json"));
                crate::fsutil::remove_stale_temps(&dir);
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// The loop's bookkeeping of spec jobs: what is asked, what runs, who waits for a read.
pub struct SpecJobs {
    /// `None` while its job runs: jobs never overlap.
    store: Option<Box<SpecStore>>,
    /// Generations of read requests: asked, handed to a job, read.
    asked: u64,
    started: u64,
    read: u64,
    forgets: Vec<Forget>,
    /// Last valid specs without a file, forgotten once no container or action holds them.
    pub orphans: BTreeSet<String>,
    /// `berth plan` answers, each after a read that began after it asked.
    plan_replies: Vec<(u64, oneshot::Sender<PlanView>)>,
}

impl SpecJobs {
    /// After the first read (done before the loop starts).
    pub fn new(store: SpecStore, first: &Read) -> Self {
        SpecJobs {
            store: Some(Box::new(store)),
            asked: first.generation,
            started: first.generation,
            read: first.generation,
            forgets: Vec::new(),
            orphans: first.orphans.clone(),
            plan_replies: Vec::new(),
        }
    }

    /// Asks for a read of the source; returns its generation.
    pub fn ask_read(&mut self) -> u64 {
        self.asked += 1;
        self.asked
    }

    pub fn forget(&mut self, f: Forget) {
        self.orphans.remove(match &f {
            Forget::Pruned(n) | Forget::Deleted(n) => n,
        });
        self.forgets.push(f);
    }

    /// A plan answer that waits for the next read.
    pub fn reply_after_read(&mut self, reply: oneshot::Sender<PlanView>) {
        let generation = self.ask_read();
        self.plan_replies.push((generation, reply));
    }

    /// The next job, when there is work and no job runs.
    pub fn next_job(&mut self) -> Option<(Box<SpecStore>, Job)> {
        let wants_read = self.asked > self.started;
        if !wants_read && self.forgets.is_empty() {
            return None;
        }
        let store = self.store.take()?;
        self.started = self.asked;
        let job = Job {
            forget: std::mem::take(&mut self.forgets),
            scan: wants_read.then_some(self.asked),
        };
        Some((store, job))
    }

    /// A job came back; returns the plan replies its read answers.
    pub fn finished(
        &mut self,
        store: Box<SpecStore>,
        read: Option<&mut Read>,
    ) -> Vec<oneshot::Sender<PlanView>> {
        self.store = Some(store);
        let Some(read) = read else {
            return Vec::new();
        };
        self.read = read.generation;
        self.orphans = std::mem::take(&mut read.orphans);
        let (answered, waiting) = std::mem::take(&mut self.plan_replies)
            .into_iter()
            .partition(|(g, _)| *g <= read.generation);
        self.plan_replies = waiting;
        answered.into_iter().map(|(_, r)| r).collect()
    }

    /// Whether every read asked for has been read and nothing waits to be forgotten.
    pub fn idle(&self) -> bool {
        self.store.is_some() && self.read == self.asked && self.forgets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_spec::{ContainerSpec, ImageSource};

    use super::*;

    struct Fixed(Scan);

    impl SpecSource for Fixed {
        fn scan(&mut self) -> Scan {
            self.0.clone()
        }
    }

    fn store(dir: &std::path::Path, names: &[&str]) -> SpecStore {
        let cfg = berth_spec::Config {
            state_dir: dir.to_path_buf(),
            ..Default::default()
        };
        let specs = names
            .iter()
            .map(|n| {
                let image = ImageSource::parse(&format!("127.0.0.1:1/{n}:1")).unwrap();
                (
                    n.to_string(),
                    Ok(Arc::new(ContainerSpec::with_defaults(n, image))),
                )
            })
            .collect();
        SpecStore::open(
            Box::new(Fixed(Scan {
                specs,
                ..Scan::default()
            })),
            &Layout::new(&cfg),
        )
    }

    fn first_read(store: &mut SpecStore) -> Read {
        store.run(Job::read(1)).unwrap()
    }

    #[test]
    fn one_job_at_a_time_and_reads_coalesce() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), &["a"]);
        let first = first_read(&mut s);
        let mut jobs = SpecJobs::new(s, &first);
        assert!(jobs.idle());
        assert!(jobs.next_job().is_none(), "nothing asked");

        let (tx, _rx) = oneshot::channel();
        jobs.reply_after_read(tx);
        jobs.ask_read();
        assert!(!jobs.idle());
        let (store, job) = jobs.next_job().unwrap();
        assert_eq!(job.scan, Some(3), "two asks, one read");
        // Asked again while the job runs: no second job until the first is back.
        jobs.ask_read();
        assert!(jobs.next_job().is_none());

        let mut store = store;
        let mut read = store.run(job);
        let answered = jobs.finished(store, read.as_mut());
        assert_eq!(answered.len(), 1, "the plan reply asked before the read");
        assert!(!jobs.idle(), "the third ask is not read yet");
        let (mut store, job) = jobs.next_job().unwrap();
        let mut read = store.run(job);
        jobs.finished(store, read.as_mut());
        assert!(jobs.idle());
    }

    #[test]
    fn a_plan_reply_waits_for_a_read_that_began_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), &["a"]);
        let first = first_read(&mut s);
        let mut jobs = SpecJobs::new(s, &first);
        jobs.ask_read();
        let (mut store, job) = jobs.next_job().unwrap();
        let (tx, _rx) = oneshot::channel();
        jobs.reply_after_read(tx);
        let mut read = store.run(job);
        assert!(
            jobs.finished(store, read.as_mut()).is_empty(),
            "that read began before the reply was asked for"
        );
        let (mut store, job) = jobs.next_job().unwrap();
        let mut read = store.run(job);
        assert_eq!(jobs.finished(store, read.as_mut()).len(), 1);
    }

    #[test]
    fn forgets_run_before_the_read_and_orphans_come_from_a_readable_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), &["a", "b"]);
        let first = first_read(&mut s);
        assert!(first.orphans.is_empty());
        let spec_json = dir.path().join("containers/b/spec.json");
        assert!(spec_json.exists(), "a valid spec is persisted");

        // b's file goes: an orphan, until forgotten.
        let mut s = store(dir.path(), &["a"]);
        let read = first_read(&mut s);
        assert_eq!(read.orphans, BTreeSet::from(["b".to_string()]));
        let mut jobs = SpecJobs::new(s, &read);
        jobs.forget(Forget::Deleted("b".into()));
        assert!(jobs.orphans.is_empty());
        assert!(!jobs.idle(), "a forget is work");
        let (mut store, job) = jobs.next_job().unwrap();
        assert_eq!(job.scan, None);
        assert!(store.run(job).is_none());
        assert!(!spec_json.exists());
        assert!(
            !dir.path().join("containers/b").exists(),
            "its empty dir goes"
        );
    }
}
