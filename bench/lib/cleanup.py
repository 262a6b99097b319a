"""A stack of undo steps that always runs to the end, and unique names for one bench run.

Every object a scenario makes (a podman container, a runc bundle, a berth agent, a bridge, a
cgroup) registers its removal here right after it exists; the runner unwinds the stack after
each scenario and on SIGINT/SIGTERM, so a failed or interrupted run leaves nothing behind.
"""

import os
import secrets
import sys
import traceback


class Cleanup:
    """Undo steps, run last-in first-out; a failing step is reported and the rest still run."""

    def __init__(self):
        self._steps = []

    def push(self, what, fn, *args, **kwargs):
        """Registers `fn(*args, **kwargs)`; returns a handle for `run_one`."""
        step = [what, fn, args, kwargs]
        self._steps.append(step)
        return step

    def run_one(self, step):
        """Runs one registered step now (and only once)."""
        if step in self._steps:
            self._steps.remove(step)
            return self._call(step)
        return None

    def run_all(self):
        """Runs every step; returns the descriptions of those that failed."""
        failed = []
        while self._steps:
            step = self._steps.pop()
            err = self._call(step)
            if err:
                failed.append(err)
        return failed

    @staticmethod
    def _call(step):
        what, fn, args, kwargs = step
        try:
            fn(*args, **kwargs)
            return None
        except BaseException as e:  # noqa: BLE001 - cleanup keeps going past anything
            print(f"bench: cleanup of {what} failed: {e}", file=sys.stderr)
            if os.environ.get("BERTH_BENCH_DEBUG"):
                traceback.print_exc()
            return f"{what}: {e}"


def run_tag():
    """5 hex digits naming this run's objects: instances, bridges, podman networks, cgroups.

    Random, not the pid, so two runs started at once (CI jobs, an engineer and CI) differ."""
    return secrets.token_hex(3)[:5]
