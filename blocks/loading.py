"""Blocks loaded by name, cached per process: OpenStack connections (with how the cloud's
servers are reached) and SSH identities; and a count of the API calls each cloud's connection
received (benchmarks and the no-op-rerun check read it).

Tasks take the block's *name* (a string is safe to log and to put in a task's parameters; the
credentials never are) and call `connection(name)`. The first call loads the
`OpenStackCredentials` block from the Prefect API and builds the connection; later calls in
the same process reuse it (openstacksdk connections are safe to share between threads).

Without a Prefect server (tests, the demo, `hybridgrid` CLI helpers), register a connection
built elsewhere, e.g. from a clouds.yaml entry, under a name with `use_connection(name, conn)`;
tasks then find it by that name exactly as if it came from a block.

SSH identities: tasks take the SSHKey block's *name* too and resolve it with `ssh_key(name)`,
so a private key never travels as a task argument, result or cache key; `use_ssh_key(name, key)`
registers one without a Prefect server. Importing this module also tells the SSH client how to
load a bastion's login key by its block name (`hybridgrid.sshclient.client.use_hop_key_loader`).

Counting: `api_calls()` / `mutating_calls(cloud)` are per process (since `reset_counts()`).
For one flow run among several concurrent ones, wrap it in `with track() as calls:` — calls
made in that context, including in task threads (Prefect and `asyncio.to_thread` copy the
context), land in `calls` too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr, ValidationError

from hybridgrid.access import CloudAccess
from hybridgrid.blocks.openstack import OpenStackCredentials
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.sshclient.client import use_hop_key_loader

if TYPE_CHECKING:
    from openstack.connection import Connection

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# HTTP connections kept per host: requests' default is 10, fewer than the threads a drift
# check over many sites reads one cloud with (more made do, then get dropped with a warning).
HTTP_POOL_SIZE = 64

_lock = threading.Lock()
_connections: dict[str, Connection] = {}
_access: dict[str, CloudAccess] = {}
_keys: dict[str, SSHKey] = {}
_load_locks: dict[str, threading.Lock] = {}
_counts: dict[str, CallCounts] = {}
_trackers: ContextVar[tuple[Tracker, ...]] = ContextVar("hybridgrid_api_trackers", default=())


class CallCounts(BaseModel):
    """API calls a cloud answered since the last reset (token issue excluded)."""

    total: int = 0
    mutating: int = 0
    by_method: dict[str, int] = {}


class Tracker:
    """The calls made inside one `track()` context, per cloud (thread-safe)."""

    def __init__(self) -> None:
        self._counts: dict[str, CallCounts] = {}

    def add(self, cloud: str, method: str) -> None:
        with _lock:
            _add(self._counts, cloud, method)

    def calls(self) -> dict[str, CallCounts]:
        with _lock:
            return {name: c.model_copy(deep=True) for name, c in self._counts.items()}

    def mutating(self, cloud: str | None = None) -> int:
        """Mutating calls to `cloud`, or to all clouds when None."""
        with _lock:
            return sum(c.mutating for n, c in self._counts.items() if cloud in (None, n))


@contextlib.contextmanager
def track() -> Iterator[Tracker]:
    """Count the API calls made in this context (e.g. one flow run), nested contexts too."""
    tracker = Tracker()
    token = _trackers.set((*_trackers.get(), tracker))
    try:
        yield tracker
    finally:
        _trackers.reset(token)


def _add(counts: dict[str, CallCounts], cloud: str, method: str) -> None:
    c = counts.setdefault(cloud, CallCounts())
    c.total += 1
    c.mutating += method in MUTATING
    c.by_method[method] = c.by_method.get(method, 0) + 1


def _is_token_issue(method: str, url: str) -> bool:
    return method == "POST" and urlsplit(url).path.rstrip("/").endswith("/auth/tokens")


def _count_hook(name: str):
    def hook(response: Any, *args: Any, **kwargs: Any) -> None:
        request = response.request
        method = (request.method or "").upper()
        if _is_token_issue(method, request.url or ""):
            return
        with _lock:
            _add(_counts, name, method)
        for tracker in _trackers.get():  # the thread making the request runs in the context
            tracker.add(name, method)

    hook.hybridgrid_cloud = name  # type: ignore[attr-defined]  # marks our hook (no doubles)
    return hook


def instrument(name: str, conn: Connection) -> Connection:
    """Count the calls `conn` makes under `name` (a `requests` response hook on its session).

    A call is counted when an answer arrives, error answers included; a request whose
    connection dropped has no answer and is not counted.
    """
    session = conn.session.session
    hooks = session.hooks.setdefault("response", [])
    hooks[:] = [h for h in hooks if getattr(h, "hybridgrid_cloud", None) is None]
    hooks.append(_count_hook(name))
    _widen_pool(session)
    return conn


def _widen_pool(session: Any, size: int = HTTP_POOL_SIZE) -> None:
    """Keep up to `size` HTTP connections per host on every adapter of a requests session
    (keystoneauth's keep-alive adapter included): pools made from now on get that size."""
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None and manager.connection_pool_kw.get("maxsize", 1) < size:
            manager.connection_pool_kw["maxsize"] = size
            manager.clear()  # pools made before (an auth request) are made again on next use


def use_connection(name: str, conn: Connection, access: CloudAccess | None = None) -> Connection:
    """Register a connection (and how the cloud's servers are reached) under a block name
    (tests, demo: no Prefect server needed)."""
    instrument(name, conn)
    with _lock:
        _connections[name] = conn
        _access[name] = access or CloudAccess()
    return conn


def access(cloud: str) -> CloudAccess:
    """How the flows reach the servers of credentials block `cloud` (its `access` field),
    loaded with the connection and cached with it."""
    with _lock:
        found = _access.get(cloud)
    if found is None:
        connection(cloud)
        with _lock:
            found = _access[cloud]
    return found


def forget(name: str | None = None) -> None:
    """Drop the cached connection of `name` (all when None), e.g. after the block changed."""
    with _lock:
        if name is None:
            _connections.clear()
            _access.clear()
        else:
            _connections.pop(name, None)
            _access.pop(name, None)


def name_of(conn: Connection) -> str | None:
    """The block name a cached connection was loaded from (for error messages)."""
    with _lock:
        return next((n for n, c in _connections.items() if c is conn), None)


def connection(cloud: str) -> Connection:
    """The connection for credentials block `cloud`: loaded once per process, then cached."""
    with _lock:
        conn = _connections.get(cloud)
        if conn is not None:
            return conn
        load_lock = _load_locks.setdefault(cloud, threading.Lock())
    with load_lock:  # one block load per name, even when many tasks start at once
        with _lock:
            conn = _connections.get(cloud)
        if conn is not None:
            return conn
        try:
            creds = OpenStackCredentials.load(cloud, _sync=True)  # also from async code
        except ValueError as exc:
            raise LookupError(
                f"no OpenStack credentials block named {cloud!r}: create it "
                f"(hybridgrid cloud import {cloud}) or fix the cloud name in the site spec"
            ) from exc
        return use_connection(cloud, creds.connect(), creds.access)


# ---- counts --------------------------------------------------------------------------------


def api_calls() -> dict[str, CallCounts]:
    """A copy of the per-cloud counts since the last reset."""
    with _lock:
        return {name: c.model_copy(deep=True) for name, c in _counts.items()}


def mutating_calls(cloud: str) -> int:
    """POST/PUT/PATCH/DELETE calls (token issue excluded) cloud `cloud` answered."""
    with _lock:
        c = _counts.get(cloud)
        return c.mutating if c else 0


def reset_counts(cloud: str | None = None) -> None:
    with _lock:
        if cloud is None:
            _counts.clear()
        else:
            _counts.pop(cloud, None)


# ---- SSH identities ------------------------------------------------------------------------


def use_ssh_key(name: str, key: SSHKey) -> None:
    """Register a key under a block name without a Prefect server (tests, the demo)."""
    with _lock:
        _keys[name] = key


def forget_ssh_key(name: str) -> None:
    with _lock:
        _keys.pop(name, None)


def forget_all_ssh_keys() -> None:
    """Drop every cached key (after blocks were replaced, e.g. between test modules)."""
    with _lock:
        _keys.clear()


class SSHKeyBlockError(ValueError):
    """An SSHKey block that exists but does not hold a usable key (e.g. edited by hand)."""


async def ssh_key(name: str) -> SSHKey:
    with _lock:
        if name in _keys:
            return _keys[name]
    try:
        key = await SSHKey.aload(name)
    except RuntimeError as exc:
        # Prefect: "Unable to load ... due to failed validation"; the cause is the
        # ValidationError, whose text never quotes the rejected value (hide_input_in_errors).
        cause = exc.__cause__
        if not isinstance(cause, ValidationError):
            raise
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'block'}: {e['msg'].removeprefix('Value error, ')}"
            for e in cause.errors(include_url=False, include_input=False)
        )
        raise SSHKeyBlockError(
            f"SSHKey block {name!r} does not hold a usable key ({reasons}). Fix: save an "
            f"unencrypted OpenSSH or PEM private key in it, or delete the block so that "
            f"add-remote-site makes a new ed25519 pair"
        ) from None
    with _lock:
        return _keys.setdefault(name, key)


async def _private_key(name: str) -> SecretStr:
    return (await ssh_key(name)).private_key


use_hop_key_loader(_private_key)
