"""What a scenario gets from the runner: the berth binary, scratch space, a cleanup stack,
timing helpers, and the run's shared fixtures (registry, bench image, podman, runc), made on
first use and removed at the end of the run."""

import subprocess
import sys
import time
from pathlib import Path

from . import berth, image, peers, procs
from .cleanup import Cleanup


class Fixtures:
    """Made once per run, on first use; torn down by the run's cleanup stack."""

    def __init__(self, scratch, tag, cleanup):
        self.scratch = Path(scratch)
        self.tag = tag
        self.cleanup = cleanup
        self._registry = self._image = self._podman = self._runc = None
        self.built_examples = {}

    def registry(self):
        if self._registry is None:
            d = self.scratch / "registry"
            d.mkdir(exist_ok=True)
            self._registry = peers.Registry(d, self.cleanup)
        return self._registry

    def image(self):
        if self._image is None:
            d = self.scratch / "image"
            d.mkdir(exist_ok=True)
            self._image = image.BenchImage(d, self.registry())
        return self._image

    def podman(self):
        if self._podman is None:
            pm = peers.Podman(self.scratch, self.tag, self.cleanup)
            pm.pull(self.image().ref)
            self._podman = pm
        return self._podman

    def reset(self):
        """Between scenarios: no peer container outlives the scenario that made it."""
        if self._podman is not None:
            self._podman.remove_all()
        if self._runc is not None:
            for cid in self._runc.containers():
                self._runc.delete(cid)

    def runc(self):
        if self._runc is None:
            self._runc = peers.Runc(self.scratch, self.tag, self.image().rootfs, self.cleanup)
        return self._runc


class Context:
    """One scenario's view of the run."""

    def __init__(self, berth_bin, profile, repo, scratch, quick, tag, fixtures):
        self.berth = str(berth_bin)
        self.profile = profile
        self.repo = Path(repo)
        self.scratch = Path(scratch)
        self.quick = quick
        self.tag = tag
        self.fixtures = fixtures
        self.cleanup = Cleanup()
        self.notes = []

    # --- fixtures --------------------------------------------------------------------

    def registry(self):
        return self.fixtures.registry()

    def image(self):
        return self.fixtures.image()

    def podman(self):
        return self.fixtures.podman()

    def runc(self):
        return self.fixtures.runc()

    def agent(self, label, **kwargs):
        """A berth agent of this scenario's own (not started); removed after the scenario."""
        berth.require(self.berth, "agent")
        return berth.Agent(self, label, self.cleanup, registry=self.registry(), **kwargs)

    def example(self, name):
        """Builds agent/examples/NAME.rs in the profile under test; returns its path."""
        if name not in self.fixtures.built_examples:
            # With the runner's `--bins --examples` build this is a no-op; it matters under
            # --no-build, and its features match that build's (no rebuild of the tree).
            argv = ["cargo", "build", "--locked", "-p", "berth-agent", "--bins", "--examples"]
            if self.profile == "release":
                argv.insert(2, "--release")
            subprocess.run(argv, cwd=self.repo, check=True)
            self.fixtures.built_examples[name] = self.repo / "target" / ("release" if self.profile == "release" else "debug") / "examples" / name
        return str(self.fixtures.built_examples[name])

    # --- scratch and timing ----------------------------------------------------------

    def mkdir(self, name):
        d = self.scratch / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log(self, msg):
        print(f"   {msg}", file=sys.stderr, flush=True)

    def time_cmd(self, argv, env=None, check=True):
        """Wall seconds of one run of argv (output discarded)."""
        start = time.perf_counter()
        p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        elapsed = time.perf_counter() - start
        if check and p.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {p.returncode}: {p.stderr.decode()[-2000:]}")
        return elapsed

    def interleave(self, a, b, rounds, warmup=1):
        """Runs a() and b() alternately (A B A B ...); returns their samples. b may be None."""
        fns = {"a": a} if b is None else {"a": a, "b": b}
        s = self.alternate(fns, rounds, warmup, rotate=False)
        return s["a"], (s["b"] if b else None)

    def alternate(self, fns, rounds, warmup=1, rotate=True, settle=0.0):
        """Runs each of `fns` (name -> function returning a sample) once per round, `rounds`
        rounds after `warmup` unrecorded ones; the order rotates each round so that no
        contender always runs first. `settle` seconds pass before each call, so that what the
        kernel defers from the previous one (a network namespace's teardown runs in a kernel
        worker and holds the rtnl lock) does not land in the next one's time. Returns name ->
        samples."""
        names = list(fns)
        samples = {n: [] for n in names}
        for r in range(warmup + rounds):
            k = r % len(names) if rotate else 0
            for n in names[k:] + names[:k]:
                if settle:
                    time.sleep(settle)
                v = fns[n]()
                if r >= warmup:
                    samples[n].append(v)
            procs.reap_orphans()
        return samples
