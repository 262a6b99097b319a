"""Driving the real `berth agent`: its own config (instance, dirs, bridge, subnet, the run's
registry), its API on `<run_dir>/berth.sock`, spec files written as config management does,
and a cleanup that removes every container and then checks the kernel for leftovers.

The agent's surface used here: `berth --config C agent`; GET /v1/containers (what
`berth status --json` prints), /v1/events, /metrics on the unix socket; `berth apply --once`
and `berth doctor --fix` at cleanup when they exist.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import kernel, procs
from .measure import wait_for


class Unavailable(RuntimeError):
    """berth lacks something a scenario needs: the scenario fails, saying what."""


def subcommands(binary):
    """The subcommands `berth --help` lists."""
    p = subprocess.run([binary, "--help"], capture_output=True, text=True)
    out, cmds, inside = p.stdout.splitlines(), set(), False
    for line in out:
        if line.strip().lower().startswith("commands:"):
            inside = True
            continue
        if inside:
            if not line.startswith("  "):
                break
            cmds.add(line.split()[0])
    return cmds


def require(binary, *names):
    have = subcommands(binary)
    missing = [n for n in names if n not in have]
    if missing:
        raise Unavailable(
            f"this berth has no `{'`, `'.join(missing)}` subcommand yet (has: {', '.join(sorted(have))}); "
            "the scenario needs the agent running containers end to end")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(str(self.path))
        self.sock = s


def parse_metrics(text):
    """Prometheus text format -> {"name{labels}": float} (labels as written, without the
    host_id every series of an agent carries)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        key = re.sub(r'host_id="[^"]*",?', "", key).replace("{}", "")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


class Agent:
    """One `berth agent` with everything of its own. Register with a cleanup stack."""

    def __init__(self, ctx, label, cleanup, registry=None, resync="30s", extra="", log_level="info"):
        self.ctx = ctx
        self.binary = ctx.berth
        require(self.binary, "agent")
        # 1-12 of a-z0-9-: "bt" (the suite's objects, judged by the leak check) + run tag (5)
        # + label (<= 5).
        self.instance = f"bt{ctx.tag}{label}"[:12]
        self.root = ctx.mkdir(f"agent-{label}")
        self.specs_dir = self.root / "specs"
        self.state_dir = self.root / "state"
        self.run_dir = Path(kernel_run_dir(self.instance))
        self.specs_dir.mkdir(exist_ok=True)
        self.bridge = self.instance
        self.subnet = kernel.free_subnet()
        self.socket = self.run_dir / "berth.sock"
        self.config = self.root / "berth.toml"
        self.log_path = self.root / "agent.log"
        regs = f'[registries."{registry.addr}"]\ninsecure = true\n' if registry else ""
        self.config.write_text(
            f'instance = "{self.instance}"\nspecs_dir = "{self.specs_dir}"\nstate_dir = "{self.state_dir}"\n'
            f'run_dir = "{self.run_dir}"\nimages_dir = "{self.root / "import"}"\nresync_interval = "{resync}"\n'
            f'log_format = "json"\nlog_level = "{log_level}"\n{extra}\n'
            f'[network]\nbridge = "{self.bridge}"\nsubnet = "{self.subnet}"\n\n{regs}\n[images]\nmin_free = "0"\n')
        self.proc = None
        cleanup.push(f"berth agent {self.instance}", self.destroy)

    # --- the process -------------------------------------------------------------------

    def start(self, timeout=60):
        require(self.binary, "agent")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "--config", str(self.config), "agent"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        procs.own(self.proc)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"berth agent exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                return self.get("/v1/ping", timeout=1) is not None
            except OSError:
                return False

        wait_for(f"berth agent {self.instance} to answer on {self.socket}", up, timeout, 0.02)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, n=3000):
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args, timeout=300):
        return subprocess.run([self.binary, "--config", str(self.config), *args], capture_output=True,
                              text=True, timeout=timeout)

    # --- the API -----------------------------------------------------------------------

    def get(self, path, timeout=30):
        conn = _UnixConnection(self.socket, timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body[:300]!r}")
            return body
        finally:
            conn.close()

    def statuses(self):
        """What `berth status --json` prints: a list of objects with name, status, pid, ..."""
        return json.loads(self.get("/v1/containers"))

    def metrics(self):
        return parse_metrics(self.get("/metrics").decode())

    def metric_values(self, *names):
        """The agent-wide series `names` (no label but host_id) from one scrape, without
        parsing the rest: with 1000 containers the text has tens of thousands of lines, and
        parsing them all in Python took longer than what a poll every few ms measures."""
        text = self.get("/metrics")
        out = []
        for name in names:
            m = re.search(rb"^" + re.escape(name.encode()) + rb"(?:\{[^}]*\})? (\S+)$", text, re.M)
            out.append(float(m.group(1)) if m else 0.0)
        return tuple(out)

    def follow_events(self):
        """An open event stream: returns (connection, response); read lines from response."""
        conn = _UnixConnection(self.socket, None)
        conn.request("GET", "/v1/events?follow=true")
        return conn, conn.getresponse()

    # --- specs -------------------------------------------------------------------------

    def spec_path(self, name):
        return self.specs_dir / f"{name}.toml"

    def write_spec(self, name, text):
        """Temp file + rename, as config management writes."""
        tmp = self.specs_dir / f".{name}.toml.tmp"
        tmp.write_text(text)
        os.rename(tmp, self.spec_path(name))

    def stage_spec(self, name, text):
        """Writes the temp file only; `drop` renames staged files into place."""
        tmp = self.specs_dir / f".{name}.toml.tmp"
        tmp.write_text(text)
        return tmp

    def drop(self, names):
        for n in names:
            os.rename(self.specs_dir / f".{n}.toml.tmp", self.spec_path(n))

    def remove_spec(self, name):
        try:
            self.spec_path(name).unlink()
        except FileNotFoundError:
            pass

    def wait_running(self, names, timeout):
        names = set(names)

        def ok():
            running = {s["name"] for s in self.statuses() if s.get("status") == "running"}
            return names <= running

        # The status of 1000 containers is ~0.5 MB of JSON: poll big sets less often.
        wait_for(f"{len(names)} containers of {self.instance} running", ok, timeout, 0.05 if len(names) <= 100 else 0.5)

    # --- what is left ------------------------------------------------------------------

    def shim_pids(self):
        """Pids of this agent's shims, from their state files, else by executable."""
        pids = []
        shims = self.run_dir / "shims"
        if shims.is_dir():
            for d in shims.iterdir():
                try:
                    st = json.loads((d / "state.json").read_text())
                except (OSError, ValueError):
                    continue
                pid = st.get("shim_pid")
                if pid and procs.alive(pid):
                    pids.append(pid)
        if not pids:
            pids = procs.pids_by_exe("berth-shim", str(self.run_dir))
        return pids

    def leftovers(self, names=None):
        """What of this instance's containers still exists: listed containers (of `names`, or
        all), veths, mounts, netns files, container cgroups, shims. Empty dict: clean."""
        left = {}
        try:
            listed = [s["name"] for s in self.statuses()]
        except (OSError, RuntimeError):
            listed = []
        if names is not None:
            listed = [n for n in listed if n in names]
        if listed:
            left["listed"] = listed
        links = kernel.links_with_alias(f"berth:{self.instance}:")
        if links:
            left["links"] = links
        mounts = kernel.mounts_under(self.state_dir, self.run_dir)
        if mounts:
            left["mounts"] = mounts
        netns = self.run_dir / "netns"
        if netns.is_dir() and any(netns.iterdir()):
            left["netns"] = [p.name for p in netns.iterdir()]
        cgroups = []
        for h in kernel.hierarchies():
            d = h / self.instance
            if d.is_dir():
                cgroups += [f"{h.name}/{self.instance}/{c.name}" for c in d.iterdir()
                            if c.is_dir() and not c.name.startswith("_")]
        if cgroups:
            left["cgroups"] = cgroups
        shims = self.shim_pids()
        if shims:
            left["shims"] = shims
        return left

    # --- cleanup -----------------------------------------------------------------------

    def destroy(self):
        """Removes every container through berth itself, stops the agent, then removes by name
        whatever of this instance is still there (a crashed run), and reports what it found."""
        problems = []
        for p in self.specs_dir.glob("*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if self.proc is not None and self.proc.poll() is None:
            # Until nothing is left in the kernel: the agent stops listing a container whose
            # spec is gone before its removal is done.
            try:
                wait_for("containers removed", lambda: not self.leftovers(), 300, 0.2)
            except (TimeoutError, OSError, RuntimeError) as e:
                problems.append(f"{e}: {brief(self.leftovers())}")
        self.stop()
        have = subcommands(self.binary)
        if "apply" in have:
            r = self.cli("apply", "--once", "--wait", "--timeout", "60s")
            if r.returncode != 0:
                problems.append(f"apply --once: {r.stderr.strip()[-300:]}")
        if "doctor" in have:
            self.cli("doctor", "--fix")
        left = self.leftovers()
        self._sweep()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if left:
            problems.append(f"left behind by berth (removed by the bench): {brief(left)}")
        if problems:
            raise RuntimeError("; ".join(problems))

    def _sweep(self):
        """Removes this instance's objects by name (after a crash; normally nothing is left)."""
        for pid in self.shim_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kernel.cgroup_procs(self.instance):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while kernel.cgroup_procs(self.instance) and time.monotonic() < deadline:
            time.sleep(0.05)
        kernel.unmount_all(self.state_dir, self.run_dir)
        for link in kernel.links_with_alias(f"berth:{self.instance}:"):
            kernel.delete_link(link)
        kernel.delete_link(self.bridge)
        kernel.delete_nft_table("inet", self.instance)
        kernel.remove_cgroup_tree(self.instance)


def brief(left):
    """A leftovers dict in one line: counts and a few names of each kind."""
    return "; ".join(f"{len(v)} {k} ({', '.join(map(str, v[:3]))}{', ...' if len(v) > 3 else ''})"
                     for k, v in left.items()) or "nothing"


def kernel_run_dir(instance):
    """The agent's run dir on /run (a tmpfs, like /run/berth), unique to the instance."""
    import tempfile
    return tempfile.mkdtemp(prefix=f"berth-bench-{instance}-", dir="/run")
