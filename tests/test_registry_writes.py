"""update_registry writes only what changed and recreates a lock deleted behind its back
(fewer Prefect API writes per add-site: on SQLite each one can cost a 503 back-off)."""

import asyncio

from hybridgrid.blocks.registry import (
    RegistryData,
    SiteEntry,
    load_registry,
    lock_name,
    update_registry,
)


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
        await update_registry(lambda d: None, registry)  # the lock now exists and is remembered
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name(lock_name(registry))
        result = await update_registry(add, registry)
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(lock_name(registry))
        return result, limit, await load_registry(registry)

    result, limit, data = asyncio.run(scenario())
    assert result == "added" and limit.limit == 1
    assert "b" in data.sites
