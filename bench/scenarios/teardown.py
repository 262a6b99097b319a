"""Tear-down: N containers' specs deleted -> all gone and clean."""

import itertools
import time

from lib import kernel, workload

TITLE = "Tearing down 100 containers"
DESCRIPTION = """
100 running containers (bridge network) removed at once. berth: their 100 spec files deleted,
timed until the agent lists none of them and none leaves anything in the kernel: no shim,
veth, mount (rootfs overlay, netns bind mount), netns file or container cgroup (polled every
20 ms, so the figure carries up to 20 ms of polling). Peer: `podman rm -f -t 0` of the 100
(synchronous: it returns when podman is done), checked afterwards for containers, bridge ports
and mounts left behind. Starting the 100 is untimed. No target in the issues: the figure is
reported against podman's.
"""


def run(ctx, quick):
    n = 10 if quick else 100
    rounds = 1 if quick else 3
    agent = ctx.agent("td").start()
    img = ctx.image()
    pm = ctx.podman()
    mk = workload.open_marker(ctx)
    batch = itertools.count()

    def berth():
        names = [f"t{next(batch)}x{i}" for i in range(n)]
        workload.berth_drop(agent, mk, img.ref, names, timeout=600)
        t0 = time.perf_counter()
        for name in names:
            agent.remove_spec(name)
        workload.berth_clean(agent, timeout=300)
        return time.perf_counter() - t0

    def podman():
        names = [f"b{ctx.tag}-t{next(batch)}x{i}" for i in range(n)]
        workload.podman_start(pm, mk, img.ref, names, parallel=8, timeout=600)
        t0 = time.perf_counter()
        workload.podman_remove(pm, names)
        t = time.perf_counter() - t0
        left = pm.containers()
        ports = kernel.bridge_ports(pm.bridge)
        mounts = [m for m in kernel.mounts_under(pm.root / "overlay") if m.endswith("/merged")]
        if left or ports or mounts:
            raise RuntimeError(f"podman rm -f left containers {left[:3]}, bridge ports {ports[:3]}, mounts {mounts[:3]}")
        return t

    s = ctx.alternate({"berth": berth, "podman": podman}, rounds, warmup=0)
    return [
        {"name": f"{n} specs deleted -> all gone and clean", "unit": "s", "berth": s["berth"],
         "peer": s["podman"], "peer_name": f"podman rm -f -t 0 of {n}"},
    ]
