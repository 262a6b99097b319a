"""Many containers at once: N spec files dropped -> all N payloads running."""

import itertools

from lib import workload

TITLE = "100 containers at once"
DESCRIPTION = """
100 spec files renamed into a running agent's spec dir in one burst, each container with its
bridge network, until all 100 payloads have run (each writes its tag to the bench's FIFO).
Peer: 100 `podman run -d` on podman's bridge, one after another and 8 at a time; its figure
is the better of the two per round (both are shown too). Every round ends with an untimed
removal of all. Target (issue 6/8): under 2 s for berth (podman here: ~15 s sequentially).
"""


def run(ctx, quick):
    n = 10 if quick else 100
    rounds = 1 if quick else 3
    agent = ctx.agent("mn").start()
    img = ctx.image()
    pm = ctx.podman()
    mk = workload.open_marker(ctx)
    batch = itertools.count()

    # The image into berth's store first, so every round starts from a cached image as podman's.
    workload.berth_drop(agent, mk, img.ref, ["warm"], timeout=120)
    workload.berth_remove(agent, ["warm"])

    def berth():
        names = [f"m{next(batch)}x{i}" for i in range(n)]
        t = workload.berth_drop(agent, mk, img.ref, names, timeout=300)
        workload.berth_remove(agent, names, timeout=300)
        return t

    def podman(parallel):
        def once():
            names = [f"b{ctx.tag}-m{next(batch)}x{i}" for i in range(n)]
            try:
                return workload.podman_start(pm, mk, img.ref, names, parallel=parallel, timeout=600)
            finally:
                pm.remove_all()
        return once

    s = ctx.alternate({"berth": berth, "seq": podman(1), "par": podman(8)}, rounds, warmup=0)
    best = [min(a, b) for a, b in zip(s["seq"], s["par"])]
    return [
        {"name": f"{n} specs dropped -> all running", "unit": "s", "berth": s["berth"], "peer": best,
         "peer_name": f"{n} x podman run -d, best of sequential and 8-way",
         "target": {"text": "< 2 s", "max": 2.0},
         "if_missed": "Met in quiet runs; misses come with other jobs on the 2 vCPUs. A system-wide "
                      "profile (perf record -a, symbols) of a 100-drop: both CPUs ~30% idle, berth's "
                      "agent threads ~22% (mostly kernel: netns and veth creation under the rtnl lock, "
                      "shim execs, page faults), shims ~12%, other jobs ~20%. The creates wait on the "
                      "kernel's global rtnl lock and RCU grace periods more than on CPU"},
        {"name": f"{n} specs dropped -> all running", "unit": "s", "berth": s["berth"], "peer": s["seq"],
         "peer_name": f"{n} x podman run -d, sequential"},
        {"name": f"{n} specs dropped -> all running", "unit": "s", "berth": s["berth"], "peer": s["par"],
         "peer_name": f"{n} x podman run -d, 8 at a time"},
    ]
