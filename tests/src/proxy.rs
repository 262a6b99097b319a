//! A fault proxy: a real HTTP/1.1 proxy on 127.0.0.1 in front of a test registry that, per
//! rule, drops the connection partway through a body, stalls, answers with an error status, or
//! serves altered bytes, and counts what it served. One request per connection
//! (`Connection: close`), which every client handles.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
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
    pub fn ranges_for(&self, s: &str) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.0.contains(s))
            .filter_map(|r| r.1.clone())
            .collect()
    }
}

pub struct FaultProxy {
    pub addr: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let stats: Arc<Mutex<Stats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st, up) = (
            rules.clone(),
            stats.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        let accept = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (r, s, up) = (r.clone(), s.clone(), up.clone());
                        thread::spawn(move || {
                            let _ = serve(client, &up, &r, &s);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr,
            rules,
            stats,
            stop,
            accept: Some(accept),
        }
    }

    pub fn add(&self, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            path_contains: path_contains.into(),
            fault,
            times,
        });
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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

fn serve(
    mut client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    stats: &Mutex<Stats>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
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
    let fault = take_rule(rules, &path);
    // Recorded before any byte of the answer goes out, so a client that has its answer always
    // finds its request counted.
    let slot = {
        let mut st = stats.lock().unwrap();
        st.requests.push((path.clone(), range, 0));
        st.requests.len() - 1
    };
    if let Some(Fault::Status(code)) = fault {
        write!(
            client,
            "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    for l in &head {
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
        std::io::copy(&mut (&mut reader).take(content_length), &mut up)?;
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
    if let Some(Fault::Replace(b)) = &fault {
        body = b.clone();
    }
    if let Some(Fault::Corrupt(at)) = fault
        && let Some(x) = body.get_mut(at as usize)
    {
        *x ^= 0xff;
    }
    for l in &resp_head {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") || l == "\r\n" {
            continue;
        }
        if lower.starts_with("content-length:") {
            write!(client, "Content-Length: {}\r\n", body.len())?;
            continue;
        }
        client.write_all(l.as_bytes())?;
    }
    client.write_all(b"Connection: close\r\n\r\n")?;
    let limit = match &fault {
        Some(Fault::DropAfter(n)) | Some(Fault::StallAfter(n, _)) => (*n as usize).min(body.len()),
        _ => body.len(),
    };
    for chunk in body[..limit].chunks(16 << 10) {
        // Counted before it is written, for the same reason.
        stats.lock().unwrap().requests[slot].2 += chunk.len() as u64;
        if client.write_all(chunk).is_err() {
            stats.lock().unwrap().requests[slot].2 -= chunk.len() as u64;
            break;
        }
    }
    if let Some(Fault::StallAfter(_, d)) = fault {
        client.flush()?;
        thread::sleep(d);
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
