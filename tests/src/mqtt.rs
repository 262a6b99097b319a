//! A real MQTT broker for the reporting tests: Debian's mosquitto on 127.0.0.1, with a password
//! file or with TLS and client certificates, and Debian's mosquitto_sub to read what arrives.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fixtures::free_port;

/// How the broker lets clients in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAuth {
    /// Plain MQTT, a user and a password from mosquitto's password file.
    Password,
    /// MQTT over TLS; a client proves itself with a certificate from the test's CA.
    ClientCert,
}

pub struct Broker {
    pub port: u16,
    pub auth: BrokerAuth,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

pub const USER: &str = "edge";
pub const PASSWORD: &str = "s3cret pass";

impl Broker {
    pub fn start(auth: BrokerAuth) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("berth-mqtt-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let d = dir.path();
        // Retained messages live in memory only: after a restart the broker holds nothing, so
        // whatever state arrives then was published again by the agent.
        let mut conf = format!(
            "user root\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n\
             allow_anonymous false\nlistener {port} 127.0.0.1\n"
        );
        match auth {
            BrokerAuth::Password => {
                let out = Command::new("mosquitto_passwd")
                    .args(["-c", "-b"])
                    .arg(d.join("passwd"))
                    .args([USER, PASSWORD])
                    .output()
                    .expect("mosquitto_passwd (Debian's mosquitto; tests/setup/install-deps)");
                assert!(
                    out.status.success(),
                    "mosquitto_passwd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::write(d.join("password"), format!("{PASSWORD}\n")).unwrap();
                conf += &format!("password_file {}\n", d.join("passwd").display());
            }
            BrokerAuth::ClientCert => {
                tls_files(d);
                conf += &format!(
                    "cafile {ca}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
                     require_certificate true\nuse_identity_as_username true\n",
                    ca = d.join("ca.pem").display(),
                    d = d.display()
                );
            }
        }
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
        let mut b = Broker {
            port,
            auth,
            dir,
            child: None,
        };
        b.resume();
        b
    }

    /// Starts the broker again on the same port (after [`Broker::stop`]).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the broker runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("mosquitto (Debian's mosquitto; tests/setup/install-deps)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(s) = child.try_wait().unwrap() {
                panic!("mosquitto exited with {s}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Stops the broker (SIGTERM, then waits): its retained messages are gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on a child pid we own.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The agent config's `[report]` for this broker.
    pub fn report_config(&self, topic: &str, interval: &str) -> String {
        let d = self.dir.path();
        match self.auth {
            BrokerAuth::Password => format!(
                "[report]\nmqtt = \"mqtt://127.0.0.1:{}\"\ntopic = {topic:?}\ninterval = {interval:?}\n\
                 username = {USER:?}\npassword_file = {:?}\n",
                self.port,
                d.join("password")
            ),
            BrokerAuth::ClientCert => format!(
                "[report]\nmqtt = \"mqtts://127.0.0.1:{}\"\ntopic = {topic:?}\ninterval = {interval:?}\n\
                 ca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
                self.port,
                d.join("ca.pem"),
                d.join("client.pem"),
                d.join("client.key")
            ),
        }
    }

    /// mosquitto_sub's (and mosquitto_pub's) arguments to reach this broker.
    fn client_args(&self) -> Vec<String> {
        let d = self.dir.path();
        let mut a = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        match self.auth {
            BrokerAuth::Password => {
                a.extend(["-u".into(), USER.into(), "-P".into(), PASSWORD.into()]);
            }
            BrokerAuth::ClientCert => {
                for (flag, file) in [
                    ("--cafile", "ca.pem"),
                    ("--cert", "client.pem"),
                    ("--key", "client.key"),
                ] {
                    a.push(flag.into());
                    a.push(d.join(file).display().to_string());
                }
            }
        }
        a
    }

    /// The retained message on `topic`, if there is one (asks a fresh subscriber).
    pub fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(self.client_args())
            .args(["-t", topic, "--retained-only", "-C", "1", "-W", "2"])
            .output()
            .expect("mosquitto_sub (Debian's mosquitto-clients)");
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
    }

    /// Every retained message under `filter` (wildcards allowed), as (topic, payload): what a
    /// dashboard that subscribes to the fleet sees first.
    pub fn retained_all(&self, filter: &str) -> Vec<(String, String)> {
        // mosquitto_sub prints the retained messages at once, then waits for more until -W.
        let out = Command::new("mosquitto_sub")
            .args(self.client_args())
            .args(["-t", filter, "--retained-only", "-v", "-W", "2"])
            .output()
            .expect("mosquitto_sub (Debian's mosquitto-clients)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect()
    }

    /// Waits until the retained message on `topic` satisfies `cond`; returns it.
    pub fn wait_retained(
        &self,
        topic: &str,
        timeout: Duration,
        cond: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.retained(topic);
            if let Some(m) = &now
                && cond(m)
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the retained message on {topic}; last: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A subscriber on `filter` that records every message with the time it was read.
    pub fn subscribe(&self, filter: &str) -> Subscription {
        let mut child = Command::new("mosquitto_sub")
            .args(self.client_args())
            .args(["-t", filter, "-v", "-q", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian's mosquitto-clients)");
        let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
        let out = child.stdout.take().unwrap();
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
                s.lock().unwrap().push(Message {
                    at: Instant::now(),
                    topic: topic.to_string(),
                    payload: payload.to_string(),
                });
            }
        });
        Subscription { child, seen }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub at: Instant,
    pub topic: String,
    pub payload: String,
}

pub struct Subscription {
    child: Child,
    seen: Arc<Mutex<Vec<Message>>>,
}

impl Subscription {
    pub fn messages(&self) -> Vec<Message> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a message satisfies `cond`; returns the first that does.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Message) -> bool,
    ) -> Message {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.seen.lock().unwrap().iter().find(|m| cond(m)) {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; seen: {:#?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all from the CA.
fn tls_files(dir: &Path) {
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
        "/CN=berth test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, cnf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.cnf"),
        );
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        std::fs::write(dir.join(&cnf), format!("basicConstraints=CA:FALSE\n{ext}")).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &cnf,
            "-out",
            &pem,
        ]);
    }
}

/// The path of a file in the broker's dir (certificates, the password).
pub fn file(b: &Broker, name: &str) -> PathBuf {
    b.dir.path().join(name)
}
