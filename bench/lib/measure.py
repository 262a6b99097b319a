"""Measuring: when a payload first runs (a FIFO marker), memory and CPU from /proc, statistics.

"Payload running" is the moment the payload's first instructions run, not when a tool exits:
the bench image carries `/bin/marker` (bench/marker.c), a static program that writes its tag
to a FIFO on a bind mount, then execs the real payload. The bench holds the FIFO open for
reading (and writing, so it never sees end-of-file) and notes when each tag arrives.
"""

import errno
import math
import os
import select
import statistics
import time
from pathlib import Path


class Marker:
    """A FIFO in `dir` (bind-mount `dir` at /m in the container; the payload writes
    `/m/fifo`); `wait` returns when given tags have arrived."""

    def __init__(self, dir):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "fifo"
        if not self.path.exists():
            os.mkfifo(self.path, 0o666)
        # O_RDWR: we are a writer too, so readers never see EOF between container writes.
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)
        self.buf = b""
        self.seen = {}

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _drain(self):
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    break
                raise
            if not chunk:
                break
            self.buf += chunk
        now = time.perf_counter()
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            tag = line.decode(errors="replace")
            self.seen.setdefault(tag, now)

    def wait(self, tags, timeout):
        """Waits until every tag in `tags` has arrived; returns the perf_counter time the last
        one was read. Raises TimeoutError naming the missing tags."""
        want = set(tags)
        deadline = time.perf_counter() + timeout
        while True:
            self._drain()
            missing = want - self.seen.keys()
            if not missing:
                return max(self.seen[t] for t in want)
            left = deadline - time.perf_counter()
            if left <= 0:
                some = ", ".join(sorted(missing)[:5])
                raise TimeoutError(f"{len(missing)} of {len(want)} payloads never ran within {timeout:.0f} s ({some})")
            self.poller.poll(max(1, int(min(left, 1.0) * 1000)))

    def forget(self, tags):
        for t in tags:
            self.seen.pop(t, None)


def smaps_kb(pid):
    """{"Rss": kB, "Pss": kB, ...} of a process from /proc/<pid>/smaps_rollup."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            out[parts[0][:-1]] = int(parts[1])
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads) so far, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def percentile(samples, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(samples)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


def summary(samples):
    if not samples:
        return None
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "p99": percentile(samples, 99),
        "mean": statistics.fmean(samples),
        "n": len(samples),
    }


def wait_for(what, cond, timeout, interval=0.01):
    """Polls cond() until it returns something truthy (returned); TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
