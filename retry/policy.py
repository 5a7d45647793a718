"""The retry policy: Prefect task options that retry transient failures with exponential
backoff and jitter, in-process retries with a deadline, and progress lines for long waits.

Use `@task(**TRANSIENT)` on Prefect tasks, `await with_retries(...)` inside a task; what counts
as transient is `hybridgrid.retry.classify`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from hybridgrid.retry.classify import is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")

# ---------------------------------------------------------------- Prefect task options


def _exception_of(state: Any) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except BaseException as exc:  # a result that cannot be loaded raises: classify that
        return exc
    return result if isinstance(result, BaseException) else None


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn(task, task_run, state)`: retry transient failures only."""
    exc = _exception_of(state)
    return exc is not None and is_transient(exc)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def transient_options(
    retries: int | None = None, backoff: float | None = None, jitter: float = 0.5
) -> dict[str, Any]:
    """Keyword arguments for `@task(...)`. Defaults: 6 retries, 0.5 s doubling (≈ 32 s in all).

    `HYBRIDGRID_RETRIES` and `HYBRIDGRID_RETRY_BACKOFF` (seconds) override the defaults, read
    when the task module is imported (tests and benchmarks shrink the backoff that way).
    """
    retries = int(_env_float("HYBRIDGRID_RETRIES", 6)) if retries is None else retries
    backoff = _env_float("HYBRIDGRID_RETRY_BACKOFF", 0.5) if backoff is None else backoff
    return {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=backoff),
        "retry_jitter_factor": jitter,
        "retry_condition_fn": retry_if_transient,
    }


# Every task of ours has side effects or reads live state: a cached result is never right.
TRANSIENT = {**transient_options(), "cache_policy": NO_CACHE}


# ---------------------------------------------------------------- in-process retries


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 6,
    base: float = 0.5,
    jitter: float = 0.5,
    max_delay: float = 15.0,
    deadline: float | None = None,
    transient: Callable[[BaseException], bool] = is_transient,
    what: str = "operation",
    progress_every: float | None = None,
) -> T:
    """Call `fn` until it succeeds, a permanent error occurs, attempts or `deadline` run out.

    `deadline` is in seconds from now. Delays double from `base`, capped by `max_delay`, and
    vary by ±`jitter` (a fraction) so that many waiters do not retry in lockstep. With
    `progress_every`, a line goes to the run's log at least that often (seconds): what is
    awaited, the last error and the time left, so a long wait is never silent.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop_at = None if deadline is None else started + deadline
    reported = started
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except Exception as exc:
            delay = min(max_delay, base * 2 ** (attempt - 1))
            delay *= 1 + random.uniform(-jitter, jitter)  # noqa: S311 -- jitter, not crypto
            late = stop_at is not None and loop.time() + delay > stop_at
            if attempt == attempts or late or not transient(exc):
                raise
            log.info(
                "%s: transient %s (attempt %d/%d), retrying in %.1f s",
                what,
                type(exc).__name__,
                attempt,
                attempts,
                delay,
            )
            now = loop.time()
            if progress_every is not None and now + delay - reported >= progress_every:
                reported = now
                left = "no deadline" if stop_at is None else f"{stop_at - now:.0f} s left"
                progress_logger().info(
                    "still waiting for %s: %s (%.0f s so far, %s, attempt %d)",
                    what,
                    _one_line(exc),
                    now - started,
                    left,
                    attempt,
                )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def progress_logger() -> logging.Logger | logging.LoggerAdapter:
    """The running flow's or task's logger (its lines show in the UI), else this module's."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # no run context: a plain call from a test or a script
        return log


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
