"""The baseline: bench/seed_script.sh (the seed's steps as a plain script, `openstack` CLI +
OpenSSH) against a fresh remote cloud of the same localcloud, joined to the home that
bootstrap_home made. Runs it twice (a first add, then a rerun: what happens), counts what
it made, and removes everything it made, also on failure.

Pure parts (tests/test_bench.py): `parse_steps`, `last_error`, `grown`, `rerun_outcome`,
`rows`, `describe`.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hgbench.table import Row

SCRIPT = Path(__file__).resolve().parents[1] / "seed_script.sh"
SEED_CLOUD = "marburg"  # a third cloud: nothing of hybridgrid's in it
SEED_SUBNET = "192.168.200.0/24"  # outside the registry's site pool (192.168.64.0/18)
SEED_WG = "10.0.0.250"  # the overlay address, far from hybridgrid's allocations (.2 up)
RATIO_BOUND = 0.6  # add-site wall ÷ seed script wall (issue 20)
SCRIPT_TIMEOUT = 900.0  # s: 2 serial boots of 20 s and ~30 CLI calls fit many times over
_STEP = re.compile(r"^== (?P<t>\d+(?:\.\d+)?) (?:step (?P<n>\d+): (?P<name>.*)|done)$")


class SeedStep(BaseModel):
    number: int
    name: str
    seconds: float


class SeedRun(BaseModel):
    wall: float
    returncode: int
    steps: list[SeedStep]
    error: str = ""  # the last line on stderr when the script failed
    calls: dict[str, tuple[int, int]] = {}  # cloud → (API calls, mutating), localcloud's count

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def failed_step(self) -> SeedStep | None:
        return self.steps[-1] if not self.ok and self.steps else None


def parse_steps(stdout: str, end: float) -> list[SeedStep]:
    """The script's "== <epoch> step <n>: <what>" lines → each step's duration, up to the next
    step, the "done" line or (a failed run) `end`, the epoch when the script exited."""
    marks: list[tuple[float, int | None, str]] = []
    for line in stdout.splitlines():
        m = _STEP.match(line.strip())
        if m:
            n = m.group("n")
            marks.append((float(m.group("t")), int(n) if n else None, m.group("name") or ""))
    steps = []
    for i, (t, n, name) in enumerate(marks):
        if n is None:
            break
        t_next = marks[i + 1][0] if i + 1 < len(marks) else end
        steps.append(SeedStep(number=n, name=name, seconds=max(0.0, t_next - t)))
    return steps


def last_error(stderr: str) -> str:
    """The last non-empty stderr line (the CLI's or ssh's error), trimmed for the table."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Kinds of resources a run added to, and by how many."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} +{n}" for kind, n in counts.items())


def rerun_outcome(rerun: SeedRun, extra: dict[str, int]) -> str:
    """What a second run of the script does: fails (where, with which error) and/or
    duplicates resources (`extra`: what it added on top of the first run's)."""
    dups = _kinds(extra)
    if not rerun.ok:
        step = rerun.failed_step
        where = f"step {step.number} ({step.name})" if step else "before step 1"
        left = f"; duplicated before that: {dups}" if dups else "; no duplicate left"
        error = rerun.error.rstrip(".") or f"exit {rerun.returncode}"
        return f"fails at {where}: {error}{left}"
    if dups:
        return f"completes again and duplicates: {dups}"
    return "completes again, no duplicate"


def rows(
    first: SeedRun,
    second: SeedRun,
    extra: dict[str, int],
    addsite_wall: float,
    rerun_wall: float,
    boot: float,
) -> list[Row]:
    """The table's rows: the script's wall time, add-site ÷ script (bound 0.6) for a first
    add, and hybridgrid's no-op rerun ÷ script with what the script's own rerun did."""
    if not first.ok:
        step = first.failed_step
        why = f"seed script failed at step {step.number if step else 0}: {first.error}"
        return [Row(figure="seed script wall", value=None, note=why), unmeasured(why)]
    total = sum(t for t, _ in first.calls.values())
    mutating = sum(m for _, m in first.calls.values())
    return [
        Row(
            figure="seed script wall",
            value=first.wall,
            note=f"{total} API calls ({mutating} mutating); 2 boots of {boot:.0f} s one after "
            f"the other (server create --wait); slowest non-boot step: {_slowest(first)}",
        ),
        Row(
            figure="add-site wall ÷ seed script wall",
            value=addsite_wall / first.wall,
            unit="×",
            bound=RATIO_BOUND,
            note=f"{addsite_wall:.1f} s ÷ {first.wall:.1f} s (first add, same faults)",
        ),
        Row(
            figure="no-op rerun ÷ seed script wall",
            value=rerun_wall / first.wall,
            unit="×",
            note=f"{rerun_wall:.1f} s ÷ {first.wall:.1f} s; the script run again "
            f"({second.wall:.1f} s): {rerun_outcome(second, extra)}",
        ),
    ]


def unmeasured(why: str) -> Row:
    """The ratio row when the script gave no wall time: pending (not met)."""
    return Row(
        figure="add-site wall ÷ seed script wall",
        value=None,
        unit="×",
        bound=RATIO_BOUND,
        note=why,
    )


BOOT_STEP = 3  # "the VPN node and one worker": the two `server create --wait`


def _slowest(run: SeedRun) -> str:
    rest = [s for s in run.steps if s.number != BOOT_STEP]
    if not rest:
        return "-"
    s = max(rest, key=lambda s: s.seconds)
    return f"{s.number} ({s.name}) {s.seconds:.1f} s"


def describe(run: SeedRun, made: dict[str, int], before: dict[str, int]) -> str:
    """The notes' lines: each step's seconds, the API calls per cloud, what it made."""
    steps = " → ".join(f"{s.number} {s.name} {s.seconds:.1f}" for s in run.steps)
    calls = ", ".join(f"{c} {t} ({m} mutating)" for c, (t, m) in run.calls.items())
    what = _kinds(grown(before, made))
    status = "ok" if run.ok else f"FAILED (exit {run.returncode}): {run.error}"
    return (
        f"seed script, first run: {run.wall:.1f} s, {status}\n  steps (s): {steps}\n"
        f"  API calls: {calls}\n  made: {what or 'nothing'}"
    )


# ---------------------------------------------------------------- the environment


class SeedEnv(BaseModel):
    """What the script is told (environment variables) and what the bench cleans up with."""

    vars: dict[str, str]
    work: str
    home_cloud: str
    home_sg: str
    master_port: str
    home_rules_before: list[str]
    master_pairs_before: list[dict[str, Any]]


async def prepare(handle, registry: str, work: Path) -> SeedEnv:
    """The home as the registry knows it, the person's key (the home's SSH key, 0600 in a
    0700 directory) and a snapshot of the home side the script will touch."""
    from hybridgrid.blocks.loading import ssh_key
    from hybridgrid.blocks.registry import load_registry
    from localcloud.clientconf import connect
    from localcloud.dataplane.cli import proxy_command

    home = (await load_registry(registry)).home
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    key = await ssh_key(home.ssh_key_block or f"hg-{home.name}-ssh")
    key_path = _write_key(work, key.private_key.get_secret_value())
    conn = connect(handle.state_dir, home.cloud)
    sg = conn.network.find_security_group(f"hg-{home.name}-sg", ignore_missing=False)
    master = conn.compute.find_server(home.master, ignore_missing=False)
    port = next(conn.network.ports(device_id=master.id))
    workers = [conn.compute.find_server(w, ignore_missing=False) for w in home.workers]
    settings = {
        "OS_CLIENT_CONFIG_FILE": str(handle.clouds_yaml),
        "OPENSTACK": str(Path(sys.executable).with_name("openstack")),
        "SITE": SEED_CLOUD,
        "SITE_CLOUD": SEED_CLOUD,
        "SITE_SUBNET": SEED_SUBNET,
        "SITE_WG": SEED_WG,
        "HOME_CLOUD": home.cloud,
        "HOME_SUBNET": str(home.subnet),
        "HOME_SG": sg.name,
        "HUB_WG": str(home.wg_address),
        "MASTER": home.master,
        "MASTER_IP": str(home.public_ips["master"]),
        "HOME_WORKERS": " ".join(_fixed_ip(w) for w in workers),
        "SSH_KEY": str(key_path),
        "SSH_USER": key.user,
        "SSH_PROXY": proxy_command(handle.state_dir),
        "WORK": str(work),
    }
    return SeedEnv(
        vars=settings,
        work=str(work),
        home_cloud=home.cloud,
        home_sg=sg.id,
        master_port=port.id,
        home_rules_before=[r["id"] for r in sg.security_group_rules],
        master_pairs_before=list(port.allowed_address_pairs or []),
    )


def _write_key(work: Path, private_key: str) -> Path:
    """Private key 0600 (created so, never briefly wider), its .pub by `ssh-keygen -y`."""
    path = work / "id_home"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private_key.rstrip("\n") + "\n")
    pub = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    )
    (work / "id_home.pub").write_text(pub.stdout)
    return path


def _fixed_ip(server) -> str:
    for addrs in (server.addresses or {}).values():
        for a in addrs:
            if a.get("OS-EXT-IPS:type", "fixed") == "fixed":
                return a["addr"]
    raise RuntimeError(f"server {server.name} has no fixed IP")


# ---------------------------------------------------------------- one run


def run(handle, env: SeedEnv) -> SeedRun:
    """The script once, timed; its step marks; localcloud's count of its API calls."""
    handle.reset_stats()
    t0 = time.perf_counter()
    returncode, out, err = _bounded(["bash", str(SCRIPT)], {**os.environ, **env.vars})
    wall = time.perf_counter() - t0
    stats = handle.stats()
    calls = {
        c: (int(stats.get(c, {}).get("total", 0)), int(stats.get(c, {}).get("mutating", 0)))
        for c in (env.home_cloud, SEED_CLOUD)
    }
    log = Path(env.work) / f"run-{int(time.time())}.log"
    log.write_text(out + "\n--- stderr\n" + err)
    return SeedRun(
        wall=wall,
        returncode=returncode,
        steps=parse_steps(out, time.time()),
        error="" if returncode == 0 else last_error(err),
        calls=calls,
    )


def _bounded(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run in its own process group; past SCRIPT_TIMEOUT the group (the script's ssh and
    openstack children too) is killed by its id."""
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=env["WORK"],  # not where a `localcloud` directory would shadow the package
    )
    try:
        out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        err += f"\nseed: killed after {SCRIPT_TIMEOUT:.0f} s"
    return proc.returncode, out, err


def count(handle, env: SeedEnv) -> dict[str, int]:
    """What the script makes, by kind: in the seed cloud (named `<site>-…`, floating IPs)
    and on the home side (rules in the home group, pairs on the master's port)."""
    from localcloud.clientconf import connect

    site = connect(handle.state_dir, SEED_CLOUD)
    home = connect(handle.state_dir, env.home_cloud)
    prefix = f"{SEED_CLOUD}-"

    def named(items) -> int:
        return sum(1 for x in items if (x.name or "").startswith(prefix))

    return {
        "networks": named(site.network.networks()),
        "subnets": named(site.network.subnets()),
        "routers": named(site.network.routers()),
        "security groups": named(site.network.security_groups()),
        "servers": named(site.compute.servers()),
        "key pairs": named(site.compute.keypairs()),
        "floating IPs": len(list(site.network.ips())),
        "home group rules": len(home.network.get_security_group(env.home_sg).security_group_rules),
        "master port pairs": len(home.network.get_port(env.master_port).allowed_address_pairs),
    }


# ---------------------------------------------------------------- cleanup


def cleanup(handle, env: SeedEnv) -> list[str]:
    """Remove everything the script made, each part on its own (a failure is reported, the
    rest still goes): the seed cloud's resources, the home group's new rules, the master
    port's pairs as they were, the peer and route on the master, the home workers' route;
    then the copy of the login key. Returns the problems (empty: all clean)."""
    problems = []
    for part in (_clean_site, _clean_home_api, _clean_home_nodes):
        try:
            part(handle, env)
        except Exception as exc:
            problems.append(f"{part.__name__}: {type(exc).__name__}: {str(exc)[:200]}")
    # the login key's copy goes last (the home side was cleaned with it), also with --keep
    Path(env.vars["SSH_KEY"]).unlink(missing_ok=True)
    return problems


def _clean_site(handle, env: SeedEnv) -> None:
    from localcloud.clientconf import connect

    c = connect(handle.state_dir, SEED_CLOUD)
    prefix = f"{SEED_CLOUD}-"
    for s in [s for s in c.compute.servers() if s.name.startswith(prefix)]:
        c.compute.delete_server(s, ignore_missing=True)
    for ip in list(c.network.ips()):
        c.network.delete_ip(ip, ignore_missing=True)
    for r in [r for r in c.network.routers() if (r.name or "").startswith(prefix)]:
        for p in c.network.ports(device_id=r.id, device_owner="network:router_interface"):
            for f in p.fixed_ips:
                c.network.remove_interface_from_router(r, subnet_id=f["subnet_id"])
        c.network.delete_router(r, ignore_missing=True)
    for n in [n for n in c.network.networks() if (n.name or "").startswith(prefix)]:
        for p in c.network.ports(network_id=n.id):
            c.network.delete_port(p, ignore_missing=True)
        c.network.delete_network(n, ignore_missing=True)
    for g in [g for g in c.network.security_groups() if (g.name or "").startswith(prefix)]:
        c.network.delete_security_group(g, ignore_missing=True)
    for k in [k for k in c.compute.keypairs() if k.name.startswith(prefix)]:
        c.compute.delete_keypair(k, ignore_missing=True)


def _clean_home_api(handle, env: SeedEnv) -> None:
    from localcloud.clientconf import connect

    c = connect(handle.state_dir, env.home_cloud)
    keep = set(env.home_rules_before)
    for r in c.network.get_security_group(env.home_sg).security_group_rules:
        if r["id"] not in keep:
            c.network.delete_security_group_rule(r["id"], ignore_missing=True)
    c.network.update_port(env.master_port, allowed_address_pairs=env.master_pairs_before)


def _clean_home_nodes(handle, env: SeedEnv) -> None:
    """The peer block the script appended to the master's wg0.conf, the live peer (syncconf
    from the file without it) and its route; the home workers' route to the seed subnet."""
    v = env.vars
    marks = f"/^# >>> seed site {v['SITE']}$/,/^# <<< seed site {v['SITE']}$/d"
    master = f"""set -e
sed -i {shlex.quote(marks)} /etc/wireguard/wg0.conf
if ip link show dev wg0 >/dev/null 2>&1; then
  s=$(mktemp); wg-quick strip wg0 > "$s"; wg syncconf wg0 "$s"; rm -f "$s"
fi
ip route del {v["SITE_SUBNET"]} dev wg0 2>/dev/null || true
"""
    config = _cleanup_ssh_config(env)
    _ssh(config, "master", master)
    for ip in v["HOME_WORKERS"].split():
        _ssh(config, f"home-{ip}", f"ip route del {v['SITE_SUBNET']} 2>/dev/null || true\n")


def _cleanup_ssh_config(env: SeedEnv) -> Path:
    v = env.vars
    lines = [f"Host master\n  HostName {v['MASTER_IP']}\n  ProxyCommand {v['SSH_PROXY']}"]
    lines += [
        f"Host home-{ip}\n  HostName {ip}\n  ProxyJump master" for ip in v["HOME_WORKERS"].split()
    ]
    lines.append(
        f"Host *\n  User {v['SSH_USER']}\n  IdentityFile {v['SSH_KEY']}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {env.work}/known_hosts.cleanup\n"
        "  StrictHostKeyChecking accept-new\n  BatchMode yes\n  ConnectTimeout 10\n"
        "  LogLevel ERROR"
    )
    path = Path(env.work) / "ssh_config.cleanup"
    path.write_text("\n".join(lines) + "\n")
    return path


def _ssh(config: Path, host: str, script: str) -> None:
    subprocess.run(
        ["ssh", "-F", str(config), host, "sudo", "sh", "-s"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=config.parent,
    )
