//! Debian's git, run so that nothing but berth decides what it does: no config file but the
//! settings below (system and global config off, the repository's own config never written by
//! anyone else), no hooks, no credential helpers or prompts, no replace refs, only the one
//! transport the source names, objects fsck'ed on the way in, no background gc, a private
//! umask, a size limit on what it writes and a deadline on every run. berth never checks a
//! tree out with git: it reads objects (`cat-file`) and writes spec files itself, so no
//! filter, attribute or submodule of the repository ever runs.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_spec::config::GitScheme;

use crate::reconcile::fleet::commit::{Commit, CommitId, parse_commit};
use crate::reconcile::fleet::history::CommitStore;

/// Debian's git. A fixed path: the agent's PATH is not trusted to pick the binary root runs.
pub const GIT_BIN: &str = "/usr/bin/git";
const SSH_BIN: &str = "/usr/bin/ssh";

/// The largest file one git run may write (a pack): a hostile remote cannot fill the disk.
const MAX_WRITE: u64 = 512 << 20;
/// The largest commit or tree read.
const MAX_METADATA: u64 = 4 << 20;
/// Deadline of the local, quick commands (rev-parse, init).
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run {bin}: {source} (the source needs Debian's git package)", bin = GIT_BIN)]
    Spawn { source: std::io::Error },
    #[error("git {what} timed out after {}s", after.as_secs())]
    Timeout { what: String, after: Duration },
    #[error("git {what} failed: {message}")]
    Failed { what: String, message: String },
    #[error("git {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// How to reach the remote, credentials included (read from their files per fetch).
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub scheme: GitScheme,
    /// `Authorization: Basic` for https, built from the token file.
    pub auth_header: Option<String>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl Remote {
    /// The remote of a `[source]`, its token read now (it may be rotated between fetches).
    pub fn from_config(c: &berth_spec::config::SourceConfig) -> Result<Option<Remote>, String> {
        let Some(url) = &c.git else {
            return Ok(None);
        };
        let scheme = GitScheme::of(url).ok_or_else(|| format!("unsupported URL {url:?}"))?;
        let auth_header = match &c.token_file {
            Some(p) => {
                let token = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read token_file {}: {e}", p.display()))?;
                let token = token.trim();
                if token.is_empty() || token.contains(['\n', '\r', '\0']) {
                    return Err(format!("token_file {}: not one line of token", p.display()));
                }
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{token}", c.username));
                Some(format!("Authorization: Basic {basic}"))
            }
            None => None,
        };
        Ok(Some(Remote {
            url: url.clone(),
            scheme,
            auth_header,
            ssh_key_file: c.ssh_key_file.clone(),
            known_hosts: c.known_hosts.clone(),
            ca_file: c.ca_file.clone(),
        }))
    }
}

/// How much history a fetch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The tip alone: the first fetch (only the tip is judged on a first run).
    TipOnly,
    /// Whatever is new since the commits this repository has.
    New,
    /// All of it: a walk needed a commit beyond the shallow boundary.
    Full,
}

/// The source's own bare repository, and how git is run on it.
#[derive(Debug, Clone)]
pub struct Git {
    bin: PathBuf,
    repo: PathBuf,
    home: PathBuf,
}

/// A command's output.
struct Output {
    stdout: Vec<u8>,
}

impl Git {
    /// `repo`: the bare repository (made by [`Git::init`]); `home`: an empty private dir git
    /// may treat as `$HOME`.
    pub fn new(repo: &Path, home: &Path) -> Git {
        Git {
            bin: PathBuf::from(GIT_BIN),
            repo: repo.to_path_buf(),
            home: home.to_path_buf(),
        }
    }

    /// Runs another git binary (tests use Debian's at a known path; nothing else does).
    pub fn with_binary(mut self, bin: &Path) -> Git {
        self.bin = bin.to_path_buf();
        self
    }

    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// The hardened base command: see the module comment.
    fn command(&self, config: &[(&str, String)], protocol: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .env("GIT_DIR", &self.repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_ALLOW_PROTOCOL", protocol.unwrap_or("none"));
        let fixed: [(&str, String); 15] = [
            ("core.hooksPath", "/dev/null".into()),
            ("core.fsmonitor", "false".into()),
            ("credential.helper", String::new()),
            ("protocol.allow", "never".into()),
            ("transfer.fsckObjects", "true".into()),
            // A `.git` inside the spec path is skipped when trees are written, not a reason to
            // fail every fetch.
            ("fetch.fsck.hasDotgit", "ignore".into()),
            ("gc.auto", "0".into()),
            ("gc.autoDetach", "false".into()),
            ("maintenance.auto", "false".into()),
            ("fetch.writeCommitGraph", "false".into()),
            ("fetch.recurseSubmodules", "false".into()),
            ("submodule.recurse", "false".into()),
            ("http.lowSpeedLimit", "1024".into()),
            ("http.lowSpeedTime", "30".into()),
            ("core.quotePath", "false".into()),
        ];
        let all: Vec<(&str, String)> = fixed
            .into_iter()
            .chain(protocol.map(|p| {
                (
                    match p {
                        "https" => "protocol.https.allow",
                        "http" => "protocol.http.allow",
                        "ssh" => "protocol.ssh.allow",
                        "git" => "protocol.git.allow",
                        _ => "protocol.file.allow",
                    },
                    "always".to_string(),
                )
            }))
            .chain(config.iter().cloned())
            .collect();
        // Through the environment, not `-c`: a token must not show in the process list.
        cmd.env("GIT_CONFIG_COUNT", all.len().to_string());
        for (i, (k, v)) in all.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd.stdin(Stdio::null()).process_group(0);
        // SAFETY: umask and setrlimit are async-signal-safe and touch only the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o077);
                let lim = rustix::process::Rlimit {
                    current: Some(MAX_WRITE),
                    maximum: Some(MAX_WRITE),
                };
                rustix::process::setrlimit(rustix::process::Resource::Fsize, lim)?;
                Ok(())
            });
        }
        cmd
    }

    /// Runs git with `args` until `deadline`; the whole process group (helpers, ssh) is
    /// killed when it runs over.
    fn run(
        &self,
        what: &str,
        args: &[&OsStr],
        config: &[(&str, String)],
        protocol: Option<&str>,
        timeout: Duration,
    ) -> Result<Output, GitError> {
        let mut cmd = self.command(config, protocol);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| GitError::Spawn { source })?;
        let out = drain(child.stdout.take().expect("piped"), 16 << 20);
        let err = drain(child.stderr.take().expect("piped"), 64 << 10);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(&mut child);
                    return Err(GitError::Timeout {
                        what: what.to_string(),
                        after: timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => {
                    return Err(GitError::Io {
                        what: what.to_string(),
                        source,
                    });
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            return Err(GitError::Failed {
                what: what.to_string(),
                message: summarise(&stderr, status),
            });
        }
        Ok(Output { stdout })
    }

    /// Makes the bare repository if it is not there.
    pub fn init(&self) -> Result<(), GitError> {
        if self.repo.join("HEAD").exists() {
            return Ok(());
        }
        let repo: &OsStr = self.repo.as_os_str();
        self.run(
            "init",
            &["init".as_ref(), "--bare".as_ref(), "--quiet".as_ref(), repo],
            &[],
            None,
            LOCAL_TIMEOUT,
        )?;
        Ok(())
    }

    /// Whether the repository has cut history (a shallow fetch's boundary).
    pub fn is_shallow(&self) -> bool {
        self.repo.join("shallow").exists()
    }

    /// Fetches `branch` of the remote into `refs/berth/remote`.
    pub fn fetch(
        &self,
        remote: &Remote,
        branch: &str,
        depth: Depth,
        timeout: Duration,
    ) -> Result<(), GitError> {
        let mut config: Vec<(&str, String)> = Vec::new();
        if let Some(h) = &remote.auth_header {
            config.push(("http.extraHeader", h.clone()));
        }
        if let Some(ca) = &remote.ca_file {
            config.push(("http.sslCAInfo", ca.display().to_string()));
        }
        if remote.scheme == GitScheme::Ssh {
            config.push(("core.sshCommand", ssh_command(remote)));
            config.push(("ssh.variant", "ssh".into()));
        }
        let refspec = format!("+refs/heads/{branch}:{REMOTE_REF}");
        let mut args: Vec<OsString> = [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--no-auto-gc",
            "--no-show-forced-updates",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        match depth {
            Depth::TipOnly => args.push("--depth=1".into()),
            Depth::New if self.is_shallow() => args.push("--update-shallow".into()),
            Depth::New => {}
            Depth::Full if self.is_shallow() => args.push("--unshallow".into()),
            Depth::Full => {}
        }
        args.push("--".into());
        args.push(remote.url.clone().into());
        args.push(refspec.into());
        let argv: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        self.run(
            "fetch",
            &argv,
            &config,
            Some(remote.scheme.as_str()),
            timeout,
        )?;
        Ok(())
    }

    /// Fetches `refs/heads/<branch>` of a bundle file into `refs/berth/bundle`.
    pub fn fetch_bundle(
        &self,
        bundle: &Path,
        branch: &str,
        timeout: Duration,
    ) -> Result<(), GitError> {
        let heads = self.run(
            "bundle list-heads",
            &["bundle".as_ref(), "list-heads".as_ref(), bundle.as_os_str()],
            &[],
            Some("file"),
            timeout,
        )?;
        let want = format!("refs/heads/{branch}");
        let listed = String::from_utf8_lossy(&heads.stdout).into_owned();
        if !listed
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        {
            let refs: Vec<&str> = listed
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .collect();
            return Err(GitError::Failed {
                what: "bundle".into(),
                message: format!(
                    "{} has no {want} (it has: {})",
                    bundle.display(),
                    refs.join(", ")
                ),
            });
        }
        let refspec = format!("+{want}:{BUNDLE_REF}");
        self.run(
            "fetch from bundle",
            &[
                "fetch".as_ref(),
                "--quiet".as_ref(),
                "--no-tags".as_ref(),
                "--no-write-fetch-head".as_ref(),
                "--no-recurse-submodules".as_ref(),
                "--no-auto-gc".as_ref(),
                "--update-shallow".as_ref(),
                "--".as_ref(),
                bundle.as_os_str(),
                refspec.as_ref(),
            ],
            &[],
            Some("file"),
            timeout,
        )?;
        Ok(())
    }

    /// The commit a ref names, `None` when the ref does not exist.
    pub fn resolve(&self, refname: &str) -> Result<Option<CommitId>, GitError> {
        let spec = format!("{refname}^{{commit}}");
        match self.run(
            "rev-parse",
            &[
                "rev-parse".as_ref(),
                "--verify".as_ref(),
                "--quiet".as_ref(),
                "--end-of-options".as_ref(),
                spec.as_ref(),
            ],
            &[],
            None,
            LOCAL_TIMEOUT,
        ) {
            Ok(out) => {
                let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
                CommitId::parse(&s).map(Some).map_err(|e| GitError::Failed {
                    what: "rev-parse".into(),
                    message: e,
                })
            }
            Err(GitError::Failed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points `refname` at `id` (a ref berth keeps, so gc never drops what it applied).
    pub fn set_ref(&self, refname: &str, id: &CommitId) -> Result<(), GitError> {
        self.run(
            "update-ref",
            &[
                "update-ref".as_ref(),
                "--no-deref".as_ref(),
                refname.as_ref(),
                id.as_str().as_ref(),
            ],
            &[],
            None,
            LOCAL_TIMEOUT,
        )?;
        Ok(())
    }

    /// Packs loose objects now and then; never prunes what berth's refs hold.
    pub fn housekeep(&self) -> Result<(), GitError> {
        self.run(
            "gc",
            &["gc".as_ref(), "--auto".as_ref(), "--quiet".as_ref()],
            &[("gc.auto", "256".into())],
            None,
            Duration::from_secs(300),
        )?;
        Ok(())
    }

    /// A reader of this repository's objects (one `git cat-file --batch` for many reads).
    pub fn objects(&self) -> Result<Objects, GitError> {
        let mut cmd = self.command(&[], None);
        cmd.args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|source| GitError::Spawn { source })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Objects {
            child,
            stdin,
            stdout,
        })
    }
}

/// Where fetched tips land in the source's repository.
pub const REMOTE_REF: &str = "refs/berth/remote";
pub const BUNDLE_REF: &str = "refs/berth/bundle";
/// What is verified and what is applied: kept as refs so gc keeps them.
pub const VERIFIED_REF: &str = "refs/berth/verified";
pub const APPLIED_REF: &str = "refs/berth/applied";

/// `ssh` with nothing from any ssh config: this key, these host keys, no prompts. git hands
/// the string to sh; ssh then reads `-o` values with its own quoting (and splits a known hosts
/// value at spaces), so that path is quoted for ssh first, then for sh.
fn ssh_command(r: &Remote) -> String {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let for_ssh = |s: String| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    format!(
        "{SSH_BIN} -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -i {} \
         -o {} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
         -o UpdateHostKeys=no -o ControlMaster=no -o ConnectTimeout=30 -o ServerAliveInterval=15 \
         -o ServerAliveCountMax=4",
        shell_quote(&path(&r.ssh_key_file)),
        shell_quote(&format!(
            "UserKnownHostsFile={}",
            for_ssh(path(&r.known_hosts))
        ))
    )
}

/// `'...'` for sh, with embedded quotes escaped.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Reads a pipe to its end on a thread, keeping at most `cap` bytes (the last ones).
fn drain(mut r: impl Read + Send + 'static, cap: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return kept,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > cap {
                        let cut = kept.len() - cap;
                        kept.drain(..cut);
                    }
                }
            }
        }
    })
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group this child leads (process_group(0)).
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

/// git's complaint, trimmed to what says why: from its first `fatal:`/`error:` line on (the
/// reason often follows on the next line), three lines at most.
fn summarise(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // What ssh or a helper said comes on the line before git's own `fatal:`.
    let from = lines
        .iter()
        .position(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .map_or(lines.len().saturating_sub(3), |i| {
            if i > 0 && !lines[i - 1].starts_with("remote:") {
                i - 1
            } else {
                i
            }
        });
    match &lines[from..] {
        [] => format!("exit {status}"),
        some => some[..some.len().min(3)].join(" "),
    }
}

/// What `cat-file --batch` gave for one id.
#[derive(Debug)]
pub enum Object {
    Missing,
    /// Bigger than asked for (its bytes were skipped).
    TooLarge {
        kind: String,
        size: u64,
    },
    Found {
        kind: String,
        data: Vec<u8>,
    },
}

/// A running `git cat-file --batch`.
pub struct Objects {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Objects {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Objects {
    /// Reads one object, at most `max` bytes of it.
    pub fn read(&mut self, id: &str, max: u64) -> Result<Object, GitError> {
        let io = |source| GitError::Io {
            what: "cat-file".into(),
            source,
        };
        if id.contains(['\n', ' ']) {
            return Ok(Object::Missing);
        }
        writeln!(self.stdin, "{id}").map_err(io)?;
        self.stdin.flush().map_err(io)?;
        let mut header = String::new();
        self.stdout.read_line(&mut header).map_err(io)?;
        let fields: Vec<&str> = header.split_whitespace().collect();
        match fields.as_slice() {
            [_, "missing"] | [_, "ambiguous"] => Ok(Object::Missing),
            [_, kind, size] => {
                let size: u64 = size.parse().map_err(|_| GitError::Failed {
                    what: "cat-file".into(),
                    message: format!("bad header {header:?}"),
                })?;
                let kind = kind.to_string();
                if size > max {
                    std::io::copy(&mut (&mut self.stdout).take(size + 1), &mut std::io::sink())
                        .map_err(io)?;
                    return Ok(Object::TooLarge { kind, size });
                }
                let mut data = vec![0u8; size as usize];
                self.stdout.read_exact(&mut data).map_err(io)?;
                let mut nl = [0u8; 1];
                self.stdout.read_exact(&mut nl).map_err(io)?;
                Ok(Object::Found { kind, data })
            }
            _ => Err(GitError::Failed {
                what: "cat-file".into(),
                message: format!("unexpected output {header:?}"),
            }),
        }
    }

    /// An object that must be of `kind` (a commit, a tree) and of metadata size.
    pub fn read_kind(&mut self, id: &str, kind: &str) -> Result<Option<Vec<u8>>, String> {
        match self.read(id, MAX_METADATA).map_err(|e| e.to_string())? {
            Object::Missing => Ok(None),
            Object::Found { kind: k, data } if k == kind => Ok(Some(data)),
            Object::Found { kind: k, .. } => Err(format!("{id} is a {k}, not a {kind}")),
            Object::TooLarge { size, .. } => Err(format!("{kind} {id} is {size} bytes: too large")),
        }
    }
}

impl CommitStore for Objects {
    fn commit(&mut self, id: &CommitId) -> Result<Option<Commit>, String> {
        match self.read_kind(id.as_str(), "commit")? {
            None => Ok(None),
            Some(raw) => parse_commit(id, &raw).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_summaries() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        let status = std::process::Command::new("false").status().unwrap();
        assert_eq!(
            summarise(
                b"remote: counting\nfatal: could not read from remote repository\n",
                status
            ),
            "fatal: could not read from remote repository"
        );
        assert!(summarise(b"", status).starts_with("exit "));
    }

    #[test]
    fn token_becomes_basic_auth_and_stays_off_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let c = berth_spec::config::SourceConfig {
            git: Some("https://git.example.com/fleet.git".into()),
            token_file: Some(token),
            username: "deploy".into(),
            ..Default::default()
        };
        let r = Remote::from_config(&c).unwrap().unwrap();
        // base64("deploy:s3cret")
        assert_eq!(
            r.auth_header.as_deref(),
            Some("Authorization: Basic ZGVwbG95OnMzY3JldA==")
        );
        let git = Git::new(Path::new("/nonexistent/repo"), dir.path());
        let cmd = git.command(
            &[("http.extraHeader", r.auth_header.clone().unwrap())],
            Some("https"),
        );
        let args: Vec<&OsStr> = cmd.get_args().collect();
        assert!(args.is_empty());
        let envs: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        assert!(envs.iter().any(|(_, v)| v.contains("ZGVwbG95OnMzY3JldA==")));
        assert!(envs.contains(&("GIT_ALLOW_PROTOCOL".into(), "https".into())));
        assert!(envs.contains(&("GIT_CONFIG_NOSYSTEM".into(), "1".into())));
        std::fs::write(dir.path().join("token"), "two\nlines\n").unwrap();
        assert!(
            Remote::from_config(&c)
                .unwrap_err()
                .contains("not one line")
        );
    }
}
