"""The running API's shared state: the clouds, their stores, the backend and the appliers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcloud.backend import Backend
from localcloud.config import CloudConfig, Quotas
from localcloud.faults import FaultInjector
from localcloud.snapshot import build_snapshot
from localcloud.store import Store

log = logging.getLogger("localcloud")

SERVICES = ("identity", "compute", "network", "image")
DOMAIN = {"id": "default", "name": "Default"}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id() -> str:
    return str(uuid.uuid4())


def new_mac(taken: set[str]) -> str:
    while True:
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac


class Applier:
    """Hands snapshots of one cloud to the backend: off the event loop, one at a time, coalesced.

    Callers that arrive while an apply is queued (not yet started) share it, because it will
    snapshot the store only when it starts, after their change.
    """

    def __init__(self, runtime: Runtime, cloud: str) -> None:
        self.runtime = runtime
        self.cloud = cloud
        self.lock = asyncio.Lock()
        self._queued: asyncio.Future | None = None
        self.last_error: str | None = None
        self.applied = 0

    async def apply(self) -> None:
        """Converge the backend to the current state; raises what the backend raised."""
        if self._queued is None:
            fut = asyncio.get_running_loop().create_future()
            self._queued = fut
            task = asyncio.create_task(self._run(fut))
            self.runtime.apply_tasks.add(task)
            task.add_done_callback(self.runtime.apply_tasks.discard)
        fut = self._queued
        await asyncio.shield(fut)

    async def _run(self, fut: asyncio.Future) -> None:
        async with self.lock:
            self._queued = None
            try:
                cloud = self.runtime.clouds[self.cloud]
                snap = build_snapshot(cloud.name, cloud.config.index, cloud.store)
                await asyncio.to_thread(self.runtime.backend.apply, snap)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("backend apply failed for cloud %s", self.cloud)
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: not every caller wants it
            else:
                self.applied += 1
                self.last_error = None
                fut.set_result(None)


@dataclass
class Cloud:
    config: CloudConfig
    store: Store
    base_url: str  # http://127.0.0.1:<port>/<cloud>
    runtime: Runtime
    applier: Applier = field(init=False)

    def __post_init__(self) -> None:
        self.applier = Applier(self.runtime, self.config.name)

    @property
    def name(self) -> str:
        return self.config.name

    def endpoint(self, service: str) -> str:
        suffix = {"identity": "/v3", "compute": "/v2.1"}.get(service, "")
        return f"{self.base_url}/{service}{suffix}"

    @property
    def project(self) -> dict[str, Any]:
        return self.store.meta["project"]

    @property
    def user(self) -> dict[str, Any]:
        return self.store.meta["user"]

    def quotas(self) -> Quotas:
        merged = self.config.quotas.model_dump() | self.store.meta.get("quotas", {})
        return Quotas(**merged)

    async def changed(self) -> None:
        """After a mutating call: let the backend converge; its failure is logged, not raised."""
        # Logged by the applier; the API state is committed either way.
        with contextlib.suppress(Exception):
            await self.applier.apply()


@dataclass
class Stats:
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count(self, cloud: str, service: str, method: str, mutating: bool, injected: bool) -> None:
        c = self.counts.setdefault(
            cloud, {"total": 0, "mutating": 0, "injected_errors": 0, "by_service": {}}
        )
        c["total"] += 1
        c["mutating"] += int(mutating)
        c["injected_errors"] += int(injected)
        svc = c["by_service"].setdefault(service, defaultdict(int))
        svc[method] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            cloud: {**c, "by_service": {s: dict(m) for s, m in c["by_service"].items()}}
            for cloud, c in self.counts.items()
        }

    def reset(self) -> None:
        self.counts.clear()


@dataclass
class Runtime:
    state_dir: Path
    port: int
    backend: Backend
    token_key: bytes
    admin_token: str
    faults: FaultInjector
    clouds: dict[str, Cloud] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    tasks: set[asyncio.Task] = field(default_factory=set)  # boots: cancelled on stop
    apply_tasks: set[asyncio.Task] = field(default_factory=set)  # applies: awaited on stop
    started: float = field(default_factory=time.time)

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
