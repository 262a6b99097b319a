"""Pulling a ~250 MB, 4-layer image from a local registry: berth against podman and skopeo.

The scenario starts its own docker-registry on a free port, builds the image (many files of
mixed, partly compressible content, gzip layers), pushes it with skopeo, then times, interleaved:
- `berth pull` (download + verify + decompress + unpack) against `podman pull` into a fresh
  storage root (its pull also unpacks the layers);
- `berth pull --download-only` (download + verify into the blob store) against
  `skopeo copy docker://… oci:DIR` (download + verify into an OCI layout);
- the same with both stores on tmpfs, where the filesystem does not dominate;
- berth's peak RSS during the full pull (against podman's).
Every run starts from an empty store, so nothing is reused between samples.
"""

import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

TITLE = "Image pull: berth vs podman pull and skopeo copy"
DESCRIPTION = (
    "A ~250 MB (uncompressed), 4-layer gzip image with ~8000 files pulled from a local "
    "docker-registry. Full pull = download + sha256 + decompress + unpack, against "
    "`podman pull` (fresh `--root`), with both stores on the root ext4 and both on tmpfs "
    "(this VM's ext4 makes file creation slow and erratic); download phase = `berth pull --download-only` against "
    "`skopeo copy` to an OCI dir; peak RSS of `berth pull` (against podman's) from "
    "`/usr/bin/time`. Each sample starts from an empty store. Targets (issue 3): pull + verify + "
    "unpack at least 2x faster than podman's; download + verify no slower than skopeo's; peak RSS "
    "under 64 MB."
)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_registry(work):
    port = free_port()
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


def file_content(rng, size):
    """Roughly 2.5:1 under gzip, like binaries and text mixed."""
    words = [b"container", b"layer", b"digest", b"overlay", b"registry", b"berth", b"manifest"]
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.12:
            out += rng.randbytes(min(4096, size - len(out)))
        else:
            out += b" ".join(rng.choice(words) for _ in range(200)) + b"\n"
    return bytes(out[:size])


def build_layout(work, total_mb, layers, files_per_layer):
    """Writes an OCI layout with `layers` gzip layers; returns its path."""
    rng = random.Random(42)
    layout = work / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    per_layer = total_mb * (1 << 20) // layers
    descs, diff_ids = [], []
    for n in range(layers):
        tar_path = work / f"layer{n}.tar"
        with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tf:
            for d in range(files_per_layer // 50 + 1):
                info = tarfile.TarInfo(f"l{n}/d{d}")
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            size = per_layer // files_per_layer
            for i in range(files_per_layer):
                data = file_content(rng, max(1, int(size * rng.uniform(0.2, 1.8))))
                info = tarfile.TarInfo(f"l{n}/d{i // 50}/f{i}")
                info.size = len(data)
                info.mode = 0o644
                info.mtime = 1700000000
                tf.addfile(info, io.BytesIO(data))
        raw = tar_path.read_bytes()
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        gz = subprocess.run(["gzip", "-6", "-c", str(tar_path)], check=True, capture_output=True).stdout
        tar_path.unlink()
        digest = hashlib.sha256(gz).hexdigest()
        (blobs / digest).write_bytes(gz)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": "sha256:" + digest, "size": len(gz)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd = hashlib.sha256(config).hexdigest()
    (blobs / cd).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + cd, "size": len(config)},
                           "layers": descs}).encode()
    md = hashlib.sha256(manifest).hexdigest()
    (blobs / md).write_bytes(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + md,
                       "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))
    return layout, sum(d["size"] for d in descs)


def timed(ctx, argv, rss_file=None):
    """Wall seconds; with rss_file, runs under /usr/bin/time and returns (seconds, peak MB)."""
    if rss_file is None:
        return ctx.time_cmd(argv)
    wall = ctx.time_cmd(["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] + argv)
    kb = int(rss_file.read_text().strip().splitlines()[-1])
    return wall, kb / 1024


def run(ctx, quick):
    work = ctx.mkdir("pull")
    total_mb, files = (24, 400) if quick else (250, 2000)
    rounds = 1 if quick else 4
    layout, compressed = build_layout(work, total_mb, 4, files)
    reg, addr = start_registry(work / "registry")
    try:
        ref = f"{addr}/bench/pull:v1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:bench",
                        f"docker://{ref}"], check=True)
        cfg = work / "berth.toml"
        state = work / "state"
        cfg.write_text(f'state_dir = "{state}"\nrun_dir = "{work / "run"}"\n\n'
                       f'[registries."{addr}"]\ninsecure = true\n\n[images]\nmin_free = 0\n')
        berth_rss = []
        podman_rss = []

        def fresh(p):
            shutil.rmtree(p, ignore_errors=True)

        def berth_full():
            fresh(state)
            wall, mb = timed(ctx, [ctx.berth, "--config", str(cfg), "pull", ref], work / "rss")
            berth_rss.append(mb)
            return wall

        def podman_full():
            root = work / "podman"
            fresh(root)
            wall, mb = timed(ctx, ["podman", "--root", str(root), "--runroot", str(work / "podman-run"),
                                   "--storage-driver", "overlay", "pull", "--quiet", "--tls-verify=false", ref],
                             work / "rss")
            podman_rss.append(mb)
            subprocess.run(["podman", "--root", str(root), "--runroot", str(work / "podman-run"),
                            "--storage-driver", "overlay", "rmi", "-af"], capture_output=True)
            fresh(root)
            return wall

        def berth_download():
            fresh(state)
            return timed(ctx, [ctx.berth, "--config", str(cfg), "pull", "--download-only", ref])

        def skopeo_download():
            d = work / "skopeo-out"
            fresh(d)
            return timed(ctx, ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                               f"oci:{d}:bench"])

        # The same on tmpfs, for both: this VM's ext4 makes file creation slow and erratic
        # (see shared/peers.md), which hides the pull pipeline behind the filesystem.
        shm = Path("/dev/shm") / f"berth-bench-{os.getpid()}"
        shm_cfg = work / "berth-shm.toml"
        shm_cfg.write_text(cfg.read_text().replace(f'state_dir = "{state}"', f'state_dir = "{shm / "state"}"'))

        def berth_tmpfs():
            fresh(shm / "state")
            return timed(ctx, [ctx.berth, "--config", str(shm_cfg), "pull", ref])

        def podman_tmpfs():
            root = shm / "podman"
            fresh(root)
            podman = ["podman", "--root", str(root), "--runroot", str(shm / "podman-run"),
                      "--storage-driver", "overlay"]
            wall = timed(ctx, podman + ["pull", "--quiet", "--tls-verify=false", ref])
            subprocess.run(podman + ["rmi", "-af"], capture_output=True)
            fresh(root)
            return wall

        full_b, full_p = ctx.interleave(berth_full, podman_full, rounds)
        try:
            shm_b, shm_p = ctx.interleave(berth_tmpfs, podman_tmpfs, rounds)
        finally:
            fresh(shm)
        dl_b, dl_s = ctx.interleave(berth_download, skopeo_download, rounds)
        fresh(state)
        # Warm-up samples are not counted.
        berth_rss, podman_rss = berth_rss[-rounds:], podman_rss[-rounds:]
        size = f"{total_mb} MB, {compressed / (1 << 20):.0f} MB gzip"
        return [
            {"name": f"pull + verify + unpack ({size})", "unit": "s", "berth": full_b,
             "peer": full_p, "peer_name": "podman pull",
             "target": {"text": ">= 2x faster than podman (berth/peer <= 0.5)", "ratio_max": 0.5},
             "if_missed": "Profile (strace -c, /usr/bin/time): on this VM's ext4 a berth pull spends "
                          "1.6-3.4 s in the kernel against 0.4 s of its own user time; its 8355 file "
                          "creations take ~790 us each in openat (21 us on tmpfs) and the 4 syncfs "
                          "0.18 s. Both tools create the same files, so the filesystem sets the pace: "
                          "on tmpfs (next row) berth is ~4x faster than podman"},
            {"name": "pull + verify + unpack, store on tmpfs", "unit": "s", "berth": shm_b,
             "peer": shm_p, "peer_name": "podman pull",
             "target": {"text": ">= 2x faster than podman (berth/peer <= 0.5)", "ratio_max": 0.5}},
            {"name": "download + verify only", "unit": "s", "berth": dl_b, "peer": dl_s,
             "peer_name": "skopeo copy to oci:",
             "target": {"text": "no slower than skopeo (berth/peer <= 1)", "ratio_max": 1.0}},
            {"name": "peak RSS during pull", "unit": "MB", "berth": berth_rss, "peer": podman_rss,
             "peer_name": "podman pull", "target": {"text": "< 64 MB", "max": 64.0}},
        ]
    finally:
        os.killpg(reg.pid, 15)
        reg.wait()
