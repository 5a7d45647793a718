"""The home cluster's Slurm, wired from the registry (`hybridgrid.desired`): the controller on
the master with hybridgrid's partitions file, the home's and each site's workers as dynamic
configless nodes, the name entries every node needs, and the job layer of a site's
verification. Nothing here runs unless the home was bootstrapped with `scheduler: slurm`."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from prefect import get_run_logger

from hybridgrid import desired
from hybridgrid.access import behind
from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.home import require_home
from hybridgrid.flows.hub import hub_lock
from hybridgrid.layers import LayerResult
from hybridgrid.registry_data import RegistryData
from hybridgrid.scheduler import base_conf, hosts_block, managed_conf
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import slurm_tasks as sl


def _managed(data: RegistryData) -> str:
    return managed_conf(desired.slurm_partitions(data))


async def home_scheduler(registry: str, master: SSHTarget, user: str) -> None:
    """slurmctld on the master (a created master gets its slurm.conf; an adopted one only the
    include line), then the created home's workers as nodes of the home's partition."""
    data = await load_registry(registry)
    home = require_home(data, registry)
    master_ip = home.node_addresses[home.master]
    base = None if home.adopted else base_conf(home.name, home.master, master_ip, home.name)
    await sl.ensure_controller(
        master, home.ssh_key_block, base, _managed(data), install=not home.adopted
    )
    block = hosts_block(desired.slurm_hosts(data))
    # an adopted cluster's workers are its operator's: only a created home's join here
    workers = (
        []
        if home.adopted
        else [
            behind(master, str(home.node_addresses[w]), home.host_keys[w], user)
            for w in home.workers
            if home.host_keys.get(w)
        ]
    )
    await asyncio.gather(
        *(sl.ensure_hosts(t, home.ssh_key_block, block) for t in [master, *workers])
    )
    await asyncio.gather(
        *(
            sl.join_worker(master, home.ssh_key_block, w, home.ssh_key_block, master_ip, home.name)
            for w in workers
        )
    )
    get_run_logger().info(
        "Slurm on %s: controller up, partition %s with %d worker(s)",
        home.master,
        home.name,
        len(workers),
    )


async def join_site(
    registry: str,
    site: str,
    master: SSHTarget,
    master_ip: IPv4Address,
    workers: list[SSHTarget],
    key_block: str,
) -> None:
    """The site's partition on the master (under the hub lock: one editor of the master), the
    name entries on both sides, then each worker as a dynamic node of the partition."""
    data = await load_registry(registry)
    home = require_home(data, registry)
    async with hub_lock(home.name):
        data = await load_registry(registry)  # the sites as recorded now, under the lock
        await sl.sync_partitions(master, home.ssh_key_block, _managed(data))
        await sl.ensure_hosts(master, home.ssh_key_block, hosts_block(desired.slurm_hosts(data)))
    block = hosts_block(desired.slurm_hosts(data, site))
    await asyncio.gather(*(sl.ensure_hosts(w, key_block, block) for w in workers))
    await asyncio.gather(
        *(
            sl.join_worker(master, home.ssh_key_block, w, key_block, master_ip, site)
            for w in workers
        )
    )
    get_run_logger().info("Slurm: partition %s with %d worker(s)", site, len(workers))


async def verify_site_jobs(
    site: str,
    master: SSHTarget,
    home_key_block: str,
    workers: dict[str, SSHTarget],
    key_block: str,
) -> LayerResult:
    """The job layer: from the master, a job on each of `workers` (server name → login) in the
    site's partition, and one that reads data only the first worker holds."""
    nodes = [sl.JobNode(name=n, target=t, key_block=key_block) for n, t in workers.items()]
    return await sl.verify_jobs(master, home_key_block, site, nodes)


async def leave_site(
    registry: str, site: str, master: SSHTarget, timeout: float, force: bool
) -> sl.SiteLeft:
    """The site out of Slurm before anything else of it goes: its partition drained and its
    jobs done (or cancelled with `force`), its nodes deleted, then the partition out of the
    managed file (under the hub lock, rendered from the registry without the site)."""
    data = await load_registry(registry)
    home = require_home(data, registry)
    left = await sl.leave_slurm(master, home.ssh_key_block, site, timeout=timeout, force=force)
    async with hub_lock(home.name):
        data = await load_registry(registry)
        without = data.model_copy(
            update={"sites": {n: e for n, e in data.sites.items() if n != site}}
        )
        await sl.sync_partitions(master, home.ssh_key_block, _managed(without))
    return left
