"""An update of one file in a ~100 MB zstd:chunked layer: bytes and time, berth against podman.

Builds v1 (busybox and 100 incompressible files of 1 MiB, one layer) and v2 (one file changed)
with podman, pushes both as zstd:chunked to a docker-registry of its own, and measures, through
a byte-counting TCP relay in front of the registry, the v1 -> v2 update:
- `berth pull v2` into a store that holds v1 (a partial pull);
- `podman pull v2` into a storage root that holds v1, with `enable_partial_images` (podman's
  own partial pull of zstd:chunked);
- `berth pull v2` into an empty store (a full pull), for scale.
Every sample starts from a store holding v1 only (pulled before the sample, not counted).
"""

import os
import shutil
import socket
import subprocess
import threading
import time


def start_registry(work):
    """A docker-registry of the scenario's own on a free port: (process, address)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    (work / "storage").mkdir(parents=True, exist_ok=True)
    cfg = work / "registry.yml"
    cfg.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("docker-registry did not start")

TITLE = "Partial pull: a one-file update of a zstd:chunked image, berth vs podman"
DESCRIPTION = (
    "v1 -> v2 of a podman-built zstd:chunked image (one ~100 MB layer of 100 incompressible "
    "1 MiB files plus busybox; v2 changes one file), from a local docker-registry, bytes counted "
    "by a TCP relay in front of it. berth's update pull against `podman pull` with "
    "`enable_partial_images` (both stores hold v1), and berth's full pull of v2 for scale. "
    "Targets (issue 19): the update downloads under 5% of the layer; no more bytes than podman."
)


class Relay:
    """A TCP relay that counts the bytes the registry sends."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sent = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            host, port = self.upstream.split(":")
            u = socket.create_connection((host, int(port)))
            threading.Thread(target=self.pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c, True), daemon=True).start()

    def pipe(self, src, dst, count):
        try:
            while True:
                b = src.recv(1 << 16)
                if not b:
                    break
                if count:
                    with self.lock:
                        self.sent += len(b)
                dst.sendall(b)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        with self.lock:
            n, self.sent = self.sent, 0
        return n

    def close(self):
        self.sock.close()


def podman_build_push(work, addr, tag):
    local = f"localhost/berth-bench-partial:{tag}"
    subprocess.run(["podman", "build", "-q", "--layers=false", "-t", local, str(work / "ctx")],
                   check=True, capture_output=True)
    subprocess.run(["podman", "push", "-q", "--tls-verify=false", "--compression-format", "zstd:chunked",
                    local, f"{addr}/bench/partial:{tag}"], check=True, capture_output=True)
    subprocess.run(["podman", "rmi", "-f", local], capture_output=True)


def run(ctx, quick):
    work = ctx.mkdir("partial")
    files, size = (20, 1 << 18) if quick else (100, 1 << 20)
    rounds = 1 if quick else 3
    root = work / "ctx" / "root"
    (root / "bin").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for i in range(files):
        (root / "data" / f"f{i:03}").write_bytes(os.urandom(size))
    (work / "ctx" / "Containerfile").write_text('FROM scratch\nCOPY root/ /\nCMD ["/bin/busybox", "sleep", "1000"]\n')
    reg, addr = start_registry(work / "registry")
    relay = Relay(addr)
    try:
        podman_build_push(work, addr, "v1")
        (root / "data" / "f007").write_bytes(os.urandom(size))
        podman_build_push(work, addr, "v2")
        ref = lambda tag: f"{relay.addr}/bench/partial:{tag}"  # noqa: E731
        state = work / "state"
        cfg = work / "berth.toml"
        cfg.write_text(f'state_dir = "{state}"\nrun_dir = "{work / "run"}"\n\n'
                       f'[registries."{relay.addr}"]\ninsecure = true\n\n[images]\nmin_free = 0\n')
        storage_conf = work / "storage.conf"
        proot, prun = work / "podman", work / "podman-run"
        storage_conf.write_text(
            f'[storage]\ndriver = "overlay"\nrunroot = "{prun}"\ngraphroot = "{proot}"\n'
            '[storage.options]\npull_options = {enable_partial_images = "true", use_hard_links = "false"}\n')
        penv = dict(os.environ, CONTAINERS_STORAGE_CONF=str(storage_conf))
        berth = [ctx.berth, "--config", str(cfg), "pull"]
        podman = ["podman", "pull", "--quiet", "--tls-verify=false"]
        bytes_ = {"berth": [], "podman": [], "full": []}

        def berth_update():
            shutil.rmtree(state, ignore_errors=True)
            subprocess.run(berth + [ref("v1")], check=True, capture_output=True)
            relay.take()
            wall = ctx.time_cmd(berth + [ref("v2")])
            bytes_["berth"].append(relay.take() / (1 << 20))
            return wall

        def podman_update():
            subprocess.run(["podman", "rmi", "-af"], env=penv, capture_output=True)
            shutil.rmtree(proot, ignore_errors=True)
            subprocess.run(podman + [ref("v1")], env=penv, check=True, capture_output=True)
            relay.take()
            wall = ctx.time_cmd(podman + [ref("v2")], env=penv)
            bytes_["podman"].append(relay.take() / (1 << 20))
            return wall

        def berth_full():
            shutil.rmtree(state, ignore_errors=True)
            relay.take()
            wall = ctx.time_cmd(berth + [ref("v2")])
            bytes_["full"].append(relay.take() / (1 << 20))
            return wall

        t_b, t_p = ctx.interleave(berth_update, podman_update, rounds)
        t_f, _ = ctx.interleave(berth_full, None, rounds)
        subprocess.run(["podman", "rmi", "-af"], env=penv, capture_output=True)
        shutil.rmtree(proot, ignore_errors=True)
        layer_mb = files * size / (1 << 20)
        last = lambda k: bytes_[k][-rounds:]  # noqa: E731  (warm-up samples are not counted)
        return [
            {"name": f"v1 -> v2 update, MB downloaded (layer ~{layer_mb:.0f} MB)", "unit": "MB",
             "berth": last("berth"), "peer": last("podman"), "peer_name": "podman pull (partial)",
             "headline": True,
             "target": {"text": f"< 5% of the layer ({layer_mb * 0.05:.1f} MB)", "max": layer_mb * 0.05}},
            {"name": "v1 -> v2 update, time", "unit": "s", "berth": t_b, "peer": t_p,
             "peer_name": "podman pull (partial)"},
            {"name": "v2 full pull (empty store), MB downloaded", "unit": "MB", "berth": last("full"),
             "peer": None, "peer_name": None},
            {"name": "v2 full pull (empty store), time", "unit": "s", "berth": t_f, "peer": t_b,
             "peer_name": "berth update (partial)", "lower_is_better": True},
        ]
    finally:
        relay.close()
        os.killpg(reg.pid, 15)
        reg.wait()
