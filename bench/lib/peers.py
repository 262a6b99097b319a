"""The peers on this machine (see /work/shared/peers.md): a docker-registry of the run's own,
podman with runc (crun refuses this machine's hybrid cgroups), and runc itself.

Each peer object owns everything it makes under names carrying the run's tag (storage roots,
a podman network and its bridge, cgroup parents, runc's state root) and registers their
removal with the run's cleanup stack as soon as they exist.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from . import kernel, procs

# podman's defaults exceed this machine's hard rlimits; crun refuses hybrid cgroups.
PODMAN_RUN_FLAGS = ["--runtime", "/usr/sbin/runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def run_dir(prefix):
    """A private dir on /run (tmpfs), where runtimes keep their state as berth does."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/run"))


class Registry:
    """Debian's docker-registry on a free 127.0.0.1 port with its own storage, no auth."""

    def __init__(self, work, cleanup):
        work = Path(work)
        (work / "storage").mkdir(parents=True, exist_ok=True)
        self.port = kernel.free_port()
        self.addr = f"127.0.0.1:{self.port}"
        cfg = work / "registry.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {work / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.addr}\n")
        log = open(work / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        procs.own(self.proc)
        log.close()
        cleanup.push(f"registry on {self.addr}", self.stop)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(work / 'registry.log').read_text()[-500:]}")
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Podman:
    """podman with its own storage root, run root, network config dir, bridge network (a
    unique name, bridge and /24) and cgroup parent, so nothing is shared with other users."""

    def __init__(self, scratch, tag, cleanup):
        scratch = Path(scratch)
        self.tag = tag
        self.root = scratch / "podman-root"
        self.runroot = run_dir(f"bench-{tag}-podman-")
        self.netdir = scratch / "podman-networks"
        self.netdir.mkdir(parents=True, exist_ok=True)
        (self.runroot / "tmp").mkdir()
        self.base = ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                     "--tmpdir", str(self.runroot / "tmp"), "--network-config-dir", str(self.netdir),
                     "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
        self.cgroup_parent = f"btp{tag}-podman"
        self.network = f"bench-{tag}"
        self.bridge = f"btp{tag}"
        self.subnet = kernel.free_subnet()
        self.names = set()
        cleanup.push(f"podman storage {self.root}", self.destroy)
        self._create_network()

    def _create_network(self):
        # podman 4.3 picks the bridge's name itself (podmanN) and has no option for it: create
        # the network, then name the bridge in its config file, which podman reads on use.
        self.cmd(["network", "create", "--disable-dns", "--subnet", self.subnet, self.network])
        path = self.netdir / f"{self.network}.json"
        cfg = json.loads(path.read_text())
        cfg["network_interface"] = self.bridge
        path.write_text(json.dumps(cfg, indent=1))

    def cmd(self, args, check=True, capture=True):
        p = subprocess.run(self.base + args, capture_output=capture, text=True)
        if check and p.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} exited {p.returncode}: {(p.stderr or '')[-1500:]}")
        return (p.stdout or "").strip()

    def pull(self, ref):
        self.cmd(["pull", "--quiet", "--tls-verify=false", ref])

    def run_argv(self, name, image, argv, network=True, volumes=(), extra=()):
        """The `podman run -d` command line for one container."""
        self.names.add(name)
        vol = []
        for host, guest in volumes:
            vol += ["-v", f"{host}:{guest}"]
        return self.base + ["run", "-d", "--name", name, *PODMAN_RUN_FLAGS,
                            "--cgroup-parent", f"/{self.cgroup_parent}",
                            "--network", self.network if network else "none",
                            *vol, *extra, image, *argv]

    def rm_argv(self, names):
        return self.base + ["rm", "-f", "-t", "0", *names]

    def conmon_pid(self, name):
        return int(self.cmd(["inspect", "-f", "{{.State.ConmonPid}}", name]))

    def containers(self):
        out = self.cmd(["ps", "-a", "--format", "{{.Names}}"], check=False)
        return [n for n in out.split() if n]

    def remove_all(self):
        names = self.containers()
        if names:
            self.cmd(self.rm_argv(names)[len(self.base):], check=False)
        self.names.clear()

    def destroy(self):
        self.remove_all()
        self.cmd(["network", "rm", "-f", self.network], check=False)
        self.cmd(["rmi", "-a", "-f"], check=False)
        kernel.unmount_all(self.root, self.runroot)
        kernel.delete_link(self.bridge)
        kernel.remove_cgroup_tree(self.cgroup_parent)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
        shutil.rmtree(self.netdir, ignore_errors=True)


class Runc:
    """runc with its own state root and cgroup parent; one bundle (a config.json pointing at
    the shared read-only rootfs) per container."""

    def __init__(self, scratch, tag, rootfs, cleanup):
        self.scratch = Path(scratch) / "runc-bundles"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.state = run_dir(f"bench-{tag}-runc-")
        self.rootfs = Path(rootfs)
        self.cgroup_parent = f"btr{tag}-runc"
        self.base = ["runc", "--root", str(self.state)]
        self.template = self._template()
        cleanup.push(f"runc state {self.state}", self.destroy)

    def _template(self):
        d = self.scratch / "template"
        d.mkdir(exist_ok=True)
        subprocess.run(["runc", "spec"], cwd=d, check=True)
        spec = json.loads((d / "config.json").read_text())
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["process"]["terminal"] = False
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        return spec

    def bundle(self, cid, argv, mounts=()):
        """Writes the bundle of container `cid`; returns its dir."""
        spec = json.loads(json.dumps(self.template))
        spec["process"]["args"] = list(argv)
        spec["linux"]["cgroupsPath"] = f"/{self.cgroup_parent}/{cid}"
        for host, guest in mounts:
            spec["mounts"].append({"destination": guest, "type": "bind", "source": str(host),
                                   "options": ["rbind", "rw"]})
        d = self.scratch / cid
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps(spec))
        return d

    def create(self, cid, bundle):
        # The container inherits runc's stdio: a pipe here would never see EOF.
        log = Path(bundle) / "runc.log"
        with open(log, "wb") as out:
            p = subprocess.run(self.base + ["create", "--bundle", str(bundle), cid],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        if p.returncode != 0:
            raise RuntimeError(f"runc create {cid} exited {p.returncode}: {log.read_text()[-1000:]}")

    def start(self, cid):
        p = subprocess.run(self.base + ["start", cid], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"runc start {cid} exited {p.returncode}: {p.stderr[-1000:]}")

    def delete(self, cid):
        subprocess.run(self.base + ["delete", "-f", cid], capture_output=True)
        shutil.rmtree(self.scratch / cid, ignore_errors=True)

    def containers(self):
        p = subprocess.run(self.base + ["list", "-q"], capture_output=True, text=True)
        return p.stdout.split()

    def destroy(self):
        for cid in self.containers():
            self.delete(cid)
        kernel.remove_cgroup_tree(self.cgroup_parent)
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)
