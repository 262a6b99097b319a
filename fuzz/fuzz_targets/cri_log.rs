//! Any bytes as a container's CRI log files (`container.log.1` and `container.log`, split at a
//! NUL byte): `berth logs` reading them never panics; `--tail` and `--since` hold; every record
//! parsed prints back to the line it came from; and following the file while it is written in
//! pieces yields the same lines as reading it whole.
#![no_main]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use berth_agent::runtime::logread::{Follower, Query, read};
use berth_agent::runtime::logs::{join_partials, parse_record, rotated};
use berth_agent::runtime::timefmt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (tail, since, chunk, data) = (data[0], data[1], data[2], &data[3..]);
    let (older, current) = match data.iter().position(|b| *b == 0) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    let dir = tempfile::Builder::new()
        .prefix("berth-fuzz-log-")
        .tempdir_in(scratch())
        .unwrap();
    let log = dir.path().join("container.log");
    if let Some(o) = older {
        std::fs::write(rotated(&log, 1), o).unwrap();
    }
    std::fs::write(&log, current).unwrap();

    for line in data.split(|b| *b == b'\n' || *b == 0) {
        check_roundtrip(line);
    }

    let q = Query {
        tail: (tail & 0x80 != 0).then_some((tail & 0x7f) as usize),
        since: (since & 0x80 != 0).then(|| {
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 + (since as u64 & 0x7f) * 3600)
        }),
    };
    let lines = read(&log, &q).unwrap();
    if let Some(n) = q.tail {
        assert!(lines.len() <= n);
    }
    if let Some(s) = q.since {
        assert!(lines.iter().all(|r| r.time >= s));
    }
    assert!(lines.iter().all(|r| !r.partial));

    // Following: the current file written in pieces, polled after each, gives what reading
    // the finished file gives.
    let follow = dir.path().join("follow.log");
    std::fs::write(&follow, b"").unwrap();
    let mut f = Follower::at_end(&follow);
    let mut got = Vec::new();
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(&follow)
        .unwrap();
    // At most 64 polls per input, or big inputs crawl.
    let step = (chunk as usize).max(current.len().div_ceil(64)).max(1);
    for piece in current.chunks(step) {
        out.write_all(piece).unwrap();
        got.extend(f.poll().unwrap());
    }
    let whole = read(&follow, &Query::default()).unwrap();
    assert_eq!(
        got, whole,
        "following in pieces of {step} differs from reading whole"
    );
});

/// A record that parses prints back to its line; a timestamp that parses formats and parses
/// back to the same instant.
fn check_roundtrip(line: &[u8]) {
    let Some(rec) = parse_record(line) else {
        return;
    };
    let mut printed = format!(
        "{} {} {} ",
        rec.timestamp,
        rec.stream.as_str(),
        if rec.partial { "P" } else { "F" }
    )
    .into_bytes();
    printed.extend_from_slice(&rec.message);
    assert!(
        printed == line || printed[..printed.len() - 1] == *line,
        "{:?} printed back as {:?}",
        String::from_utf8_lossy(line),
        String::from_utf8_lossy(&printed)
    );
    // Four-digit years only: an offset can push 9999-12-31 into a year the format cannot hold.
    let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    if rec.time < year_10000 {
        assert_eq!(timefmt::parse(&timefmt::format(rec.time)), Some(rec.time));
    }
    let joined = join_partials([rec.clone()]);
    assert_eq!(joined.len(), usize::from(!rec.partial));
}

/// Files go to memory when it can: the target writes a few per input.
fn scratch() -> &'static Path {
    if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        Path::new("/tmp")
    }
}
