"""Read-only observation tasks for the drift check, and the one cleanup repair needs on top of
add_remote_site (rules a site added that no longer belong to it).

One task per site and one for the hub side, each reading its cloud and its nodes
concurrently; node reads share one SSH connection per hub/spoke (workers are reached through
it as a tunnel), so a check of many sites opens few connections. Nothing here raises on a
broken link: failures become observations, which `hybridgrid.drift.compare` judges.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from hybridgrid import naming
from hybridgrid.access import behind, front_door
from hybridgrid.blocks.loading import access, connection, ssh_key
from hybridgrid.cloudops import finder, security_groups
from hybridgrid.cloudops import servers as cloudops_servers
from hybridgrid.drift import (
    HomeObs,
    NodeObs,
    RuleObs,
    ServerObs,
    SiteApiObs,
    SiteNodesObs,
    WorkerObs,
    parse_pings,
    parse_routes,
    ping_many_command,
)
from hybridgrid.records import RuleRecord
from hybridgrid.registry_data import HomeEntry, RegistryData
from hybridgrid.retry.policy import TRANSIENT
from hybridgrid.rules import RuleSpec
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.sshclient.client import RemoteHost
from hybridgrid.sshclient.connect import connect
from hybridgrid.sshclient.keys import load_private_key
from hybridgrid.wireguard.state import read_wg_state

# Observations must be read afresh every time (a repair re-checks in the same flow run).
READ = dict(cache_policy=NO_CACHE, persist_result=False, retries=0)
T = TypeVar("T")

# The threads the blocking OpenStack reads of one `observe` run on. asyncio.to_thread's
# default pool has min(32, cores + 4) threads (6 on two cores): with 20 sites × 3 reads at
# once most of them queued and the check grew with the number of sites.
_pool: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "hybridgrid_drift_pool", default=None
)
MAX_THREADS = 64


def pool_size(n_sites: int) -> int:
    """Threads for a check of `n_sites`: each site reads 3 groups at once, the hub 2."""
    return min(MAX_THREADS, 2 + 3 * max(n_sites, 1))


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread` on the check's own pool when one is set (context copied alike)."""
    pool = _pool.get()
    if pool is None:
        return await asyncio.to_thread(fn, *args)
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


class WorkerProbe(BaseModel):
    name: str
    fixed_ip: str
    host_keys: list[str]


class NodeProbe(BaseModel):
    """A hub or spoke to read over SSH, with the workers behind it."""

    name: str
    cloud: str = Field(description="credentials block: how its servers are reached (access)")
    addresses: list[str]  # floating IPs to try, best first
    host_keys: list[str]
    key_block: str
    worker_user: str | None = None  # default: the SSH key block's user
    workers: list[WorkerProbe] = Field(default_factory=list)
    pings: list[str] = Field(default_factory=list)  # every worker pings these


class HomeProbe(BaseModel):
    cloud: str
    home: str
    master: str
    master_port_id: str | None = None
    node: NodeProbe
    workers: list[str] = Field(default_factory=list)  # names; fixed IPs are looked up


class SiteProbe(BaseModel):
    site: str
    cloud: str
    servers: list[str]  # names, VPN node first
    vpn_port_id: str | None = None
    node: NodeProbe


def _why(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "…"


def _rules(conn: Any, group_id: str) -> list[RuleObs]:
    return [
        RuleObs(
            id=r.id,
            direction=r.direction,
            ethertype=r.ether_type or "IPv4",
            protocol=r.protocol,
            port_min=r.port_range_min,
            port_max=r.port_range_max,
            remote_ip_prefix=r.remote_ip_prefix,
            remote_group_id=r.remote_group_id,
            description=r.description,
        )
        for r in conn.network.security_group_rules(security_group_id=group_id)
    ]


def _fips(conn: Any, port_id: str | None) -> list[str]:
    if not port_id:
        return []
    return sorted(f.floating_ip_address for f in conn.network.ips(port_id=port_id))


# ---------------------------------------------------------------- SSH


async def _worker(hop: RemoteHost, target: SSHTarget, key: Any, pings: list[str]) -> WorkerObs:
    obs = WorkerObs(name=target.host, fixed_ip=target.host)
    async with connect(target, key, via=hop) as host:
        routes = host.run("ip -4 -o route show", name="ip route show", timeout=30)
        if pings:
            pinged = host.run(ping_many_command(pings), name="ping", timeout=60, check=False)
            r, p = await asyncio.gather(routes, pinged)
            obs.pings = parse_pings(p.stdout)
        else:
            r = await routes
        obs.routes = parse_routes(r.stdout)
    return obs


async def _read_at(
    probe: NodeProbe, target: SSHTarget, key: Any, client_key: Any
) -> tuple[NodeObs, list[WorkerObs]]:
    async with connect(target, key.private_key) as hop:

        async def one(w: WorkerProbe) -> WorkerObs:
            t = behind(target, w.fixed_ip, w.host_keys, probe.worker_user or key.user)
            try:
                obs = await _worker(hop, t, client_key, probe.pings)
            except Exception as exc:  # an unreachable worker is drift, not a crash
                obs = WorkerObs(name=w.name, fixed_ip=w.fixed_ip, error=_why(exc))
            return obs.model_copy(update={"name": w.name, "fixed_ip": w.fixed_ip})

        async def wg() -> tuple[Any, float]:
            state = await read_wg_state(hop, missing_ok=True)
            return state, time.time()

        (state, at), *workers = await asyncio.gather(
            wg(), *(one(w) for w in probe.workers if w.host_keys)
        )
        node = NodeObs(name=probe.name, address=target.host, wg=state, observed_at=at)
        return node, list(workers)


def _door(probe: NodeProbe, address: str, key: Any) -> SSHTarget:
    return front_door(address, probe.host_keys, key, access(probe.cloud), probe.cloud)


async def read_node(probe: NodeProbe) -> tuple[NodeObs, list[WorkerObs]]:
    """wg0 of a hub/spoke and routes + pings of the workers behind it, over one connection."""
    key = await ssh_key(probe.key_block)
    client_key = load_private_key(key.private_key)
    last = "no address"
    for address in probe.addresses:
        try:
            return await _read_at(probe, _door(probe, address, key), key, client_key)
        except Exception as exc:  # unreachable at this address: try the next
            last = _why(exc)
    node = NodeObs(name=probe.name, error=last)
    return node, [
        WorkerObs(name=w.name, fixed_ip=w.fixed_ip, error=f"not reached: {probe.name} is not")
        for w in probe.workers
        if w.host_keys
    ]


# ---------------------------------------------------------------- the hub side


def _home_api(conn: Any, probe: HomeProbe) -> dict[str, Any]:
    port_id = probe.master_port_id
    if port_id is None or finder.find_or_none(conn.network.find_port, port_id) is None:
        server = conn.compute.find_server(probe.master, ignore_missing=True)
        if server is None:
            raise LookupError(f"master {probe.master} not found")
        port_id = cloudops_servers.server_port(conn, server.id).id
    port = conn.network.get_port(port_id)
    sg = security_groups.find_security_group(
        conn, probe.home, naming.resource_name(probe.home, naming.SG)
    )
    return dict(
        master_port_id=port.id,
        master_fixed_ip=port.fixed_ips[0]["ip_address"],
        master_fip=(_fips(conn, port.id) or [None])[0],
        master_pairs=[p["ip_address"] for p in port.allowed_address_pairs or []],
        master_port_security=port.is_port_security_enabled is not False,
        home_sg_id=sg.id if sg else None,
        home_rules=_rules(conn, sg.id) if sg else [],
    )


def _worker_ips(conn: Any, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        server = conn.compute.find_server(name, ignore_missing=True)
        if server is not None:
            out[name] = cloudops_servers.server_port(conn, server.id).fixed_ips[0]["ip_address"]
    return out


async def observe_home(probe: HomeProbe, host_keys: dict[str, list[str]]) -> HomeObs:
    """The master's port, floating IP, pairs and home group; wg0 on the master; routes and
    pings on the home workers. Host keys by worker name (workers without pins are skipped)."""
    conn = connection(probe.cloud)
    api_job = _in_thread(_home_api, conn, probe)
    ips_job = _in_thread(_worker_ips, conn, probe.workers)
    api_res, ips = await asyncio.gather(api_job, ips_job, return_exceptions=True)
    if isinstance(ips, BaseException):
        ips = {}
    node_probe = probe.node.model_copy(
        update={
            "workers": [
                WorkerProbe(name=n, fixed_ip=ip, host_keys=host_keys.get(n, []))
                for n, ip in ips.items()
            ]
        }
    )
    if not isinstance(api_res, BaseException) and api_res["master_fip"]:
        node_probe.addresses = _first(api_res["master_fip"], node_probe.addresses)
    hub, workers = await read_node(node_probe)
    if isinstance(api_res, BaseException):
        return HomeObs(error=_why(api_res), hub=hub, workers=workers)
    return HomeObs(hub=hub, workers=workers, **api_res)


def _first(address: str, others: list[str]) -> list[str]:
    return [address, *(a for a in others if a != address)]


# ---------------------------------------------------------------- one site


def _site_network(conn: Any, site: str) -> dict[str, Any]:
    net = finder.find_owned(conn, "network", site, naming.resource_name(site, naming.NET))
    sub = finder.find_owned(conn, "subnet", site, naming.resource_name(site, naming.SUBNET))
    router = finder.find_owned(conn, "router", site, naming.resource_name(site, naming.ROUTER))
    on_subnet = False
    if router is not None and sub is not None:
        on_subnet = any(
            any(ip.get("subnet_id") == sub.id for ip in (p.fixed_ips or []))
            for p in conn.network.ports(device_id=router.id)
        )
    return dict(
        network_id=net.id if net else None,
        subnet_id=sub.id if sub else None,
        subnet_cidr=sub.cidr if sub else None,
        router_id=router.id if router else None,
        router_gateway=bool(router and (router.external_gateway_info or {}).get("network_id")),
        router_on_subnet=on_subnet,
    )


def _site_servers(conn: Any, probe: SiteProbe) -> dict[str, Any]:
    # one listing for the site's servers (Nova's name filter is a regex), not one per server
    listed = conn.compute.servers(name=f"^hg-{re.escape(probe.site)}-")
    ours = {
        s.name: s
        for s in listed
        if s.name in probe.servers and naming.site_of_metadata(s.metadata) == probe.site
    }
    servers = {n: ServerObs(name=n, id=s.id, status=s.status) for n, s in ours.items()}
    out: dict[str, Any] = dict(servers=servers)
    vpn = ours.get(probe.servers[0])
    vpn_port = None
    if vpn is not None:
        with contextlib.suppress(LookupError):
            vpn_port = cloudops_servers.server_port(conn, vpn.id)
    if vpn_port is not None:
        out |= dict(
            vpn_port_id=vpn_port.id,
            vpn_fixed_ip=vpn_port.fixed_ips[0]["ip_address"],
            vpn_fips=_fips(conn, vpn_port.id),
            vpn_pairs=[p["ip_address"] for p in vpn_port.allowed_address_pairs or []],
            vpn_port_security=vpn_port.is_port_security_enabled is not False,
        )
    return out


def _site_group(conn: Any, site: str) -> dict[str, Any]:
    sg = security_groups.find_security_group(conn, site, naming.resource_name(site, naming.SG))
    return dict(site_sg_id=sg.id if sg else None, site_rules=_rules(conn, sg.id) if sg else [])


async def observe_site(probe: SiteProbe) -> tuple[SiteApiObs, SiteNodesObs]:
    """The site's cloud objects and its VPN node + workers, read concurrently. The VPN node
    is reached at the floating IP its port has now (a replaced one included)."""
    conn = connection(probe.cloud)
    node = probe.node
    with contextlib.suppress(Exception):
        now = await _in_thread(_fips, conn, probe.vpn_port_id)
        if now:
            node = node.model_copy(update={"addresses": _first(now[0], node.addresses)})
    parts = await asyncio.gather(
        _in_thread(_site_network, conn, probe.site),
        _in_thread(_site_servers, conn, probe),
        _in_thread(_site_group, conn, probe.site),
        read_node(node),
        return_exceptions=True,
    )
    *api_parts, nodes = parts
    errors = [p for p in api_parts if isinstance(p, BaseException)]
    if errors:
        api = SiteApiObs(error=_why(errors[0]))
    else:
        merged: dict[str, Any] = {}
        for p in api_parts:
            merged |= p  # type: ignore[operator]
        api = SiteApiObs(**merged)
    if isinstance(nodes, BaseException):
        spoke, workers = NodeObs(name=probe.node.name, error=_why(nodes)), []
    else:
        spoke, workers = nodes
    return api, SiteNodesObs(spoke=spoke, workers=workers)


@task(task_run_name="observe the hub and {n_sites} site(s)", **READ)
async def observe(
    home: HomeProbe, host_keys: dict[str, list[str]], sites: list[SiteProbe], n_sites: int
) -> tuple[HomeObs, list[tuple[SiteApiObs, SiteNodesObs]]]:
    """The hub side and every site at once (one task run: the per-run overhead of Prefect
    does not grow with the number of sites), on a thread pool sized to the sites."""
    pool = ThreadPoolExecutor(pool_size(len(sites)), thread_name_prefix="hg-drift")
    token = _pool.set(pool)
    try:
        home_obs, *site_obs = await asyncio.gather(
            observe_home(home, host_keys), *(observe_site(p) for p in sites)
        )
    finally:
        _pool.reset(token)
        pool.shutdown(wait=False)
    return home_obs, list(site_obs)


# ---------------------------------------------------------------- what to observe


def home_probe(data: RegistryData, names: list[str]) -> HomeProbe:
    """The hub side as the registry records it; its workers ping worker 1 of each site."""
    home = data.home
    assert home is not None and home.master is not None and home.ssh_key_block is not None
    pings = [
        str(data.sites[n].fixed_ips["worker-1"])
        for n in names
        if "worker-1" in data.sites[n].fixed_ips
    ]
    fip = home.public_ips.get("master")
    return HomeProbe(
        cloud=home.cloud,
        home=home.name,
        master=home.master,
        master_port_id=home.resource_ids.get("master-port"),
        workers=list(home.workers),
        node=NodeProbe(
            cloud=home.cloud,
            name=home.master,
            addresses=[str(fip)] if fip else [],
            host_keys=home.host_keys[home.master],
            key_block=home.ssh_key_block,
            pings=pings,
        ),
    )


def site_probe(data: RegistryData, name: str, home_ping: str | None) -> SiteProbe:
    """A site as the registry records it (its servers from the spec as last added)."""
    entry = data.sites[name]
    spec = entry.spec
    n_workers = spec.workers if spec else 0
    vpn = naming.resource_name(name, naming.VPN)
    workers = [naming.resource_name(name, naming.WORKER, i) for i in range(1, n_workers + 1)]
    fip = entry.public_ips.get("vpn")
    return SiteProbe(
        site=name,
        cloud=entry.cloud,
        servers=[vpn, *workers],
        vpn_port_id=entry.resource_ids.get("vpn-port"),
        node=NodeProbe(
            cloud=entry.cloud,
            name=vpn,
            addresses=[str(fip)] if fip else [],
            host_keys=entry.host_keys.get(vpn, []),
            key_block=entry.ssh_key_block or naming.resource_name(name, "ssh"),
            worker_user=spec.ssh_user if spec else "ubuntu",
            workers=[
                WorkerProbe(
                    name=w,
                    fixed_ip=str(entry.fixed_ips[f"worker-{i}"]),
                    host_keys=entry.host_keys.get(w, []),
                )
                for i, w in enumerate(workers, 1)
                if f"worker-{i}" in entry.fixed_ips
            ],
            pings=[home_ping] if home_ping else [],
        ),
    )


async def home_worker_ip(home: HomeEntry) -> str | None:
    """The first home worker's fixed IP (what site workers ping), or None."""
    if not home.workers:
        return None

    def look() -> str | None:
        return _worker_ips(connection(home.cloud), home.workers[:1]).get(home.workers[0])

    try:
        return await asyncio.to_thread(look)
    except Exception:  # the hub's observation reports an unreadable home cloud
        return None


class Probes(BaseModel):
    """Everything one check observes: the hub side, its workers' pinned keys, the sites."""

    home: HomeProbe
    host_keys: dict[str, list[str]]
    sites: list[SiteProbe]


async def probes(data: RegistryData, names: list[str]) -> Probes:
    """What to observe for sites `names` of the registry `data` (one quick home lookup)."""
    home = data.home
    assert home is not None
    first_ip = await home_worker_ip(home)
    return Probes(
        home=home_probe(data, names),
        host_keys={w: home.host_keys.get(w, []) for w in home.workers},
        sites=[site_probe(data, n, first_ip) for n in names],
    )


async def observe_sites(
    data: RegistryData, names: list[str]
) -> tuple[HomeObs, list[tuple[SiteApiObs, SiteNodesObs]]]:
    """The hub side and sites `names` as check-drift observes them, read here without a task
    run (`hybridgrid plan --live`: it writes nothing, to the clouds or to Prefect)."""
    p = await probes(data, names)
    return await observe.fn(p.home, p.host_keys, p.sites, len(p.sites))


# ---------------------------------------------------------------- repair's extra step


@task(task_run_name="remove stale rules of {owner} from group {group_id}", **TRANSIENT)
async def remove_stale_rules(
    cloud: str, group_id: str, owner: str, keep: list[RuleSpec]
) -> list[RuleRecord]:
    """Delete the rules `owner` added to the group (by description) that are not in `keep`:
    e.g. UDP from a floating IP the peer no longer has. add_remote_site only adds rules."""
    return await asyncio.to_thread(
        security_groups.remove_rules, connection(cloud), group_id, owner, keep
    )


async def _run_behind(probe: NodeProbe, command: str, what: str) -> list[str]:
    key = await ssh_key(probe.key_block)
    client_key = load_private_key(key.private_key)
    done: list[str] = []
    target = _door(probe, probe.addresses[0], key)
    async with connect(target, key.private_key) as hop:
        for w in probe.workers:
            if not w.host_keys:
                continue
            t = behind(target, w.fixed_ip, w.host_keys, probe.worker_user or key.user)
            async with connect(t, client_key, via=hop) as host:
                await host.run(command, name=what, timeout=30)
                done.append(w.name)
    return done


@task(task_run_name="forget redirected routes behind {probe.name}", **READ)
async def flush_route_cache(probe: NodeProbe) -> list[str]:
    """`ip route flush cache` on the workers behind a hub/spoke: while a spoke's wg0 was down
    it answered the workers with ICMP redirects to the cloud router, and Linux keeps those
    next-hop exceptions for minutes although the routes are right again."""
    return await _run_behind(probe, "ip route flush cache", "ip route flush cache")
