"""Processes: reaping orphans we inherit as subreaper, finding processes by executable."""

import ctypes
import os
import weakref
from pathlib import Path

# Long-lived children the bench waits on itself (agents, registries): never reaped here.
_owned = weakref.WeakSet()


def own(popen):
    _owned.add(popen)
    return popen

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """conmon, runc's container processes and berth's shims outlive the command that started
    them; as subreaper the bench inherits them (instead of an init that may not reap) and
    reaps them, so a run leaves no zombies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children(ppid=None):
    """(pid, state) of the direct children of `ppid` (default: us)."""
    ppid = ppid or os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == ppid:
            out.append((int(d.name), fields[0]))
    return out


def reap_orphans():
    """Reaps zombie children except those a Popen of ours still owns (see `own`).

    Call only while no other thread waits on a child: a zombie is reaped by pid, after
    checking it is one, so nothing a live subprocess call owns is taken from it."""
    keep = {p.pid for p in _owned}
    for pid, state in children():
        if state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def pids_by_exe(name, needle=None):
    """Pids whose executable is called `name` (and whose command line mentions `needle`)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and exe_name(d.name) in (name, f"{name} (deleted)"):
            if needle is None or any(needle.encode() in a for a in cmdline(d.name)):
                out.append(int(d.name))
    return out


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
