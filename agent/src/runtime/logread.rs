//! Reading a container's CRI logs back for `berth logs`: whole lines across rotated files,
//! `--tail`, `--since`, and `--follow` that survives rotation and ends when the container does.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::logs::{Joiner, Record, files_oldest_first, join_partials, parse_record};

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub tail: Option<usize>,
    pub since: Option<SystemTime>,
}

fn read_records(path: &Path, from: u64) -> io::Result<(Vec<Record>, u64)> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut pos = from;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            // A line still being written: leave it for the next read.
            break;
        }
        pos += n as u64;
        if let Some(rec) = parse_record(&line[..n - 1]) {
            out.push(rec);
        }
    }
    Ok((out, pos))
}

/// Lines already in the log files, filtered by `q`.
pub fn read(log: &Path, q: &Query) -> io::Result<Vec<Record>> {
    let mut recs = Vec::new();
    for f in files_oldest_first(log, 64) {
        match read_records(&f, 0) {
            Ok((r, _)) => recs.extend(r),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut lines = join_partials(recs);
    if let Some(since) = q.since {
        lines.retain(|r| r.time >= since);
    }
    if let Some(n) = q.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    Ok(lines)
}

/// Follows `log` from its current end, calling `emit` for each new whole line, until `done()`
/// says the writer has finished and everything written has been read.
pub struct Follower {
    path: PathBuf,
    pos: u64,
    ino: u64,
    joiner: Joiner,
}

impl Follower {
    /// Starts at the end of the current file.
    pub fn at_end(path: &Path) -> Follower {
        let meta = std::fs::metadata(path).ok();
        Follower {
            path: path.to_path_buf(),
            pos: meta.as_ref().map_or(0, |m| m.len()),
            ino: meta.map_or(0, |m| m.ino()),
            joiner: Joiner::default(),
        }
    }

    /// Reads whatever was appended (following one rotation); returns whole lines.
    pub fn poll(&mut self) -> io::Result<Vec<Record>> {
        let mut recs = Vec::new();
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(m) = &meta
            && (m.ino() != self.ino || m.len() < self.pos)
        {
            // Rotated: finish the old file (now `.1`), then start the new one from 0.
            let old = super::logs::rotated(&self.path, 1);
            if self.ino != 0
                && std::fs::metadata(&old).is_ok_and(|o| o.ino() == self.ino)
                && let Ok((r, _)) = read_records(&old, self.pos)
            {
                recs.extend(r);
            }
            self.pos = 0;
            self.ino = m.ino();
        }
        if meta.is_some() {
            let (r, pos) = read_records(&self.path, self.pos)?;
            recs.extend(r);
            self.pos = pos;
        }
        // A line still open on one stream waits for its final record, whatever the other
        // stream writes meanwhile.
        Ok(recs
            .into_iter()
            .filter_map(|r| self.joiner.push(r))
            .collect())
    }

    /// Polls until `done()` holds after a read that found nothing new.
    pub fn run(
        &mut self,
        mut emit: impl FnMut(&Record) -> io::Result<()>,
        mut done: impl FnMut() -> bool,
        interval: Duration,
    ) -> io::Result<()> {
        loop {
            let finished = done();
            let recs = self.poll()?;
            for r in &recs {
                emit(r)?;
            }
            if finished && recs.is_empty() {
                return Ok(());
            }
            if recs.is_empty() {
                std::thread::sleep(interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::logs::{LineSplitter, LogWriter, Stream};
    use berth_spec::model::Logging;
    use std::time::UNIX_EPOCH;

    fn t(n: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n)
    }

    #[test]
    fn tail_since_and_follow_across_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(
            &p,
            Logging {
                max_size: 300,
                max_files: 3,
            },
        )
        .unwrap();
        let mut s = LineSplitter::new(Stream::Stdout);
        for i in 0..10 {
            s.feed(format!("msg {i}\n").as_bytes(), &mut w, t(i))
                .unwrap();
        }
        let all = read(&p, &Query::default()).unwrap();
        assert_eq!(all.len(), 10);
        let tail = read(
            &p,
            &Query {
                tail: Some(3),
                since: None,
            },
        )
        .unwrap();
        assert_eq!(tail[0].message, b"msg 7");
        let since = read(
            &p,
            &Query {
                tail: None,
                since: Some(t(8)),
            },
        )
        .unwrap();
        assert_eq!(since.len(), 2);

        let mut f = Follower::at_end(&p);
        assert!(f.poll().unwrap().is_empty());
        for i in 10..30 {
            s.feed(format!("msg {i}\n").as_bytes(), &mut w, t(i))
                .unwrap();
            if i % 7 == 0 {
                let got = f.poll().unwrap();
                assert!(!got.is_empty());
            }
        }
        let mut seen = Vec::new();
        let mut f2 = Follower::at_end(&p);
        s.feed(b"part", &mut w, t(40)).unwrap();
        assert!(
            f2.poll().unwrap().is_empty(),
            "no newline yet: nothing to show"
        );
        s.feed(b"ial\n", &mut w, t(41)).unwrap();
        f2.run(
            |r| {
                seen.push(String::from_utf8_lossy(&r.message).into_owned());
                Ok(())
            },
            || true,
            Duration::from_millis(1),
        )
        .unwrap();
        assert_eq!(seen, ["partial"]);
    }

    #[test]
    fn follow_keeps_a_long_line_whole_across_polls_with_the_other_stream_between() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        std::fs::write(&p, "").unwrap();
        let mut f = Follower::at_end(&p);
        let ts = crate::runtime::timefmt::format(t(1));
        let mut file = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        write!(file, "{ts} stdout P long-\n{ts} stderr F other\n").unwrap();
        let first: Vec<Vec<u8>> = f.poll().unwrap().into_iter().map(|r| r.message).collect();
        assert_eq!(first, [b"other".to_vec()]);
        writeln!(file, "{ts} stdout F line").unwrap();
        let second: Vec<Vec<u8>> = f.poll().unwrap().into_iter().map(|r| r.message).collect();
        assert_eq!(second, [b"long-line".to_vec()]);
    }
}
