"""Container create+start: berth's runtime against runc, podman and a C floor."""

import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

TITLE = "Starting a container"
DESCRIPTION = """
Create+start of a container from a cached image (busybox-static as one layer) until the payload
(`/bin/true`) has been exec'd, with no network (an empty netns). berth: `Runtime::create` timed
inside one process, as the agent calls it (`agent/examples/start_bench.rs`; shim spawn, cgroups
in 5 v1 hierarchies, overlayfs, /proc, /dev, /sys, masks, pivot_root, capabilities, seccomp).
runc: `runc run -d` on an OCI bundle of the same rootfs (teardown untimed). podman:
`podman run -d --network none` of the same rootfs imported as an image (runc runtime, as
peers.md says). floor: `bench/floor.c`, 5 namespaces + overlayfs + pivot_root + /proc + 3 v1
cgroups + exec and nothing else, timed by itself to the exec like berth. All four interleaved,
round by round. The shim rows compare the resident (RSS) and proportional (PSS) memory of
berth's per-container shim with podman's conmon, each supervising a sleeping container.
"""

PEER_VERSIONS = {
    "runc": ["runc", "--version"],
    "podman": ["podman", "--version"],
}

PODMAN_FLAGS = ["--runtime", "/usr/sbin/runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def remove_cgroups(rel):
    """rmdir a cgroup (children first) in every v1 hierarchy and the unified one."""
    for h in Path("/sys/fs/cgroup").iterdir():
        d = h / rel
        if not d.is_dir():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass


def busybox_rootfs(d):
    (d / "bin").mkdir(parents=True)
    (d / "tmp").mkdir()
    (d / "etc").mkdir()
    shutil.copy("/bin/busybox", d / "bin/busybox")
    for applet in subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True, check=True).stdout.split():
        p = d / applet
        if not p.exists() and not p.is_symlink():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to("/bin/busybox")
    (d / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (d / "etc/group").write_text("root:x:0:\n")


def runc_bundle(d, rootfs):
    d.mkdir()
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    spec = json.loads((d / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    (d / "config.json").write_text(json.dumps(spec))


def become_subreaper():
    """conmon and runc double-fork; as subreaper this process gets them back and reaps them,
    instead of leaving zombies to an init that may not reap."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def smaps(pid, key):
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def run(ctx, quick):
    repo = ctx.repo
    become_subreaper()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "berth-agent", "--bins", "--example", "start_bench"],
                   cwd=repo, check=True)
    helper = repo / "target/release/examples/start_bench"
    floor = ctx.mkdir("floor-bin") / "floor"
    subprocess.run(["gcc", "-O2", "-o", str(floor), str(repo / "bench/floor.c")], check=True)

    layer = ctx.mkdir("image") / "rootfs"
    busybox_rootfs(layer)
    # berth's run dir on a tmpfs, as /run is; runc and podman keep their state under /run too.
    run_dir = Path(tempfile.mkdtemp(prefix="berth-bench-", dir="/run"))
    instance = f"bs{os.getpid() & 0xffff:x}"
    bundle = ctx.scratch / "runc-bundle"
    runc_bundle(bundle, layer)
    proot, prun = ctx.mkdir("podman-root"), Path(tempfile.mkdtemp(prefix="berth-bench-podman-", dir="/run"))
    podman = ["podman", "--root", str(proot), "--runroot", str(prun), "--cgroup-manager", "cgroupfs",
              "--events-backend", "none"]
    pod_cgroup = f"{instance}-podman"
    pflags = PODMAN_FLAGS + ["--cgroup-parent", f"/{pod_cgroup}"]
    tar = ctx.scratch / "rootfs.tar"
    subprocess.run(["tar", "-C", str(layer), "-cf", str(tar), "."], check=True)
    subprocess.run(podman + ["import", str(tar), "localhost/berth-bench:1"], check=True, stdout=subprocess.DEVNULL)

    n = {"i": 0}

    state_dir = ctx.mkdir("berth-state")

    def berth_once():
        out = subprocess.run([str(helper), "once", str(state_dir), str(run_dir), str(layer), instance],
                             capture_output=True, text=True, check=True).stdout
        return float(out.strip())

    def floor_once():
        n["i"] += 1
        scratch = ctx.scratch / f"floor-{n['i']}"
        out = subprocess.run([str(floor), str(layer), str(scratch), f"{instance}f"],
                             capture_output=True, text=True, check=True).stdout
        shutil.rmtree(scratch, ignore_errors=True)
        return int(out.strip()) / 1e9

    def runc_once():
        n["i"] += 1
        cid = f"{instance}-{n['i']}"
        t = ctx.time_cmd(["runc", "run", "-d", "--bundle", str(bundle), cid])
        subprocess.run(["runc", "delete", "-f", cid], capture_output=True)
        return t

    def podman_once():
        return ctx.time_cmd(podman + ["run", "-d", "--rm", "--network", "none"] + pflags
                            + ["localhost/berth-bench:1", "/bin/true"])

    rounds = 3 if quick else 20
    samples = {"berth": [], "floor": [], "runc": [], "podman": []}
    try:
        for f in (berth_once, floor_once, runc_once, podman_once):
            f()  # warm-up
        for _ in range(rounds):
            samples["floor"].append(floor_once())
            samples["berth"].append(berth_once())
            samples["runc"].append(runc_once())
            samples["podman"].append(podman_once())
            reap()

        # Memory of the per-container supervisor, with a few containers running side by side.
        count = 3 if quick else 5
        lines = subprocess.run([str(helper), "mem", str(state_dir), str(run_dir), str(layer), instance, str(count)],
                               capture_output=True, text=True, check=True).stdout.split("\n")
        shim = [tuple(int(x) for x in l.split()) for l in lines if l.strip()]
        cids = []
        for _ in range(count):
            cids.append(subprocess.run(podman + ["run", "-d", "--network", "none"] + pflags
                                       + ["localhost/berth-bench:1", "/bin/sleep", "1000"],
                                       capture_output=True, text=True, check=True).stdout.strip())
        conmon = []
        for cid in cids:
            pid = subprocess.run(podman + ["inspect", "-f", "{{.State.ConmonPid}}", cid],
                                 capture_output=True, text=True, check=True).stdout.strip()
            conmon.append((smaps(pid, "Rss:"), smaps(pid, "Pss:")))
        subprocess.run(podman + ["rm", "-f", "-t", "0"] + cids, capture_output=True)
    finally:
        subprocess.run(podman + ["rm", "-a", "-f", "-t", "0"], capture_output=True)
        subprocess.run(podman + ["rmi", "-a", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", str(proot / "overlay")], capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        remove_cgroups(pod_cgroup)
        remove_cgroups("libpod_parent/conmon")
        remove_cgroups("libpod_parent")
        reap()
        shutil.rmtree(prun, ignore_errors=True)

    return [
        {"name": "create+start vs the C floor (ratio below 1: slower than the floor)", "unit": "s",
         "berth": samples["berth"], "peer": samples["floor"], "peer_name": "floor.c"},
        {"name": "create+start vs runc run -d", "unit": "s",
         "berth": samples["berth"], "peer": samples["runc"], "peer_name": "runc 1.1"},
        {"name": "create+start vs podman run -d", "unit": "s",
         "berth": samples["berth"], "peer": samples["podman"], "peer_name": "podman 4.3"},
        {"name": "supervisor RSS (berth-shim vs conmon)", "unit": "MB",
         "berth": [r / 1024 for r, _ in shim], "peer": [r / 1024 for r, _ in conmon], "peer_name": "conmon"},
        {"name": "supervisor PSS (berth-shim vs conmon)", "unit": "MB",
         "berth": [p / 1024 for _, p in shim], "peer": [p / 1024 for _, p in conmon], "peer_name": "conmon"},
    ]
