"""Every HTTP request this process sends to the Prefect API (httpx, each retry attempt on
its own), with its start, duration and status: where a flow's time "outside any task" goes
(block and registry I/O, locks, artifacts, task-run bookkeeping, 503 back-offs).

A diagnostic of the benchmark process only: httpx's send methods are wrapped while a
`trace()` context is open; nothing in the product changes.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator

from pydantic import BaseModel


class Call(BaseModel):
    start: float  # time.monotonic()
    seconds: float
    method: str
    path: str  # /api/… with ids replaced by {id}
    status: int  # 0: no answer (exception)


class Trace:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def add(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def between(self, t0: float, t1: float) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if t0 <= c.start < t1]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _path(url) -> str:
    path = _UUID.sub("{id}", str(url.path))
    return re.sub(r"/(name|by-name)/[^/]+", r"/\1/{name}", path)


@contextlib.contextmanager
def trace() -> Iterator[Trace]:
    import httpx

    t = Trace()
    orig_async, orig_sync = httpx.AsyncClient.send, httpx.Client.send

    def record(request, t0: float, status: int) -> None:
        t.add(
            Call(
                start=t0,
                seconds=time.monotonic() - t0,
                method=request.method,
                path=_path(request.url),
                status=status,
            )
        )

    async def send_async(self, request, *args, **kwargs):
        t0, status = time.monotonic(), 0
        try:
            response = await orig_async(self, request, *args, **kwargs)
            status = response.status_code
            return response
        finally:
            record(request, t0, status)

    def send_sync(self, request, *args, **kwargs):
        t0, status = time.monotonic(), 0
        try:
            response = orig_sync(self, request, *args, **kwargs)
            status = response.status_code
            return response
        finally:
            record(request, t0, status)

    httpx.AsyncClient.send, httpx.Client.send = send_async, send_sync
    try:
        yield t
    finally:
        httpx.AsyncClient.send, httpx.Client.send = orig_async, orig_sync


def summary(calls: list[Call], top: int = 6) -> str:
    """Count, 503s and the slowest kinds of request (summed by method + path)."""
    if not calls:
        return "Prefect API: no requests traced"
    by_kind: dict[str, list[float]] = {}
    for c in calls:
        by_kind.setdefault(f"{c.method} {c.path}", []).append(c.seconds)
    slow = sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))[:top]
    busy = sum(c.seconds for c in calls)
    n503 = sum(c.status == 503 for c in calls)
    writes = sum(c.method in ("POST", "PUT", "PATCH", "DELETE") for c in calls)
    return (
        f"Prefect API: {len(calls)} requests ({writes} POST/PUT/PATCH/DELETE, {n503} answered "
        f"503), {busy:.1f} s summed; most time: "
        + ", ".join(f"{k} ×{len(v)} {sum(v):.2f} s" for k, v in slow)
    )
