"""A flow run's identity and accounting: its name (the site's or home's), its UI tags, and
the mutating OpenStack calls it made (the benchmarks and the summary count them)."""

from __future__ import annotations

from hybridgrid import naming
from hybridgrid.blocks import loading as clouds


def run_name_from(param: str) -> str:
    """Flow run name = the site's name (from the `param` parameter, a model or a dict)."""
    from prefect.runtime import flow_run

    value = flow_run.parameters.get(param)
    if isinstance(value, dict):
        return str(value.get("name", "site"))
    if isinstance(value, str):
        return value
    return str(getattr(value, "name", "site"))


async def tag_run(kind: str, name: str) -> None:
    """Add `hybridgrid` and `<kind>:<name>` to the running flow run's tags (UI filters)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
        tags = sorted({*run.tags, naming.TAG, f"{kind}:{name}"})
        if tags != sorted(run.tags):
            await client.update_flow_run(run_id, tags=tags)


def call_counts() -> dict[str, int]:
    """Mutating OpenStack calls so far in this process, per cloud."""
    return {name: c.mutating for name, c in clouds.api_calls().items()}


def calls_since(before: dict[str, int]) -> dict[str, int]:
    """Mutating calls per cloud since `before` (a `call_counts()`), clouds without any left out."""
    now = call_counts()
    return {name: n - before.get(name, 0) for name, n in now.items() if n - before.get(name, 0)}
