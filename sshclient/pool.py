"""SSH connections shared within one flow run: `reuse_connections()` (or the
`sharing_connections` decorator on a flow) keeps them open, and `connect` uses them."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncssh

from hybridgrid.ssh_target import SSHTarget
from hybridgrid.sshclient.client import close_connection, hop_key, open_connection
from hybridgrid.sshclient.errors import SSHConnectError, SSHUnreachable


class SharedConnections:
    """SSH connections kept open for the length of a `reuse_connections()` scope (one flow
    run): every `connect` in the scope to the same target — same address, port, user, way in
    and pinned host keys — with the same client key gets the connection the first one made.

    The pins are part of the identity, so a re-pinned (rebuilt) server gets a new connection;
    a connection that closed, or whose holder failed with a connection-level error, is
    dropped and the next `connect` opens a new one. At most `PER_CONNECTION` holders share a
    connection at a time (sshd allows 10 sessions per connection by default).
    """

    PER_CONNECTION = 4

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._conns: dict[tuple, asyncssh.SSHClientConnection] = {}
        self._opening: dict[tuple, asyncio.Lock] = {}
        self._slots: dict[tuple, asyncio.Semaphore] = {}
        self.opened = 0  # connections made (diagnostics, tests)
        self.closed = False

    @staticmethod
    def identity(target: SSHTarget, key: asyncssh.SSHKey) -> tuple:
        return (target.model_dump_json(exclude={"sock_factory"}), key.get_fingerprint())

    def usable(self) -> bool:
        return asyncio.get_running_loop() is self._loop

    async def get(self, target: SSHTarget, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
        """The scope's connection to `target`, opened when there is none (or it closed).

        After the scope ended (a task still running when its flow returned, e.g. a sibling
        of a failed step) no connection is opened any more: it would outlive the scope."""
        ident = self.identity(target, key)
        self._refuse_if_closed(target)
        async with self._opening.setdefault(ident, asyncio.Lock()):
            self._refuse_if_closed(target)
            conn = self._conns.get(ident)
            if conn is None or conn.is_closed():
                tunnel = None
                if target.jump is not None:
                    tunnel = await self.get(target.jump, await hop_key(target.jump, key))
                try:
                    conn = await open_connection(target, key, tunnel)
                except (SSHUnreachable, SSHConnectError):
                    if target.jump is not None:  # the hop's connection may be the dead part
                        await self.drop(target.jump, await hop_key(target.jump, key))
                    raise
                if self.closed:  # the scope ended while this one was connecting
                    await close_connection(conn)
                    self._refuse_if_closed(target)
                self._conns[ident] = conn
                self.opened += 1
            return conn

    def _refuse_if_closed(self, target: SSHTarget) -> None:
        if self.closed:
            raise SSHConnectError(
                target.label, RuntimeError("the flow run that shared its SSH connections ended")
            )

    def slot(self, target: SSHTarget, key: asyncssh.SSHKey) -> asyncio.Semaphore:
        return self._slots.setdefault(
            self.identity(target, key), asyncio.Semaphore(self.PER_CONNECTION)
        )

    async def drop(self, target: SSHTarget, key: asyncssh.SSHKey) -> None:
        conn = self._conns.pop(self.identity(target, key), None)
        if conn is not None:
            await close_connection(conn)

    async def aclose(self) -> None:
        self.closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in reversed(conns):  # workers before the hops they tunnel through
            await close_connection(conn)


_shared: contextvars.ContextVar[SharedConnections | None] = contextvars.ContextVar(
    "hybridgrid_shared_ssh", default=None
)


@contextlib.asynccontextmanager
async def reuse_connections() -> AsyncIterator[SharedConnections]:
    """Within this block (and the tasks it runs: Prefect copies the context), `connect`
    reuses SSH connections instead of opening one per task; all are closed at the end."""
    pool = SharedConnections()
    token = _shared.set(pool)
    try:
        yield pool
    finally:
        _shared.reset(token)
        await pool.aclose()


def sharing_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: the async function (a flow) runs inside `reuse_connections()`. Put it
    under `@flow`. The signature is resolved here, in the function's own module (Prefect
    would otherwise evaluate string annotations in this module's namespace)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        async with reuse_connections():
            return await fn(*args, **kwargs)

    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    wrapper.__annotations__ = typing.get_type_hints(fn)
    return wrapper


def current_pool() -> SharedConnections | None:
    """The connections of the `reuse_connections()` scope this code runs in, if any."""
    return _shared.get()
