//! A real Prometheus for the reporting tests: Debian's prometheus on 127.0.0.1, scraping the
//! test agents every second, queried through its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::{free_port, http_get};

/// What a Prometheus is started as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Scrapes, stores, evaluates rules, answers queries.
    Server,
    /// A server that also takes remote_write pushes.
    Receiver,
    /// Agent mode: scrapes and forwards through remote_write, stores nothing queryable.
    Agent,
}

pub struct Prometheus {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Prometheus {
    /// Scrapes `targets` (host:port) as job `berth` every second, with `rules` (files) loaded
    /// and evaluated every second.
    pub fn start(targets: &[String], rules: &[&Path]) -> Prometheus {
        Prometheus::run(&Prometheus::config(targets, rules), Mode::Server)
    }

    /// As [`Prometheus::start`], and it takes samples pushed to `/api/v1/write` (what hosts
    /// behind NAT push to through Prometheus in agent mode).
    pub fn start_receiving(targets: &[String], rules: &[&Path]) -> Prometheus {
        Prometheus::run(&Prometheus::config(targets, rules), Mode::Receiver)
    }

    /// Prometheus in agent mode (scrape and remote_write only, no queries) with `config`.
    pub fn agent(config: &str) -> Prometheus {
        Prometheus::run(config, Mode::Agent)
    }

    /// The remote_write endpoint of a [`Prometheus::start_receiving`] one.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn config(targets: &[String], rules: &[&Path]) -> String {
        let rule_files: String = rules
            .iter()
            .map(|r| format!("  - {:?}\n", r.display().to_string()))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rule_files}\
             scrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        )
    }

    fn run(conf: &str, mode: Mode) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("berth-prom-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let conf_path = dir.path().join("prometheus.yml");
        let data = dir.path().join("data").display().to_string();
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf_path.display()))
            .args(match mode {
                Mode::Server => vec![format!("--storage.tsdb.path={data}")],
                Mode::Receiver => vec![
                    format!("--storage.tsdb.path={data}"),
                    "--web.enable-remote-write-receiver".into(),
                ],
                // The agent keeps its write-ahead log elsewhere, and refuses the TSDB's flags.
                Mode::Agent => vec![
                    format!("--storage.agent.path={data}"),
                    "--enable-feature=agent".into(),
                ],
            })
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("prometheus (Debian's prometheus; tests/setup/install-deps)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&format!("http://127.0.0.1:{port}/-/ready")).is_none() {
            if let Some(s) = child.try_wait().unwrap() {
                panic!(
                    "prometheus exited with {s}: {}",
                    std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "prometheus did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus { port, dir, child }
    }

    /// An instant PromQL query; the `result` array.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--get", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(
            v["status"] == "success",
            "query {promql}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `promql` returns a result that `cond` accepts; returns it.
    pub fn wait_query(
        &self,
        promql: &str,
        timeout: Duration,
        cond: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(promql);
            if cond(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {promql}; last result: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The alerts now pending or firing: (alertname, state, labels).
    pub fn alerts(&self) -> Vec<Value> {
        let body =
            http_get(&format!("http://127.0.0.1:{}/api/v1/alerts", self.port)).unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Whether alert `name` fires with `label` = `value`.
    pub fn firing(&self, name: &str, label: &str, value: &str) -> bool {
        self.alerts().into_iter().any(|a| {
            a["labels"]["alertname"] == name
                && a["labels"][label] == value
                && a["state"] == "firing"
        })
    }

    /// Waits until alert `name` fires with `label` = `value`.
    pub fn wait_firing(&self, name: &str, label: &str, value: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.firing(name, label, value) {
            assert!(
                Instant::now() < deadline,
                "{name} ({label}={value}) did not fire; alerts: {:#?}",
                self.alerts()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example alert rules as the real-Prometheus tests load them: each `for:` cut to nothing,
/// and BerthHostSilent's 15 minutes of silence cut to `silent_secs`, so that the test need not
/// wait; every expression otherwise as users get it.
pub fn example_rules(silent_secs: u32) -> String {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet/alerts.yml"),
    )
    .unwrap();
    let silent = "berth_last_successful_pass_timestamp_seconds[1d])) > 900";
    assert_eq!(
        rules.matches(silent).count(),
        1,
        "BerthHostSilent's expression changed; update this test:\n{rules}"
    );
    rules
        .replace(silent, &silent.replace("900", &silent_secs.to_string()))
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}for: 0s\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}
