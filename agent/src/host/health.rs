//! Health checks run inside the container, as `berth exec` does it, in a child process: the
//! agent is multi-threaded and must not fork into namespaces itself.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_spec::model::HealthCheck;

use super::Host;

/// The output kept from one check, for `berth status`.
const OUTPUT_MAX: usize = 4096;

impl Host {
    pub(super) fn run_health_check(&self, name: &str, check: &HealthCheck) -> (bool, String) {
        let exe = std::env::current_exe().unwrap_or_else(|_| "berth".into());
        let mut cmd = Command::new(exe);
        if let Some(p) = &self.config_path {
            cmd.arg("--config").arg(p);
        }
        cmd.arg("exec").arg(name).arg("--").args(&check.command);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return (false, format!("cannot run the check: {e}")),
        };
        let deadline = Instant::now() + check.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return (false, format!("waiting for the check: {e}")),
            }
        };
        let mut out = String::new();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read>),
        ]
        .into_iter()
        .flatten()
        {
            let mut buf = Vec::new();
            let _ = stream.take(OUTPUT_MAX as u64).read_to_end(&mut buf);
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        out.truncate(OUTPUT_MAX);
        match status {
            Some(st) if st.success() => (true, out),
            Some(st) => (
                false,
                format!("exit {}: {}", st.code().unwrap_or(-1), out.trim()),
            ),
            None => (false, format!("timed out after {:?}", check.timeout)),
        }
    }
}
