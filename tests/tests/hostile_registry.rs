//! A registry that lies, stalls or never ends, through the fault proxy (a real server the real
//! client talks to): a wrong blob for its digest, a truncated blob, an endless blob, slow-loris
//! bodies and headers, a 100 MB manifest (announced or not), a 10,000-layer manifest, a
//! redirect loop, a token endpoint that never answers, TLS with a certificate for another
//! name. Each ends in a clear error naming the image, with the store unchanged; through
//! `berth pull`, and through the agent, where a container started before keeps running (same
//! pid) and every refused image is named on `berth status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::berth_env::BerthEnv;
use berth_e2e::image::{Blob, Compression, Entry, ImageBuilder, OCI_MANIFEST, sha256};
use berth_e2e::proxy::{Blackhole, Fault, FaultProxy};
use berth_e2e::registry::{TestRegistry, unique_repo};
use serde_json::{Value, json};

/// Short limits so that the cases which must time out do so in seconds.
const LIMITS: &str = "min_free = 0\nhttp_timeout = \"3s\"\nstall_timeout = \"2s\"\n";

/// One hostile registry: the image to pull through it, the servers that make it hostile, the
/// config that points berth at them, and what the error must say.
struct Case {
    name: &'static str,
    reference: String,
    registry_config: String,
    expect: &'static str,
    _servers: Servers,
}

#[derive(Default)]
struct Servers {
    _proxies: Vec<FaultProxy>,
    _blackhole: Option<Blackhole>,
    _tls_dir: Option<tempfile::TempDir>,
}

fn insecure(addr: &str) -> String {
    format!("[registries.\"{addr}\"]\ninsecure = true\n")
}

/// Eight bytes of its own for each repository, so that no two cases share a layer (the agent
/// shares downloads of one layer between pulls).
fn content(repo: &str) -> Vec<u8> {
    sha256(repo.as_bytes()).as_bytes()[7..15].to_vec()
}

/// A one-layer image (an uncompressed tar, so two of them with same-length files have the
/// same size) pushed to the plain registry.
fn small_image(repo: &str) -> berth_e2e::image::Image {
    let img = ImageBuilder::new()
        .layer(&[Entry::file("data", &content(repo))], Compression::None)
        .build();
    TestRegistry::plain().push_image(repo, "v1", &img);
    img
}

/// A proxy with `fault` applied to every request whose path contains `on` (`"layer"`: the
/// image's layer blob).
fn faulty(name: &'static str, on: &str, fault: Fault, expect: &'static str) -> Case {
    let reg = TestRegistry::plain();
    let slug: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let repo = unique_repo(&format!("hostile-{}", slug.to_lowercase()));
    let img = small_image(&repo);
    let proxy = FaultProxy::start(&reg.addr);
    let on = match on {
        "layer" => img.layers[0].digest.clone(),
        s => s.to_string(),
    };
    proxy.add(&on, fault, usize::MAX);
    Case {
        name,
        reference: format!("{}/{repo}:v1", proxy.addr),
        registry_config: insecure(&proxy.addr),
        expect,
        _servers: Servers {
            _proxies: vec![proxy],
            ..Servers::default()
        },
    }
}

/// The proxy without a fault.
fn honest() -> Case {
    let reg = TestRegistry::plain();
    let repo = unique_repo("hostile-honest");
    small_image(&repo);
    let proxy = FaultProxy::start(&reg.addr);
    Case {
        name: "honest proxy",
        reference: format!("{}/{repo}:v1", proxy.addr),
        registry_config: insecure(&proxy.addr),
        expect: "",
        _servers: Servers {
            _proxies: vec![proxy],
            ..Servers::default()
        },
    }
}

fn wrong_blob() -> Case {
    let reg = TestRegistry::plain();
    let repo = unique_repo("hostile-wrong");
    let img = small_image(&repo);
    let mut other = content(&repo);
    other.reverse();
    let other = Blob::layer(&[Entry::file("data", &other)], Compression::None, false);
    assert_eq!(other.bytes.len(), img.layers[0].bytes.len());
    let proxy = FaultProxy::start(&reg.addr);
    proxy.add(
        &img.layers[0].digest,
        Fault::Replace(other.bytes.clone()),
        usize::MAX,
    );
    Case {
        name: "wrong blob",
        reference: format!("{}/{repo}:v1", proxy.addr),
        registry_config: insecure(&proxy.addr),
        expect: "digest mismatch",
        _servers: Servers {
            _proxies: vec![proxy],
            ..Servers::default()
        },
    }
}

/// A manifest naming one small layer 10,000 times, pushed to the real registry.
fn ten_thousand_layers() -> Case {
    let reg = TestRegistry::plain();
    let repo = unique_repo("hostile-layers");
    let layer = Blob::layer(&[Entry::file("x", b"x")], Compression::Gzip, false);
    reg.push_layer(&repo, &layer, false);
    let config = serde_json::to_vec(&json!({
        "architecture": berth_e2e::image::host_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": vec![layer.diff_id.clone(); 10_000]},
    }))
    .unwrap();
    reg.push_blob(&repo, &config, false);
    let desc =
        json!({"mediaType": layer.media_type, "digest": layer.digest, "size": layer.bytes.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": vec![desc; 10_000],
    }))
    .unwrap();
    reg.put_manifest(&repo, "v1", OCI_MANIFEST, &manifest);
    Case {
        name: "10,000 layers",
        reference: format!("{}/{repo}:v1", reg.addr),
        registry_config: String::new(),
        expect: "10000 layers exceeds the limit of 128",
        _servers: Servers::default(),
    }
}

fn redirect_loop() -> Case {
    let reg = TestRegistry::plain();
    let repo = unique_repo("hostile-redirect");
    small_image(&repo);
    let proxy = FaultProxy::start(&reg.addr);
    // Every manifest request is sent back to itself.
    let manifest = format!("/v2/{repo}/manifests/v1");
    proxy.add(
        &manifest,
        Fault::Redirect(format!("http://{}{manifest}", proxy.addr)),
        usize::MAX,
    );
    Case {
        name: "redirect loop",
        reference: format!("{}/{repo}:v1", proxy.addr),
        registry_config: insecure(&proxy.addr),
        expect: "too many redirects",
        _servers: Servers {
            _proxies: vec![proxy],
            ..Servers::default()
        },
    }
}

fn silent_token_server() -> Case {
    let reg = TestRegistry::plain();
    let repo = unique_repo("hostile-token");
    small_image(&repo);
    let hole = Blackhole::start();
    let proxy = FaultProxy::start(&reg.addr);
    proxy.add(
        "/v2/",
        Fault::Challenge(format!(
            "Bearer realm=\"http://{}/token\",service=\"hostile\"",
            hole.addr
        )),
        usize::MAX,
    );
    Case {
        name: "silent token server",
        reference: format!("{}/{repo}:v1", proxy.addr),
        registry_config: insecure(&proxy.addr),
        expect: "token",
        _servers: Servers {
            _proxies: vec![proxy],
            _blackhole: Some(hole),
            ..Servers::default()
        },
    }
}

/// A CA of the test's own and a server certificate from it for `san`.
fn tls_files(dir: &Path, san: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=hostile CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=server",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// TLS in front of the registry, with a certificate (from a CA berth trusts) for `san`.
fn tls_case(name: &'static str, san: &str, expect: &'static str) -> Case {
    let reg = TestRegistry::plain();
    let repo = unique_repo("hostile-tls");
    small_image(&repo);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path(), san);
    let proxy = FaultProxy::start_tls(&reg.addr, &cert, &key);
    Case {
        name,
        reference: format!("{}/{repo}:v1", proxy.addr),
        registry_config: format!(
            "[registries.\"{}\"]\nca_file = \"{}\"\n",
            proxy.addr,
            ca.display()
        ),
        expect,
        _servers: Servers {
            _proxies: vec![proxy],
            _tls_dir: Some(dir),
            ..Servers::default()
        },
    }
}

fn cases() -> Vec<Case> {
    vec![
        wrong_blob(),
        faulty(
            "truncated blob",
            "layer",
            Fault::Truncate(700),
            "size mismatch",
        ),
        faulty("endless blob", "layer", Fault::Endless, "size mismatch"),
        faulty(
            "slow-loris body",
            "layer",
            Fault::Trickle(Duration::from_millis(400)),
            "too slow",
        ),
        faulty(
            "slow-loris headers",
            "/manifests/",
            Fault::TrickleHead(Duration::from_millis(400)),
            "timeout",
        ),
        faulty(
            "100 MB manifest",
            "/manifests/",
            Fault::Huge {
                len: 100 << 20,
                announce: true,
            },
            "larger than the 4194304-byte limit",
        ),
        faulty(
            "100 MB manifest, unannounced",
            "/manifests/",
            Fault::Huge {
                len: 100 << 20,
                announce: false,
            },
            "larger than the 4194304-byte limit",
        ),
        ten_thousand_layers(),
        redirect_loop(),
        silent_token_server(),
        tls_case(
            "TLS for another name",
            "DNS:wrong.example",
            "not valid for name",
        ),
    ]
}

/// What the store holds: the image list and every blob, layer dir and record, with sizes.
/// Partial downloads (`*.partial`) are resume data, not store objects: left out.
#[derive(Debug, PartialEq)]
struct Snapshot {
    images: Value,
    files: BTreeMap<String, u64>,
}

fn store_snapshot(berth: impl Fn(&[&str]) -> std::process::Output, state: &Path) -> Snapshot {
    let out = berth(&["images", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut files = BTreeMap::new();
    for dir in [
        "blobs/sha256",
        "layers/sha256",
        "images/refs",
        "images/layers",
    ] {
        for e in std::fs::read_dir(state.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = format!("{dir}/{}", e.file_name().to_string_lossy());
            if name.ends_with(".partial") {
                continue;
            }
            let m = e.metadata().unwrap();
            files.insert(name, if m.is_dir() { 0 } else { m.len() });
        }
    }
    Snapshot { images, files }
}

/// What differs between two snapshots, readably.
fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = Vec::new();
    for (k, v) in &before.files {
        if after.files.get(k) != Some(v) {
            out.push(format!("- {k} ({v})"));
        }
    }
    for (k, v) in &after.files {
        if before.files.get(k) != Some(v) {
            out.push(format!("+ {k} ({v})"));
        }
    }
    if before.images != after.images {
        out.push(format!(
            "images before: {}\nimages after: {}",
            before.images, after.images
        ));
    }
    out.join("\n")
}

#[test]
fn hostile_registries_through_berth_pull() {
    if !berth_e2e::require_root() {
        return;
    }
    // A control first: the same setups, honest, pull fine (so the failures below are the
    // faults', not the harness's).
    let control = [
        honest(),
        tls_case("TLS for the right name", "IP:127.0.0.1", ""),
    ];
    let good_repo = unique_repo("hostile-good");
    small_image(&good_repo);
    let good = format!("{}/{good_repo}:v1", TestRegistry::plain().addr);
    for case in &control {
        let env = BerthEnv::new(&format!("[images]\n{LIMITS}\n{}", case.registry_config));
        let out = env.berth(&["pull", &case.reference]);
        assert!(
            out.status.success(),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let cases = cases();
    let results: Vec<(String, Result<Duration, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| {
                let good = good.clone();
                s.spawn(move || (case.name.to_string(), run_cli_case(case, &good)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failed = Vec::new();
    for (name, r) in &results {
        match r {
            Ok(d) => eprintln!("{name}: refused in {d:.1?}"),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// `berth pull` through one hostile registry, into a store that already holds an image.
fn run_cli_case(case: &Case, good: &str) -> Result<Duration, String> {
    let env = BerthEnv::new(&format!("[images]\n{LIMITS}\n{}", case.registry_config));
    let out = env.berth(&["pull", good]);
    if !out.status.success() {
        return Err(format!(
            "pulling the good image: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let before = store_snapshot(|a| env.berth(a), &env.state_dir);
    let started = Instant::now();
    let out = env.berth(&["pull", &case.reference]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(1) {
        return Err(format!("exit {:?}, stderr: {stderr}", out.status.code()));
    }
    // Progress lines (retries) come first; the error is the last line, one line.
    let error = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("berth: "))
        .unwrap_or_default();
    if !error.contains(&case.reference) || !error.contains(case.expect) {
        return Err(format!(
            "the error should name {} and say {:?}: {stderr}",
            case.reference, case.expect
        ));
    }
    if error.len() > 600 {
        return Err(format!("not a clear error: {error}"));
    }
    let after = store_snapshot(|a| env.berth(a), &env.state_dir);
    if before != after {
        return Err(format!("the store changed:\n{}", diff(&before, &after)));
    }
    Ok(took)
}

#[test]
fn hostile_registries_through_the_agent() {
    if !berth_e2e::require_root() {
        return;
    }
    let cases = cases();
    let extra: String = cases.iter().map(|c| c.registry_config.clone()).collect();
    let opts = AgentOptions {
        extra_config: format!("{extra}\n[images]\n{LIMITS}"),
        ..AgentOptions::default()
    };
    let mut agent = TestAgent::new("hr", &opts);
    agent.start(&opts);
    agent.write_spec(
        "steady",
        &format!("image = \"{}\"\n", berth_e2e::fixtures::sleeper_image()),
    );
    let steady = agent.wait_running("steady");
    let pid = steady["pid"].clone();
    let before = store_snapshot(|a| agent.berth(a), &agent.state_dir);

    for (i, case) in cases.iter().enumerate() {
        agent.write_spec(
            &format!("h{i}"),
            &format!("image = \"{}\"\n", case.reference),
        );
    }
    let mut failed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = format!("h{i}");
        let st = agent.wait_status(&name, "refused", Duration::from_secs(120), |s| {
            s["error"].is_string()
        });
        let error = st["error"].as_str().unwrap();
        eprintln!("{}: {} ({error})", case.name, st["status"]);
        if !error.contains(&case.reference) || !error.contains(case.expect) {
            failed.push(format!(
                "{}: status error should name {} and say {:?}: {st}",
                case.name, case.reference, case.expect
            ));
        }
        if st["status"] == "running" || st["pid"].is_number() {
            failed.push(format!("{}: a container exists: {st}", case.name));
        }
    }
    for i in 0..cases.len() {
        agent.remove_spec(&format!("h{i}"));
    }
    // Pulls still retrying finish (and clean up after themselves) before the store is compared.
    let out = agent.berth(&["apply", "--once", "--wait", "--timeout", "90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steady = agent.status_of("steady").unwrap();
    assert_eq!(steady["status"], "running", "{steady}");
    assert_eq!(steady["pid"], pid, "the running container was disturbed");
    assert!(agent.is_alive(), "the agent died:\n{}", agent.log());
    let after = store_snapshot(|a| agent.berth(a), &agent.state_dir);
    assert!(
        before == after,
        "the store changed:\n{}",
        diff(&before, &after)
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
