"""What the bench needs on the machine: Debian packages, installed with apt only when missing."""

import os
import subprocess
import sys

# Package -> why the bench needs it.
PACKAGES = {
    "podman": "the main peer",
    "conmon": "podman's per-container monitor (measured against berth's shim)",
    "runc": "the runtime peer (podman runs with it too: crun refuses hybrid cgroups)",
    "skopeo": "pushes the bench image to the local registry; the download peer",
    "docker-registry": "the run's own local registry",
    "busybox-static": "the bench image's userland",
    "gcc": "compiles bench/marker.c and bench/floor.c",
    "libc6-dev": "static linking of bench/marker.c",
    "iperf3": "network throughput",
    "socat": "the userland proxy on the network path",
    "nftables": "the hand-written DNAT peer; checks",
    "iproute2": "checks of links and routes",
    "util-linux": "unshare and nsenter for throwaway namespaces",
}


def missing():
    out = []
    for pkg in PACKAGES:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if "install ok installed" not in p.stdout:
            out.append(pkg)
    return out


def ensure():
    """Installs the missing packages (apt-get, as root); returns their names."""
    need = missing()
    if not need:
        return []
    print(f"bench: installing {' '.join(need)}", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *need], check=True, env=env, stdout=subprocess.DEVNULL)
    return need
