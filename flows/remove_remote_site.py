"""remove_remote_site (docs/architecture.md §5): with a Slurm home, the site's partition
drained and its nodes out of Slurm first (jobs in other partitions go on); then the site's
peer off the master live, the home side (pairs, rules, routes), the site's resources, key
pair, SSH key block and registry entry.

Order matters for reruns and for concurrent add-site runs: the site first leaves the hub
config in the registry (its spoke key is cleared under the hub lock), so no other run
re-adds the peer; the registry entry goes last, so a rerun after any failure still knows the
site and resumes. Only what carries the site's tags (rules: its description) is deleted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from ipaddress import IPv4Network

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from hybridgrid import desired, naming
from hybridgrid.access import behind
from hybridgrid.blocks.loading import ssh_key
from hybridgrid.blocks.registry import (
    DEFAULT_REGISTRY,
    load_registry,
    release_site,
    update_registry,
)
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.flows import runs
from hybridgrid.flows.checkpoints import checkpoint
from hybridgrid.flows.home import ReadyHome, master_with_floating_ip, require_home
from hybridgrid.flows.hub import hub_lock
from hybridgrid.flows.scheduler import leave_site
from hybridgrid.flows.ssh_access import door
from hybridgrid.model import tunnel_mtu
from hybridgrid.records import KeypairRecord, PortRecord, Record
from hybridgrid.registry_data import RegistryData, SiteEntry
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import node_tasks as nodes
from hybridgrid.tasks import removal_tasks as rt
from hybridgrid.tasks import site_tasks as st


class RemoveResult(BaseModel):
    site: str
    registered: bool = Field(description="False: the site was not (or no longer) registered")
    peer_removed: bool = False
    deleted: list[tuple[str, Record]] = Field(default_factory=list)  # (cloud, record)
    ssh_key_block_deleted: bool = False


def _run_name() -> str:
    return "remove " + runs.run_name_from("site")


@dataclass(frozen=True)
class _Removal:
    """What the removal reads: the site's entry, the home and the master's way in."""

    site: str
    registry: str
    entry: SiteEntry
    home: ReadyHome
    home_key: SSHKey
    master: st.NodeFacts  # with its floating IP
    master_target: SSHTarget


@dataclass(frozen=True)
class _HubSide:
    """What the hub let go: the master's port after, and the home side released or kept."""

    port: PortRecord
    released: list[IPv4Network]
    kept: list[IPv4Network]


@flow(
    name="remove-remote-site",
    flow_run_name=_run_name,
    description="Remove a remote site: peer off the hub live, home-side pairs/rules/routes, "
    "the site's resources, key pair, SSH key block and registry entry. Safe to rerun.",
)
async def remove_remote_site(
    site: str, registry: str = DEFAULT_REGISTRY, force: bool = False, drain_timeout: float = 600
) -> RemoveResult:
    """Remove a site; the run is named after it.

    Args:
        site: the registered site's name
        registry: the SiteRegistry block
        force: with a Slurm home, cancel the jobs still running in the site's partition
            instead of waiting for them
        drain_timeout: seconds to wait for the partition's jobs (its new jobs are held)
    """
    log = get_run_logger()
    await runs.tag_run("site", site)
    data = await load_registry(registry)
    entry = data.sites.get(site)
    if entry is None:
        log.info("Site %s is not registered in %s: nothing to remove", site, registry)
        return RemoveResult(site=site, registered=False)
    removal = await _prepare(site, registry, data, entry)
    if removal.home.scheduler == "slurm":
        await leave_site(registry, site, removal.master_target, drain_timeout, force)
    hub = await _leave_hub(removal)
    rules, resources = await _remove_resources(removal, hub)
    key_block, keypair, block_deleted = await _remove_keys(removal)
    await release_site(site, registry)
    checkpoint("released")

    deleted: list[tuple[str, Record]] = [
        *((removal.home.cloud, r) for r in rules),
        *((entry.cloud, r) for r in resources),
    ]
    if keypair.action == "deleted":
        deleted.append((entry.cloud, keypair))
    if hub.port.action == "updated":
        deleted.append((removal.home.cloud, hub.port.model_copy(update={"action": "updated"})))
    await _publish(site, deleted, block_deleted, key_block)
    log.info("Site %s removed: %d resource(s) deleted or updated", site, len(deleted))
    return RemoveResult(
        site=site,
        registered=True,
        peer_removed=True,
        deleted=deleted,
        ssh_key_block_deleted=block_deleted,
    )


async def _prepare(site: str, registry: str, data: RegistryData, entry: SiteEntry) -> _Removal:
    home = require_home(data, registry)
    home_key = await ssh_key(home.ssh_key_block)
    master = await master_with_floating_ip(home)
    return _Removal(
        site=site,
        registry=registry,
        entry=entry,
        home=home,
        home_key=home_key,
        master=master,
        master_target=door(home.cloud, str(master.floating_ip), home.master_host_keys, home_key),
    )


async def _leave_hub(r: _Removal) -> _HubSide:
    """The site leaves the registry's hub config, then wg0 is synced without it (syncconf:
    the other peers keep their sessions); pairs on the master's port that no remaining site
    needs go (the pool's stays while a site in it remains)."""
    home, site = r.home, r.site

    def leave(d: RegistryData) -> RegistryData:
        if site in d.sites:
            d.sites[site].spoke_public_key = None
        return d

    async with hub_lock(home.name):
        data = await update_registry(leave, r.registry)
        cfg = desired.hub_config(data, desired.hub_mtu(data, tunnel_mtu(home.network_mtu)))
        res = await nodes.remove_wg_peer(r.master_target, home.ssh_key_block, cfg)
        released, kept = desired.released_on_removal(data, site)
        port = await st.remove_pairs(home.cloud, r.master.port_id, [str(n) for n in released])
    get_run_logger().info("Peer %s off the hub %s (%s)", site, home.master, res.action)
    checkpoint("peer-removed")
    return _HubSide(port=port, released=released, kept=kept)


async def _remove_resources(r: _Removal, hub: _HubSide) -> tuple[list[Record], list[Record]]:
    """Home rules and routes, and every tagged resource of the site, at once."""
    home = r.home
    home_sg = home.resource_ids.get("sg") or await _home_group(home.cloud, home.name)
    workers = await asyncio.gather(*(st.lookup_node(home.cloud, w) for w in home.workers))
    route_jobs = [
        rt.remove_routes(
            behind(r.master_target, str(w.fixed_ip), home.host_keys[w.name], r.home_key.user),
            home.ssh_key_block,
            hub.released,
            r.master.fixed_ip,
            hub.kept,
        )
        for w in workers
        if home.host_keys.get(w.name)
    ]
    rules, resources, *_ = await asyncio.gather(
        st.remove_rules(home.cloud, home_sg, r.site) if home_sg else _nothing(),
        st.remove_site_resources(r.entry.cloud, r.site),
        *route_jobs,
    )
    checkpoint("resources-removed")
    return rules, resources


async def _remove_keys(r: _Removal) -> tuple[str, KeypairRecord, bool]:
    """The key pair (only with our key) and the SSH key block hybridgrid made (never the
    home's); returns the block's name, the key pair and whether the block was deleted."""
    site = r.site
    key_block = r.entry.ssh_key_block or naming.resource_name(site, "ssh")
    keypair = await rt.remove_keypair(
        r.entry.cloud, naming.resource_name(site, naming.KEY), key_block
    )
    block_deleted = False
    if key_block == naming.resource_name(site, "ssh") and key_block != r.home.ssh_key_block:
        block_deleted = await rt.delete_ssh_key_block(key_block)
    checkpoint("keys-removed")
    return key_block, keypair, block_deleted


async def _nothing() -> list:
    return []


async def _home_group(cloud: str, home: str) -> str | None:
    from hybridgrid.blocks.loading import connection
    from hybridgrid.cloudops import security_groups as ops

    sg = await asyncio.to_thread(
        ops.find_security_group, connection(cloud), home, naming.resource_name(home, naming.SG)
    )
    return sg.id if sg else None


async def _publish(
    site: str, deleted: list[tuple[str, Record]], block_deleted: bool, block: str
) -> None:
    from prefect.artifacts import acreate_table_artifact

    rows = [
        {"cloud": c, "kind": r.kind, "name": r.name, "id": r.id or "", "action": r.action}
        for c, r in deleted
    ]
    if block_deleted:
        rows.append(
            {"cloud": "prefect", "kind": "block", "name": block, "id": "", "action": "deleted"}
        )
    await acreate_table_artifact(
        key=f"hybridgrid-{site}-removal",
        table=rows,
        description=f"hybridgrid: what the removal of site {site} deleted or updated",
    )


__all__ = ["RemoveResult", "remove_remote_site"]
