#!/usr/bin/env python3
"""Builds a small OCI image archive from Debian's busybox-static, with no registry and no
internet: a rootfs (busybox and its applet links, a web page), one gzip layer, its config and
manifest, in an OCI image layout tarred into ARCHIVE. berth imports it from an
`image = "oci-archive:ARCHIVE"` spec.

    mkimage.py ARCHIVE NAME:TAG "PAGE TEXT"
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time


def add_bytes(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def layer(page):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "etc", "www", "root"]:
            add_dir(tar, d)
        add_dir(tar, "tmp", 0o1777)
        with open("/bin/busybox", "rb") as f:
            add_bytes(tar, "bin/busybox", f.read(), 0o755)
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True)
        for a in applets.stdout.split():
            if a != "busybox":
                link = tarfile.TarInfo("bin/" + a)
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                tar.addfile(link)
        add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/false\n")
        add_bytes(tar, "etc/group", b"root:x:0:\nwww:x:33:\n")
        add_bytes(tar, "www/index.html", page.encode())
    return buf.getvalue()


def main():
    archive, ref, page = sys.argv[1], sys.argv[2], sys.argv[3]
    raw = layer(page + "\n")
    gz = gzip.compress(raw, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(os.uname().machine, os.uname().machine)
    config = json.dumps({
        "architecture": arch,
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"],
            "Env": ["PATH=/bin"],
            "ExposedPorts": {"80/tcp": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    blob = lambda b: ("sha256:" + hashlib.sha256(b).hexdigest(), b)
    config_d, _ = blob(config)
    layer_d, _ = blob(gz)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": len(gz)}],
    }).encode()
    manifest_d, _ = blob(manifest)
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_d,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }],
    }).encode()
    tmp = archive + ".tmp"
    with tarfile.open(tmp, "w") as out:
        add_bytes(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(out, "index.json", index)
        for d, data in [(config_d, config), (layer_d, gz), (manifest_d, manifest)]:
            add_bytes(out, "blobs/sha256/" + d[7:], data)
    os.replace(tmp, archive)
    print(f"built {archive} ({ref}, {len(gz)} bytes compressed)")


if __name__ == "__main__":
    main()
