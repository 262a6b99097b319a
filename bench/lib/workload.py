"""The payload every start scenario runs, written once for each tool: the bench image's
/bin/marker reports to the FIFO mounted at /m, then execs a sleeping busybox."""

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from . import berth
from .measure import Marker, wait_for

SLEEP = ["/bin/sleep", "1000000"]


def payload(tag):
    return ["/bin/marker", "/m/fifo", tag, *SLEEP]


def spec(image, marker_dir, tag, network="bridge", extra=""):
    """A berth spec running the marked payload. SIGKILL stops it at once: busybox sleep as
    pid 1 ignores SIGTERM, and podman and runc are told the same (`rm -f -t 0`)."""
    argv = ", ".join(f'"{a}"' for a in payload(tag))
    return (f'image = "{image}"\ncommand = [{argv}]\nmounts = ["{marker_dir}:/m"]\n'
            f'stop_signal = "SIGKILL"\nnetwork = "{network}"\n{extra}')


def open_marker(ctx, name="marker"):
    mk = Marker(ctx.mkdir(name))
    ctx.cleanup.push(f"marker {mk.path}", mk.close)
    return mk


def berth_clean(agent, timeout=120):
    """Waits until none of the agent's containers is listed or leaves a kernel object.

    First the cheap question (does the agent list any?), then the full kernel check, so that
    polling takes little CPU from the agent while it works."""
    last = {}
    deadline = time.monotonic() + timeout

    def unlisted():
        return not agent.statuses()

    try:
        wait_for(f"berth {agent.instance} to list no container", unlisted, timeout, 0.02)
        while True:
            # Poll at least every 20 ms, but spend at most a third of a core on it (the check
            # reads every shim's state file and cgroup dir: slow with 1000 containers).
            t = time.monotonic()
            last["left"] = agent.leftovers()
            if not last["left"]:
                return
            took = time.monotonic() - t
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for berth {agent.instance} to be clean")
            time.sleep(max(0.02, 2 * took))
    except TimeoutError as e:
        raise TimeoutError(f"{e}: {berth.brief(last.get('left') or agent.leftovers())}") from None


def berth_drop(agent, mk, image, names, network="bridge", timeout=120):
    """Drops specs `names` at once (staged, then renamed in a burst); returns seconds from the
    first rename to the last payload's marker."""
    for n in names:
        agent.stage_spec(n, spec(image, mk.dir, n, network))
    mk.forget(names)
    t0 = time.perf_counter()
    agent.drop(names)
    try:
        return mk.wait(names, timeout) - t0
    except TimeoutError as e:
        bad = [s for s in agent.statuses() if s.get("status") != "running"][:3]
        raise TimeoutError(f"{e}; berth status of some: {bad}; agent log: {agent.log_tail(1500)}") from None


def berth_remove(agent, names, timeout=120):
    for n in names:
        agent.remove_spec(n)
    berth_clean(agent, timeout)


def podman_start(pm, mk, image, names, network=True, parallel=1, timeout=300):
    """`podman run -d` of each name (sequentially, or `parallel` at a time); returns seconds
    from the first command to the last payload's marker."""
    mk.forget(names)

    def one(n):
        p = subprocess.run(pm.run_argv(n, image, payload(n), network=network, volumes=[(mk.dir, "/m")]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"podman run {n} exited {p.returncode}: {p.stderr[-800:]}")

    t0 = time.perf_counter()
    if parallel == 1:
        for n in names:
            one(n)
    else:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, names))
    return mk.wait(names, timeout) - t0


def podman_remove(pm, names):
    p = subprocess.run(pm.rm_argv(names), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"podman rm exited {p.returncode}: {p.stderr[-800:]}")
