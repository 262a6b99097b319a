//! The source in the agent: a task that syncs at start, then every `interval` (plus this
//! host's jitter), sooner after SIGHUP or `berth apply`, later after failures (backoff); and
//! imports bundles when asked or when they land in the import dir. Syncs run one at a time on a
//! blocking thread; the status is published after each.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use super::{GitSource, Outcome, clock_now, import_result};
use crate::reconcile::fleet::schedule;
use crate::status::{ImportResult, SourceStatus};

/// What the agent asks of the source.
pub enum SourceRequest {
    /// Fetch now; `done` is answered when the sync (and any swap of `specs_dir`) is over.
    FetchNow(Option<oneshot::Sender<()>>),
    /// Import one bundle.
    Import(PathBuf, oneshot::Sender<ImportResult>),
    /// Look for new bundles in the import dir.
    ScanImports,
}

/// The agent's handle on the running source.
#[derive(Clone)]
pub struct SourceHandle {
    pub status: watch::Receiver<Arc<SourceStatus>>,
    requests: mpsc::UnboundedSender<SourceRequest>,
}

impl SourceHandle {
    /// Asks for a fetch now; the returned receiver resolves when it is done.
    pub fn fetch_now(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.requests.send(SourceRequest::FetchNow(Some(tx)));
        rx
    }

    /// Asks for a fetch now, without waiting for it.
    pub fn fetch_soon(&self) {
        let _ = self.requests.send(SourceRequest::FetchNow(None));
    }

    pub fn scan_imports(&self) {
        let _ = self.requests.send(SourceRequest::ScanImports);
    }

    pub async fn import(&self, bundle: PathBuf) -> Option<ImportResult> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(SourceRequest::Import(bundle, tx)).ok()?;
        rx.await.ok()
    }
}

/// Starts the source's task; `import_dir` is where bundles may be dropped.
pub fn spawn(source: GitSource, import_dir: PathBuf) -> SourceHandle {
    let (status_tx, status) = watch::channel(Arc::new(source.status()));
    let (requests, mut rx) = mpsc::unbounded_channel();
    let interval = source.interval();
    let host = source.host_id().unwrap_or("").to_string();
    let polls = source.has_remote();
    let source = Arc::new(Mutex::new(source));
    tokio::spawn(async move {
        let mut n: u64 = 0;
        // The first sync at once: a booting host converges without waiting a whole interval.
        let mut next = Some(tokio::time::Instant::now());
        scan(&source, &import_dir).await;
        loop {
            let req = tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
                _ = sleep_until(next) => SourceRequest::FetchNow(None),
            };
            match req {
                SourceRequest::FetchNow(done) => {
                    let failures = run(&source, |s| {
                        s.sync(clock_now());
                        s.state().fetch_failures
                    })
                    .await;
                    n += 1;
                    next = polls.then(|| {
                        let wait = if failures > 0 {
                            schedule::retry_delay(interval, failures, &host, n)
                        } else {
                            schedule::poll_delay(interval, &host, n)
                        };
                        tokio::time::Instant::now() + wait
                    });
                    if let Some(d) = done {
                        let _ = d.send(());
                    }
                }
                SourceRequest::Import(path, reply) => {
                    let result = run(&source, move |s| {
                        let outcome = s.import_bundle(&path, clock_now());
                        import_result(&path, &outcome, s.state().tip.clone())
                    })
                    .await;
                    let _ = reply.send(result);
                }
                SourceRequest::ScanImports => scan(&source, &import_dir).await,
            }
            let status = run(&source, |s| s.status()).await;
            status_tx.send_replace(Arc::new(status));
        }
    });
    SourceHandle { status, requests }
}

async fn scan(source: &Arc<Mutex<GitSource>>, dir: &std::path::Path) {
    let dir = dir.to_path_buf();
    run(source, move |s| {
        for r in s.import_dir(&dir, clock_now()) {
            tracing::info!(bundle = %r.bundle, outcome = %r.outcome, "{}", r.message);
        }
    })
    .await;
}

/// Runs `f` on the source on a blocking thread (git runs there, never on a tokio worker).
async fn run<T: Send + 'static>(
    source: &Arc<Mutex<GitSource>>,
    f: impl FnOnce(&mut GitSource) -> T + Send + 'static,
) -> T {
    let source = source.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = source.lock().expect("source lock");
        f(&mut s)
    })
    .await
    .expect("source task panicked")
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// For `berth apply --once` without an agent: one sync and the import dir, in this thread.
pub fn sync_once(source: &mut GitSource, import_dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    for r in source.import_dir(import_dir, clock_now()) {
        lines.push(format!("{}: {}", r.bundle, r.message));
    }
    match source.sync(clock_now()) {
        Outcome::Failed(e) => lines.push(format!("source: {e}")),
        Outcome::Refused(r) => lines.push(format!(
            "source: refused {}: {}: commit {} {}",
            r.tip.short(),
            r.reason,
            r.commit.short(),
            r.detail
        )),
        Outcome::Applied(_) | Outcome::UpToDate => {}
    }
    lines
}
