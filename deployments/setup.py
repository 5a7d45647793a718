"""Idempotent set-up of what the deployments need on a Prefect server: the process work pool
and the global concurrency limits the flows take (limit 1 each).

    python -m hybridgrid.deployments.setup [--pool hybridgrid] [--registry hybridgrid]…

The flows create their limits on first use too (`ensure_lock`); creating them here makes them
visible (and adjustable) in the UI before the first run. The hub lock of a registry's home is
created when the registry already knows its home.
"""

from __future__ import annotations

import argparse
import asyncio

from hybridgrid.deployments.catalog import POOL


async def ensure_work_pool(name: str = POOL) -> bool:
    """The process work pool `name`; True when it was created now."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    description="hybridgrid flows (add-remote-site, bootstrap-home, day two)",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:  # another set-up won the race
            return False
        return True


async def ensure_limits(registries: list[str]) -> list[str]:
    """The registry lock of each registry and the hub lock of its home, if it has one."""
    from hybridgrid.blocks.registry import ensure_lock, load_registry, lock_name

    names = []
    for registry in registries:
        names.append(lock_name(registry))
        data = await load_registry(registry)
        if data.home is not None:
            names.append(f"hybridgrid-hub-{data.home.name}")
    for name in names:
        await ensure_lock(name)
    return names


async def setup(pool: str = POOL, registries: list[str] | None = None) -> dict:
    created = await ensure_work_pool(pool)
    limits = await ensure_limits(registries or ["hybridgrid"])
    return {"pool": pool, "pool_created": created, "limits": limits}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m hybridgrid.deployments.setup", description=__doc__)
    ap.add_argument("--pool", default=POOL, help="process work pool name (default %(default)s)")
    ap.add_argument(
        "--registry", action="append", help="SiteRegistry block name (repeat; default hybridgrid)"
    )
    args = ap.parse_args(argv)
    out = asyncio.run(setup(args.pool, args.registry))
    print(
        f"work pool {out['pool']}: {'created' if out['pool_created'] else 'exists'}; "
        f"concurrency limits: {', '.join(out['limits'])}"
    )


if __name__ == "__main__":
    main()
