"""Support for the reliability and security suite (conftest.py holds the fixtures): ONE
localcloud (data plane on) for the whole package, a home bootstrapped in registry ``reliab``,
helpers to count what each cloud holds, and a summary printed at the end of the session.

Clouds: bielefeld (home), giessen (remote sites, roomy quotas), marburg (tight quotas and an
expired application credential) and wetzlar (no allowed-address-pairs extension).

Sizes scale with ``HYBRIDGRID_SOAK_RUNS`` (fault soak, default 3) and
``HYBRIDGRID_KILL_STEPS`` (``all`` or a comma list; default 3 sampled step boundaries).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from localcloud import control as server

REGISTRY = "reliab"
HOME_CLOUD = "bielefeld"
SITE_CLOUD = "giessen"
CLOUDS = ["bielefeld", "giessen", "marburg", "wetzlar"]
ROOMY = {
    "instances": 60,
    "cores": 200,
    "ram": 1_000_000,
    "floatingip": 60,
    "network": 60,
    "subnet": 60,
    "router": 60,
    "security_group": 60,
    "security_group_rule": 1000,
    "port": 1000,
}
CLOUD_OPTIONS: dict[str, dict[str, Any]] = {
    "bielefeld": {"quotas": ROOMY},
    "giessen": {"quotas": ROOMY},
    # instances 1: a site with a worker does not fit; floatingip 1: taken by a test's own FIP
    "marburg": {"quotas": {"instances": 1, "floatingip": 1}, "appcred_expires_at": 1.0},
    "wetzlar": {"extensions_disabled": ["allowed-address-pairs"]},
}
HOME_SUBNET = ipaddress.IPv4Network("192.168.66.0/24")
KILL_ENV = "HYBRIDGRID_KILL_AFTER"


def soak_runs() -> int:
    return max(1, int(os.environ.get("HYBRIDGRID_SOAK_RUNS", "3")))


def kill_steps(var: str, steps: tuple[str, ...], default: tuple[str, ...]) -> list[str]:
    """The step boundaries a kill test covers: `var` = "all", a comma list, or unset (the
    default). ``HYBRIDGRID_KILL_STEPS=all`` means every step of every flow's kill test."""
    raw = os.environ.get(var, "")
    if raw == "all" or (not raw and os.environ.get("HYBRIDGRID_KILL_STEPS") == "all"):
        return list(steps)
    chosen = [s.strip() for s in raw.split(",") if s.strip()] or list(default)
    unknown = [s for s in chosen if s not in steps]
    assert not unknown, f"{var}: {unknown} are not steps of {steps}"
    return chosen


# ---------------------------------------------------------------- the summary


class Summary:
    """What the suite measured, printed at the end of the session (pytest_terminal_summary)."""

    def __init__(self) -> None:
        self.bad_input: list[tuple[str, str, int, int]] = []  # case, message, mutating, tagged
        self.faults: list[dict[str, Any]] = []
        self.kills: list[dict[str, Any]] = []
        self.leaks: dict[str, int] = {}
        self.leak_notes: list[str] = []
        self.other: list[str] = []

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.faults:
            out.append("Fault soak (add_remote_site, ~20% injected API errors on both clouds):")
            out.append(
                "  run  site        seed  verified  injected(giessen/bielefeld)  "
                "calls(g/b)  server-deletes  wall-s  dupes/orphans"
            )
            for f in self.faults:
                out.append(
                    f"  {f['run']:>3}  {f['site']:<10}  {f['seed']:>4}  {f['verified']!s:<8}  "
                    f"{f['injected_g']:>5}/{f['injected_b']:<5}{'':17}"
                    f"{f['total_g']:>4}/{f['total_b']:<4}  {f['replaced']:>14}  "
                    f"{f['wall']:>6.1f}  {f['problems']}"
                )
        if self.kills:
            out.append(
                "Kill at step boundaries (process exits 137 after the step; lock slots it left "
                "held, freed as the server's repossessor would; rerun):"
            )
            for k in self.kills:
                out.append(
                    f"  {k.get('flow', 'add'):<6} after {k['step']:<17} killed rc={k['killed_rc']}"
                    f"  locks held={k.get('held', '-')}  rerun rc={k['rerun_rc']}"
                    f"  verified={k['verified']}  problems={k['problems']}"
                )
        if self.bad_input:
            out.append("Bad input (one error each; mutating API calls / tagged resources after):")
            for case, msg, mut, tagged in self.bad_input:
                out.append(f"  {case:<34} mutating={mut} tagged={tagged}  {msg[:150]}")
        if self.leaks:
            out.append("Secret leak scan (hits per place; every count must be 0):")
            for place, n in self.leaks.items():
                out.append(f"  {place:<52} {n}")
            out += [f"  note: {n}" for n in self.leak_notes]
        out += self.other
        return out


SUMMARY = Summary()


# ---------------------------------------------------------------- watching the whole run


class LeakWatch:
    """Everything the run emits that a secret could reach: Python log records (DEBUG, from
    every logger, formatted with tracebacks), texts the tests saw (exceptions, child process
    output) and process argument lists sampled from /proc while the suite runs."""

    MAX_CMDLINES = 20000

    def __init__(self) -> None:
        self.records: list[str] = []
        self.texts: list[str] = []
        self.cmdlines: set[bytes] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handler = _ListHandler(self.records)
        self.started = time.time()

    def start(self) -> None:
        self.ensure()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="cmdline-sampler")
        self._thread.start()

    def ensure(self) -> None:
        """(Re)install the capture: Prefect's logging set-up (dictConfig) may replace the
        root's handlers and level at any point; flows run only after this is called."""
        root = logging.getLogger()
        if self.handler not in root.handlers:
            for h in root.handlers:  # others keep printing what they printed before
                if h.level == logging.NOTSET:
                    h.setLevel(max(root.level, logging.INFO))
            root.addHandler(self.handler)
        root.setLevel(logging.DEBUG)
        # Prefect's loggers have their own level (tests/conftest.py: WARNING); run logs at
        # INFO reach the API and this handler only with it lowered.
        logging.getLogger("prefect").setLevel(logging.INFO)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        logging.getLogger().removeHandler(self.handler)
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("prefect").setLevel(logging.WARNING)

    def _sample(self) -> None:
        # Bounded: at most MAX_CMDLINES distinct argument lists, one sweep every 0.2 s.
        me = os.getpid()
        while not self._stop.wait(0.2):
            self.samples += 1
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) == me:
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                        raw = f.read(65536)
                except OSError:
                    continue
                if raw and len(self.cmdlines) < self.MAX_CMDLINES:
                    self.cmdlines.add(raw)

    def text(self, *parts: Any) -> None:
        for p in parts:
            if p:
                self.texts.append(str(p))


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a record that cannot format carries no text
            self.sink.append(self.format(record))


# ---------------------------------------------------------------- the clouds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rel:
    """The suite's localcloud, Prefect API and helpers."""

    def __init__(self, handle: server.Handle, watch: LeakWatch):
        self.handle = handle
        self.state_dir: Path = handle.state_dir
        self.watch = watch
        self.ssh_private_keys: list[str] = []  # of every SSHKey block this suite made

    # --- clouds
    def conn(self, cloud: str) -> Any:
        from localcloud.clientconf import connect

        return connect(self.state_dir, cloud)

    def stats(self) -> dict[str, Any]:
        return self.handle.stats()

    def mutating(self) -> dict[str, int]:
        return {c: v["mutating"] for c, v in self.stats().items() if v["mutating"]}

    def set_faults(self, faults: dict[str, Any] | None) -> None:
        self.handle.set_faults(faults)

    def exec(
        self, server_name: str, cmd: str, cloud: str | None = None, stdin: str | None = None
    ) -> tuple[int, str]:
        """Run a shell command as root inside a server (the operator's console); `stdin` is
        how secrets go in (never argv)."""
        argv = [sys.executable, "-m", "localcloud.dataplane.cli", "exec"]
        argv += ["--state-dir", str(self.state_dir)]
        if cloud:
            argv += ["--cloud", cloud]
        argv += [server_name, "--", "sh", "-c", cmd]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, check=False, input=stdin or ""
        )
        return proc.returncode, proc.stdout + proc.stderr

    # --- Prefect / flows
    def env(self) -> dict[str, str]:
        """A child process's environment: the session's Prefect API, no kill hook."""
        from prefect.settings import PREFECT_API_URL

        env = dict(os.environ)
        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        env.pop(KILL_ENV, None)
        env["PREFECT_LOGGING_LEVEL"] = "INFO"  # run logs reach the API (the leak scan reads them)
        return env

    def key_block(self, site: str) -> str:
        """`hg-<site>-ssh`, a key the operator brings (plain: the clouds' access settings say
        how servers are reached), made before the site's first run so the leak scan knows
        its private key."""
        from hybridgrid.blocks.ssh import SSHKey

        name = f"hg-{site}-ssh"

        async def save() -> None:
            key = SSHKey.generate(comment=name)
            self.ssh_private_keys.append(key.private_key.get_secret_value())
            await key.asave(name, overwrite=True)

        asyncio.run(save())
        from hybridgrid.blocks import loading

        loading.forget_ssh_key(name)
        return name

    def add_site(self, site: Any, timeout: float = 300, **options: Any) -> Any:
        """add_remote_site in this process, bounded in time."""
        from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site

        opts = AddSiteOptions(registry=options.pop("registry", REGISTRY), **options)
        self.watch.ensure()

        async def run() -> Any:
            return await asyncio.wait_for(add_remote_site(site, opts), timeout)

        return asyncio.run(run())

    # --- what the clouds hold
    def inventory(self, cloud: str) -> dict[str, Counter]:
        """Every resource of the project by kind, counted by name (servers: also those in
        ERROR; ports: only compute ports, by server name)."""
        conn = self.conn(cloud)
        servers = list(conn.compute.servers())
        by_id = {s.id: s.name for s in servers}
        inv: dict[str, Counter] = {
            "servers": Counter(s.name for s in servers),
            "networks": Counter(
                n.name for n in conn.network.networks() if not n.is_router_external
            ),
            "subnets": Counter(
                s.name
                for s in conn.network.subnets()
                if not conn.network.get_network(s.network_id).is_router_external
            ),
            "routers": Counter(r.name for r in conn.network.routers()),
            "security_groups": Counter(
                g.name for g in conn.network.security_groups() if g.name != "default"
            ),
            "keypairs": Counter(k.name for k in conn.compute.keypairs()),
            "floating_ips": Counter(
                by_id.get(_port_device(conn, f.port_id), "unattached") for f in conn.network.ips()
            ),
            "compute_ports": Counter(
                by_id.get(p.device_id, f"orphan:{p.device_id}")
                for p in conn.network.ports()
                if (p.device_owner or "").startswith("compute:")
            ),
        }
        return inv

    def tagged(self, cloud: str, site: str) -> int:
        """Resources carrying the site's tag (servers: metadata), in one cloud."""
        conn = self.conn(cloud)
        tag = f"hybridgrid-site={site}"
        n = 0
        n += len(list(conn.network.networks(tags=tag)))
        n += len(list(conn.network.subnets(tags=tag)))
        n += len(list(conn.network.routers(tags=tag)))
        n += len(list(conn.network.security_groups(tags=tag)))
        n += len(list(conn.network.ips(tags=tag)))
        n += sum(
            1
            for s in conn.compute.servers(details=True)
            if (s.metadata or {}).get("hybridgrid-site") == site
        )
        n += sum(1 for k in conn.compute.keypairs() if is_site_name(k.name, site))
        n += sum(
            1
            for g in conn.network.security_groups()
            for r in conn.network.security_group_rules(security_group_id=g.id)
            if (r.description or "") == tag
        )
        return n


def _port_device(conn: Any, port_id: str | None) -> str | None:
    if not port_id:
        return None
    return conn.network.get_port(port_id).device_id


def expected_site_inventory(site: str, workers: int) -> dict[str, Counter]:
    """What one verified site holds in its cloud (names)."""
    vpn = f"hg-{site}-vpn"
    servers = [vpn] + [f"hg-{site}-worker-{i}" for i in range(1, workers + 1)]
    return {
        "servers": Counter(servers),
        "networks": Counter([f"hg-{site}-net"]),
        "subnets": Counter([f"hg-{site}-subnet"]),
        "routers": Counter([f"hg-{site}-router"]),
        "security_groups": Counter([f"hg-{site}-sg"]),
        "keypairs": Counter([f"hg-{site}-key"]),
        "floating_ips": Counter([vpn]),
        "compute_ports": Counter(servers),
    }


def inventory_problems(actual: dict[str, Counter], expected: dict[str, Counter]) -> list[str]:
    """Duplicates (a name counted more than expected) and orphans (a name not expected)."""
    out = []
    for kind in expected.keys() | actual.keys():
        a, e = actual.get(kind, Counter()), expected.get(kind, Counter())
        for name in a.keys() | e.keys():
            if a[name] != e[name]:
                what = (
                    "duplicate"
                    if a[name] > e[name] > 0
                    else ("orphan" if e[name] == 0 else "missing")
                )
                out.append(f"{kind}: {what} {name} ({a[name]} found, {e[name]} expected)")
    return sorted(out)


def merge(*invs: dict[str, Counter]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for inv in invs:
        for kind, c in inv.items():
            out.setdefault(kind, Counter()).update(c)
    return out


# ---------------------------------------------------------------- site checks


def is_site_name(name: str, site: str) -> bool:
    """A resource name hybridgrid gives `site` (exact: site k-hub's are not k-hub-applied's)."""
    kinds = r"(vpn|worker-\d+|net|subnet|router|sg|key)"
    return bool(re.fullmatch(rf"hg-{re.escape(site)}-{kinds}", name))


def site_view(inv: dict[str, Counter], site: str) -> dict[str, Counter]:
    """The part of a cloud's inventory that belongs to `site` by name, plus every resource
    that belongs to nobody (an unattached floating IP, a port of a vanished server)."""
    return {
        kind: Counter(
            {
                n: c
                for n, c in counts.items()
                if is_site_name(n, site) or n == "unattached" or n.startswith("orphan:")
            }
        )
        for kind, counts in inv.items()
    }


def site_problems(
    rel: Any, site: str, cloud: str, workers: int, registry: str = REGISTRY
) -> list[str]:
    """Everything wrong with a converged site: cloud inventory by name, tag counts, server
    metadata, ERROR servers, home-side rules and pairs."""
    problems = inventory_problems(
        site_view(rel.inventory(cloud), site), expected_site_inventory(site, workers)
    )
    conn = rel.conn(cloud)
    tag = f"hybridgrid-site={site}"
    by_tag = {
        "networks": len(list(conn.network.networks(tags=tag))),
        "subnets": len(list(conn.network.subnets(tags=tag))),
        "routers": len(list(conn.network.routers(tags=tag))),
        "security_groups": len(list(conn.network.security_groups(tags=tag))),
        "floating_ips": len(list(conn.network.ips(tags=tag))),
    }
    for kind, n in by_tag.items():
        if n != 1:
            problems.append(f"{kind} tagged {tag}: {n} (expected 1)")
    servers = [
        s
        for s in conn.compute.servers(details=True)
        if (s.metadata or {}).get("hybridgrid-site") == site
    ]
    if len(servers) != 1 + workers:
        problems.append(f"servers with metadata {tag}: {len(servers)} (expected {1 + workers})")
    problems += [f"server {s.name} is {s.status}" for s in servers if s.status != "ACTIVE"]
    roles = Counter((s.metadata or {}).get("hybridgrid-role") for s in servers)
    problems += [f"role {r} held by {n} servers" for r, n in roles.items() if n > 1]
    problems += home_side_problems(rel, site, registry)
    return problems


def site_rules(conn: Any, site: str) -> list[tuple]:
    tag = f"hybridgrid-site={site}"
    return [
        (g.name, r.direction, r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix)
        for g in conn.network.security_groups()
        for r in conn.network.security_group_rules(security_group_id=g.id)
        if (r.description or "") == tag
    ]


def home_side_problems(rel: Any, site: str, registry: str = REGISTRY) -> list[str]:
    """On the home cloud: exactly the site's two rules (all from its subnet, UDP from its VPN
    node's floating IP) and its subnet once among the master's pairs."""
    from hybridgrid.blocks.registry import load_registry

    data = asyncio.run(load_registry(registry))
    entry = data.sites[site]
    conn = rel.conn(HOME_CLOUD)
    home_sg = f"hg-{data.home.name}-sg"
    rules = Counter(site_rules(conn, site))
    expected = Counter(
        [
            (home_sg, "ingress", None, None, None, str(entry.subnet)),
            (home_sg, "ingress", "udp", 51820, 51820, f"{entry.public_ips['vpn']}/32"),
        ]
    )
    out = [
        f"home rule {r}: {rules[r]} (expected {expected[r]})"
        for r in rules | expected
        if rules[r] != expected[r]
    ]
    master = next(conn.compute.servers(name=data.home.master))
    port = next(conn.network.ports(device_id=master.id))
    pairs = Counter(p["ip_address"] for p in port.allowed_address_pairs)
    # one pair covers the site (the site pool's, or the subnet's own outside the pool)
    covering = [p for p in pairs if entry.subnet.subnet_of(ipaddress.ip_network(p))]
    if len(covering) != 1:
        out.append(f"master pairs covering {entry.subnet}: {covering} (expected one)")
    out += [f"master pair {p} repeated" for p, n in pairs.items() if n > 1]
    return out


def master_peers(rel: Any) -> list[str]:
    rc, out = rel.exec("hg-bielefeld-master", "wg show wg0 peers", HOME_CLOUD)
    assert rc == 0, out
    return out.split()


def registered_spokes(registry: str) -> dict[str, str]:
    from hybridgrid.blocks.registry import load_registry

    data = asyncio.run(load_registry(registry))
    return {n: e.spoke_public_key for n, e in data.sites.items() if e.spoke_public_key}


# ---------------------------------------------------------------- locks a killed run left


def lock_names(registry: str = REGISTRY, home: str = HOME_CLOUD) -> list[str]:
    """The two Prefect global concurrency limits a site run takes: the hub lock (the master's
    wg0 and port) and the registry lock."""
    from hybridgrid.blocks.registry import lock_name
    from hybridgrid.flows.hub import hub_lock_name

    return [hub_lock_name(home), lock_name(registry)]


def held_slots(names: list[str]) -> dict[str, int]:
    """Active slots of each limit, as the Prefect API reports them."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async def read() -> dict[str, int]:
        async with get_client() as client:
            out = {}
            for name in names:
                try:
                    limit = await client.read_global_concurrency_limit_by_name(name)
                except ObjectNotFound:  # never taken yet
                    out[name] = 0
                else:
                    out[name] = limit.active_slots
            return out

    return asyncio.run(read())


def repossess(names: list[str]) -> None:
    """Free the slots a killed holder left, as the Prefect server would.

    A real server's repossessor service revokes leases that expired (scan every 15 s; the
    hybridgrid locks' leases are 60 s, renewed by a live holder at 75 %) and gives their slots
    back. The test harness runs an ephemeral server, where that service never runs
    (prefect/server/services/repossessor.py: perpetual_service, run_in_ephemeral=False), so a
    killed holder's slot stays taken forever and the rerun would wait out its lock timeout.
    Setting the active slots to 0 is exactly what the revocation does for a limit-1 lock."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    async def reset() -> None:
        async with get_client() as client:
            for name in names:
                await client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(active_slots=0)
                )

    asyncio.run(reset())


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def _forget_cached_clients() -> None:
    """Connections and SSH keys are cached per process by block name; other test modules
    save blocks with the same names for their own clouds."""
    from hybridgrid.blocks import loading

    loading.forget()
    loading.forget_all_ssh_keys()
