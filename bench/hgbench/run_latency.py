"""Run → first task: the pure parts of bench/ui_run_latency.py (unit-tested in tests/test_bench.py).

A flow run made as the UI's "Run" makes it (POST /deployments/{id}/create_flow_run) passes
through: created (Scheduled) → picked up by the worker (Pending) → its process starts the
flow (Running) → the first task run starts. `phases()` splits one run's timeline into those
steps from what the API reports (state history, task runs); `summary()` aggregates runs.
"""

from __future__ import annotations

import statistics
from datetime import datetime

from pydantic import BaseModel

BOUND = 2.0  # s from Run to the first task (issue 15)


class Phases(BaseModel):
    pickup: float  # created → Pending (worker poll + submission)
    process: float  # Pending → Running (flow process start, pull step, flow module import)
    first_task: float  # Running → first task run starts
    total: float  # created → first task run starts


def _ts(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def phases(
    created: str | datetime, states: list[dict], task_starts: list[str | datetime]
) -> Phases:
    """`states`: the run's state history as the API returns it (dicts with `type` and
    `timestamp`); `task_starts`: start times of its task runs. Raises ValueError when the run
    never reached Pending, Running, or a task."""
    t0 = _ts(created)
    first: dict[str, datetime] = {}
    for s in sorted(states, key=lambda s: _ts(s["timestamp"])):
        first.setdefault(s["type"], _ts(s["timestamp"]))
    missing = [t for t in ("PENDING", "RUNNING") if t not in first]
    if missing or not task_starts:
        raise ValueError(f"run never reached {', '.join(missing) or 'a task run'}")
    task = min(_ts(t) for t in task_starts)
    pending, running = first["PENDING"], first["RUNNING"]
    return Phases(
        pickup=(pending - t0).total_seconds(),
        process=(running - pending).total_seconds(),
        first_task=(task - running).total_seconds(),
        total=(task - t0).total_seconds(),
    )


def summary(runs: list[Phases]) -> dict[str, float]:
    """Median of each phase and the worst total over `runs`."""
    if not runs:
        raise ValueError("no runs")
    out = {k: statistics.median(getattr(r, k) for r in runs) for k in Phases.model_fields}
    out["worst_total"] = max(r.total for r in runs)
    return out
