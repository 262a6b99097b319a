"""The bench image: busybox-static plus bench/marker.c, built without the internet.

One rootfs directory serves every tool: runc runs it as a bundle, and an OCI image of it (one
gzip layer, written here with the standard library) is pushed with skopeo to the run's own
docker-registry, from where both berth and podman pull it: the identical image, digest for
digest.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
BUSYBOX = "/bin/busybox"


def compile_static(src, out):
    subprocess.run(["gcc", "-O2", "-static", "-o", str(out), str(src)], check=True)
    return out


def build_rootfs(d, marker):
    """busybox with its applets as symlinks, /bin/marker, minimal /etc, and the mount points a
    read-only root needs (runc can't create them there)."""
    d = Path(d)
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "m", "root", "var/run"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, d / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        p = d / applet
        if not p.exists() and not p.is_symlink():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to("/bin/busybox")
    shutil.copy(marker, d / "bin/marker")
    os.chmod(d / "bin/marker", 0o755)
    (d / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (d / "etc/group").write_text("root:x:0:\n")
    os.chmod(d / "tmp", 0o1777)
    return d


def _tar_bytes(rootfs):
    buf = io.BytesIO()

    def clean(info):
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 1700000000
        return info

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(Path(rootfs).rglob("*")):
            tf.add(p, arcname=str(p.relative_to(rootfs)), recursive=False, filter=clean)
    return buf.getvalue()


def oci_layout(rootfs, out, tag="bench"):
    """Writes an OCI image layout of `rootfs` (one gzip layer) at `out`; returns `out`."""
    out = Path(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest

    raw = _tar_bytes(rootfs)
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)}
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                   "size": len(config)},
        "layers": [layer],
    }).encode()
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (out / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
                       "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    return out


class BenchImage:
    """The rootfs dir, and the image's reference in the run's registry."""

    def __init__(self, scratch, registry):
        scratch = Path(scratch)
        marker = compile_static(BENCH / "marker.c", scratch / "marker")
        self.rootfs = build_rootfs(scratch / "rootfs", marker)
        layout = oci_layout(self.rootfs, scratch / "oci")
        self.ref = f"{registry.addr}/bench/bb:1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:bench",
                        f"docker://{self.ref}"], check=True)
        shutil.rmtree(layout, ignore_errors=True)
