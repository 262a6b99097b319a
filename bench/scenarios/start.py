"""Container create+start at the runtime level: berth's runtime against runc, podman and a C floor."""

import itertools
import shutil
import subprocess
import tempfile
from pathlib import Path

from lib import kernel, peers
from lib.measure import smaps_kb

TITLE = "Starting a container (the runtime alone)"
DESCRIPTION = """
Create+start of a container from a cached image (the bench image: busybox-static as one
layer) until the payload (`/bin/true`) has been exec'd, with no network (an empty netns), at
the runtime level: no agent, no spec file. berth: `Runtime::create` timed inside one process,
as the agent calls it (`agent/examples/start_bench.rs`; shim spawn, cgroups in 5 v1
hierarchies, overlayfs, /proc, /dev, /sys, masks, pivot_root, capabilities, seccomp). runc:
`runc run -d` on an OCI bundle of the same rootfs (teardown untimed). podman: `podman run -d
--rm --network none` of the same image (runc runtime, as peers.md says), to its exit. floor:
`bench/floor.c`, 5 namespaces + overlayfs + pivot_root + /proc + 3 v1 cgroups + exec and
nothing else, timed by itself to the exec like berth. All four interleaved, round by round,
back to back (see `agent_start` for what an idle machine adds).
The shim rows compare the resident (RSS) and proportional (PSS) memory of berth's
per-container shim with podman's conmon, each supervising a sleeping container. The agent-level
start (spec file written -> payload running, with the network) is the `agent_start` scenario.
Targets (issue 4): within 3x of the floor, faster than runc, at least 10x faster than podman,
shim below conmon.
"""


def run(ctx, quick):
    helper = ctx.example("start_bench")
    floor = ctx.mkdir("floor-bin") / "floor"
    subprocess.run(["gcc", "-O2", "-o", str(floor), str(ctx.repo / "bench/floor.c")], check=True)
    img = ctx.image()
    layer = img.rootfs
    pm, rc = ctx.podman(), ctx.runc()

    # berth's run dir on a tmpfs, as /run is; runc and podman keep their state under /run too.
    instance = f"bt{ctx.tag}st"
    run_dir = Path(tempfile.mkdtemp(prefix=f"berth-bench-{instance}-", dir="/run"))
    state_dir = ctx.mkdir("berth-state")

    def clean():
        kernel.unmount_all(run_dir, state_dir, ctx.scratch)
        kernel.remove_cgroup_tree(instance)
        kernel.remove_cgroup_tree(f"{instance}f")
        shutil.rmtree(run_dir, ignore_errors=True)

    ctx.cleanup.push(f"berth runtime {instance}", clean)
    ids = itertools.count()

    def berth_once():
        out = subprocess.run([helper, "once", str(state_dir), str(run_dir), str(layer), instance],
                             capture_output=True, text=True, check=True).stdout
        return float(out.strip())

    def floor_once():
        scratch = ctx.scratch / f"floor-{next(ids)}"
        out = subprocess.run([str(floor), str(layer), str(scratch), f"{instance}f"],
                             capture_output=True, text=True, check=True).stdout
        shutil.rmtree(scratch, ignore_errors=True)
        return int(out.strip()) / 1e9

    def runc_once():
        cid = f"b{ctx.tag}-st{next(ids)}"
        bundle = rc.bundle(cid, ["/bin/true"])
        t = ctx.time_cmd(rc.base + ["run", "-d", "--bundle", str(bundle), cid])
        rc.delete(cid)
        return t

    podman_run = pm.base + ["run", "-d", "--rm", "--network", "none", *peers.PODMAN_RUN_FLAGS,
                            "--cgroup-parent", f"/{pm.cgroup_parent}", img.ref]

    def podman_once():
        return ctx.time_cmd(podman_run + ["/bin/true"])

    rounds = 3 if quick else 20
    s = ctx.alternate({"floor": floor_once, "berth": berth_once, "runc": runc_once, "podman": podman_once},
                      rounds, warmup=1, rotate=False)

    # Memory of the per-container supervisor, with a few containers running side by side.
    count = 3 if quick else 5
    lines = subprocess.run([helper, "mem", str(state_dir), str(run_dir), str(layer), instance, str(count)],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    shim = [tuple(int(x) for x in line.split()) for line in lines if line.strip()]
    names = [f"b{ctx.tag}-stm{i}" for i in range(count)]
    for name in names:
        subprocess.run(pm.run_argv(name, img.ref, ["/bin/sleep", "1000"], network=False),
                       capture_output=True, text=True, check=True)
    conmon = []
    for name in names:
        m = smaps_kb(pm.conmon_pid(name))
        conmon.append((m["Rss"], m["Pss"]))
    pm.remove_all()

    return [
        {"name": "create+start", "unit": "s",
         "berth": s["berth"], "peer": s["floor"], "peer_name": "floor.c",
         "target": {"text": "within 3x of the floor (berth/peer <= 3)", "ratio_max": 3.0}},
        {"name": "create+start", "unit": "s",
         "berth": s["berth"], "peer": s["runc"], "peer_name": "runc run -d",
         "target": {"text": "faster than runc (berth/peer < 1)", "ratio_max": 1.0}},
        {"name": "create+start", "unit": "s",
         "berth": s["berth"], "peer": s["podman"], "peer_name": "podman run -d --network none",
         "target": {"text": ">= 10x faster than podman (berth/peer <= 0.1)", "ratio_max": 0.1}},
        {"name": "per-container supervisor RSS (berth-shim)", "unit": "MB",
         "berth": [r / 1024 for r, _ in shim], "peer": [r / 1024 for r, _ in conmon], "peer_name": "conmon",
         "target": {"text": "below conmon (berth/peer < 1)", "ratio_max": 1.0}},
        {"name": "per-container supervisor PSS (berth-shim)", "unit": "MB",
         "berth": [p / 1024 for _, p in shim], "peer": [p / 1024 for _, p in conmon], "peer_name": "conmon"},
    ]
