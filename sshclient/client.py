"""One SSH connection with pinned host keys: open it (directly, through a ProxyCommand or a
tunnel), run commands on it as root, close it.

Host keys are pinned (OpenSSH key lines and/or SHA256 fingerprints from the console log);
there is no trust-on-first-use and no known_hosts file: a server that shows another key is
refused with `HostKeyMismatch`. The client key stays in memory.

A bastion logs in with its own key, an SSHKey block named on the hop (`key_block`). The blocks
sit above this library, so `hybridgrid.blocks.loading` registers how to load one by name
(`use_hop_key_loader`) instead of this module importing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncssh
from pydantic import SecretStr

from hybridgrid.shell import CommandResult, RemoteCommandTimeout, RemoteError
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.sshclient.errors import (
    HostKeyMismatch,
    SSHAccessError,
    SSHAuthError,
    SSHConnectError,
    connection_error,
)
from hybridgrid.sshclient.keys import load_private_key
from hybridgrid.sshclient.shell import as_root, command_result, upload_command

# How to get a bastion's private key from its SSHKey block's name (registered by the blocks).
HopKeyLoader = Callable[[str], Awaitable[SecretStr | str]]
_hop_key_loader: HopKeyLoader | None = None


def use_hop_key_loader(load: HopKeyLoader) -> None:
    """Register how a hop's `key_block` becomes its private key."""
    global _hop_key_loader
    _hop_key_loader = load


class _PinnedClient(asyncssh.SSHClient):
    """Accepts a key not in the pinned list only when its SHA256 fingerprint is pinned."""

    def __init__(self, fingerprints: list[str]):
        self._fingerprints = set(fingerprints)
        self.presented: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key) -> bool:
        fp = key.get_fingerprint("sha256")
        self.presented = fp
        return fp in self._fingerprints


class RemoteHost:
    """An open SSH connection to one target; implements RemoteShell."""

    def __init__(self, target: SSHTarget, conn: asyncssh.SSHClientConnection):
        self.target = target
        self.conn = conn
        self.label = target.label

    @property
    def server_host_key(self) -> str:
        """The host key the server proved it holds (OpenSSH line), to store in the registry."""
        key = self.conn.get_server_host_key()
        assert key is not None
        return key.export_public_key("openssh").decode().strip()

    async def run(
        self,
        cmd: str,
        *,
        name: str,
        timeout: float = 60,
        check: bool = True,
        input: bytes | None = None,
    ) -> CommandResult:
        try:
            proc = await self.conn.run(
                as_root(cmd, self.target.user),
                input=input or b"",
                encoding=None,
                check=False,
                timeout=timeout,
            )
        except asyncssh.TimeoutError as exc:
            raise RemoteCommandTimeout(name, self.label, timeout) from exc
        except (OSError, asyncssh.Error) as exc:
            raise connection_error(self.target, exc) from exc
        out = proc.stdout if isinstance(proc.stdout, bytes) else b""
        err = proc.stderr if isinstance(proc.stderr, bytes) else b""
        return command_result(name, self.label, proc.exit_status, out, err, check)

    async def upload(
        self, path: str, content: bytes, *, mode: int = 0o600, name: str | None = None
    ) -> None:
        await self.run(
            upload_command(path, mode), name=name or f"upload {path}", input=content, timeout=60
        )


async def open_connection(
    target: SSHTarget,
    key: asyncssh.SSHKey,
    tunnel: asyncssh.SSHClientConnection | None = None,
) -> asyncssh.SSHClientConnection:
    """One SSH connection to `target` (host key pinned), through `tunnel` when given (then
    `target.jump` is not used). Close it with `close_connection`; `connect` does both."""
    pinned = [asyncssh.import_public_key(line) for line in target.host_keys]
    client = _PinnedClient(target.host_key_fingerprints)
    kwargs: dict = {}
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    elif target.proxy_command is not None:
        kwargs["proxy_command"] = target.expanded_proxy_command()
    try:
        if tunnel is None and target.proxy_command is None and target.sock_factory is not None:
            kwargs["sock"] = await asyncio.to_thread(target.sock_factory)
        return await asyncssh.connect(
            target.host,
            target.port,
            username=target.user,
            client_keys=[key],
            known_hosts=(pinned, [], []),
            client_factory=lambda: client,
            # with fingerprint pins the key type is unknown up front: offer every algorithm
            server_host_key_algs="default" if target.host_key_fingerprints else (),
            config=[],
            agent_path=None,
            password=None,
            kbdint_auth=False,
            gss_auth=False,
            preferred_auth="publickey",
            connect_timeout=target.connect_timeout,
            keepalive_interval=30,  # notice a dead path (NAT, rebuilt hub) on long commands
            **kwargs,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise _bastion_refused(target, HostKeyMismatch(target.label, client.presented)) from exc
    except asyncssh.KeyExchangeFailed as exc:
        # no common host key algorithm: the server has none of the pinned key types
        if "host key" in str(exc).lower():
            raise _bastion_refused(target, HostKeyMismatch(target.label)) from exc
        raise SSHConnectError(target.label, exc) from exc
    except asyncssh.PermissionDenied as exc:
        raise _bastion_refused(target, SSHAuthError(target.label)) from exc
    except (OSError, asyncssh.Error) as exc:  # refused, reset, unreachable, timeout, lost…
        raise connection_error(target, exc) from exc


def _bastion_refused(target: SSHTarget, exc: RemoteError) -> RemoteError:
    """On a bastion hop a host-key or login refusal is the cloud's access setting's fault."""
    if target.key_block is None:
        return exc
    if isinstance(exc, HostKeyMismatch):
        shown = f" {exc.presented}" if exc.presented else " a key"
        reason = (
            f"the bastion {target.label} presented{shown} that is not pinned in "
            f"access.bastion.host_keys (a changed bastion, or someone in between)"
        )
    else:
        reason = (
            f"the bastion {target.label} refused the key of SSHKey block {target.key_block!r} "
            f"(access.bastion.key_block): its public half must be in the bastion's "
            f"authorized_keys for user {target.user}"
        )
    return SSHAccessError(target.label, reason, target.hint)


async def hop_key(hop: SSHTarget, key: asyncssh.SSHKey) -> asyncssh.SSHKey:
    """The key a hop logs in with: its own block's (a bastion), else the target's `key`."""
    if hop.key_block is None:
        return key
    try:
        if _hop_key_loader is None:
            raise LookupError("no SSH key loader is registered (hybridgrid.blocks.loading)")
        private_key = await _hop_key_loader(hop.key_block)
    except Exception as exc:  # missing or unusable block: the access setting names it
        raise SSHAccessError(
            hop.label,
            f"the bastion's login key, SSHKey block {hop.key_block!r} "
            f"(access.bastion.key_block), cannot be loaded: {type(exc).__name__}: {exc}",
            hop.hint,
        ) from None
    return load_private_key(private_key)


async def close_connection(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    with contextlib.suppress(Exception):
        await conn.wait_closed()
