//! A spec repository for the source tests: Debian's git, a bare repository served by
//! `git daemon` on 127.0.0.1, keys made by `ssh-keygen`, and a working clone where a test
//! writes spec files and commits them signed (by any key) or unsigned, and pushes.
//!
//! Every git here runs with no system or global config, so the host's settings never leak in.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's git (the one berth drives), not whatever else is on PATH.
pub const GIT: &str = "/usr/bin/git";

fn git(dir: &Path, home: &Path) -> Command {
    let mut c = Command::new(GIT);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LANG", "C");
    c
}

fn run(mut c: Command) -> String {
    let out = c.output().expect("run git");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ssh key pair from ssh-keygen.
pub struct SigningKey {
    pub private: PathBuf,
    /// `ssh-ed25519 AAAA...` (no comment).
    pub public: String,
}

impl SigningKey {
    pub fn new(dir: &Path, name: &str) -> SigningKey {
        let private = dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private)
            .output()
            .expect("ssh-keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        SigningKey { private, public }
    }

    /// An allowed_signers line for `principal`.
    pub fn allowed(&self, principal: &str) -> String {
        format!("{principal} {}\n", self.public)
    }
}

/// How a commit is signed.
pub enum Sign<'a> {
    With(&'a SigningKey),
    Unsigned,
}

/// A bare repository (what `git daemon` serves) and a working clone of it.
pub struct SpecRepo {
    pub root: tempfile::TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
    home: PathBuf,
    /// Where specs live in the repository (`specs`).
    pub path: String,
    pub email: String,
    /// Commit times go up one second a commit, from a fixed start: reproducible ids.
    time: u64,
}

impl SpecRepo {
    pub fn new(path: &str) -> SpecRepo {
        let root = tempfile::Builder::new()
            .prefix("berth-repo-")
            .tempdir()
            .unwrap();
        let bare = root.path().join("srv/fleet.git");
        let work = root.path().join("work");
        let home = root.path().join("home");
        for d in [&bare, &work, &home] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut c = git(&bare, &home);
        c.args(["init", "--bare", "-q", "-b", "main"]);
        run(c);
        // So that `git daemon` serves it without --export-all.
        std::fs::write(bare.join("git-daemon-export-ok"), "").unwrap();
        let mut c = git(&work, &home);
        c.args(["init", "-q", "-b", "main"]);
        run(c);
        SpecRepo {
            root,
            bare,
            work,
            home,
            path: path.to_string(),
            email: "alice@example.com".into(),
            time: 1_780_000_000,
        }
    }

    fn git(&self) -> Command {
        git(&self.work, &self.home)
    }

    /// Writes `<path>/<rel>` in the working clone.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.work.join(&self.path).join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.work.join(&self.path).join(rel)).unwrap();
    }

    /// Commits everything (as `self.email`), signed or not; returns the commit id.
    pub fn commit(&mut self, message: &str, sign: Sign<'_>) -> String {
        let mut c = self.git();
        c.args(["add", "-A"]);
        run(c);
        self.time += 1;
        let date = format!("{} +0000", self.time);
        let mut c = self.git();
        c.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args(["-c", "user.name=Fleet Admin"])
            .arg("-c")
            .arg(format!("user.email={}", self.email));
        match sign {
            Sign::With(k) => {
                c.args(["-c", "gpg.format=ssh"])
                    .arg("-c")
                    .arg(format!("user.signingkey={}", k.private.display()))
                    .args(["commit", "-q", "-S", "--allow-empty", "-m", message]);
            }
            Sign::Unsigned => {
                c.args(["commit", "-q", "--allow-empty", "-m", message]);
            }
        }
        run(c);
        self.head()
    }

    /// Commits HEAD's tree plus a `.git` dir (holding `HEAD`) inside `<path>/<dir>`: git's
    /// porcelain refuses to, so the trees are made with mktree. Signed by `key`.
    pub fn commit_with_dot_git(&mut self, dir: &str, message: &str, key: &SigningKey) -> String {
        let out = |args: &[&str], input: Option<&str>| -> String {
            let mut c = self.git();
            c.args(args);
            if let Some(i) = input {
                use std::io::Write;
                c.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = c.spawn().unwrap();
                child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
                let o = child.wait_with_output().unwrap();
                assert!(
                    o.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                return String::from_utf8_lossy(&o.stdout).trim().to_string();
            }
            run(c)
        };
        let blob = out(
            &["hash-object", "-w", "--stdin"],
            Some("ref: refs/heads/main\n"),
        );
        let dotgit = out(&["mktree"], Some(&format!("100644 blob {blob}\tHEAD\n")));
        // Rebuild the trees from the bottom: <path>/<dir>/.git, then each parent up to the root.
        let mut parts: Vec<String> = self.path.split('/').map(str::to_string).collect();
        parts.extend(dir.split('/').map(str::to_string));
        let mut child_tree = {
            let at = parts.join("/");
            let existing = out(&["ls-tree", &format!("HEAD:{at}")], None);
            let mut listing: String = existing.lines().map(|l| format!("{l}\n")).collect();
            listing.push_str(&format!("040000 tree {dotgit}\t.git\n"));
            out(&["mktree"], Some(&listing))
        };
        for depth in (0..parts.len()).rev() {
            let parent = parts[..depth].join("/");
            let spec = if parent.is_empty() {
                "HEAD^{tree}".to_string()
            } else {
                format!("HEAD:{parent}")
            };
            let existing = out(&["ls-tree", &spec], None);
            let name = &parts[depth];
            let mut listing: String = existing
                .lines()
                .filter(|l| l.split('\t').nth(1) != Some(name.as_str()))
                .map(|l| format!("{l}\n"))
                .collect();
            listing.push_str(&format!("040000 tree {child_tree}\t{name}\n"));
            child_tree = out(&["mktree"], Some(&listing));
        }
        self.time += 1;
        let date = format!("{} +0000", self.time);
        let head = self.head();
        let mut c = self.git();
        c.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_AUTHOR_NAME", "Fleet Admin")
            .env("GIT_COMMITTER_NAME", "Fleet Admin")
            .env("GIT_AUTHOR_EMAIL", &self.email)
            .env("GIT_COMMITTER_EMAIL", &self.email)
            .args(["-c", "gpg.format=ssh"])
            .arg("-c")
            .arg(format!("user.signingkey={}", key.private.display()))
            .args(["commit-tree", &child_tree, "-p", &head, "-S", "-m", message]);
        let id = run(c);
        let mut c = self.git();
        c.args(["update-ref", "refs/heads/main", &id]);
        run(c);
        id
    }

    pub fn head(&self) -> String {
        let mut c = self.git();
        c.args(["rev-parse", "HEAD"]);
        run(c)
    }

    /// Pushes the working branch to the bare repository (`force`: rewrite it).
    pub fn push(&self, force: bool) {
        let mut c = self.git();
        c.arg("push").arg("-q");
        if force {
            c.arg("--force");
        }
        c.arg(&self.bare).arg("HEAD:refs/heads/main");
        run(c);
    }

    /// Moves the working branch to `commit` (to force-push an older one).
    pub fn reset_hard(&self, commit: &str) {
        let mut c = self.git();
        c.args(["reset", "-q", "--hard", commit]);
        run(c);
    }

    /// `git bundle create` of the working branch (`since`: an incremental one).
    pub fn bundle(&self, out: &Path, since: Option<&str>) {
        let mut c = self.git();
        c.args(["bundle", "create", "-q"]).arg(out);
        match since {
            Some(s) => c.arg(format!("{s}..main")),
            None => c.arg("main"),
        };
        run(c);
    }
}

/// `git daemon` serving a directory of bare repositories on 127.0.0.1, its log kept.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    /// Packet traces of the upload-pack runs it served (`GIT_TRACE_PACKET`).
    pub packets: PathBuf,
}

impl GitDaemon {
    pub fn start(base: &Path, logs: &Path) -> GitDaemon {
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = logs.join(format!("git-daemon-{port}.log"));
            let packets = logs.join(format!("git-daemon-{port}.packets"));
            let mut c = Command::new(GIT);
            c.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", logs)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_TRACE_PACKET", &packets)
                .args(["daemon", "--verbose", "--reuseaddr", "--listen=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            // Its own process group: `git daemon` runs git-daemon as a child, and stopping the
            // server must stop that and every upload-pack it started.
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            let mut child = c.spawn().expect("git daemon");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return GitDaemon {
                        child,
                        port,
                        log,
                        packets,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            kill_group(&mut child);
        }
        panic!("git daemon did not start");
    }

    /// The URL of a repository under the base path.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Stops serving (a dead remote); the port is refused from then on.
    pub fn stop(&mut self) {
        kill_group(&mut self.child);
    }

    /// Connections served so far (one per fetch).
    pub fn connections(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Connection from"))
            .count()
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group this child leads.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

/// What the server sent and was asked, per upload-pack run, from its packet trace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerWork {
    /// `command=ls-refs` requests (ref advertisements).
    pub ls_refs: usize,
    /// `command=fetch` requests (negotiation and pack).
    pub fetches: usize,
    /// Packet lines the server wrote, and their bytes (as the trace counts them).
    pub lines_out: usize,
    pub bytes_out: usize,
}

impl GitDaemon {
    /// Reads the server's packet trace: what it was asked and what it answered.
    pub fn work(&self) -> ServerWork {
        let text = std::fs::read(&self.packets).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let mut w = ServerWork::default();
        for l in text.lines() {
            // `... packet:  upload-pack< command=ls-refs` (read) and `upload-pack> ...` (written).
            if l.contains("upload-pack< command=ls-refs") {
                w.ls_refs += 1;
            }
            if l.contains("upload-pack< command=fetch") {
                w.fetches += 1;
            }
            if let Some(i) = l.find("upload-pack> ") {
                w.lines_out += 1;
                w.bytes_out += l.len() - i - "upload-pack> ".len();
            }
        }
        w
    }
}

/// Debian's git-http-backend behind HTTPS with basic auth (tests/setup/git_https.py), on
/// 127.0.0.1, with its own self-signed certificate.
pub struct GitHttps {
    child: Child,
    pub port: u16,
    /// The certificate clients must trust (PEM).
    pub ca: PathBuf,
    /// One line per request: `ok|denied METHOD PATH`.
    pub log: PathBuf,
}

impl GitHttps {
    pub fn start(root: &Path, dir: &Path, user: &str, token: &str) -> GitHttps {
        let (cert, key) = (dir.join("https-cert.pem"), dir.join("https-key.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port_file = dir.join("https-port");
        let log = dir.join("https.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("setup/git_https.py");
        let mut c = Command::new("python3");
        c.arg(script)
            .arg(&port_file)
            .arg(root)
            .arg(&cert)
            .arg(&key)
            .arg(user)
            .arg(token)
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("https.err")).unwrap());
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let mut child = c.spawn().expect("python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().unwrap();
            }
            if let Ok(Some(s)) = child.try_wait() {
                panic!("git_https.py exited: {s}");
            }
            assert!(Instant::now() < deadline, "git_https.py did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        GitHttps {
            child,
            port,
            ca: cert,
            log,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    pub fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GitHttps {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Debian's sshd on 127.0.0.1 (its own host key, config and port), letting one key in as the
/// current user: git over `ssh://` runs `git-upload-pack` through it.
pub struct SshServer {
    child: Child,
    pub port: u16,
    /// A known_hosts line for this server.
    pub known_host: String,
}

impl SshServer {
    pub fn start(dir: &Path, client: &SigningKey) -> SshServer {
        let host_key = dir.join("ssh_host_ed25519_key");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .output()
            .unwrap();
        assert!(out.status.success());
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", client.public)).unwrap();
        // sshd's privilege separation dir (the package makes it only when its service starts).
        std::fs::create_dir_all("/run/sshd").unwrap();
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.join(format!("sshd-{port}.conf"));
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                     AuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPubkeyAuthentication yes\n",
                    host_key.display(),
                    dir.join(format!("sshd-{port}.pid")).display(),
                    authorized.display()
                ),
            )
            .unwrap();
            let mut c = Command::new("/usr/sbin/sshd");
            c.args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("sshd-{port}.log"))).unwrap());
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            let mut child = c.spawn().expect("sshd (Debian package openssh-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
                    let key: Vec<&str> = public.split_whitespace().take(2).collect();
                    return SshServer {
                        child,
                        port,
                        known_host: format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            kill_group(&mut child);
        }
        panic!("sshd did not start");
    }

    /// `ssh://` URL of a repository by its absolute path.
    pub fn url(&self, repo: &Path) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        format!("ssh://{user}@127.0.0.1:{}{}", self.port, repo.display())
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}
