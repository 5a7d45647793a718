"""The site registry (docs/architecture.md §7): what hybridgrid has allocated and built, per site.

It is changed only through ``update_registry``, which holds a Prefect global concurrency
limit of 1 while it loads, mutates and saves, so concurrent flow runs (on any host using the
same Prefect API) never allocate the same subnet or WireGuard address.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from prefect.blocks.core import Block
from pydantic import Field

from hybridgrid.model import ResolvedSite, Topology, TopologyError, plan
from hybridgrid.registry_data import HomeEntry, RegistryData, SiteEntry

DEFAULT_REGISTRY = "hybridgrid"
LOCK_TIMEOUT_SECONDS = 120.0
T = TypeVar("T")


class SiteRegistry(Block):
    """Allocations, keys, addresses and resource IDs of the home and every remote site."""

    _block_type_name = "hybridgrid Site Registry"
    _block_type_slug = "hybridgrid-site-registry"
    _description = (
        "What hybridgrid allocated and built per site: subnets, WireGuard addresses, public "
        "keys, public IPs, pinned host keys, resource IDs, last verification. Changed only "
        "under a lock by the flows."
    )

    data: RegistryData = Field(default_factory=RegistryData)


def lock_name(registry: str) -> str:
    return f"hybridgrid-registry-{registry}"


_creating: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
# Limits this process has created or seen, per Prefect API: a limit, once there, stays, so
# later calls skip the upsert (one API write fewer per registry update: on SQLite every
# write can cost a ~2 s 503 back-off under load). A limit deleted behind our back is
# re-created by `update_registry` when acquiring says it is missing.
_known_locks: set[tuple[str, str]] = set()


def _api_key(name: str) -> tuple[str, str]:
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return (settings.api.url or f"ephemeral:{settings.home}", name)


async def ensure_lock(name: str) -> None:
    """Create the limit-1 global concurrency limit if missing (idempotent; remembered per
    Prefect API and process, so repeated calls cost no API call)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    key = _api_key(name)
    if key in _known_locks:
        return
    # Serialise creation within this process (the server logs every lost create race);
    # another process may still win the race: that is fine, the limit then exists.
    creating = _creating.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with creating:
        if key in _known_locks:
            return
        async with get_client() as client:
            with suppress(ObjectAlreadyExists):
                await client.upsert_global_concurrency_limit_by_name(name, limit=1)
        _known_locks.add(key)


async def load_registry(name: str = DEFAULT_REGISTRY) -> RegistryData:
    """The registry's current contents (empty when it was never saved); read-only."""
    try:
        return (await SiteRegistry.aload(name)).data
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        return RegistryData()


def _same(a: RegistryData, b: RegistryData) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")


async def update_registry(
    mutate: Callable[[RegistryData], T],
    name: str = DEFAULT_REGISTRY,
    timeout_seconds: float = LOCK_TIMEOUT_SECONDS,
) -> T:
    """Lock, load the latest registry, apply ``mutate`` to it, save, unlock.

    ``mutate`` changes the data in place and may return a value, which is returned. If it
    raises, nothing is saved. It must have no other effect: it may run twice.

    Read first, lock only to write: ``mutate`` is tried on an unlocked read, and when it
    changes nothing (a rerun), its result is returned without taking the lock or saving —
    each lock and save is a Prefect API write, and on SQLite a write that meets another
    answers 503, which the client sleeps ~2 s on. Otherwise it runs again on the data read
    under the lock, which is what is saved.
    """
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency

    with suppress(Exception):  # anything unusual: decide under the lock
        snapshot = await load_registry(name)
        trial = snapshot.model_copy(deep=True)
        result = mutate(trial)
        if _same(RegistryData.model_validate(trial.model_dump()), snapshot):
            return result

    lock = lock_name(name)
    for attempt in (1, 2):
        await ensure_lock(lock)
        entered = False
        try:
            # strict: a missing limit must fail, not silently run unlocked.
            # A short lease frees the lock soon after a crashed holder; live holders renew it.
            async with concurrency(
                lock, occupy=1, strict=True, timeout_seconds=timeout_seconds, lease_duration=60
            ):
                entered = True
                loaded = await load_registry(name)
                data = loaded.model_copy(deep=True)
                result = mutate(data)
                new = RegistryData.model_validate(data.model_dump())
                if not _same(new, loaded):
                    await SiteRegistry(data=new).asave(name, overwrite=True)
                return result
        except ConcurrencySlotAcquisitionError:
            # the limit we remembered is gone (deleted, or another database): create it again
            if entered or attempt == 2:
                raise
            _known_locks.discard(_api_key(lock))
    raise AssertionError("unreachable")


async def allocate_site(
    topology: Topology,
    site: str,
    registry: str = DEFAULT_REGISTRY,
    network_mtu: int = 1450,
) -> ResolvedSite:
    """Plan ``site`` against the registry and record its subnet and address, in one locked step.

    Re-running returns the same allocation; the home entry is recorded on first use.
    """
    if site not in {s.name for s in topology.sites}:
        raise TopologyError("sites", f"the topology has no site named {site!r}", "add it first")

    def mutate(data: RegistryData) -> ResolvedSite:
        home = topology.home
        hub = topology.hub_address()
        if data.home is None:
            data.home = HomeEntry(
                name=home.name, cloud=home.cloud, subnet=home.subnet, wg_address=hub
            )
        elif (data.home.subnet, data.home.wg_address) != (home.subnet, hub):
            raise TopologyError(
                "home",
                f"registry {registry!r} holds home {data.home.subnet} / {data.home.wg_address}, "
                f"the topology says {home.subnet} / {hub}",
                "use the registered home values, or a different registry",
            )
        resolved = plan(topology, data.allocations(), network_mtu).site(site)
        registered = data.sites.get(site)
        if registered is not None and registered.cloud != resolved.cloud:
            # Same name, other cloud: a different site. Converging "it" would build a second
            # copy in the new cloud and lose track of the first.
            raise TopologyError(
                "site.name",
                f"site {site!r} is registered on cloud {registered.cloud!r}, not "
                f"{resolved.cloud!r}",
                f"give the new site another name, or remove {site!r} first "
                f"(remove-remote-site) to move it",
            )
        if site not in data.sites:
            data.sites[site] = SiteEntry(
                cloud=resolved.cloud, subnet=resolved.subnet, wg_address=resolved.wg_address
            )
        return resolved

    return await update_registry(mutate, registry)


async def release_site(site: str, registry: str = DEFAULT_REGISTRY) -> bool:
    """Forget a site (after its resources are gone). True when it was registered."""
    return await update_registry(lambda data: data.sites.pop(site, None) is not None, registry)
