"""bootstrap_home — the hub side, once: create a home cluster (network, master, workers) for
users without BiBiGrid, or adopt an existing master by name; pin its host key, make its
WireGuard key on the master, and record the home (and the WireGuard plan) in the registry.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field, model_validator

from hybridgrid import naming
from hybridgrid.access import behind
from hybridgrid.blocks.pickers import CloudBlock, SSHKeyBlock
from hybridgrid.blocks.registry import DEFAULT_REGISTRY, update_registry
from hybridgrid.cloudops.preflight import Needs, PreflightRequest
from hybridgrid.cloudops.servers import ServerSpec
from hybridgrid.flows import common
from hybridgrid.model import HomeSite, Topology, TopologyError, WireGuardSettings
from hybridgrid.records import Record
from hybridgrid.registry_data import HomeEntry, RegistryData
from hybridgrid.rules import RuleSpec
from hybridgrid.tasks import node_tasks as nodes
from hybridgrid.tasks import site_tasks as st


class HomeForm(HomeSite):
    """The home as the UI's form asks for it: the cloud is picked from the saved credentials
    blocks (the registry keeps its name)."""

    cloud: CloudBlock = Field(description="the home cloud's credentials block")

    @model_validator(mode="before")
    @classmethod
    def _from_home(cls, data: Any) -> Any:
        # a HomeSite (a spec file's, a test's constant) is a valid form value
        return data.model_dump() if isinstance(data, HomeSite) else data


class HomeOptions(BaseModel):
    registry: str = Field(DEFAULT_REGISTRY, description="SiteRegistry block name")
    ssh_key_block: SSHKeyBlock | None = Field(
        None, description="SSHKey block that logs into the master; empty: hg-HOME-ssh, made"
    )
    site_pool: IPv4Network = Field(
        IPv4Network("192.168.64.0/18"), description="pool for sites' auto-allocated subnets"
    )
    ssh_source: list[IPv4Network] = Field(
        default_factory=lambda: [IPv4Network("0.0.0.0/0")],
        description="who may reach a created master's SSH port",
    )
    master_host_keys: list[str] = Field(
        default_factory=list,
        description="adopting a master whose console no longer shows its host keys: its "
        "OpenSSH host public key lines (from /etc/ssh/ssh_host_*_key.pub)",
    )
    boot_timeout: float = Field(600, gt=0, description="seconds to wait for servers")


class HomeResult(BaseModel):
    home: str
    master: str
    master_floating_ip: str
    master_public_key: str
    workers: list[str]
    resources: list[tuple[str, Record]] = Field(default_factory=list)


def _run_name() -> str:
    return common.run_name_from("home")


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
    options = options or HomeOptions()
    wireguard = wireguard or WireGuardSettings()
    log = get_run_logger()
    await common.tag_run("home", home.name)
    topo = Topology(wireguard=wireguard, home=home, site_pool=options.site_pool, sites=[])
    hub_address = topo.hub_address()
    create = home.master.create
    key_block = options.ssh_key_block or naming.resource_name(home.name, "ssh")

    req = PreflightRequest(
        cloud=home.cloud,
        external_network=home.external_network,
        image=home.image if create else None,
        flavors=[home.master.flavor, home.worker_flavor] if create else [],
        instances_by_flavor={home.master.flavor: 1, home.worker_flavor: home.workers}
        if create
        else {},
        needs=Needs(
            instances=1 + home.workers, floating_ips=1, networks=1, routers=1, security_groups=1
        )
        if create
        else Needs(),
    )
    await asyncio.gather(st.preflight_cloud(req), nodes.check_access(home.cloud))
    common.checkpoint("preflight")
    key = await common.ensure_ssh_key(key_block, home.ssh_user)
    sg_name = naming.resource_name(home.name, naming.SG)
    base_rules = [
        RuleSpec(remote_ip_prefix=str(home.subnet)),
        RuleSpec(remote_ip_prefix=str(wireguard.cidr)),
    ]
    resources: list[tuple[str, Record]] = []

    if create:
        base_rules += [
            RuleSpec(protocol="tcp", port_min=22, port_max=22, remote_ip_prefix=str(p))
            for p in options.ssh_source
        ]
        net, group, keypair = await asyncio.gather(
            st.ensure_site_network(home.cloud, home.name, str(home.subnet), home.external_network),
            st.ensure_group(home.cloud, home.name, sg_name, base_rules),
            st.ensure_keypair(
                home.cloud, naming.resource_name(home.name, naming.KEY), key.public_key
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
        log.info(
            "Creating the home cluster on %s: %s", home.cloud, ", ".join(s.name for s in specs)
        )
        servers = await asyncio.gather(
            *(st.ensure_server(home.cloud, s, timeout=options.boot_timeout) for s in specs)
        )
        master_name, worker_names = servers[0].name, [s.name for s in servers[1:]]
        resources += [(home.cloud, r) for r in [*net.records, group.group, *group.rules, keypair]]
        resources += [(home.cloud, s) for s in servers]
    else:
        assert home.master.name is not None
        master_name = home.master.name
        group = await st.ensure_group(home.cloud, home.name, sg_name, base_rules)
        resources += [(home.cloud, group.group), *((home.cloud, r) for r in group.rules)]
        worker_names = []
    common.checkpoint("servers-launched")

    master = await st.lookup_node(home.cloud, master_name)
    if master.fixed_ip not in home.subnet:
        raise TopologyError(
            "home.subnet",
            f"the master {master_name} has address {master.fixed_ip}, outside {home.subnet}",
            "set home.subnet to the master's subnet",
        )
    if not create:
        worker_names = await common.home_workers(home.cloud, master)
    fip = await st.ensure_floating_ip(home.cloud, home.name, master.port_id, home.external_network)
    resources.append((home.cloud, fip))
    workers = await asyncio.gather(*(st.lookup_node(home.cloud, w) for w in worker_names))
    await asyncio.gather(
        *(st.ensure_port(home.cloud, n.port_id, [], [group.group.id]) for n in [master, *workers])
    )

    # host keys: from the console (cloud-init), or given for an old adopted master
    if options.master_host_keys:
        master_keys = options.master_host_keys
    else:
        master_keys = await nodes.pin_host_keys(home.cloud, master.server_id, master_name)
    worker_keys = await asyncio.gather(*(_console_keys_or_none(home.cloud, w) for w in workers))
    master_target = common.door(home.cloud, str(fip.address), master_keys, key)
    await nodes.ssh_ready(master_target, key_block, timeout=options.boot_timeout)
    hub_pub = await nodes.ensure_node_key(master_target, key_block)
    common.checkpoint("master-ready")
    for w, keys in zip(workers, worker_keys, strict=True):
        if keys:
            await nodes.ssh_ready(behind(master_target, str(w.fixed_ip), keys, key.user), key_block)

    def record(d: RegistryData) -> None:
        moved = d.home is not None and (d.home.subnet, d.home.wg_address) != (
            home.subnet,
            hub_address,
        )
        if moved and d.sites:
            raise TopologyError(
                "home",
                "the registry's home has another subnet or hub address and sites depend on it",
                "remove the sites first, or use another registry",
            )
        d.wireguard = wireguard
        d.site_pool = options.site_pool
        d.home = HomeEntry(
            name=home.name,
            cloud=home.cloud,
            subnet=home.subnet,
            wg_address=hub_address,
            public_key=hub_pub,
            master=master_name,
            adopted=not create,
            workers=[w.name for w in workers],
            ssh_key_block=key_block,
            external_network=home.external_network,
            listen_port=home.listen_port or wireguard.port,
            network_mtu=master.network_mtu,
            public_ips={"master": fip.address},
            host_keys={
                master_name: master_keys,
                **{w.name: k for w, k in zip(workers, worker_keys, strict=True) if k},
            },
            resource_ids={
                "master": master.server_id,
                "master-port": master.port_id,
                "sg": group.group.id,
            },
            last_verification=d.home.last_verification if d.home else None,
        )

    await update_registry(record, options.registry)
    common.checkpoint("recorded")
    log.info(
        "Home %s recorded: master %s at %s, WireGuard %s, public key %s",
        home.name,
        master_name,
        fip.address,
        hub_address,
        hub_pub,
    )
    return HomeResult(
        home=home.name,
        master=master_name,
        master_floating_ip=str(fip.address),
        master_public_key=hub_pub,
        workers=[w.name for w in workers],
        resources=resources,
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
