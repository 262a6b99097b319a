"""Kernel objects: picking free ports and subnets, and finding (and, at cleanup, removing)
what carries one berth instance's names: links, mounts, cgroups, netns files, nftables table.

Only objects named from an instance this run made are ever touched (see agent/src/names.rs)."""

import ipaddress
import json
import os
import random
import socket
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _routes():
    out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True)
    nets = []
    for r in json.loads(out.stdout or "[]"):
        dst = r.get("dst")
        if not dst or dst == "default":
            continue
        try:
            nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
        except ValueError:
            pass
    return nets


_taken = set()


def free_subnet():
    """A /24 in 10.192.0.0/12 that no route here covers or overlaps, random so that parallel
    runs (and the tests, which pick from 10.240.0.0/12) don't collide."""
    routes = _routes()
    rng = random.Random()
    for _ in range(2000):
        net = ipaddress.ip_network(f"10.{rng.randrange(192, 208)}.{rng.randrange(256)}.0/24")
        if net in _taken or any(net.overlaps(r) for r in routes):
            continue
        _taken.add(net)
        return str(net)
    raise RuntimeError("no free /24 in 10.192.0.0/12")


def hierarchies():
    """Every cgroup hierarchy root (each v1 controller mount and the unified one)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] in ("cgroup", "cgroup2"):
            out.append(Path(fields[4]))
    return out


def remove_cgroup_tree(rel):
    """rmdir a cgroup and its children, deepest first, in every hierarchy (only empty ones go:
    the kernel refuses to remove a cgroup with processes)."""
    left = []
    for h in hierarchies():
        d = h / rel.strip("/")
        if not d.is_dir():
            continue
        subs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for sub in subs + [d]:
            try:
                sub.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(str(sub))
    return left


def cgroup_procs(rel):
    """Pids in a cgroup subtree (any hierarchy)."""
    pids = set()
    for h in hierarchies():
        d = h / rel.strip("/")
        if d.is_dir():
            for f in d.rglob("cgroup.procs"):
                try:
                    pids.update(int(x) for x in f.read_text().split())
                except OSError:
                    pass
    return pids


def mounts_under(*dirs):
    """Mount points (ours, in this mount namespace) at or below any of `dirs`."""
    roots = [os.path.realpath(d) for d in dirs]
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if any(mp == r or mp.startswith(r + "/") for r in roots):
            out.append(mp)
    return out


def unmount_all(*dirs):
    for mp in sorted(mounts_under(*dirs), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def links_with_alias(prefix):
    """Interfaces whose alias (IFLA_IFALIAS) starts with `prefix`."""
    out = []
    for d in Path("/sys/class/net").iterdir():
        try:
            alias = (d / "ifalias").read_text().strip()
        except OSError:
            continue
        if alias.startswith(prefix):
            out.append(d.name)
    return out


def link_exists(name):
    return (Path("/sys/class/net") / name).exists()


def delete_link(name):
    if link_exists(name):
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def bridge_ports(bridge):
    p = Path("/sys/class/net") / bridge / "brif"
    return sorted(x.name for x in p.iterdir()) if p.is_dir() else []


def nft_table_exists(family, name):
    return subprocess.run(["nft", "list", "table", family, name], capture_output=True).returncode == 0


def delete_nft_table(family, name):
    if nft_table_exists(family, name):
        subprocess.run(["nft", "delete", "table", family, name], capture_output=True)
