//! Container logs in CRI format (`<RFC3339Nano> <stdout|stderr> <P|F> <message>`), one file
//! `container.log` with up to `max_files` rotated siblings `container.log.1` (newest) to `.N`.
//!
//! The writer runs in the shim; the reader serves `berth logs` straight from the files.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_spec::model::Logging;

use super::timefmt;

/// Lines longer than this are split into partial (`P`) records, as containerd does.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    limits: Logging,
}

impl LogWriter {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, limits: Logging) -> io::Result<Self> {
        let file = crate::fsutil::open_private_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            limits,
        })
    }

    /// Writes one record, rotating first when it would take the file past `max_size`.
    pub fn record(
        &mut self,
        stream: Stream,
        partial: bool,
        msg: &[u8],
        at: SystemTime,
    ) -> io::Result<()> {
        let mut line = Vec::with_capacity(msg.len() + 48);
        line.extend_from_slice(timefmt::format(at).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(msg);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let n = self.limits.max_files;
        if n > 0 {
            let _ = std::fs::remove_file(rotated(&self.path, n));
            for i in (1..n).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = crate::fsutil::open_private_append(&self.path)?;
        } else {
            self.file.set_len(0)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Splits one stream's byte chunks into records.
pub struct LineSplitter {
    pub stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut data: &[u8], w: &mut LogWriter, at: SystemTime) -> io::Result<()> {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&data[..nl]);
            self.flush_full(w, at)?;
            data = &data[nl + 1..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            w.record(self.stream, true, &self.pending, at)?;
            self.pending = rest;
        }
        Ok(())
    }

    fn flush_full(&mut self, w: &mut LogWriter, at: SystemTime) -> io::Result<()> {
        let line = std::mem::take(&mut self.pending);
        w.record(self.stream, false, &line, at)
    }

    /// At EOF: a last line without newline is written as a full record.
    pub fn finish(&mut self, w: &mut LogWriter, at: SystemTime) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.flush_full(w, at)?;
        }
        Ok(())
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: SystemTime,
    pub timestamp: String,
    pub stream: Stream,
    pub partial: bool,
    pub message: Vec<u8>,
}

pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let message = parts.next().unwrap_or_default().to_vec();
    Some(Record {
        time: timefmt::parse(ts)?,
        timestamp: ts.to_string(),
        stream,
        partial,
        message,
    })
}

/// The log files of a container, oldest first.
pub fn files_oldest_first(path: &Path, max_files: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..=max_files.max(64))
        .rev()
        .map(|n| rotated(path, n))
        .filter(|p| p.exists())
        .collect();
    if path.exists() {
        v.push(path.to_path_buf());
    }
    v
}

/// Joins partial records into whole lines: (first record's time, stream, line).
pub fn join_partials(records: impl IntoIterator<Item = Record>) -> Vec<Record> {
    let mut j = Joiner::default();
    records.into_iter().filter_map(|r| j.push(r)).collect()
}

/// Joins partial records into whole lines as they come, one open line per stream: a reader
/// that sees the records in several batches (`berth logs -f`) keeps a long stdout line whole
/// while stderr lines arrive between its parts.
#[derive(Debug, Default)]
pub struct Joiner {
    open: [Option<Record>; 2],
}

impl Joiner {
    /// Takes the next record; returns a line when this record completes one.
    pub fn push(&mut self, r: Record) -> Option<Record> {
        let slot = &mut self.open[r.stream as usize];
        match slot.take() {
            Some(mut acc) => {
                acc.message.extend_from_slice(&r.message);
                if r.partial {
                    *slot = Some(acc);
                    None
                } else {
                    acc.partial = false;
                    Some(acc)
                }
            }
            None if r.partial => {
                *slot = Some(r);
                None
            }
            None => Some(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(n: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n)
    }

    fn read_all(path: &Path) -> Vec<Record> {
        files_oldest_first(path, 8)
            .iter()
            .flat_map(|p| {
                std::fs::read(p)
                    .unwrap()
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| parse_record(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn lines_partials_and_format() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(&p, Logging::default()).unwrap();
        let mut out = LineSplitter::new(Stream::Stdout);
        let mut err = LineSplitter::new(Stream::Stderr);
        out.feed(b"hello\nwor", &mut w, t(1)).unwrap();
        err.feed(b"oops\n", &mut w, t(2)).unwrap();
        out.feed(b"ld\nlast", &mut w, t(3)).unwrap();
        let big = vec![b'x'; MAX_LINE + 10];
        err.feed(&big, &mut w, t(4)).unwrap();
        err.feed(b"\n", &mut w, t(5)).unwrap();
        out.finish(&mut w, t(6)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(first, format!("{} stdout F hello", timefmt::format(t(1))));
        let recs = read_all(&p);
        assert_eq!(recs.len(), 6);
        assert!(recs[3].partial && recs[3].message.len() == MAX_LINE);
        let joined = join_partials(recs);
        let msgs: Vec<_> = joined.iter().map(|r| (r.stream, r.message.len())).collect();
        assert_eq!(
            msgs,
            [
                (Stream::Stdout, 5),
                (Stream::Stderr, 4),
                (Stream::Stdout, 5),
                (Stream::Stderr, MAX_LINE + 10),
                (Stream::Stdout, 4)
            ]
        );
    }

    #[test]
    fn rotates_at_the_cap_and_keeps_max_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let limits = Logging {
            max_size: 1000,
            max_files: 2,
        };
        let mut w = LogWriter::open(&p, limits).unwrap();
        let mut s = LineSplitter::new(Stream::Stdout);
        for i in 0..100 {
            s.feed(
                format!("line {i:04} padding padding\n").as_bytes(),
                &mut w,
                t(i),
            )
            .unwrap();
        }
        for f in files_oldest_first(&p, 8) {
            assert!(
                std::fs::metadata(&f).unwrap().len() <= 1000,
                "{}",
                f.display()
            );
        }
        assert!(rotated(&p, 2).exists() && !rotated(&p, 3).exists());
        let recs = read_all(&p);
        // The newest lines survive, in order, with none missing at the end.
        assert_eq!(recs.last().unwrap().message, b"line 0099 padding padding");
        let nums: Vec<u32> = recs
            .iter()
            .map(|r| {
                std::str::from_utf8(&r.message[5..9])
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(nums[0] > 0, "old lines were dropped");
    }
}
