//! What a local user who is not root reaches: a forked child that drops to uid/gid 65534
//! (nobody, no supplementary groups) and tries each path, reporting the errno it got.
//!
//! The child only makes raw syscalls between fork and `_exit` (the test process has other
//! threads, so it must not allocate): every path is turned into a C string before the fork.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The uid and gid the probe runs as.
pub const NOBODY: u32 = 65534;

/// What the outsider tries on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    /// `lstat`: needs search permission on every dir above.
    Stat,
    /// `open(O_RDONLY)` (a dir is listed this way too).
    Open,
    /// `connect` to a unix socket.
    Connect,
}

/// What the outsider got: `Ok` when the call succeeded, else the errno.
pub type Outcome = Result<(), i32>;

/// Runs every `(path, try)` as uid/gid 65534 and returns what each gave.
pub fn probe(tries: &[(PathBuf, Try)]) -> Vec<(PathBuf, Try, Outcome)> {
    let c_paths: Vec<CString> = tries
        .iter()
        .map(|(p, _)| CString::new(p.as_os_str().as_bytes()).unwrap())
        .collect();
    let addrs: Vec<Option<libc::sockaddr_un>> = tries
        .iter()
        .map(|(p, t)| (*t == Try::Connect).then(|| sockaddr(p)))
        .collect();
    let mut fds = [0i32; 2];
    // SAFETY: a two-int array for pipe2.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the child below makes only async-signal-safe syscalls and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: raw syscalls on memory prepared before the fork; nothing allocates.
        unsafe {
            libc::close(rd);
            let dropped = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0;
            if !dropped {
                libc::_exit(3);
            }
            for (i, (c, (_, t))) in c_paths.iter().zip(tries).enumerate() {
                let rc = match t {
                    Try::Stat => {
                        let mut st: libc::stat = std::mem::zeroed();
                        libc::lstat(c.as_ptr(), &mut st)
                    }
                    Try::Open => {
                        let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        fd.min(0)
                    }
                    Try::Connect => {
                        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                        let addr = addrs[i].as_ref().unwrap();
                        let rc = libc::connect(
                            s,
                            (addr as *const libc::sockaddr_un).cast(),
                            std::mem::size_of::<libc::sockaddr_un>() as u32,
                        );
                        let keep = *libc::__errno_location();
                        libc::close(s);
                        *libc::__errno_location() = keep;
                        rc
                    }
                };
                let errno = if rc == 0 {
                    0
                } else {
                    *libc::__errno_location()
                };
                let rec = [i as i32, errno];
                libc::write(wr, rec.as_ptr().cast(), 8);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(wr) };
    let mut out = Vec::new();
    let mut buf = [0u8; 8];
    loop {
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), 8) };
        if n != 8 {
            break;
        }
        let i = i32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        let errno = i32::from_ne_bytes(buf[4..].try_into().unwrap());
        let (p, t) = &tries[i];
        out.push((p.clone(), *t, if errno == 0 { Ok(()) } else { Err(errno) }));
    }
    let mut status = 0;
    // SAFETY: reaping our own child; closing our read end.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(rd);
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the outsider probe failed (status {status}): could not drop to uid {NOBODY}?"
    );
    assert_eq!(
        out.len(),
        tries.len(),
        "the probe did not report every path"
    );
    out
}

fn sockaddr(p: &Path) -> libc::sockaddr_un {
    // SAFETY: sockaddr_un is plain old data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = p.as_os_str().as_bytes();
    assert!(b.len() < a.sun_path.len(), "socket path too long");
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    a
}

/// Every path under `dir` (not `dir` itself), without following symlinks or crossing into
/// another filesystem's mount (a netns bind mount is listed, not entered).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A uid-65534 process that keeps trying to connect to a unix socket path until stopped,
/// to catch a socket that is reachable even for an instant.
pub struct ConnectRacer {
    pid: libc::pid_t,
    /// The child writes one byte here when a connect succeeds; we close `stop` to end it.
    report: i32,
    stop: i32,
}

impl ConnectRacer {
    pub fn start(path: &Path) -> ConnectRacer {
        let addr = sockaddr(path);
        let (mut report, mut stop) = ([0i32; 2], [0i32; 2]);
        // SAFETY: two-int arrays for pipe2.
        unsafe {
            assert_eq!(libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC), 0);
            assert_eq!(libc::pipe2(stop.as_mut_ptr(), libc::O_CLOEXEC), 0);
        }
        // SAFETY: the child makes only raw syscalls and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: raw syscalls on memory prepared before the fork.
            unsafe {
                libc::close(report[0]);
                libc::close(stop[1]);
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                    || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
                {
                    libc::_exit(3);
                }
                loop {
                    let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    let rc = libc::connect(
                        s,
                        (&addr as *const libc::sockaddr_un).cast(),
                        std::mem::size_of::<libc::sockaddr_un>() as u32,
                    );
                    libc::close(s);
                    if rc == 0 {
                        libc::write(report[1], b"Y".as_ptr().cast(), 1);
                        libc::_exit(0);
                    }
                    let mut pfd = libc::pollfd {
                        fd: stop[0],
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    if libc::poll(&mut pfd, 1, 0) != 0 {
                        libc::_exit(0);
                    }
                }
            }
        }
        // SAFETY: closing the child's ends in the parent.
        unsafe {
            libc::close(report[1]);
            libc::close(stop[0]);
        }
        ConnectRacer {
            pid,
            report: report[0],
            stop: stop[1],
        }
    }

    /// Stops the racer; whether it ever connected.
    pub fn stop(self) -> bool {
        let mut b = 0u8;
        let mut status = 0;
        // SAFETY: our own fds and child.
        unsafe {
            libc::close(self.stop);
            libc::waitpid(self.pid, &mut status, 0);
            let n = libc::read(self.report, (&mut b as *mut u8).cast(), 1);
            libc::close(self.report);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the racer failed (status {status})"
            );
            n == 1
        }
    }
}

/// What a process that is not root but holds CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (a
/// backup or monitoring agent) gets from an HTTP request on a unix socket: the modes of the
/// socket and its dirs do not stop it, so only the server's own check can.
/// `Err(errno)` when connect failed, else the bytes the server sent before EOF (at most 4 KiB,
/// read for at most 10 s).
pub fn ask_past_modes(path: &Path, request: &[u8]) -> Result<Vec<u8>, i32> {
    let addr = sockaddr(path);
    let mut fds = [0i32; 2];
    // SAFETY: a two-int array for pipe2.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the child below makes only raw syscalls on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: as above; nothing allocates.
        unsafe {
            libc::close(rd);
            // Keep the permitted set across the uid change, then raise the two DAC caps.
            let dropped = libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) == 0
                && libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0;
            let dac: u32 = (1 << 1) | (1 << 2); // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            let mut hdr = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this process
            let data = [dac, dac, 0, 0, 0, 0]; // effective, permitted, inheritable (x2)
            let raised = dropped
                && libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) == 0
                && libc::getuid() == NOBODY;
            if !raised {
                libc::_exit(3);
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let rc = libc::connect(
                s,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            );
            if rc != 0 {
                let rec = [1u8, *libc::__errno_location() as u8];
                libc::write(wr, rec.as_ptr().cast(), 2);
                libc::_exit(0);
            }
            libc::write(wr, [0u8, 0].as_ptr().cast(), 2);
            // A refused peer may find the socket closed before it writes: EPIPE is an answer.
            libc::send(
                s,
                request.as_ptr().cast(),
                request.len(),
                libc::MSG_NOSIGNAL,
            );
            let mut buf = [0u8; 4096];
            let mut got = 0usize;
            while got < buf.len() {
                let mut pfd = libc::pollfd {
                    fd: s,
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&mut pfd, 1, 10_000) <= 0 {
                    break;
                }
                let n = libc::read(s, buf[got..].as_mut_ptr().cast(), buf.len() - got);
                if n <= 0 {
                    break;
                }
                got += n as usize;
            }
            libc::write(wr, buf.as_ptr().cast(), got);
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(wr) };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: reaping our own child; closing our read end.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(rd);
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the DAC-override probe failed (status {status}): could not keep its capabilities?"
    );
    assert!(out.len() >= 2, "the probe reported nothing");
    match out[0] {
        0 => Ok(out[2..].to_vec()),
        _ => Err(out[1] as i32),
    }
}
