"""Per-task overhead of Prefect's task engine on this machine, against the running API.

Trivial async tasks (they return at once), N gathered in one flow and N awaited one after
another; overhead per task = (flow wall time − an empty flow's wall time) ÷ N.
"""

from __future__ import annotations

import asyncio
import time

from prefect import flow, task


@task(name="bench-noop")
async def _noop(i: int) -> int:
    return i


@flow(name="bench-empty")
async def _empty() -> None:
    return None


@flow(name="bench-gathered")
async def _gathered(n: int) -> None:
    await asyncio.gather(*(_noop(i) for i in range(n)))


@flow(name="bench-sequential")
async def _sequential(n: int) -> None:
    for i in range(n):
        await _noop(i)


async def _timed(coro) -> float:
    t0 = time.perf_counter()
    await coro
    return time.perf_counter() - t0


async def measure(n: int, rounds: int) -> dict[str, float]:
    """Best of `rounds` for each shape (least disturbed by the other load on the machine)."""
    await _empty()  # warm-up: imports, client, first flow run
    empty = min([await _timed(_empty()) for _ in range(rounds)])
    gathered = min([await _timed(_gathered(n)) for _ in range(rounds)])
    sequential = min([await _timed(_sequential(n)) for _ in range(rounds)])
    return {
        "n": n,
        "empty_flow_s": empty,
        "gathered_ms": max(gathered - empty, 0.0) / n * 1000,
        "sequential_ms": max(sequential - empty, 0.0) / n * 1000,
    }
