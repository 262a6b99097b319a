//! A private "host" for network tests: a fresh netns standing in for the machine, with berth's
//! [`Network`] opened inside it, a second netns acting as another host on an uplink, and guards
//! that remove every namespace and process they made, even when a test fails.
//!
//! Because each lab's host is its own netns, tests run in parallel with each other and with
//! everyone else's tests, and never touch the real host's links, sysctls or nftables tables.

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_agent::layout::Layout;
use berth_agent::names::{IncarnationId, Names};
use berth_agent::network::{Network, netns};
use berth_spec::config::NetworkConfig;

pub use berth_e2e::require_root;

/// One test's world. `k` (1..=200) keys its names and subnets: bridge `tb<k>`, containers in
/// 10.220.<k>.0/24, the uplink to the other host in 10.221.<k>.0/24.
pub struct Lab {
    pub k: u8,
    pub dir: tempfile::TempDir,
    pub names: Names,
    pub layout: Layout,
    pub config: NetworkConfig,
    pub host_ns: PathBuf,
    pub other_ns: PathBuf,
    pub net: Network,
    procs: Vec<Child>,
}

impl Lab {
    /// A network of the agent's config (a named one, or the default), opened in the lab's host
    /// netns as the agent opens it in the host's.
    pub fn open_network(&self, def: &berth_agent::network::NetDef) -> Network {
        let host = File::open(&self.host_ns).unwrap();
        netns::in_netns(&host, || {
            Network::open(self.names.clone(), def, &self.layout)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("open network {}: {e}", def.name))
    }

    pub fn new(k: u8) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("berth-netlab-")
            .tempdir()
            .expect("tempdir");
        let layout = Layout {
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
        };
        let host_ns = dir.path().join("host.ns");
        let other_ns = dir.path().join("other.ns");
        for ns in [&host_ns, &other_ns] {
            netns::create(ns, || Ok(())).expect("create lab netns");
        }
        let names = Names::new(&format!("t{k}"));
        let config = NetworkConfig {
            bridge: format!("tb{k}"),
            subnet: format!("10.220.{k}.0/24"),
            ..Default::default()
        };
        let ns = File::open(&host_ns).unwrap();
        let net = netns::in_netns(&ns, || Network::new(names.clone(), &config, &layout))
            .unwrap()
            .expect("Network::new");
        let lab = Lab {
            k,
            dir,
            names,
            layout,
            config,
            host_ns,
            other_ns,
            net,
            procs: Vec::new(),
        };
        lab.host(&["ip", "link", "set", "lo", "up"]);
        lab.other(&["ip", "link", "set", "lo", "up"]);
        let other = lab.other_ns.display().to_string();
        lab.host(&[
            "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", &other,
        ]);
        lab.host(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.host_addr()),
            "dev",
            "uplink",
        ]);
        lab.host(&["ip", "link", "set", "uplink", "up"]);
        lab.other(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.other_addr()),
            "dev",
            "eth0",
        ]);
        lab.other(&["ip", "link", "set", "eth0", "up"]);
        lab
    }

    /// The host's address on the uplink ("its own address").
    pub fn host_addr(&self) -> String {
        format!("10.221.{}.1", self.k)
    }

    /// The other host's address.
    pub fn other_addr(&self) -> String {
        format!("10.221.{}.2", self.k)
    }

    pub fn gateway(&self) -> String {
        format!("10.220.{}.1", self.k)
    }

    /// Runs a command in the host's netns; panics with its output if it fails.
    pub fn host(&self, argv: &[&str]) -> String {
        run_in(&self.host_ns, argv, true).1
    }

    pub fn other(&self, argv: &[&str]) -> String {
        run_in(&self.other_ns, argv, true).1
    }

    /// Runs a command in a netns; returns (success, stdout+stderr).
    pub fn try_in(&self, ns: &Path, argv: &[&str]) -> (bool, String) {
        run_in(ns, argv, false)
    }

    pub fn container_ns(&self, name: &str, id: &IncarnationId) -> PathBuf {
        self.layout.netns(name, id)
    }

    /// Starts a long-running process in a netns; it is killed when the lab drops.
    pub fn spawn_in(&mut self, ns: &Path, argv: &[&str]) {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        self.procs.push(child);
    }

    /// busybox httpd on port 80 in `ns`, answering `body`.
    pub fn serve_http(&mut self, ns: &Path, body: &str) {
        let root = self.dir.path().join(format!("www-{}", self.procs.len()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), body).unwrap();
        let root = root.display().to_string();
        self.spawn_in(ns, &["busybox", "httpd", "-f", "-p", "80", "-h", &root]);
        let ns = ns.to_path_buf();
        wait_for(
            &format!("httpd in {}", ns.display()),
            Duration::from_secs(5),
            || {
                self.try_in(&ns, &["curl", "-sS", "-m", "1", "http://127.0.0.1:80/"])
                    .1
                    .contains(body)
            },
        );
    }

    /// A UDP responder on `port` in `ns` answering every datagram with `reply`.
    pub fn serve_udp(&mut self, ns: &Path, port: u16, reply: &str) {
        let listen = format!("UDP-RECVFROM:{port},fork");
        let answer = format!("SYSTEM:echo {reply}");
        self.spawn_in(ns, &["socat", &listen, &answer]);
        assert!(
            udp_ask(self, ns, "127.0.0.1", port).contains(reply),
            "the udp responder in {} did not answer",
            ns.display()
        );
    }

    /// A TCP server on `port` in `ns` that answers with the client's address as it saw it.
    /// `bind` is an IPv4 address or a bracketed IPv6 one.
    pub fn serve_peer_echo(&mut self, ns: &Path, bind: &str, port: u16) {
        let kind = if bind.starts_with('[') {
            "TCP6-LISTEN"
        } else {
            "TCP-LISTEN"
        };
        let listen = format!("{kind}:{port},bind={bind},reuseaddr,fork");
        self.spawn_in(ns, &["socat", &listen, "SYSTEM:echo peer=$SOCAT_PEERADDR"]);
        let ns = ns.to_path_buf();
        let bind = bind.to_string();
        wait_for("tcp echo", Duration::from_secs(5), || {
            self.try_in(
                &ns,
                &[
                    "socat",
                    "-T1",
                    "-",
                    &format!("TCP:{bind}:{port},connect-timeout=1"),
                ],
            )
            .1
            .contains("peer=")
        });
    }

    /// Fetches `url` from `ns` once (1 s timeout); the body on success.
    pub fn curl(&self, ns: &Path, url: &str) -> Option<String> {
        let (ok, out) = self.try_in(ns, &["curl", "-sS", "-m", "1", url]);
        ok.then_some(out)
    }

    /// Whether `url` answers `body` from `ns` within 5 s (retrying: a loaded machine may be slow
    /// to answer; a path that is closed never answers).
    pub fn reaches(&self, ns: &Path, url: &str, body: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.curl(ns, url).is_some_and(|b| b == body) {
                return true;
            }
        }
        false
    }

    /// The whole nftables ruleset of the lab's host, as `nft` prints it.
    pub fn nft_ruleset(&self) -> String {
        self.host(&["nft", "list", "ruleset"])
    }
}

/// Asks `addr:port` over UDP from `ns` until a reply comes, for up to 20 s (UDP may lose a
/// datagram, and on a loaded machine the responder's fork and `echo` can take longer than one
/// ask waits; a path that works answers one of them). The reply, or "". Only for paths that
/// must answer: a closed path costs the whole deadline.
pub fn udp_ask(lab: &Lab, ns: &Path, addr: &str, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = udp_once(ns, addr, port);
        if !reply.is_empty() || Instant::now() >= deadline {
            let _ = lab;
            return reply;
        }
    }
}

/// One datagram, and the reply or "" after 2 s.
fn udp_once(ns: &Path, addr: &str, port: u16) -> String {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["socat", "-T2", "-t2", "-", &format!("UDP:{addr}:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat");
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(b"ping\n");
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.wait();
    out
}

fn run_in(ns: &Path, argv: &[&str], must: bool) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .expect("nsenter");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if must && !out.status.success() {
        panic!("{argv:?} in {} failed: {text}", ns.display());
    }
    (out.status.success(), text)
}

/// Polls `cond` until it holds, failing the test with `what` after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        // Container namespaces first (their bind mounts keep them alive), then the two lab
        // namespaces: with them go the bridge, veths and nftables table made inside.
        // (Tests may run a second instance with its run dir inside the lab's dir too.)
        let dirs = std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().join("netns"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for dir in dirs {
            for (_, _, path) in netns::list(&dir).unwrap_or_default() {
                let _ = netns::remove(&path);
            }
        }
        let _ = netns::remove(&self.host_ns);
        let _ = netns::remove(&self.other_ns);
    }
}
