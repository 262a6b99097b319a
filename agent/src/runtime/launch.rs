//! The last steps of every container process, the init and each `exec`: resolve the user in the
//! container's own /etc, drop to it, set capabilities, no_new_privs and seccomp, exec.
//!
//! Order matters: the bounding set is dropped while CAP_SETPCAP is held; setuid keeps caps only
//! with KEEPCAPS; ambient caps need them permitted and inheritable first; the seccomp filter
//! goes on last (or, without no_new_privs, while CAP_SYS_ADMIN is still held).

use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_spec::model::{SeccompMode, Security};

use super::process::{ProcessSpec, env_path};
use super::sys::cstr;
use super::{caps, passwd, seccomp};

/// Why a process did not start, with Docker's exit codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// 127: the command was not found.
    NotFound(String),
    /// 126: found but not executable.
    NotExecutable(String),
    /// 125: berth could not set the process up.
    Setup(String),
}

impl LaunchError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::NotFound(_) => 127,
            LaunchError::NotExecutable(_) => 126,
            LaunchError::Setup(_) => 125,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            LaunchError::NotFound(m) | LaunchError::NotExecutable(m) | LaunchError::Setup(m) => m,
        }
    }
    /// `<code>\t<message>`, as sent back over the error pipe.
    pub fn encode(&self) -> String {
        format!("{}\t{}", self.exit_code(), self.message())
    }
    pub fn decode(s: &str) -> LaunchError {
        match s.split_once('\t') {
            Some(("127", m)) => LaunchError::NotFound(m.into()),
            Some(("126", m)) => LaunchError::NotExecutable(m.into()),
            Some((_, m)) => LaunchError::Setup(m.into()),
            None => LaunchError::Setup(s.into()),
        }
    }
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> LaunchError + '_ {
    move |e| LaunchError::Setup(format!("{what}: {e}"))
}

/// Credentials, capabilities and seccomp program for `p` in the current root.
pub struct Prepared {
    creds: passwd::Credentials,
    sets: caps::CapSets,
    filter: Option<Vec<seccomp::SockFilter>>,
    no_new_privs: bool,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: String,
    program: String,
}

/// Resolves everything that needs the container's files, while still root.
pub fn prepare(p: &ProcessSpec, security: &Security) -> Result<Prepared, LaunchError> {
    let passwd_text = passwd::read_etc_file("/etc/passwd").map_err(LaunchError::Setup)?;
    let group_text = passwd::read_etc_file("/etc/group").map_err(LaunchError::Setup)?;
    let creds = passwd::resolve(p.user.as_ref(), &p.group_add, &passwd_text, &group_text)
        .map_err(LaunchError::Setup)?;
    let sets = caps::compute(security, creds.uid)
        .map_err(LaunchError::Setup)?
        .within(caps::own_bounding());
    let filter = (!security.privileged && security.seccomp == SeccompMode::Default)
        .then(|| seccomp::default_filter(sets.bounding));
    let mut env = p.env.clone();
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        env.push(format!("HOME={}", creds.home));
    }
    let program = p
        .args
        .first()
        .cloned()
        .ok_or_else(|| LaunchError::Setup("empty command".into()))?;
    let argv = p
        .args
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()
        .map_err(setup("argv"))?;
    let envp = env
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()
        .map_err(setup("env"))?;
    Ok(Prepared {
        creds,
        sets,
        filter,
        no_new_privs: security.no_new_privileges,
        argv,
        envp,
        cwd: p.cwd.clone(),
        program,
    })
}

impl Prepared {
    pub fn uid(&self) -> u32 {
        self.creds.uid
    }
    pub fn gid(&self) -> u32 {
        self.creds.gid
    }

    /// Drops privileges and execs; returns only on failure.
    pub fn exec(self) -> LaunchError {
        match self.try_exec() {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    fn try_exec(self) -> Result<std::convert::Infallible, LaunchError> {
        let path_var = self
            .envp
            .iter()
            .filter_map(|c| c.to_str().ok())
            .find_map(|kv| kv.strip_prefix("PATH="))
            .map(str::to_string)
            .unwrap_or_else(|| env_path(&[]).to_string());
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        caps::drop_bounding(self.sets.bounding).map_err(setup("drop bounding capabilities"))?;
        let load_early = self.filter.is_some() && !self.no_new_privs;
        if load_early {
            seccomp::load(self.filter.as_deref().unwrap_or(&[]))
                .map_err(setup("load seccomp filter"))?;
        }
        let groups: Vec<libc::gid_t> = self.creds.groups.clone();
        // SAFETY: setgroups reads `groups.len()` gids from a live vector.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(setup("setgroups")(io::Error::last_os_error()));
        }
        // SAFETY: plain integer syscalls; setresgid before setresuid while still privileged.
        if unsafe { libc::setresgid(self.creds.gid, self.creds.gid, self.creds.gid) } != 0 {
            return Err(setup("setgid")(io::Error::last_os_error()));
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(self.creds.uid, self.creds.uid, self.creds.uid) } != 0 {
            return Err(setup("setuid")(io::Error::last_os_error()));
        }
        caps::set_process_caps(&self.sets).map_err(setup("set capabilities"))?;
        caps::set_ambient(self.sets.ambient).map_err(setup("set ambient capabilities"))?;
        if self.no_new_privs {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(setup("no_new_privs")(io::Error::last_os_error()));
            }
        }
        std::env::set_current_dir(&self.cwd).map_err(setup(&format!("chdir {}", self.cwd)))?;
        cwd_inside_root(&self.cwd)?;
        let path = find_program(&self.program, &path_var)?;
        let c_path = super::sys::path_cstr(&path).map_err(setup("program path"))?;
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        if !load_early && let Some(f) = &self.filter {
            seccomp::load(f).map_err(setup("load seccomp filter"))?;
        }
        // SAFETY: NUL-terminated arrays of pointers into CStrings that outlive the call.
        unsafe { libc::execve(c_path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = io::Error::last_os_error();
        let msg = format!("exec {}: {e}", path.display());
        Err(match e.raw_os_error() {
            Some(libc::ENOENT) => LaunchError::NotFound(msg),
            Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EPERM) | Some(libc::EISDIR) => {
                LaunchError::NotExecutable(msg)
            }
            _ => LaunchError::Setup(msg),
        })
    }
}

/// The working directory just entered must be inside the process's root: a path through a
/// symlink to a magic link (`/proc/self/fd/N` of an fd inherited from the host) would leave
/// the payload standing in a host directory (CVE-2024-21626). The kernel's getcwd says
/// "(unreachable)/..." (or ENOENT) for a directory outside the root.
pub fn cwd_inside_root(cwd: &str) -> Result<(), LaunchError> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // Raw syscall: glibc's getcwd (and std's and nix's through it) may hide the kernel's
    // "(unreachable)" answer this check looks for.
    // SAFETY: getcwd writes at most `buf.len()` bytes into a live buffer.
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if r < 0 {
        return Err(setup(&format!("working directory {cwd}"))(
            io::Error::last_os_error(),
        ));
    }
    if buf.first() != Some(&b'/') {
        return Err(LaunchError::Setup(format!(
            "working directory {cwd} is outside the container"
        )));
    }
    Ok(())
}

/// Finds `program` on `path_var` as execvp would; a name with a slash is taken as is.
pub fn find_program(program: &str, path_var: &str) -> Result<PathBuf, LaunchError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let mut denied = None;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() => {
                if m.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
                denied.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    match denied {
        Some(p) => Err(LaunchError::NotExecutable(format!(
            "{}: permission denied",
            p.display()
        ))),
        None => Err(LaunchError::NotFound(format!(
            "{program}: executable file not found in $PATH"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_roundtrip() {
        for e in [
            LaunchError::NotFound("a".into()),
            LaunchError::NotExecutable("b\tc".into()),
            LaunchError::Setup("d".into()),
        ] {
            assert_eq!(LaunchError::decode(&e.encode()), e);
        }
    }

    #[test]
    fn a_working_directory_outside_the_root_is_refused() {
        use crate::runtime::sys;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("root");
        std::fs::create_dir(&inner).unwrap();
        let outer = sys::path_cstr(d.path()).unwrap();
        let inner = sys::path_cstr(&inner).unwrap();
        // SAFETY: the child only makes syscalls on data prepared before the fork, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                let fd = libc::open(outer.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                let inside = libc::chroot(inner.as_ptr()) == 0
                    && libc::chdir(c"/".as_ptr()) == 0
                    && cwd_inside_root("/").is_ok();
                let outside = libc::fchdir(fd) == 0 && cwd_inside_root("/w").is_err();
                libc::_exit(if inside && outside { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn program_lookup() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.path().join("plain"), "").unwrap();
        let path = format!("/nonexistent:{}", d.path().display());
        assert_eq!(find_program("tool", &path).unwrap(), exe);
        assert_eq!(find_program("plain", &path).unwrap_err().exit_code(), 126);
        assert_eq!(find_program("nope", &path).unwrap_err().exit_code(), 127);
        assert_eq!(find_program("/x/y", &path).unwrap(), PathBuf::from("/x/y"));
    }
}
