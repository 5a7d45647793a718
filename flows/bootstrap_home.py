"""bootstrap_home — the hub side, once: create a home cluster (network, master, workers) for
users without BiBiGrid, or adopt an existing master by name; pin its host key, make its
WireGuard key on the master, and record the home (and the WireGuard plan) in the registry.

Steps (`BOOTSTRAP_STEPS`): pre-flight → servers launched (or the master adopted) → the master's
floating IP and group → master ready (host keys, SSH, WireGuard key) → recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from ipaddress import IPv4Address

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from hybridgrid import naming
from hybridgrid.access import behind
from hybridgrid.blocks.registry import update_registry
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.cloudops.preflight import Needs, PreflightRequest
from hybridgrid.cloudops.servers import ServerSpec
from hybridgrid.flows import runs
from hybridgrid.flows.checkpoints import checkpoint
from hybridgrid.flows.forms import HomeForm, HomeOptions
from hybridgrid.flows.home import home_workers
from hybridgrid.flows.scheduler import home_scheduler
from hybridgrid.flows.ssh_access import door, ensure_ssh_key
from hybridgrid.model import Topology, TopologyError, WireGuardSettings
from hybridgrid.records import FloatingIPRecord, Record
from hybridgrid.registry_data import HomeEntry, RegistryData
from hybridgrid.rules import RuleSpec
from hybridgrid.tasks import node_tasks as nodes
from hybridgrid.tasks import site_tasks as st


class HomeResult(BaseModel):
    home: str
    master: str
    master_floating_ip: str
    master_public_key: str
    workers: list[str]
    resources: list[tuple[str, Record]] = Field(default_factory=list)


@dataclass(frozen=True)
class HomeRun:
    """What every step reads: the request, its hub address and the master's SSH key."""

    home: HomeForm
    wireguard: WireGuardSettings
    options: HomeOptions
    hub_address: IPv4Address
    key_block: str
    key: SSHKey

    @property
    def create(self) -> bool:
        return self.home.master.create


@dataclass(frozen=True)
class HomeServers:
    """The created or adopted cluster, by name, and the home group."""

    master: str
    workers: list[str]
    group: st.GroupResult
    resources: list[tuple[str, Record]]


@dataclass(frozen=True)
class HomeMaster:
    master: st.NodeFacts
    floating_ip: FloatingIPRecord
    workers: list[st.NodeFacts]
    group_id: str  # the home group, on every port


@dataclass(frozen=True)
class ReadyMaster:
    host_keys: list[str]
    worker_host_keys: list[list[str]]  # in the order of `HomeMaster.workers`; [] unknown
    public_key: str  # the hub's WireGuard key


def _run_name() -> str:
    return runs.run_name_from("home")


@flow(
    name="bootstrap-home",
    flow_run_name=_run_name,
    description="Create or adopt the home cluster whose master is the WireGuard hub.",
)
async def bootstrap_home(
    home: HomeForm,
    wireguard: WireGuardSettings | None = None,
    options: HomeOptions | None = None,
) -> HomeResult:
    """Create or adopt the home cluster; the run is named after the home.

    Args:
        home: the home cloud block, subnet and master (create: true, or name: SERVER)
        wireguard: overlay CIDR, listen port, keepalive (defaults as in the seed)
        options: registry, SSH key block, site pool, SSH source, host keys of an adopted master
    """
    await runs.tag_run("home", home.name)
    run = await _preflight(home, wireguard or WireGuardSettings(), options or HomeOptions())
    servers = await (_create(run) if run.create else _adopt(run))
    checkpoint("servers-launched")
    master = await _the_master(run, servers)
    ready = await _master_ready(run, master)
    await _record(run, master, ready)
    if home.scheduler == "slurm":
        master_target = door(home.cloud, str(master.floating_ip.address), ready.host_keys, run.key)
        await home_scheduler(run.options.registry, master_target, run.key.user)
    return HomeResult(
        home=home.name,
        master=master.master.name,
        master_floating_ip=str(master.floating_ip.address),
        master_public_key=ready.public_key,
        workers=[w.name for w in master.workers],
        resources=[*servers.resources, (home.cloud, master.floating_ip)],
    )


async def _preflight(home: HomeForm, wireguard: WireGuardSettings, options: HomeOptions) -> HomeRun:
    """The home cloud can hold what is to be created; then the master's SSH key block."""
    topo = Topology(wireguard=wireguard, home=home, site_pool=options.site_pool, sites=[])
    await asyncio.gather(st.preflight_cloud(_home_preflight(home)), nodes.check_access(home.cloud))
    checkpoint("preflight")
    key_block = options.ssh_key_block or naming.resource_name(home.name, "ssh")
    return HomeRun(
        home=home,
        wireguard=wireguard,
        options=options,
        hub_address=topo.hub_address(),
        key_block=key_block,
        key=await ensure_ssh_key(key_block, home.ssh_user),
    )


def _home_preflight(home: HomeForm) -> PreflightRequest:
    """The external network; image, flavors and quotas only when the cluster is created."""
    if not home.master.create:
        return PreflightRequest(cloud=home.cloud, external_network=home.external_network)
    return PreflightRequest(
        cloud=home.cloud,
        external_network=home.external_network,
        image=home.image,
        flavors=[home.master.flavor, home.worker_flavor],
        instances_by_flavor={home.master.flavor: 1, home.worker_flavor: home.workers},
        needs=Needs(
            instances=1 + home.workers, floating_ips=1, networks=1, routers=1, security_groups=1
        ),
    )


def _base_rules(run: HomeRun) -> list[RuleSpec]:
    """Everything from the home subnet and the overlay; SSH from `ssh_source` when created."""
    rules = [
        RuleSpec(remote_ip_prefix=str(run.home.subnet)),
        RuleSpec(remote_ip_prefix=str(run.wireguard.cidr)),
    ]
    if run.create:
        rules += [
            RuleSpec(protocol="tcp", port_min=22, port_max=22, remote_ip_prefix=str(p))
            for p in run.options.ssh_source
        ]
    return rules


async def _create(run: HomeRun) -> HomeServers:
    """Network, group and key pair at once, then the master and the workers at once."""
    home, sg_name = run.home, naming.resource_name(run.home.name, naming.SG)
    net, group, keypair = await asyncio.gather(
        st.ensure_site_network(home.cloud, home.name, str(home.subnet), home.external_network),
        st.ensure_group(home.cloud, home.name, sg_name, _base_rules(run)),
        st.ensure_keypair(
            home.cloud, naming.resource_name(home.name, naming.KEY), run.key.public_key
        ),
    )

    def spec(role: str, n: int | None, flavor: str) -> ServerSpec:
        return ServerSpec(
            name=naming.resource_name(home.name, role, n),
            site=home.name,
            role=role if n is None else f"{role}-{n}",
            image=home.image,
            flavor=flavor,
            network_id=net.network.id,
            key_name=keypair.name,
            security_groups=[sg_name],
        )

    specs = [spec(naming.MASTER, None, home.master.flavor)] + [
        spec(naming.WORKER, i, home.worker_flavor) for i in range(1, home.workers + 1)
    ]
    get_run_logger().info(
        "Creating the home cluster on %s: %s", home.cloud, ", ".join(s.name for s in specs)
    )
    servers = await asyncio.gather(
        *(st.ensure_server(home.cloud, s, timeout=run.options.boot_timeout) for s in specs)
    )
    made = [*net.records, group.group, *group.rules, keypair, *servers]
    return HomeServers(
        master=servers[0].name,
        workers=[s.name for s in servers[1:]],
        group=group,
        resources=[(home.cloud, r) for r in made],
    )


async def _adopt(run: HomeRun) -> HomeServers:
    """An existing master by name (its workers are found in `_the_master`); only the group."""
    home = run.home
    if home.master.name is None:  # HomeSite's validator requires create or a name
        raise TopologyError("home.master", "no master to adopt", "set master.name")
    sg_name = naming.resource_name(home.name, naming.SG)
    group = await st.ensure_group(home.cloud, home.name, sg_name, _base_rules(run))
    return HomeServers(
        master=home.master.name,
        workers=[],
        group=group,
        resources=[(home.cloud, group.group), *((home.cloud, r) for r in group.rules)],
    )


async def _the_master(run: HomeRun, servers: HomeServers) -> HomeMaster:
    """The master (inside the home subnet), its floating IP, its workers; the home group on
    every port."""
    home = run.home
    master = await st.lookup_node(home.cloud, servers.master)
    if master.fixed_ip not in home.subnet:
        raise TopologyError(
            "home.subnet",
            f"the master {servers.master} has address {master.fixed_ip}, outside {home.subnet}",
            "set home.subnet to the master's subnet",
        )
    worker_names = servers.workers if run.create else await home_workers(home.cloud, master)
    fip = await st.ensure_floating_ip(home.cloud, home.name, master.port_id, home.external_network)
    workers = await asyncio.gather(*(st.lookup_node(home.cloud, w) for w in worker_names))
    group_id = servers.group.group.id
    await asyncio.gather(
        *(st.ensure_port(home.cloud, n.port_id, [], [group_id]) for n in [master, *workers])
    )
    return HomeMaster(master=master, floating_ip=fip, workers=list(workers), group_id=group_id)


async def _master_ready(run: HomeRun, m: HomeMaster) -> ReadyMaster:
    """Host keys (from the console, or given for an old adopted master), SSH and the hub's
    WireGuard key on the master; then SSH on each worker whose host keys are known."""
    home, key_block = run.home, run.key_block
    master_keys = run.options.master_host_keys or await nodes.pin_host_keys(
        home.cloud, m.master.server_id, m.master.name
    )
    worker_keys = await asyncio.gather(*(_console_keys_or_none(home.cloud, w) for w in m.workers))
    master_target = door(home.cloud, str(m.floating_ip.address), master_keys, run.key)
    await nodes.ssh_ready(master_target, key_block, timeout=run.options.boot_timeout)
    hub_pub = await nodes.ensure_node_key(master_target, key_block)
    checkpoint("master-ready")
    for w, keys in zip(m.workers, worker_keys, strict=True):
        if keys:
            worker = behind(master_target, str(w.fixed_ip), keys, run.key.user)
            await nodes.ssh_ready(worker, key_block)
    return ReadyMaster(
        host_keys=master_keys, worker_host_keys=list(worker_keys), public_key=hub_pub
    )


async def _console_keys_or_none(cloud: str, node: st.NodeFacts) -> list[str]:
    try:
        return await nodes.pin_host_keys.with_options(retries=0)(
            cloud, node.server_id, node.name, timeout=60
        )
    except Exception:  # an adopted worker whose console rotated: routes are skipped for it
        get_run_logger().warning(
            "No host keys in the console of %s: hybridgrid will not log into it", node.name
        )
        return []


async def _record(run: HomeRun, m: HomeMaster, ready: ReadyMaster) -> None:
    """The home and the WireGuard settings into the registry (refused when sites depend on a
    home at another subnet or hub address)."""

    def record(d: RegistryData) -> None:
        moved = d.home is not None and (d.home.subnet, d.home.wg_address) != (
            run.home.subnet,
            run.hub_address,
        )
        if moved and d.sites:
            raise TopologyError(
                "home",
                "the registry's home has another subnet or hub address and sites depend on it",
                "remove the sites first, or use another registry",
            )
        d.wireguard = run.wireguard
        d.site_pool = run.options.site_pool
        d.home = _home_entry(run, m, ready, d.home)

    await update_registry(record, run.options.registry)
    checkpoint("recorded")
    get_run_logger().info(
        "Home %s recorded: master %s at %s, WireGuard %s, public key %s",
        run.home.name,
        m.master.name,
        m.floating_ip.address,
        run.hub_address,
        ready.public_key,
    )


def _home_entry(
    run: HomeRun, m: HomeMaster, ready: ReadyMaster, previous: HomeEntry | None
) -> HomeEntry:
    home, master = run.home, m.master
    worker_keys = zip(m.workers, ready.worker_host_keys, strict=True)
    return HomeEntry(
        name=home.name,
        cloud=home.cloud,
        subnet=home.subnet,
        wg_address=run.hub_address,
        public_key=ready.public_key,
        master=master.name,
        adopted=not run.create,
        workers=[w.name for w in m.workers],
        ssh_key_block=run.key_block,
        external_network=home.external_network,
        listen_port=home.listen_port or run.wireguard.port,
        network_mtu=master.network_mtu,
        scheduler=home.scheduler,
        node_addresses={n.name: n.fixed_ip for n in [master, *m.workers]},
        public_ips={"master": m.floating_ip.address},
        host_keys={master.name: ready.host_keys, **{w.name: k for w, k in worker_keys if k}},
        resource_ids={
            "master": master.server_id,
            "master-port": master.port_id,
            "sg": m.group_id,
        },
        last_verification=previous.last_verification if previous else None,
    )
