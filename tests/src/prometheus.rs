//! A real Prometheus for the reporting tests: Debian's prometheus on 127.0.0.1, scraping the
//! test agents every second, queried through its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::{free_port, http_get};

pub struct Prometheus {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Prometheus {
    /// Scrapes `targets` (host:port) as job `berth` every second, with `rules` (files) loaded
    /// and evaluated every second.
    pub fn start(targets: &[String], rules: &[&Path]) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("berth-prom-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let rule_files: String = rules
            .iter()
            .map(|r| format!("  - {:?}\n", r.display().to_string()))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
        let conf = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rule_files}\
             scrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let conf_path = dir.path().join("prometheus.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
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
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
