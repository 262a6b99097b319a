"""berth validate on a directory of generated specs."""

import random

TITLE = "Validating 1000 specs"
DESCRIPTION = """
`berth validate DIR` on a directory of generated spec files: one-liners, rich specs with ports,
mounts, health checks and limits, some with drop-ins and env files; every file read, parsed,
validated, normalised, and the whole set checked for port clashes and dependency cycles. Wall
time of the whole process, start to exit. No peer: podman's quadlet generator, the nearest
equivalent, is not in Debian 12's podman 4.3.
"""

RICH = """image = "ghcr.io/example/app-{i}:1.{i}"
command = ["--listen", "0.0.0.0:{port}"]
user = "1000:1000"
depends_on = [{deps}]
ports = ["{port}:8080", "127.0.0.1:{mport}:9100/udp"]
mounts = ["/srv/app-{i}:/data:ro", "vol-{i}:/var/cache", {{ type = "tmpfs", target = "/tmp", size = "64m" }}]
{env_files}
[env]
APP_ID = "{i}"
WORKERS = {workers}

[update]
strategy = "start-then-kill"
window = "02:00-04:00"

[resources]
memory = "{mem}m"
cpus = 0.5
pids = 256

[health]
command = ["/bin/check", "--port", "{port}"]
interval = "15s"

[security]
cap_drop = ["ALL"]
cap_add = ["NET_BIND_SERVICE"]
"""


def generate(d, n, seed=1):
    rng = random.Random(seed)
    for i in range(n):
        name = f"c{i:04d}"
        kind = i % 4
        if kind == 0:
            (d / f"{name}.toml").write_text(f'image = "nginx:1.{i % 30}"\n')
            continue
        deps = ", ".join(f'"c{j:04d}"' for j in sorted({rng.randrange(0, i)} if i else set()))
        env_files = ""
        if kind == 2:
            (d / f"{name}.env").write_text("".join(f"K{k}=v{k}\n" for k in range(20)))
            env_files = f'env_files = ["{name}.env"]'
        (d / f"{name}.toml").write_text(RICH.format(
            i=i, port=10000 + i, mport=30000 + i, deps=deps, env_files=env_files,
            workers=rng.randrange(1, 9), mem=rng.choice([128, 256, 512])))
        if kind == 3:
            dropins = d / f"{name}.toml.d"
            dropins.mkdir()
            (dropins / "10-host.toml").write_text('[resources]\nmemory = "1g"\n')
            (dropins / "20-env.toml").write_text('[env]\nREGION = "eu"\n')


def run(ctx, quick):
    n = 100 if quick else 1000
    rounds = 5 if quick else 15
    d = ctx.mkdir("specs")
    generate(d, n)
    argv = [ctx.berth, "validate", str(d)]
    samples, _ = ctx.interleave(lambda: ctx.time_cmd(argv), None, rounds)
    return [{
        "name": f"validate {n} specs (wall)",
        "unit": "s",
        "berth": samples,
        "peer": None,
        "peer_name": None,
    }]
