//! A fault proxy: a real HTTP/1.1 proxy on 127.0.0.1 (plain, or TLS with a certificate the
//! test chooses) in front of a test registry that, per rule, drops the connection partway
//! through a body, stalls, trickles, never ends, answers with an error status, a redirect or an
//! auth challenge, or serves altered bytes, and counts what it served. One request per
//! connection (`Connection: close`), which every client handles. [`Blackhole`] is a server that
//! accepts connections and never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward untouched (spends the rule: a later rule then hits a later request).
    Pass,
    /// Send this many body bytes, then close the connection.
    DropAfter(u64),
    /// Send this many body bytes, then go silent for the duration, then close.
    StallAfter(u64, Duration),
    /// Answer with this status and no body, without asking the registry.
    Status(u16),
    /// Flip the bits of the body byte at this offset (the length stays right).
    Corrupt(u64),
    /// Serve these bytes as the body instead.
    Replace(Vec<u8>),
    /// Serve only the first bytes of the body, with a Content-Length that says so: a short
    /// answer that looks complete.
    Truncate(u64),
    /// The real body, then zeros without end, with no Content-Length.
    Endless,
    /// The body one byte per interval (a slow-loris server).
    Trickle(Duration),
    /// The response head one byte per interval: the headers never finish in useful time.
    TrickleHead(Duration),
    /// A made-up body of `len` bytes (a JSON start padded with spaces), streamed without
    /// holding it; with a Content-Length only when `announce`.
    Huge { len: u64, announce: bool },
    /// `307` to this location, without asking the registry.
    Redirect(String),
    /// `401` with this `WWW-Authenticate` value, without asking the registry.
    Challenge(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Applies to requests whose path contains this.
    pub path_contains: String,
    pub fault: Fault,
    /// How many matching requests it affects (then it is spent).
    pub times: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// (path, Range header, body bytes sent)
    pub requests: Vec<(String, Option<String>, u64)>,
    /// When each request (same index) arrived, and when its last body byte went out.
    pub times: Vec<(Instant, Option<Instant>)>,
}

impl Stats {
    /// Body bytes sent for requests whose path contains `s`.
    pub fn bytes_for(&self, s: &str) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.0.contains(s))
            .map(|r| r.2)
            .sum()
    }
    pub fn count_for(&self, s: &str) -> usize {
        self.requests.iter().filter(|r| r.0.contains(s)).count()
    }
    /// When the first request whose path contains `s` arrived.
    pub fn first_request_for(&self, s: &str) -> Option<Instant> {
        self.requests
            .iter()
            .zip(&self.times)
            .filter(|(r, _)| r.0.contains(s))
            .map(|(_, t)| t.0)
            .min()
    }
    pub fn ranges_for(&self, s: &str) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.0.contains(s))
            .filter_map(|r| r.1.clone())
            .collect()
    }
}

/// What every connection thread shares.
struct Shared {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    stats: Mutex<Stats>,
    stop: AtomicBool,
    /// While set, every connection is closed at once, unanswered: the registry is gone.
    down: AtomicBool,
}

pub struct FaultProxy {
    pub addr: String,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

/// A client connection, plain or TLS.
trait Conn: Read + Write + Send {
    fn close(&mut self);
}

impl Conn for TcpStream {
    fn close(&mut self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, None)
    }

    /// A proxy that speaks TLS to its clients with this certificate chain and key (PEM files),
    /// and plain HTTP to `upstream`.
    pub fn start_tls(upstream: &str, cert_pem: &Path, key_pem: &Path) -> FaultProxy {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(key_pem).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::start_with(upstream, Some(Arc::new(config)))
    }

    fn start_with(upstream: &str, tls: Option<Arc<rustls::ServerConfig>>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            rules: Mutex::default(),
            stats: Mutex::default(),
            stop: AtomicBool::new(false),
            down: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            while !sh.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if sh.down.load(Ordering::Relaxed) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let (sh, tls) = (sh.clone(), tls.clone());
                        thread::spawn(move || {
                            let conn: Box<dyn Conn> = match tls {
                                Some(cfg) => match rustls::ServerConnection::new(cfg) {
                                    Ok(c) => Box::new(rustls::StreamOwned::new(c, client)),
                                    Err(_) => return,
                                },
                                None => Box::new(client),
                            };
                            let _ = serve(conn, &sh);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn add(&self, path_contains: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule {
            path_contains: path_contains.into(),
            fault,
            times,
        });
    }

    /// Forgets every rule (spent or not).
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Takes the registry away (every new connection closed unanswered) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn take_rule(rules: &Mutex<Vec<Rule>>, path: &str) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    let i = rules
        .iter()
        .position(|r| r.times > 0 && path.contains(&r.path_contains))?;
    rules[i].times -= 1;
    Some(rules[i].fault.clone())
}

fn serve(conn: Box<dyn Conn>, sh: &Shared) -> std::io::Result<()> {
    let mut client = BufReader::new(conn);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if client.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let path = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
    let range = head
        .iter()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .map(|l| l[6..].trim().to_string());
    let fault = take_rule(&sh.rules, &path);
    // Recorded before any byte of the answer goes out, so a client that has its answer always
    // finds its request counted.
    let slot = {
        let mut st = sh.stats.lock().unwrap();
        st.requests.push((path.clone(), range, 0));
        st.times.push((Instant::now(), None));
        st.requests.len() - 1
    };
    let count = |n: u64| {
        let mut st = sh.stats.lock().unwrap();
        st.requests[slot].2 += n;
        st.times[slot].1 = Some(Instant::now());
    };
    let stopped = || sh.stop.load(Ordering::Relaxed);
    let result = answer(&mut client, sh, &head, fault, &count, &stopped);
    client.get_mut().close();
    result
}

/// Writes the answer to one request: made up here for some faults, else the registry's,
/// altered as the fault says.
fn answer(
    client: &mut BufReader<Box<dyn Conn>>,
    sh: &Shared,
    head: &[String],
    fault: Option<Fault>,
    count: &dyn Fn(u64),
    stopped: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    match &fault {
        Some(Fault::Status(code)) => {
            return write!(
                client.get_mut(),
                "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(Fault::Redirect(to)) => {
            return write!(
                client.get_mut(),
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(Fault::Challenge(c)) => {
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            return write!(
                client.get_mut(),
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {c}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Some(Fault::Huge { len, announce }) => {
            let out = client.get_mut();
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n"
            )?;
            if *announce {
                write!(out, "Content-Length: {len}\r\n")?;
            }
            write!(out, "Connection: close\r\n\r\n")?;
            let start = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":["#;
            out.write_all(start)?;
            count(start.len() as u64);
            let pad = vec![b' '; 64 << 10];
            let mut sent = start.len() as u64;
            while sent < *len && !stopped() {
                let n = (*len - sent).min(pad.len() as u64) as usize;
                out.write_all(&pad[..n])?;
                count(n as u64);
                sent += n as u64;
            }
            return Ok(());
        }
        _ => {}
    }
    let mut up = TcpStream::connect(&sh.upstream)?;
    for l in head {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") || l == "\r\n" {
            continue;
        }
        up.write_all(l.as_bytes())?;
    }
    up.write_all(b"Connection: close\r\n\r\n")?;
    // Request bodies (uploads) are passed through as they come.
    let content_length: u64 = head
        .iter()
        .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        .and_then(|l| l[15..].trim().parse().ok())
        .unwrap_or(0);
    if content_length > 0 {
        std::io::copy(&mut client.take(content_length), &mut up)?;
    }
    let mut upr = BufReader::new(up);
    let mut resp_head = Vec::new();
    loop {
        let mut line = String::new();
        if upr.read_line(&mut line)? == 0 {
            break;
        }
        let end = line == "\r\n";
        resp_head.push(line);
        if end {
            break;
        }
    }
    let mut body = Vec::new();
    upr.read_to_end(&mut body)?;
    match &fault {
        Some(Fault::Replace(b)) => body = b.clone(),
        Some(Fault::Corrupt(at)) => {
            if let Some(x) = body.get_mut(*at as usize) {
                *x ^= 0xff;
            }
        }
        Some(Fault::Truncate(n)) => body.truncate(*n as usize),
        _ => {}
    }
    let endless = matches!(fault, Some(Fault::Endless));
    let mut head_out = Vec::new();
    for l in &resp_head {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") || l == "\r\n" {
            continue;
        }
        if lower.starts_with("content-length:") {
            if !endless {
                head_out
                    .extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            continue;
        }
        head_out.extend_from_slice(l.as_bytes());
    }
    head_out.extend_from_slice(b"Connection: close\r\n\r\n");
    let out = client.get_mut();
    if let Some(Fault::TrickleHead(every)) = fault {
        for b in &head_out {
            if stopped() {
                return Ok(());
            }
            out.write_all(std::slice::from_ref(b))?;
            out.flush()?;
            thread::sleep(every);
        }
    } else {
        out.write_all(&head_out)?;
    }
    let limit = match &fault {
        Some(Fault::DropAfter(n)) | Some(Fault::StallAfter(n, _)) => (*n as usize).min(body.len()),
        _ => body.len(),
    };
    let chunk = match fault {
        Some(Fault::Trickle(_)) => 1,
        _ => 16 << 10,
    };
    for c in body[..limit].chunks(chunk) {
        if stopped() {
            return Ok(());
        }
        // Counted before it is written, for the same reason.
        count(c.len() as u64);
        if out.write_all(c).and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        if let Some(Fault::Trickle(every)) = fault {
            thread::sleep(every);
        }
    }
    if endless {
        let zeros = vec![0u8; 16 << 10];
        while !stopped() {
            count(zeros.len() as u64);
            if out.write_all(&zeros).is_err() {
                break;
            }
        }
    }
    if let Some(Fault::StallAfter(_, d)) = fault {
        out.flush()?;
        thread::sleep(d);
    }
    Ok(())
}

/// A server that accepts connections and never answers (a token endpoint that hangs). Holds
/// them until dropped.
pub struct Blackhole {
    pub addr: String,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let accept = thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Blackhole {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}
