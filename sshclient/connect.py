"""SSH to a target with a private key: `connect` (one session; reused inside a flow run's
`reuse_connections()` scope) and `wait_for_ssh` (until a booting server runs commands).

Commands run as root: `sh -c …` for root, `sudo -n sh -c …` otherwise. File contents travel on
stdin, never in argv, and never appear in errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncssh
from pydantic import SecretStr

from hybridgrid.retry.classify import is_transient
from hybridgrid.retry.policy import with_retries
from hybridgrid.shell import RemoteCommandError
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.sshclient.client import RemoteHost, close_connection, hop_key, open_connection
from hybridgrid.sshclient.errors import (
    SSHAccessError,
    SSHAuthError,
    SSHConnectError,
    SSHUnreachable,
)
from hybridgrid.sshclient.keys import SSHKeyError, load_private_key
from hybridgrid.sshclient.pool import current_pool

# Errors after which a shared connection is not trusted again.
_CONNECTION_LEVEL = (SSHUnreachable, SSHConnectError, asyncssh.Error, OSError)


@contextlib.asynccontextmanager
async def connect(
    target: SSHTarget,
    client_key: SecretStr | str | asyncssh.SSHKey,
    *,
    via: RemoteHost | None = None,
) -> AsyncIterator[RemoteHost]:
    """Open SSH to `target` with the given private key: through `via` (an open connection to
    the hop, reused: many workers behind one hub/spoke need one hop connection), else through
    `target.jump` first, if any. Inside `reuse_connections()` the scope's connection to the
    same target is used (and kept open) instead."""
    if isinstance(client_key, asyncssh.SSHKey):
        key = client_key
    else:
        try:
            key = load_private_key(client_key)
        except SSHKeyError as exc:
            raise SSHKeyError(f"client key for {target.label}: {exc}") from None
    pool = current_pool()
    if pool is not None and pool.usable() and via is None and target.sock_factory is None:
        async with pool.slot(target, key):
            conn = await pool.get(target, key)
            try:
                yield RemoteHost(target, conn)
            except _CONNECTION_LEVEL:
                await pool.drop(target, key)
                raise
        return
    async with contextlib.AsyncExitStack() as stack:
        if via is not None:
            conn = await open_connection(target, key, via.conn)
            stack.push_async_callback(close_connection, conn)
        else:
            conn = await _open_chain(stack, target, key)
        yield RemoteHost(target, conn)


async def _open_chain(
    stack: contextlib.AsyncExitStack, target: SSHTarget, key: asyncssh.SSHKey
) -> asyncssh.SSHClientConnection:
    """Connections to every hop of `target.jump` (outermost first), then to `target`; all
    closed with `stack`, innermost first."""
    tunnel = None
    if target.jump is not None:
        tunnel = await _open_chain(stack, target.jump, await hop_key(target.jump, key))
    conn = await open_connection(target, key, tunnel)
    stack.push_async_callback(close_connection, conn)
    return conn


# A way in that failed this long (no route, proxy exits, bastion) will not start working.
PATH_BUDGET = 60.0
# Seconds between progress lines of a wait; with 15 s connect attempts, lines are ≤ ~30 s apart.
PROGRESS_EVERY = 15.0


async def wait_for_ssh(
    target: SSHTarget,
    client_key: SecretStr | str,
    *,
    timeout: float = 300.0,
    auth_grace: bool = True,
    path_budget: float = PATH_BUDGET,
) -> str:
    """Wait until `target` accepts SSH and runs a command; return its proven host key line.

    Refused/reset/lost connections are retried with backoff until `timeout`, with a progress
    line in the run's log at least every ~30 s. With `auth_grace`, "permission denied" is
    retried too: sshd often starts before cloud-init has written authorized_keys. A host key
    mismatch is never retried. When every attempt for `path_budget` seconds failed on the way
    in (no route, a ProxyCommand that exits, the bastion), the wait ends with
    `SSHAccessError` naming the access setting, long before `timeout`: the callers wait for
    SSH only after the console showed the host keys, so sshd is up by then.
    """

    loop = asyncio.get_running_loop()
    started = loop.time()
    reached = False  # once any attempt got past the way in, the path is known to work

    async def attempt() -> str:
        nonlocal reached
        try:
            async with connect(target, client_key) as host:
                await host.run("true", name="ssh ready", timeout=30)
                return host.server_host_key
        except SSHUnreachable as exc:
            elapsed = loop.time() - started
            if exc.path is None:
                reached = True
            elif not reached and elapsed >= path_budget:
                raise SSHAccessError(
                    target.label, f"{exc.path}, for {elapsed:.0f} s", exc.hint or target.hint
                ) from exc
            raise
        except (SSHAuthError, RemoteCommandError):
            reached = True
            raise

    def retry(exc: BaseException) -> bool:
        return is_transient(exc) or (auth_grace and isinstance(exc, SSHAuthError))

    return await with_retries(
        attempt,
        attempts=10_000,
        base=0.5,
        max_delay=5.0,
        deadline=timeout,
        transient=retry,
        what=f"ssh on {target.label}",
        progress_every=PROGRESS_EVERY,
    )
