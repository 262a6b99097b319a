"""Footprint: the idle agent with 100 containers, and the per-container supervisor."""

import time

from lib import measure, workload
from lib.measure import smaps_kb

TITLE = "Footprint: idle agent with 100 containers, shim vs conmon"
DESCRIPTION = """
A `berth agent` (default 30 s resync) with 100 running containers (bridge network, a sleeping
payload), once it has gone quiet (no reconcile pass for 2 s): its resident memory (RSS, and
PSS, which shares out pages used by several processes) sampled every second and its CPU time
(user + system, all threads, from /proc/<pid>/stat) over a 60 s window, as a share of one core.
Per container: the resident memory of berth's shim against podman's conmon, each supervising
the same sleeping payload (every berth shim of the 100; conmon of 10 podman containers).
No peer for the agent itself: podman has no daemon (dockerd + containerd idle measured 113 MB
here). Targets (issue 6/8): agent RSS < 20 MB, idle CPU < 0.5% of a core, shim below conmon.
"""


def quiet(agent, still=2.0, timeout=120):
    """Waits until no reconcile pass has run for `still` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        passes = agent.metrics().get("berth_reconcile_passes_total")
        if passes != last:
            last, since = passes, time.monotonic()
        elif time.monotonic() - since >= still:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the agent never went quiet for {still} s within {timeout} s")


def run(ctx, quick):
    n, window, n_conmon = (10, 5, 3) if quick else (100, 60, 10)
    agent = ctx.agent("fp").start()
    img = ctx.image()
    pm = ctx.podman()
    mk = workload.open_marker(ctx)

    names = [f"f{i}" for i in range(n)]
    workload.berth_drop(agent, mk, img.ref, names, timeout=600)
    quiet(agent)
    pid = agent.pid
    rss, pss = [], []
    cpu0, t0 = measure.cpu_seconds(pid), time.monotonic()
    while time.monotonic() - t0 < window:
        m = smaps_kb(pid)
        rss.append(m["Rss"] / 1024)
        pss.append(m["Pss"] / 1024)
        time.sleep(1.0)
    cpu = (measure.cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    running = sum(1 for s in agent.statuses() if s.get("status") == "running")

    shims = agent.shim_pids()
    if len(shims) != n:
        raise RuntimeError(f"found {len(shims)} shims for {n} containers")
    shim = [smaps_kb(p) for p in shims]

    pnames = [f"b{ctx.tag}-fp{i}" for i in range(n_conmon)]
    workload.podman_start(pm, mk, img.ref, pnames, parallel=4, timeout=300)
    conmon = [smaps_kb(pm.conmon_pid(p)) for p in pnames]
    pm.remove_all()
    workload.berth_remove(agent, names, timeout=300)

    note = f"{running} of {n} containers running at the end of the {window} s window"
    return [
        {"name": f"agent RSS, {n} containers, idle", "unit": "MB", "berth": rss, "peer": None, "peer_name": None,
         "target": {"text": "< 20 MB", "max": 20.0}, "note": note},
        {"name": f"agent PSS, {n} containers, idle", "unit": "MB", "berth": pss, "peer": None, "peer_name": None},
        {"name": f"agent CPU over {window} s idle, {n} containers (% of one core)", "unit": "%", "berth": [cpu],
         "peer": None, "peer_name": None, "target": {"text": "< 0.5%", "max": 0.5}},
        {"name": "per-container supervisor RSS", "unit": "MB", "berth": [m["Rss"] / 1024 for m in shim],
         "peer": [m["Rss"] / 1024 for m in conmon], "peer_name": "conmon",
         "target": {"text": "below conmon (berth/peer < 1)", "ratio_max": 1.0}},
        {"name": "per-container supervisor PSS", "unit": "MB", "berth": [m["Pss"] / 1024 for m in shim],
         "peer": [m["Pss"] / 1024 for m in conmon], "peer_name": "conmon"},
    ]
