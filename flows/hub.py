"""The hub: one editor of the master's wg0 and port at a time (`hub_lock`, across processes
and hosts), and the hub's apply — record the site, then render wg0 from the registry so
concurrent sites each see the others' peers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from hybridgrid import desired
from hybridgrid.blocks.registry import ensure_lock, update_registry
from hybridgrid.flows.checkpoints import checkpoint
from hybridgrid.registry_data import RegistryData, SiteUpdate
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import node_tasks as nodes


def hub_lock_name(home: str) -> str:
    return f"hybridgrid-hub-{home}"


@contextlib.asynccontextmanager
async def hub_lock(home: str) -> AsyncIterator[None]:
    """One editor of the master's wg0 and port at a time, across processes and hosts."""
    from prefect.concurrency.asyncio import concurrency

    await ensure_lock(hub_lock_name(home))
    # Lease 60 s (the server's minimum; the client renews at 75 %): a crashed holder blocks
    # the next editor at most ~75 s on a server that reaps expired leases (its repossessor).
    async with concurrency(
        hub_lock_name(home), occupy=1, strict=True, timeout_seconds=600, lease_duration=60
    ):
        yield
        # test hook: a kill with the hub's edit done and the lock still held (its lease left
        # to expire), deterministically — the concurrent spoke/routes steps only sometimes
        checkpoint("hub-applied")


async def apply_hub(
    registry: str,
    site: str,
    update: SiteUpdate,
    master_target: SSHTarget,
    key_block: str,
    tunnel_mtu: int,
) -> nodes.NodeSetup:
    """Record `update` on the site's entry, then apply the hub config with every site.

    Call under `hub_lock`: the config is rendered from the registry, so concurrent sites each
    see the others' peers."""

    def record(d: RegistryData) -> RegistryData:
        d.sites[site] = update.applied_to(d.sites[site])
        return d

    def record_hub_key(d: RegistryData) -> None:
        if d.home is None:  # the hub's edit needs a home: only a concurrent wipe gets here
            raise RuntimeError("the registry's home disappeared while the hub was configured")
        d.home.public_key = res.public_key

    data = await update_registry(record, registry)
    cfg = desired.hub_config(data, desired.hub_mtu(data, tunnel_mtu))
    res = await nodes.apply_wireguard(master_target, key_block, cfg)
    if data.home is None or data.home.public_key != res.public_key:
        await update_registry(record_hub_key, registry)
    return res
