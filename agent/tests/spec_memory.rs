//! What 10,000 specs cost the agent in memory, counted at the allocator, on the agent's own
//! path: the spec dir's source (with its cache), the last valid specs, the desired set, a plan,
//! the status list, and the status list served on the API socket.
//!
//! - The source's cache, the last valid specs and the desired set share one copy of each spec:
//!   what they hold together is within one copy plus their own small entries.
//! - A status response of 10,000 entries is written to the socket as it is serialised: the
//!   server never holds the whole document (nor a copy of the status list).
//!
//! This binary has a counting global allocator of its own, so it holds one test only (tests
//! running in parallel would count each other's allocations).

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use berth_agent::api::server::{ApiState, serve};
use berth_agent::desired::{LastValid, SpecSource};
use berth_agent::events::EventLog;
use berth_agent::layout::Layout;
use berth_agent::metrics::Metrics;
use berth_agent::reconcile::{Observed, plan, report};
use berth_agent::source::dir::DirSource;
use berth_agent::source::perms::TrustedOwners;
use berth_agent::status::ContainerStatus;
use berth_spec::SpecDefaults;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        grew(l.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: AllocLayout) -> *mut u8 {
        grew(l.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: AllocLayout, new: usize) -> *mut u8 {
        grew(new as isize - l.size() as isize);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Restarts the peak at what is live now.
fn reset_peak() -> isize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn kib(b: isize) -> isize {
    b / 1024
}

const N: usize = 10_000;

/// The spec of the e2e test `spec_abuse::ten_thousand_specs` and of the bench's `specs`
/// scenario, with a few more keys so that a spec is not all defaults.
fn spec_text(i: usize) -> String {
    format!(
        "image = \"registry.example/app-{i}:1.{i}\"\npull = \"never\"\nstate = \"stopped\"\n\
         command = [\"/bin/app\", \"--id\", \"{i}\"]\n[env]\nAPP_ID = \"{i}\"\nREGION = \"eu\"\n"
    )
}

fn write_specs(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    for i in 0..N {
        std::fs::write(dir.join(format!("s{i:05}.toml")), spec_text(i)).unwrap();
    }
}

/// Reads a whole HTTP response off the socket with a fixed buffer, keeping only its length, so
/// that the reader allocates nothing that grows with the response.
fn drain_response(sock: &Path, uri: &str) -> usize {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {uri} HTTP/1.1\r\nhost: berth\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0;
    loop {
        match s.read(&mut buf).unwrap() {
            0 => return total,
            n => total += n,
        }
    }
}

#[test]
fn ten_thousand_specs_are_held_once_and_statuses_are_streamed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the spec source trusts only files owned by root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let specs = tmp.path().join("specs");
    write_specs(&specs);
    let layout = Layout {
        state_dir: tmp.path().join("state"),
        run_dir: tmp.path().join("run"),
    };

    let base = live();
    let mut source = DirSource::new(
        &specs,
        SpecDefaults::default(),
        TrustedOwners::resolve(&[]).unwrap(),
        Duration::from_secs(1),
    );
    let scan = source.scan();
    assert_eq!(scan.specs.len(), N);
    assert!(scan.specs.values().all(Result::is_ok));
    let after_scan = live();
    let mut last_valid = LastValid::load_read_only(&layout);
    let desired = last_valid.desired(&scan);
    drop(scan);
    // A second scan, as every pass after a change does: nothing it returns may add a copy.
    let desired = {
        let again = source.scan();
        let d = last_valid.desired(&again);
        drop(desired);
        d
    };
    let held = live() - base;

    // One plain copy of every spec, for scale.
    let before_copy = live();
    let copy: Vec<berth_spec::ContainerSpec> = desired
        .specs
        .values()
        .map(|e| berth_spec::ContainerSpec::clone(&e.spec.as_ref().unwrap().spec))
        .collect();
    let one_copy = live() - before_copy;
    drop(copy);

    let before_report = live();
    let observed = Observed::default();
    let plan = plan(&desired, &observed, berth_agent::clock::now());
    let statuses = report::report(
        &desired,
        &observed,
        &Default::default(),
        &plan,
        &BTreeMap::new(),
    );
    drop(plan);
    assert_eq!(statuses.len(), N);
    // Kept as long as the agent runs: no room for entries that never come.
    assert_eq!(
        statuses.capacity(),
        N,
        "the status list is allocated to its length"
    );
    let status_list = live() - before_report;
    let document = serde_json::to_vec(&statuses).unwrap().len() as isize;

    // The real server on a real socket, serving the list.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sock = tmp.path().join("berth.sock");
    let (_status_tx, status_rx) = tokio::sync::watch::channel(Arc::new(statuses));
    let (requests, _req_rx) = tokio::sync::mpsc::channel(4);
    let state = ApiState {
        statuses: status_rx,
        events: Arc::new(EventLog::default()),
        metrics: Arc::new(Metrics::new()),
        requests,
        source: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn({
        let sock = sock.clone();
        async move {
            serve(&sock, state, async move {
                let _ = stop_rx.await;
            })
            .await
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never came up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Warm up (the runtime's and the connection's buffers), then measure one response.
    drain_response(&sock, "/v1/ping");
    let before_serve = reset_peak();
    let served = drain_response(&sock, "/v1/containers") as isize;
    let serving_peak = PEAK.load(Ordering::Relaxed) - before_serve;

    // The CLI's side: the streamed body reads back into the same list.
    let client = berth_agent::api::client::Client::new(&sock);
    let back: Vec<ContainerStatus> = rt.block_on(client.get_json("/v1/containers")).unwrap();
    assert_eq!(back.len(), N);
    assert_eq!(back[N - 1].name, format!("s{:05}", N - 1));

    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();

    eprintln!(
        "{N} specs: source scan {} KiB; source cache + last valid + desired set {} KiB \
         (one plain copy of the specs: {} KiB); status list {} KiB; status JSON {} KiB; \
         peak while serving it {} KiB ({} KiB on the wire)",
        kib(after_scan - base),
        kib(held),
        kib(one_copy),
        kib(status_list),
        kib(document),
        kib(serving_peak),
        kib(served),
    );
    assert!(served > document, "the whole list was served");
    // Per spec, counted at the allocator. One copy of a spec of common keys: the struct with
    // its image, command and env (405 bytes measured; about 1.6 KiB by the sizes of its types
    // with every key inline and env in a BTreeMap; see berth-spec's `layout` tests).
    let per_spec = |b: isize| b / N as isize;
    assert!(
        per_spec(one_copy) < 448,
        "one copy of a spec is {} bytes: a key most specs leave at its default is held inline, \
         or env is no longer compact",
        per_spec(one_copy)
    );
    // Everything else the spec side holds: the source's cache entry (with the file's path and
    // stamp), the names, hashes and map nodes of the last valid specs and the desired set
    // (438 bytes measured, with a 33-byte path). A second copy of the spec anywhere fails,
    // and so do maps left half empty or a path or hash held more than once.
    let path = specs.join("s00000.toml").as_os_str().len() as isize;
    assert!(
        per_spec(held - one_copy) < 448 + path,
        "the spec side holds {} KiB for {N} specs, {} bytes a spec beside one copy of it: \
         specs are copied, or the bookkeeping around them grew",
        kib(held),
        per_spec(held - one_copy)
    );
    assert!(
        serving_peak < document / 4,
        "serving the status list took {} KiB at its peak for a {} KiB document: it is built \
         whole (or the list is copied) instead of streamed",
        kib(serving_peak),
        kib(document)
    );
}
