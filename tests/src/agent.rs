//! A berth agent of the test's own: its own instance, state, run and spec dirs, bridge and
//! subnet, so that tests run in parallel. Dropping it removes every container it made (specs
//! emptied, then `apply --once --wait`) and stops the agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{berth_bin, unique_instance};

pub struct TestAgent {
    pub instance: String,
    pub root: tempfile::TempDir,
    pub config_path: PathBuf,
    pub specs_dir: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub bridge: String,
    /// The /24 this agent's containers get addresses from.
    pub subnet: String,
    /// The config without `extra_config`: what the teardown converges with (a `[source]`
    /// would fetch the specs back).
    base_config: String,
    child: Option<Child>,
}

/// Options beyond the defaults.
#[derive(Default, Clone)]
pub struct AgentOptions {
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    pub resync_interval: Option<String>,
    /// Environment for the agent process (e.g. crash points).
    pub env: Vec<(String, String)>,
    /// The agent's umask (the harness's own when `None`).
    pub umask: Option<u32>,
}

impl TestAgent {
    /// Prepares dirs and a config; the agent itself starts with [`TestAgent::start`].
    pub fn new(prefix: &str, opts: &AgentOptions) -> Self {
        let instance = unique_instance(prefix);
        let root = tempfile::Builder::new()
            .prefix(&format!("berth-{instance}-"))
            .tempdir()
            .unwrap();
        let specs_dir = root.path().join("specs");
        let state_dir = root.path().join("state");
        let run_dir = root.path().join("run");
        std::fs::create_dir_all(&specs_dir).unwrap();
        let subnet = free_subnet();
        let bridge = instance.clone();
        let config_path = root.path().join("berth.toml");
        let resync = opts.resync_interval.clone().unwrap_or_else(|| "30s".into());
        // Top-level keys of extra_config come before the tables.
        let (extra_top, extra_tables) = match opts.extra_config.find("\n[") {
            _ if opts.extra_config.starts_with('[') => ("", opts.extra_config.as_str()),
            Some(i) => opts.extra_config.split_at(i + 1),
            None => (opts.extra_config.as_str(), ""),
        };
        let config = |top: &str, tables: &str| {
            format!(
                "instance = {instance:?}\nspecs_dir = {specs:?}\nstate_dir = {state:?}\nrun_dir = {run:?}\n\
                 images_dir = {images:?}\nresync_interval = {resync:?}\nlog_format = \"text\"\nlog_level = \"debug,ureq=info,ureq_proto=info,rustls=info\"\n\
                 {top}\n{registries}\n[network]\nbridge = {bridge:?}\nsubnet = {subnet:?}\n{tables}\n",
                specs = specs_dir,
                state = state_dir,
                run = run_dir,
                images = root.path().join("import"),
                registries = registry_config(),
            )
        };
        // Teardown's config: the same, but without a `[source]` (its specs_dir is then a plain
        // dir to empty); named networks stay, so their containers' links are taken down too.
        let base_config = config(extra_top, &without_table(extra_tables, "source"));
        std::fs::write(&config_path, config(extra_top, extra_tables)).unwrap();
        TestAgent {
            instance,
            root,
            config_path,
            specs_dir,
            state_dir,
            run_dir,
            bridge,
            subnet,
            base_config,
            child: None,
        }
    }

    /// Starts `berth agent` and waits until its socket answers.
    pub fn start(&mut self, opts: &AgentOptions) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("agent.log"))
            .unwrap();
        let mut cmd = Command::new(berth_bin());
        cmd.arg("--config").arg(&self.config_path).arg("agent");
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(mask) = opts.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and touches no memory.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        self.child = Some(cmd.spawn().expect("spawn berth agent"));
        let sock = self.run_dir.join("berth.sock");
        wait_until(Duration::from_secs(30), "agent socket", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited early with {status}; log:\n{}", self.log());
            }
            // A connect, not the file: a killed agent leaves its socket file behind, and
            // `berth status` would answer in-process (under the lock) without an agent.
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
                && self.berth(&["status", "--json"]).status.success()
        });
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the agent process still runs (it may have killed itself at a crash point).
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    self.child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// SIGKILLs the agent (containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the agent and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on a child pid we own.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The agent's log (its last 200 lines: enough to see why, short enough to read).
    pub fn log(&self) -> String {
        let all = std::fs::read_to_string(self.root.path().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }

    /// Runs `berth --config <ours> ARGS...`.
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(berth_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }

    /// Writes `<name>.toml` atomically (temp + rename), as config management does.
    pub fn write_spec(&self, name: &str, toml: &str) {
        let tmp = self.specs_dir.join(format!(".{name}.toml.tmp"));
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, self.specs_dir.join(format!("{name}.toml"))).unwrap();
    }

    pub fn remove_spec(&self, name: &str) {
        std::fs::remove_file(self.specs_dir.join(format!("{name}.toml"))).unwrap();
    }

    /// The agent's Prometheus metrics, read from its socket.
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--unix-socket"])
            .arg(self.run_dir.join("berth.sock"))
            .arg("http://berth/metrics")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth source --json` (with a `[source]`), as parsed JSON.
    pub fn source(&self) -> Value {
        let out = self.berth(&["source", "--json"]);
        assert!(
            out.status.success(),
            "source failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `berth status --json`, as parsed JSON objects.
    pub fn status(&self) -> Vec<Value> {
        let out = self.berth(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status_of(&self, name: &str) -> Option<Value> {
        self.status().into_iter().find(|s| s["name"] == name)
    }

    /// Waits until `name`'s status object satisfies `cond`; returns it.
    pub fn wait_status(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status_of(name);
            if let Some(s) = &s
                && cond(s)
            {
                return s.clone();
            }

            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name} to be {what}; last status: {s:?}\nagent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_status(name, "running", Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
    }

    /// Removes every container (no specs, converge), stops the agent, and checks with
    /// `berth doctor` that nothing of this instance is left.
    pub fn teardown(&mut self) -> Result<(), String> {
        self.stop();
        // A spec repository's agent: its specs_dir is a link to the applied commit's tree.
        // Converge on an empty dir and the config without the source.
        if std::fs::symlink_metadata(&self.specs_dir).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&self.specs_dir);
            let _ = std::fs::create_dir(&self.specs_dir);
        }
        let _ = std::fs::write(&self.config_path, &self.base_config);
        for e in std::fs::read_dir(&self.specs_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
        let out = self.berth(&["apply", "--once", "--wait", "--timeout", "60s"]);
        let mut problems = String::new();
        if !out.status.success() {
            problems += &format!(
                "apply on teardown: {}\n",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let records: Vec<_> = std::fs::read_dir(self.state_dir.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("incarnation.json").exists())
            .map(|e| e.file_name())
            .collect();
        if !records.is_empty() {
            problems += &format!("containers left after pruning everything: {records:?}\n");
        }
        // With no container left, only the agent's own bridge and table may remain; anything
        // else doctor finds is a leak.
        let out = self.berth(&["doctor", "--json"]);
        let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let leaks: Vec<&Value> = found
            .iter()
            .filter(|f| f["kind"] != "bridge" && f["kind"] != "nft-table")
            .collect();
        if !leaks.is_empty() {
            problems += &format!("doctor found leftovers: {leaks:?}\n");
        }
        let _ = self.berth(&["doctor", "--fix"]);
        let out = self.berth(&["doctor"]);
        if !out.status.success() {
            problems += &format!(
                "doctor --fix left: {}\n",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the whole agent log of a failed test for a look afterwards.
            let keep = std::env::temp_dir().join(format!("berth-failed-{}.log", self.instance));
            let _ = std::fs::copy(self.root.path().join("agent.log"), &keep);
            eprintln!("agent log kept at {}", keep.display());
        }
        let result = self.teardown();
        if let Err(p) = result
            && !std::thread::panicking()
        {
            panic!("{p}");
        }
    }
}

/// A `[registries]` section marking the test registries insecure (plain HTTP).
fn registry_config() -> String {
    let mut out = String::new();
    if let Ok(r) = std::env::var("BERTH_TEST_REGISTRY") {
        out += &format!("[registries.{r:?}]\ninsecure = true\n");
    }
    out
}

/// A /24 in 10.240.0.0/12 that no route on this host covers, chosen from the pid and a
/// counter so that parallel tests pick different ones.
pub fn free_subnet() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let routes = String::from_utf8_lossy(&routes).into_owned();
    for _ in 0..4096 {
        let n =
            (std::process::id().wrapping_mul(131) + N.fetch_add(1, Ordering::Relaxed) * 7) % 4096;
        let (b, c) = (240 + (n / 256), n % 256);
        let net = format!("10.{b}.{c}.");
        if !routes.contains(&net) {
            return format!("10.{b}.{c}.0/24");
        }
    }
    panic!("no free test subnet in 10.240.0.0/12");
}

/// Polls `cond` every 20 ms until it holds, or panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn path_exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// `tables` (TOML tables) without the table `[name]` and its keys.
fn without_table(tables: &str, name: &str) -> String {
    let header = format!("[{name}]");
    let mut out = String::new();
    let mut skipping = false;
    for line in tables.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = t == header || t.starts_with(&format!("[{name}."));
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
