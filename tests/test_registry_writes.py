"""update_registry writes only what changed, takes the lock only to write, and recreates a
lock deleted behind its back (fewer Prefect API writes per add-site: on SQLite each one can
cost a 503 back-off)."""

import asyncio

from hybridgrid.blocks.registry import load_registry, lock_name, update_registry
from hybridgrid.registry_data import RegistryData, SiteEntry


def test_unchanged_registry_is_not_saved_again(prefect_harness):
    from prefect.client.orchestration import get_client

    registry = "writes-test"

    def add(data: RegistryData) -> None:
        data.sites["a"] = SiteEntry(cloud="a", subnet="192.168.80.0/24", wg_address="10.0.0.8")

    def same(data: RegistryData) -> str:
        data.sites["a"].cloud = "a"  # assigned, but equal: no change
        return "read"

    async def scenario():
        await update_registry(add, registry)
        async with get_client() as client:
            before = await client.read_block_document_by_name(registry, "hybridgrid-site-registry")
            assert await update_registry(same, registry) == "read"
            unchanged = await client.read_block_document_by_name(
                registry, "hybridgrid-site-registry"
            )

            def change(data: RegistryData) -> None:
                data.sites["a"].listen_port = 51821

            await update_registry(change, registry)
            changed = await client.read_block_document_by_name(registry, "hybridgrid-site-registry")
        return before, unchanged, changed, await load_registry(registry)

    before, unchanged, changed, data = asyncio.run(scenario())
    # the block document is written (its `updated` time moves) only by a real change
    assert unchanged.updated == before.updated
    assert changed.updated > before.updated
    assert data.sites["a"].listen_port == 51821


def test_a_deleted_lock_is_created_again(prefect_harness):
    from prefect.client.orchestration import get_client

    registry = "lock-gone-test"

    def add(data: RegistryData) -> str:
        data.sites["b"] = SiteEntry(cloud="b", subnet="192.168.81.0/24", wg_address="10.0.0.9")
        return "added"

    async def scenario():
        def first(data: RegistryData) -> None:
            data.sites["c"] = SiteEntry(cloud="c", subnet="192.168.82.0/24", wg_address="10.0.0.10")

        await update_registry(first, registry)  # the lock now exists and is remembered
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name(lock_name(registry))
        result = await update_registry(add, registry)
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(lock_name(registry))
        return result, limit, await load_registry(registry)

    result, limit, data = asyncio.run(scenario())
    assert result == "added" and limit.limit == 1
    assert "b" in data.sites


def test_a_change_waits_for_the_lock_a_no_op_does_not(prefect_harness):
    from prefect.concurrency.asyncio import concurrency

    registry = "lock-held-test"

    def add(data: RegistryData) -> None:
        data.sites["d"] = SiteEntry(cloud="d", subnet="192.168.83.0/24", wg_address="10.0.0.11")

    def read(data: RegistryData) -> list[str]:
        return sorted(data.sites)

    def change(data: RegistryData) -> None:
        data.sites["d"].listen_port = 51822

    async def scenario():
        await update_registry(add, registry)
        async with concurrency(lock_name(registry), occupy=1, strict=True, lease_duration=60):
            seen = await update_registry(read, registry, timeout_seconds=1)  # no lock needed
            try:
                await update_registry(change, registry, timeout_seconds=1)
            except Exception as exc:  # the lock is held: the change cannot be made
                blocked = exc
            else:
                blocked = None
        return seen, blocked, await load_registry(registry)

    seen, blocked, data = asyncio.run(scenario())
    assert seen == ["d"]
    assert blocked is not None and "timed out" in str(blocked)
    assert data.sites["d"].listen_port == 51820  # the blocked change was not saved
