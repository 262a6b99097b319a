"""Scale of the loop: a pass over 1000 specs, unchanged and with one changed."""

import json
import threading
import time

from lib import workload
from lib.measure import wait_for

TITLE = "The reconcile loop at 1000 containers"
DESCRIPTION = """
A `berth agent` with 1000 running containers (`network = "none"`: a Linux bridge takes at most
1023 ports, and this scenario is about the loop, not the network; a sleeping busybox each;
resync every 10 min so that no periodic resync falls into a sample). Unchanged: one spec file
rewritten with the same content (temp + rename, as config management does), so that the agent
rescans all 1000 files and plans a pass that must do nothing; measured as the agent's own
`berth_reconcile_pass_duration_seconds` (the pass: plan over the whole desired and observed
sets, dispatch, publish; the histogram's sum over its count for the passes of the sample) and
as the wall time from the rename until `berth_reconcile_passes_total` moves on the agent's
/metrics (polled every 5 ms: rescan of the 1000 files + pass + up to 5 ms). One changed: one
spec's environment changed (which recreates that container); the containers touched are those
named by the agent's event stream (/v1/events) or whose incarnation id or pid changed in
`status`, and must be exactly 1. Target (issue 6/8): the unchanged pass under 50 ms.
"""

SPEC = 'image = "{image}"\ncommand = ["/bin/sleep", "1000000"]\nnetwork = "none"\nstop_signal = "SIGKILL"\n{extra}'


class Events:
    """Follows /v1/events in a thread; `since(i)` gives the events after index i."""

    def __init__(self, agent):
        self.conn, self.resp = agent.follow_events()
        self.sock = self.conn.sock
        self.items = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                with self.lock:
                    self.items.append(ev)
        except Exception:  # noqa: BLE001 - the stream ends when `close` shuts the socket
            return

    def mark(self):
        with self.lock:
            return len(self.items)

    def since(self, i):
        with self.lock:
            return list(self.items[i:])

    def close(self):
        try:
            self.sock.shutdown(2)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def hist(agent):
    return agent.metric_values("berth_reconcile_passes_total",
                               "berth_reconcile_pass_duration_seconds_sum",
                               "berth_reconcile_pass_duration_seconds_count")


def quiet(agent, still, timeout=120):
    """Waits until the pass counter has not moved for `still` seconds."""
    state = {"last": None, "since": time.monotonic()}

    def ok():
        passes = hist(agent)[0]
        if passes != state["last"]:
            state["last"], state["since"] = passes, time.monotonic()
            return False
        return time.monotonic() - state["since"] >= still

    wait_for(f"the agent to go quiet for {still} s", ok, timeout, 0.05)


def snapshot(agent):
    return {s["name"]: (s.get("id"), s.get("pid"), s.get("status")) for s in agent.statuses()}


def run(ctx, quick):
    n = 20 if quick else 1000
    rounds, changes = (3, 2) if quick else (15, 5)
    agent = ctx.agent("lp", resync="10m").start()
    img = ctx.image()
    names = [f"c{i:04d}" for i in range(n)]
    for name in names:
        agent.stage_spec(name, SPEC.format(image=img.ref, extra=""))
    agent.drop(names)
    agent.wait_running(names, timeout=60 + n * 1.0)
    events = Events(agent)
    ctx.cleanup.push("event stream", events.close)
    quiet(agent, 2.0, timeout=300)

    pass_time, wall, idle_touched = [], [], []
    for r in range(rounds):
        before, mark = snapshot(agent), events.mark()
        p0, s0, c0 = hist(agent)
        t0 = time.perf_counter()
        agent.write_spec(names[r % n], SPEC.format(image=img.ref, extra=""))
        wait_for("a pass after an unchanged spec was rewritten", lambda: hist(agent)[0] > p0, 30, 0.005)
        wall.append(time.perf_counter() - t0)
        quiet(agent, 0.5)
        p1, s1, c1 = hist(agent)
        pass_time.append((s1 - s0) / (c1 - c0))
        after = snapshot(agent)
        touched = {e["container"] for e in events.since(mark) if e.get("container")}
        touched |= {k for k in before if after.get(k) != before[k]}
        idle_touched.append(len(touched))

    changed_pass, touched_counts, recreate = [], [], []
    for k in range(changes):
        name = names[(k * 7 + 1) % n]
        before, mark = snapshot(agent), events.mark()
        p0, s0, c0 = hist(agent)
        t0 = time.perf_counter()
        agent.write_spec(name, SPEC.format(image=img.ref, extra=f'[env]\nGEN = "{k}"\n'))

        def recreated():
            now = snapshot(agent).get(name)
            return now and now[2] == "running" and now[0] != before[name][0]

        wait_for(f"{name} recreated and running", recreated, 60, 0.01)
        recreate.append(time.perf_counter() - t0)
        quiet(agent, 1.0)
        p1, s1, c1 = hist(agent)
        changed_pass.append((s1 - s0) / (c1 - c0))
        after = snapshot(agent)
        touched = {e["container"] for e in events.since(mark) if e.get("container")}
        touched |= {c for c in before if after.get(c) != before[c]}
        touched_counts.append(len(touched))

    events.close()
    for name in names:
        agent.remove_spec(name)
    workload.berth_clean(agent, timeout=60 + n * 0.5)
    return [
        {"name": f"pass over {n} unchanged specs (agent's histogram)", "unit": "s", "berth": pass_time,
         "peer": None, "peer_name": None, "target": {"text": "< 50 ms", "max": 0.050}},
        {"name": f"unchanged spec rewritten -> pass done, {n} specs (wall, rescan + pass)", "unit": "s",
         "berth": wall, "peer": None, "peer_name": None, "target": {"text": "< 50 ms", "max": 0.050},
         "if_missed": "Before e36d64d this read 113-122 ms, most of it the bench's own polling (it "
                      "parsed the whole /metrics text of 1000 containers in Python, 57 ms a poll) "
                      "and the rescan's per-file lookups (a BTreeMap of paths, a stat per spec for "
                      "an absent drop-in dir). What remains (perf): the pass over 1000 running "
                      "containers (the histogram row), the rescan's stat of each file, and the "
                      "agent rendering /metrics for each 5 ms poll beside them"},
        {"name": "containers touched by the unchanged pass", "unit": "", "berth": idle_touched,
         "peer": None, "peer_name": None, "target": {"text": "0", "equals": 0}},
        {"name": f"mean pass with one of {n} specs changed (agent's histogram)", "unit": "s",
         "berth": changed_pass, "peer": None, "peer_name": None},
        {"name": "containers touched when one spec changed", "unit": "", "berth": touched_counts,
         "peer": None, "peer_name": None, "target": {"text": "exactly 1", "equals": 1}},
        {"name": f"one of {n} specs changed -> recreated and running (wall)", "unit": "s", "berth": recreate,
         "peer": None, "peer_name": None},
    ]
