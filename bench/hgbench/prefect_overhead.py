"""Per-task overhead of Prefect's task engine on this machine, against the running API.

Trivial async tasks (they return at once), N gathered in one flow and N awaited one after
another; overhead per task = time of the flow body ÷ N, measured inside the flow so that
the flow run's own creation is not counted. On SQLite, creating a flow run right after
another flow's burst of task-run events often gets a 503 and a ~2 s client back-off (the
server is still writing the events): each run waits for the server to settle first.
"""

from __future__ import annotations

import asyncio
import time

from prefect import flow, task

SETTLE_S = 1.5  # pause before each measured flow run


@task(name="bench-noop")
async def _noop(i: int) -> int:
    return i


@flow(name="bench-empty")
async def _empty() -> None:
    return None


@flow(name="bench-gathered")
async def _gathered(n: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(_noop(i) for i in range(n)))
    return time.perf_counter() - t0


@flow(name="bench-sequential")
async def _sequential(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await _noop(i)
    return time.perf_counter() - t0


async def _timed_empty() -> float:
    await asyncio.sleep(SETTLE_S)
    t0 = time.perf_counter()
    await _empty()
    return time.perf_counter() - t0


async def _body(fn, n: int) -> float:
    await asyncio.sleep(SETTLE_S)
    return await fn(n)


async def measure(n: int, rounds: int) -> dict[str, float]:
    """Best of `rounds` for each shape (least disturbed by the other load on the machine)."""
    await _empty()  # warm-up: imports, client, first flow run
    empty = min([await _timed_empty() for _ in range(rounds)])
    gathered = min([await _body(_gathered, n) for _ in range(rounds)])
    sequential = min([await _body(_sequential, n) for _ in range(rounds)])
    return {
        "n": n,
        "empty_flow_s": empty,
        "gathered_ms": gathered / n * 1000,
        "sequential_ms": sequential / n * 1000,
    }
