"""The retry policy, in one place: what is transient, how long to back off, what to tell the user.

Transient (retried with exponential backoff and jitter): HTTP 5xx, 409 conflicts (except quota),
408/429, connection refused/reset/timeouts, SSH not yet up. Everything else — auth, quota,
validation, not found, a changed host key — fails at once with a message naming the fix.

Use `@task(**TRANSIENT)` on Prefect tasks, `await with_retries(...)` inside a task.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncssh
import keystoneauth1.exceptions as ksa
import openstack.exceptions as osx
import requests.exceptions as rqx
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_HTTP = {408, 409, 429}
TRANSIENT_ERRNO = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.EHOSTDOWN,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.ETIMEDOUT,
    errno.EPIPE,
}
_QUOTA = re.compile(r"quota|over ?limit|OverQuota", re.IGNORECASE)


class TransientError(Exception):
    """Raise (or subclass) for a condition that will likely pass: 'not ready yet'."""


class PermanentError(Exception):
    """Raise (or subclass) to stop retries at once, whatever the cause chain says."""


# ---------------------------------------------------------------- classification


def _http_status(exc: BaseException) -> int | None:
    if isinstance(exc, osx.HttpException):
        return exc.status_code
    if isinstance(exc, ksa.HttpError):
        return exc.http_status or None
    return None


def _http_text(exc: BaseException) -> str:
    parts = [str(exc), str(getattr(exc, "details", "") or "")]
    return " ".join(parts)


def is_quota_error(exc: BaseException) -> bool:
    status = _http_status(exc)
    return status in (403, 409, 413) and bool(_QUOTA.search(_http_text(exc)))


def _classify(exc: BaseException) -> bool | None:
    """True transient, False permanent, None: no opinion (look at the cause)."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PermanentError):
        return False
    status = _http_status(exc)
    if status is not None:
        if is_quota_error(exc):
            return False
        return status >= 500 or status in TRANSIENT_HTTP
    if isinstance(exc, osx.ResourceTimeout):  # waiting for ACTIVE timed out: look again
        return True
    if isinstance(exc, ksa.SSLError):
        return False
    if isinstance(exc, ksa.RetriableConnectionFailure | ksa.ConnectionError):
        return True
    if isinstance(exc, rqx.SSLError):
        return False
    if isinstance(exc, rqx.ConnectionError | rqx.Timeout):
        return True
    if isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
        return False
    if isinstance(exc, asyncssh.ConnectionLost):
        return True
    if isinstance(exc, asyncssh.ChannelOpenError):
        # the jump host could not reach the worker's sshd (yet)
        return exc.code == asyncssh.OPEN_CONNECT_FAILED
    if isinstance(exc, asyncssh.DisconnectError):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in TRANSIENT_ERRNO
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could help. Follows explicit `raise … from` causes; default: no."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        verdict = _classify(cur)
        if verdict is not None:
            return verdict
        cur = cur.__cause__
        seen += 1
    return False


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


# ---------------------------------------------------------------- messages for people


def _quota_message(exc: BaseException) -> str:
    text = _http_text(exc)
    resource = None
    m = re.search(r"Quota exceeded for resources?:?\s*\[?'?([A-Za-z_-]+)", text, re.IGNORECASE)
    m = m or re.search(r"Quota exceeded for ([A-Za-z_-]+)", text, re.IGNORECASE)
    if m:
        resource = m.group(1)
    used = re.search(r"Requested (\d+), but already used (\d+) of (\d+)", text)
    what = resource or "a resource"
    if used:
        req, cur, limit = (int(x) for x in used.groups())
        free = max(1, cur + req - limit)
        return (
            f"quota for {what} exceeded (used {cur} of {limit}, requested {req}): "
            f"free {free} {what} in the project or ask the cloud operator to raise the quota"
        )
    return (
        f"quota for {what} exceeded: free some {what} in the project or ask the cloud "
        f"operator to raise the quota"
    )


_KINDS = {
    "images": "image",
    "flavors": "flavor",
    "networks": "network",
    "subnets": "subnet",
    "routers": "router",
    "servers": "server",
    "ports": "port",
    "security-groups": "security group",
    "floatingips": "floating IP",
    "os-keypairs": "keypair",
}


def _not_found_target(exc: BaseException) -> str:
    url = str(getattr(exc, "url", None) or "")
    m = re.search(r"/(" + "|".join(map(re.escape, _KINDS)) + r")(?:[/?]|$)", url)
    if m:
        return _KINDS[m.group(1)]
    m = re.search(r"\b(image|flavor|network)\b", str(exc), re.IGNORECASE)
    return m.group(1).lower() if m else "resource"


def friendly_error(
    exc: BaseException, *, credentials_block: str | None = None, cloud: str | None = None
) -> str:
    """One sentence naming the cause and the fix, for a permanent error."""
    where = f" by cloud {cloud}" if cloud else ""
    block = (
        f"the credentials block {credentials_block!r}"
        if credentials_block
        else ("the OpenStack credentials block")
    )
    status = _http_status(exc)
    detail = str(getattr(exc, "details", "") or "").strip() or str(exc)
    if isinstance(exc, ksa.Unauthorized) or status == 401:
        if re.search(r"application credential.*expired", detail, re.IGNORECASE | re.DOTALL):
            return (
                f"the application credential in {block} has expired{where}: create a new one "
                f"(openstack application credential create) and save its id and secret in "
                f"{block}"
            )
        return (
            f"authentication rejected{where}: check {block} (auth URL, user or application "
            f"credential id/secret, project and domain)"
        )
    if is_quota_error(exc):
        return _quota_message(exc) + (f" ({cloud})" if cloud else "")
    if status == 403:
        return f"forbidden{where}: {detail}; the account in {block} lacks the needed role"
    if status == 404 or isinstance(exc, osx.NotFoundException):
        return (
            f"{_not_found_target(exc)} not found{where}: {detail}; check the name in the site "
            f"spec (names are case-sensitive) against `openstack image/flavor/network list`"
        )
    if status == 400:
        return f"request rejected as invalid{where}: {detail}; fix the named value in the spec"
    if isinstance(exc, ksa.AuthorizationFailure | ksa.MissingAuthPlugin):
        return f"cannot authenticate{where}: {exc}; check {block}"
    if isinstance(exc, ksa.EndpointNotFound | osx.EndpointNotFound):
        return f"service endpoint missing{where}: {exc}; check region and interface in {block}"
    if isinstance(exc, ksa.SSLError | rqx.SSLError):
        return f"TLS failure talking to the API{where}: check the CA bundle/verify in {block}"
    return f"{type(exc).__name__}: {exc}"
