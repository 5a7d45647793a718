"""`hybridgrid plan SPEC --live`: the spec's desired wiring against what is on the clouds,
printed like `terraform plan` — one line per change a run would make, then the totals.

It reads only: the registry and the blocks from the Prefect server, the clouds' APIs (GET)
and the nodes over SSH (`wg show`, `ip route show`, ping) — the observation check-drift
makes (`tasks/drift_tasks.observe_sites`), called here in-process without a flow or task
run, so nothing is written anywhere, not even a run record; the comparison is check-drift's
too (`hybridgrid.changes`, judged in `hybridgrid.live_plan`).

Exit codes: 0 no change; 3 changes pending; 1 no change the plan can name but something was
not observed or is not right (the `!` lines), or the clouds could not be read; 2 bad input.
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from hybridgrid.live_plan import LivePlan, judge, registry_as_planned
from hybridgrid.model import Plan, Topology

EXIT_NO_CHANGES = 0
EXIT_NOT_RIGHT = 1
EXIT_PENDING = 3  # not 2, which is bad input (terraform's -detailed-exitcode uses 2)


async def observe(
    registry: str, planned: Any, topology: Topology, registered: list[str]
) -> LivePlan:
    """Observe the hub side and the registered spec sites at once, then judge (pure)."""
    from hybridgrid.tasks.drift_tasks import observe_sites

    home, site_obs = await observe_sites(planned, registered)
    observed = dict(zip(registered, site_obs, strict=True))
    return judge(registry, planned, topology, home, observed)


def exit_code(plan: LivePlan) -> int:
    if plan.pending:
        return EXIT_PENDING
    return EXIT_NOT_RIGHT if plan.noted else EXIT_NO_CHANGES


def show_live_plan(
    topology: Topology, resolved: Plan, data: Any, registry: str | None, json_output: bool
) -> int:
    """Observe, judge and print; the exit code (the registry `data` has the spec's home)."""
    name = registry or "hybridgrid"
    registered = [s.name for s in topology.sites if s.name in data.sites]
    planned = registry_as_planned(data, topology, resolved)
    try:
        plan = asyncio.run(observe(name, planned, topology, registered))
    except Exception as exc:  # a block or registry read failed: no plan without them
        typer.echo(f"error: plan --live: cannot observe ({type(exc).__name__}: {exc})", err=True)
        return EXIT_NOT_RIGHT
    if json_output:
        typer.echo(plan.model_dump_json(indent=2))
    else:
        typer.echo("\n".join(plan.lines()))
    return exit_code(plan)
