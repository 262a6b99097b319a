"""Memory with many specs: an agent holding 10,000 spec files, its status polled."""

import json
import time

from lib import measure
from lib.measure import smaps_kb, wait_for
from scenarios.footprint import quiet

TITLE = "Memory with 10,000 specs"
DESCRIPTION = """
10,000 spec files renamed one by one into a running agent's spec dir (an image with
`pull = "never"`, `state = "stopped"`, an env table and a command: the agent reads, validates,
remembers and reports every one, but creates no container), until all 10,000 are on
`berth status`. Then, with the agent quiet, its resident memory (RSS from
/proc/<pid>/smaps_rollup) sampled between status requests (the whole list, 10,000 entries,
as a monitor polls it), its peak (VmHWM, over the whole run, loading included), and the wall
time of `berth status --json` (the CLI reading the streamed list). The agent's RSS with no
spec is the baseline. No peer: podman has no daemon that holds desired state, and docker is not
on this machine. Target (issue 19): agent RSS under 40 MB at 10,000 specs.

Where it goes, per spec of this kind, counted at the allocator on the agent's own path
(agent/tests/spec_memory.rs, requested bytes, before malloc's rounding): the spec itself
~405 B (one copy, shared by the source's cache, the last valid specs and the desired set:
a 232-byte struct whose rarely-set keys sit in one box allocated only when one is set, env
in one string with its ends, the image reference, the command), the bookkeeping around it
~440 B (the cache entry with the file's path and stamp, names, 32-byte hashes, map nodes),
its status entry ~470 B (a 336-byte struct, its name, image and desired state). With every
key inline (864 B) and env in a BTreeMap (a 544 B node), at `303d709`, the spec alone was
about 1.6 KiB by its types' sizes (not measured here); that and the hash and parse-position
boxes took the agent from 49.8 and 50.4 MB (two runs at
`303d709`, load 5-7 from parallel builds) to 35.1 and 36.3 MB (two runs at `42977d7`). The
rest: the agent with no spec (~12-13 MB, mostly its binary's pages and the runtime's
threads) and malloc's free space left between what it keeps.
"""

SPEC = ('image = "registry.invalid/berth-bench-absent:{i}"\npull = "never"\nstate = "stopped"\n'
        'command = ["/bin/app", "--id", "{i}"]\n[env]\nAPP_ID = "{i}"\nREGION = "eu"\n')


def status_kb(pid):
    """{"VmHWM": kB, "VmRSS": kB, ...} from /proc/<pid>/status."""
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def run(ctx, quick):
    n, polls = (1000, 5) if quick else (10_000, 20)
    agent = ctx.agent("sp").start()
    quiet(agent)
    pid = agent.pid
    idle = [smaps_kb(pid)["Rss"] / 1024 for _ in range(3)]

    started = time.monotonic()
    for i in range(n):
        agent.write_spec(f"s{i:05d}", SPEC.format(i=i))

    def all_listed():
        st = agent.statuses()
        return len(st) == n and all(s["image"].endswith(f":{int(s['name'][1:])}") for s in st)

    wait_for(f"{n} specs on the status of {agent.instance}", all_listed, 600, 0.5)
    loaded = time.monotonic() - started
    quiet(agent)

    rss = []
    for _ in range(polls):
        body = agent.get("/v1/containers")
        if len(json.loads(body)) != n:
            raise RuntimeError("a status list lost entries")
        rss.append(smaps_kb(pid)["Rss"] / 1024)
        time.sleep(0.5)
    cli = []
    for _ in range(5):
        t = time.monotonic()
        out = agent.cli("status", "--json")
        cli.append(time.monotonic() - t)
        if out.returncode != 0 or len(json.loads(out.stdout)) != n:
            raise RuntimeError(f"berth status --json failed: {out.stderr[-500:]}")
        rss.append(smaps_kb(pid)["Rss"] / 1024)
    peak = status_kb(pid)["VmHWM"] / 1024
    cpu = measure.cpu_seconds(pid)

    for i in range(n):
        agent.remove_spec(f"s{i:05d}")
    wait_for(f"every status of {agent.instance} gone", lambda: not agent.statuses(), 600, 0.5)

    note = (f"{n} specs on status {loaded:.1f} s after the first was written; the agent used "
            f"{cpu:.1f} s of CPU up to then")
    return [
        {"name": f"agent RSS, {n} specs, status polled", "unit": "MB", "berth": rss, "peer": None,
         "peer_name": None, "headline": True, "target": {"text": "< 40 MB", "max": 40.0}, "note": note},
        {"name": f"agent peak RSS (VmHWM), loading and polling {n} specs", "unit": "MB", "berth": [peak],
         "peer": None, "peer_name": None},
        {"name": "agent RSS, no spec (baseline)", "unit": "MB", "berth": idle, "peer": None, "peer_name": None},
        {"name": f"berth status --json, {n} entries (wall)", "unit": "s", "berth": cli, "peer": None,
         "peer_name": None},
    ]
