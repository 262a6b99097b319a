//! The `[::1]` side of published ports: a userland relay run by the shim.
//!
//! Every other path to a published port is DNAT in the kernel (docs/network.md). `[::1]` cannot
//! be: IPv6 has no `route_localnet`, so a reply whose destination conntrack turns back into
//! `::1` arrives on the bridge and the kernel drops it in the input route lookup. Docker answers
//! `[::1]` with docker-proxy; berth does the same here, in the shim that already holds the
//! container's host ports, so the relay lives exactly as long as the container's run, survives
//! agent restarts, and goes with the shim's fds when the container exits (or the shim dies).
//!
//! One thread, one `poll(2)` loop, non-blocking sockets. It only ever connects to the one
//! container address it was given per port: it opens nothing else.
//!
//! TCP bytes move with `splice(2)` through a pipe per direction: zero copies through user
//! space, and no buffer of ours per connection (a pipe's pages exist only while bytes are in
//! flight), so a connection costs the shim a few hundred bytes of bookkeeping (the idle relay
//! adds ~20 KiB of anonymous memory to a shim, measured). Not a copy loop on tokio
//! (`copy_bidirectional`) or on threads: the shim runs no async runtime (it forks and clones,
//! and its footprint is benchmarked against conmon's), a copy loop holds a user-space buffer
//! per direction per connection, and a thread per connection would be unbounded.
//!
//! A pipe is refilled only once it is empty: a pipe counts slots, not bytes, so "not full"
//! cannot be known from a byte count, and a refill that failed with `EAGAIN` on a readable
//! socket would spin. A half-close is relayed as one (`shutdown(SHUT_WR)` once a side's EOF is
//! read and its pipe drained).
//!
//! UDP: one connected socket per client address (a flow), so replies find their client;
//! a flow idle for [`Limits::udp_idle`] is closed (90 s by default, as docker-proxy).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_spec::model::Protocol;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// How much the relay takes on at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TCP connections relayed at once per port; more wait in the listener's backlog.
    pub max_connections: usize,
    /// UDP clients per port; a datagram from one more is dropped.
    pub max_flows: usize,
    /// A UDP flow with no datagram either way for this long is closed.
    pub udp_idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_flows: 1024,
            udp_idle: Duration::from_secs(90),
        }
    }
}

/// One port: a socket on `[::1]` and the container's address it relays to.
#[derive(Debug)]
pub struct Relay {
    listener: Listener,
    to: SocketAddr,
}

#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Listener {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Udp(u) => u.as_fd(),
        }
    }
}

impl Relay {
    /// Binds (and for TCP listens on) `[::1]:port`. The socket is also the port's reservation
    /// on `[::1]`: no other program can take it while the relay holds it.
    pub fn listen(port: u16, protocol: Protocol, to: SocketAddr) -> io::Result<Relay> {
        let at = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
        let ty = match protocol {
            Protocol::Tcp => SocketType::STREAM,
            Protocol::Udp => SocketType::DGRAM,
        };
        let fd = rustix::net::socket_with(
            AddressFamily::INET6,
            ty,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        if protocol == Protocol::Tcp {
            // As every TCP server: the relay closes first, so its connections' TIME_WAIT is on
            // [::1]:port, and without this the next run of the container could not bind it for
            // a minute. A listening socket's port stays its own all the same.
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
        }
        rustix::net::bind(&fd, &at)?;
        let listener = match protocol {
            Protocol::Tcp => {
                rustix::net::listen(&fd, 1024)?;
                Listener::Tcp(TcpListener::from(fd))
            }
            Protocol::Udp => Listener::Udp(UdpSocket::from(fd)),
        };
        Ok(Relay { listener, to })
    }

    /// Aims a relay made before the container's address was known (`[::]:port`) at that
    /// address; `false` when it is still unknown, and the relay must not run: it would
    /// connect to the host itself.
    pub fn aim(&mut self, container: Option<IpAddr>) -> bool {
        if !self.to.ip().is_unspecified() {
            return true;
        }
        match container {
            Some(ip) if !ip.is_unspecified() => {
                self.to.set_ip(ip);
                true
            }
            _ => false,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Udp(u) => u.local_addr(),
        }
    }
}

/// The running relay thread; [`Proxy::stop`] (or dropping it) ends it and closes every socket.
#[derive(Debug)]
pub struct Proxy {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    live: Arc<Live>,
}

/// What the relay holds now, as of its last turn.
#[derive(Debug, Default)]
struct Live {
    connections: AtomicUsize,
    flows: AtomicUsize,
}

impl Proxy {
    /// Starts relaying; with no relays, nothing is started.
    pub fn start(relays: Vec<Relay>, limits: Limits) -> io::Result<Proxy> {
        let live = Arc::new(Live::default());
        if relays.is_empty() {
            return Ok(Proxy {
                stop: None,
                thread: None,
                live,
            });
        }
        raise_fd_limit(&relays, &limits);
        let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut relay = Loop::new(relays, limits, live.clone());
        let thread = std::thread::Builder::new()
            .name("proxy".into())
            .stack_size(256 * 1024)
            .spawn(move || relay.run(stop_r))?;
        Ok(Proxy {
            stop: Some(stop_w),
            thread: Some(thread),
            live,
        })
    }

    /// TCP connections and UDP flows open now (for tests: what goes must be released).
    pub fn live(&self) -> (usize, usize) {
        (
            self.live.connections.load(Ordering::Relaxed),
            self.live.flows.load(Ordering::Relaxed),
        )
    }

    /// Closes every listener, connection and flow, and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        // Closing the write end wakes the loop with POLLHUP.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Each connection holds two sockets and two pipes: make room for the limits, within the
/// hard limit (the shim's fds are otherwise a handful; the container has its own limits).
fn raise_fd_limit(relays: &[Relay], limits: &Limits) {
    let need =
        relays.len() as u64 * (6 * limits.max_connections as u64 + limits.max_flows as u64) + 64;
    let cur = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= need {
        return;
    }
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(need.min(hard)),
            maximum: cur.maximum,
        },
    );
}

/// One direction of a TCP connection: `src` → pipe → `dst`.
struct Pump {
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    /// Bytes in the pipe.
    pending: usize,
    /// `src` said EOF.
    eof: bool,
    /// EOF passed on to `dst` (`shutdown(SHUT_WR)`).
    shut: bool,
}

/// Each pipe is grown to this (from the default 64 KiB): one splice moves at most this much,
/// and as a pipe is refilled only once empty, 64 KiB pipes halved the throughput (measured with
/// `bench/run --quick --only netpath`: 5.4-5.7 Gbit/s against 9.2-13). Its pages exist only while
/// bytes are in flight; if the kernel refuses the size, the default pipe works the same, slower.
const PIPE_BYTES: usize = 256 * 1024;

impl Pump {
    fn new() -> io::Result<Pump> {
        let (pipe_r, pipe_w) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        let _ = rustix::pipe::fcntl_setpipe_size(&pipe_w, PIPE_BYTES);
        Ok(Pump {
            pipe_r,
            pipe_w,
            pending: 0,
            eof: false,
            shut: false,
        })
    }

    /// Moves what can be moved now; an error ends the connection.
    fn step(&mut self, src: &TcpStream, dst: &TcpStream) -> io::Result<()> {
        // A few rounds at most: the loop comes back while the sockets stay ready, and the
        // other connections get their turn meanwhile.
        for _ in 0..4 {
            let mut moved = false;
            if self.pending == 0 && !self.eof {
                match splice(src, &self.pipe_w, PIPE_BYTES) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.pending = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                moved = self.pending > 0;
            }
            if self.pending > 0 {
                match splice(&self.pipe_r, dst, self.pending) {
                    Ok(n) => {
                        self.pending -= n;
                        moved |= n > 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if self.eof && self.pending == 0 && !self.shut {
                // The peer may be gone already: its own EOF or reset ends the other direction.
                let _ = dst.shutdown(std::net::Shutdown::Write);
                self.shut = true;
            }
            if !moved {
                break;
            }
        }
        Ok(())
    }

    /// Poll events it waits for on (src, dst).
    fn interest(&self) -> (i16, i16) {
        if self.pending > 0 {
            (0, libc::POLLOUT)
        } else if !self.eof {
            (libc::POLLIN, 0)
        } else {
            (0, 0)
        }
    }
}

fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    use rustix::pipe::SpliceFlags;
    Ok(rustix::pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )?)
}

struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// The non-blocking connect to the container has not finished.
    connecting: bool,
    up: Pump,
    down: Pump,
    dead: bool,
}

impl Conn {
    fn done(&self) -> bool {
        self.dead || (self.up.shut && self.down.shut)
    }

    fn step(&mut self) {
        if self.connecting {
            match self.upstream.take_error() {
                Ok(None) if self.upstream.peer_addr().is_ok() => self.connecting = false,
                Ok(None) => return,
                _ => {
                    self.dead = true;
                    return;
                }
            }
        }
        let up = self.up.step(&self.client, &self.upstream);
        let down = self.down.step(&self.upstream, &self.client);
        if up.is_err() || down.is_err() {
            self.dead = true;
        }
    }

    fn reset(&self) {
        for s in [&self.client, &self.upstream] {
            let _ = rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO));
        }
    }

    /// Poll events on (client, upstream).
    fn interest(&self) -> (i16, i16) {
        if self.connecting {
            return (0, libc::POLLOUT);
        }
        let (c_in, u_out) = self.up.interest();
        let (u_in, c_out) = self.down.interest();
        (c_in | c_out, u_in | u_out)
    }
}

struct Flow {
    sock: UdpSocket,
    last: Instant,
}

/// What each pollfd stands for.
#[derive(Clone, Copy)]
enum Slot {
    Stop,
    Listener(usize),
    Client(usize, usize),
    Upstream(usize, usize),
    Flow(usize, SocketAddr),
}

struct Loop {
    relays: Vec<Relay>,
    /// A listener whose accept ran out of fds rests until then, instead of spinning.
    paused: Vec<Option<Instant>>,
    limits: Limits,
    conns: Vec<Vec<Conn>>,
    flows: Vec<HashMap<SocketAddr, Flow>>,
    buf: Vec<u8>,
    live: Arc<Live>,
}

impl Loop {
    fn new(relays: Vec<Relay>, limits: Limits, live: Arc<Live>) -> Loop {
        let n = relays.len();
        // A datagram's largest payload; only a UDP relay needs it.
        let udp = relays
            .iter()
            .any(|r| matches!(r.listener, Listener::Udp(_)));
        Loop {
            relays,
            paused: vec![None; n],
            limits,
            conns: (0..n).map(|_| Vec::new()).collect(),
            flows: (0..n).map(|_| HashMap::new()).collect(),
            buf: if udp { vec![0; 65536] } else { Vec::new() },
            live,
        }
    }

    fn run(&mut self, stop: OwnedFd) {
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        loop {
            let now = Instant::now();
            self.expire(now);
            self.live
                .connections
                .store(self.conns.iter().map(Vec::len).sum(), Ordering::Relaxed);
            self.live
                .flows
                .store(self.flows.iter().map(HashMap::len).sum(), Ordering::Relaxed);
            pfds.clear();
            slots.clear();
            let mut add = |fd: RawFd, events: i16, slot: Slot| {
                if events != 0 {
                    pfds.push(libc::pollfd {
                        fd,
                        events,
                        revents: 0,
                    });
                    slots.push(slot);
                }
            };
            add(stop.as_raw_fd(), libc::POLLIN, Slot::Stop);
            for (i, r) in self.relays.iter().enumerate() {
                let full = self.conns[i].len() >= self.limits.max_connections;
                if !full && self.paused[i].is_none_or(|t| now >= t) {
                    add(r.listener.fd().as_raw_fd(), libc::POLLIN, Slot::Listener(i));
                }
                for (j, c) in self.conns[i].iter().enumerate() {
                    let (ci, ui) = c.interest();
                    add(c.client.as_raw_fd(), ci, Slot::Client(i, j));
                    add(c.upstream.as_raw_fd(), ui, Slot::Upstream(i, j));
                }
                for (addr, f) in &self.flows[i] {
                    add(f.sock.as_raw_fd(), libc::POLLIN, Slot::Flow(i, *addr));
                }
            }
            let timeout = self.timeout(now);
            // SAFETY: a live array of pollfds.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    // Not expected (the fds are ours and within RLIMIT_NOFILE): do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            for (pfd, slot) in pfds.iter().zip(&slots) {
                if pfd.revents == 0 {
                    continue;
                }
                match *slot {
                    Slot::Stop => return,
                    Slot::Listener(i) => self.on_listener(i, now),
                    Slot::Client(i, j) | Slot::Upstream(i, j) => self.conns[i][j].step(),
                    Slot::Flow(i, addr) => self.on_flow(i, addr, now),
                }
            }
            for conns in &mut self.conns {
                conns.retain(|c| {
                    if c.dead {
                        // A failed connect or a reset: the client sees a reset too, never an
                        // EOF it could take for the end of a complete answer.
                        c.reset();
                    }
                    !c.done()
                });
            }
        }
    }

    /// The poll timeout: the next flow expiry or paused listener, else none.
    fn timeout(&self, now: Instant) -> i32 {
        let flows = self
            .flows
            .iter()
            .flat_map(|f| f.values())
            .map(|f| f.last + self.limits.udp_idle);
        let paused = self.paused.iter().flatten().copied();
        match flows.chain(paused).min() {
            None => -1,
            Some(at) => at
                .saturating_duration_since(now)
                .as_millis()
                .saturating_add(1)
                .min(i32::MAX as u128) as i32,
        }
    }

    fn expire(&mut self, now: Instant) {
        let idle = self.limits.udp_idle;
        for flows in &mut self.flows {
            flows.retain(|_, f| now.duration_since(f.last) < idle);
        }
        for p in &mut self.paused {
            if p.is_some_and(|t| now >= t) {
                *p = None;
            }
        }
    }

    fn on_listener(&mut self, i: usize, now: Instant) {
        let to = self.relays[i].to;
        match &self.relays[i].listener {
            Listener::Tcp(l) => {
                for _ in 0..16 {
                    if self.conns[i].len() >= self.limits.max_connections {
                        return;
                    }
                    match l.accept() {
                        Ok((client, _)) => {
                            if let Ok(c) = open_conn(client, to) {
                                self.conns[i].push(c);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                            self.paused[i] = Some(now + Duration::from_millis(100));
                            return;
                        }
                        Err(_) => return,
                    }
                }
            }
            Listener::Udp(sock) => {
                for _ in 0..64 {
                    let (n, client) = match sock.recv_from(&mut self.buf) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(_) => continue,
                    };
                    let flows = &mut self.flows[i];
                    if !flows.contains_key(&client) {
                        if flows.len() >= self.limits.max_flows {
                            continue;
                        }
                        match open_flow(to) {
                            Ok(sock) => {
                                flows.insert(client, Flow { sock, last: now });
                            }
                            Err(_) => continue,
                        }
                    }
                    if let Some(f) = flows.get_mut(&client) {
                        f.last = now;
                        // A datagram the container's socket cannot take now is lost, as it
                        // would be on the wire.
                        let _ = f.sock.send(&self.buf[..n]);
                    }
                }
            }
        }
    }

    fn on_flow(&mut self, i: usize, client: SocketAddr, now: Instant) {
        let Listener::Udp(listener) = &self.relays[i].listener else {
            return;
        };
        let Some(f) = self.flows[i].get_mut(&client) else {
            return;
        };
        for _ in 0..64 {
            match f.sock.recv(&mut self.buf) {
                Ok(n) => {
                    f.last = now;
                    let _ = listener.send_to(&self.buf[..n], client);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ECONNREFUSED: an ICMP "port unreachable" from the container; the flow stays
                // for the client's next datagram.
                Err(_) => return,
            }
        }
    }
}

fn stream_socket(to: SocketAddr, ty: SocketType) -> io::Result<OwnedFd> {
    let family = if to.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    Ok(rustix::net::socket_with(
        family,
        ty,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

fn open_conn(client: TcpStream, to: SocketAddr) -> io::Result<Conn> {
    client.set_nonblocking(true)?;
    let fd = stream_socket(to, SocketType::STREAM)?;
    let connecting = match rustix::net::connect(&fd, &to) {
        Ok(()) => false,
        Err(rustix::io::Errno::INPROGRESS) => true,
        Err(e) => return Err(e.into()),
    };
    let upstream = TcpStream::from(fd);
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    Ok(Conn {
        client,
        upstream,
        connecting,
        up: Pump::new()?,
        down: Pump::new()?,
        dead: false,
    })
}

fn open_flow(to: SocketAddr) -> io::Result<UdpSocket> {
    let fd = stream_socket(to, SocketType::DGRAM)?;
    rustix::net::connect(&fd, &to)?;
    Ok(UdpSocket::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::sync::mpsc;

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Bytes that tell a lost, doubled or reordered chunk.
    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
            .collect()
    }

    fn start(protocol: Protocol, to: SocketAddr, limits: Limits) -> (Proxy, SocketAddr) {
        let relay = Relay::listen(0, protocol, to).unwrap();
        let at = relay.local_addr().unwrap();
        assert_eq!(at.ip(), Ipv6Addr::LOCALHOST);
        (Proxy::start(vec![relay], limits).unwrap(), at)
    }

    /// A TCP exchange through the relay in both directions, each half-closed first by one side
    /// while the other goes on writing, to a container address of each family.
    #[test]
    fn tcp_relays_both_ways_and_passes_half_closes_on() {
        for upstream_at in ["127.0.0.1:0", "[::1]:0"] {
            let server = std::net::TcpListener::bind(upstream_at).unwrap();
            let (proxy, at) = start(
                Protocol::Tcp,
                server.local_addr().unwrap(),
                Limits::default(),
            );
            let (got_tx, got_rx) = mpsc::channel();
            let serving = std::thread::spawn(move || {
                // 1: the client half-closes; the server reads to EOF, then answers.
                let (mut s, _) = server.accept().unwrap();
                let mut req = Vec::new();
                s.read_to_end(&mut req).unwrap();
                got_tx.send(req).unwrap();
                s.write_all(&payload(3 << 20, 2)).unwrap();
                drop(s);
                // 2: the server half-closes first; the client writes on after its EOF.
                let (mut s, _) = server.accept().unwrap();
                s.write_all(b"hello").unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                got_tx.send(rest).unwrap();
            });

            let mut c = TcpStream::connect(at).unwrap();
            c.write_all(&payload(1 << 20, 1)).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut answer = Vec::new();
            c.read_to_end(&mut answer).unwrap();
            assert!(
                got_rx.recv().unwrap() == payload(1 << 20, 1),
                "request relayed whole"
            );
            assert!(answer == payload(3 << 20, 2), "answer relayed whole");

            let mut c = TcpStream::connect(at).unwrap();
            let mut hello = Vec::new();
            c.read_to_end(&mut hello).unwrap();
            assert_eq!(hello, b"hello");
            c.write_all(&payload(2 << 20, 3)).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            assert!(
                got_rx.recv().unwrap() == payload(2 << 20, 3),
                "written after EOF"
            );
            serving.join().unwrap();
            // Both connections are closed at both ends: the relay let go of them.
            wait_for("connections released", || proxy.live().0 == 0);
            proxy.stop();
            // And of its listener.
            assert!(TcpStream::connect(at).is_err());
            // The relay closed first (its side is in TIME_WAIT): the container's next run
            // binds the port at once all the same.
            drop(Relay::listen(at.port(), Protocol::Tcp, at).unwrap());
        }
    }

    /// Many connections at once, some dropped by the client with a reset mid-way: every
    /// other exchange completes, and the relay lets go of all of them.
    #[test]
    fn concurrent_and_aborted_connections_are_all_released() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (proxy, at) = start(
            Protocol::Tcp,
            server.local_addr().unwrap(),
            Limits::default(),
        );
        // An echo server: each connection on a thread of its own, until its EOF or reset.
        std::thread::spawn(move || {
            for s in server.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        let clients: Vec<_> = (0..40u8)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = TcpStream::connect(at).unwrap();
                    let data = payload(256 * 1024, i);
                    if i % 4 == 0 {
                        // Written halfway, then a reset.
                        c.write_all(&data[..1000]).unwrap();
                        rustix::net::sockopt::set_socket_linger(&c, Some(Duration::ZERO)).unwrap();
                        return;
                    }
                    let mut r = c.try_clone().unwrap();
                    let reader = std::thread::spawn(move || {
                        let mut back = Vec::new();
                        r.read_to_end(&mut back).unwrap();
                        back
                    });
                    c.write_all(&data).unwrap();
                    c.shutdown(Shutdown::Write).unwrap();
                    assert!(reader.join().unwrap() == data, "echo {i} whole");
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        wait_for("every connection released", || proxy.live().0 == 0);
    }

    #[test]
    fn a_container_port_that_refuses_resets_the_client() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = closed.local_addr().unwrap();
        drop(closed);
        let (proxy, at) = start(Protocol::Tcp, to, Limits::default());
        let mut c = TcpStream::connect(at).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let e = c.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        wait_for("connection released", || proxy.live().0 == 0);
    }

    /// Two clients get a flow each (the container sees two source ports), each gets its own
    /// replies, and an idle flow is closed (the next datagram opens a new one).
    #[test]
    fn udp_has_a_flow_per_client_that_ends_when_idle() {
        let server = UdpSocket::bind("[::1]:0").unwrap();
        let limits = Limits {
            udp_idle: Duration::from_secs(1),
            ..Limits::default()
        };
        let (proxy, at) = start(Protocol::Udp, server.local_addr().unwrap(), limits);
        let (seen_tx, seen_rx) = mpsc::channel();
        let serving = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..3 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let mut reply = b"re:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                server.send_to(&reply, from).unwrap();
                seen_tx.send(from).unwrap();
            }
        });
        let ask = |c: &UdpSocket, what: &[u8]| {
            c.send_to(what, at).unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, at);
            buf[..n].to_vec()
        };
        let a = UdpSocket::bind("[::1]:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").unwrap();
        for c in [&a, &b] {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        assert_eq!(ask(&a, b"a"), b"re:a");
        assert_eq!(ask(&b, b"b"), b"re:b");
        let (fa, fb) = (seen_rx.recv().unwrap(), seen_rx.recv().unwrap());
        assert_ne!(fa, fb, "one flow per client");
        wait_for("two flows", || proxy.live().1 == 2);
        wait_for("idle flows closed", || proxy.live().1 == 0);
        assert_eq!(ask(&a, b"again"), b"re:again");
        assert_ne!(
            seen_rx.recv().unwrap(),
            fa,
            "a new flow after the idle one went"
        );
        serving.join().unwrap();
        proxy.stop();
    }
}
