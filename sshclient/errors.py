"""Why SSH to a host failed, said so that a person knows what to fix; each error says whether
retrying can help (`SSHUnreachable` transient; host key, auth and access errors permanent)."""

from __future__ import annotations

import errno

import asyncssh

from hybridgrid.retry.classify import PermanentError, is_transient
from hybridgrid.shell import RemoteError
from hybridgrid.ssh_target import SSHTarget


class HostKeyMismatch(RemoteError):
    """The server presented a host key we have not pinned. Permanent: never retried."""

    def __init__(self, label: str, presented: str | None = None):
        self.label = label
        self.presented = presented
        shown = f" (it presented {presented})" if presented else ""
        super().__init__(
            f"host key of {label} does not match the pinned key{shown}. Either someone is "
            f"intercepting the connection, or the server was rebuilt: if it was rebuilt, pin its "
            f"new host keys again from its console log (rerun the pinning step), then retry."
        )


class SSHAuthError(RemoteError):
    """The server refused our client key. Permanent."""

    def __init__(self, label: str):
        self.label = label
        super().__init__(
            f"{label} refused the SSH key (permission denied): check that the site's SSH key "
            f"block holds the key whose public half is in the server's authorized_keys"
        )


class SSHUnreachable(RemoteError, ConnectionError):
    """SSH is not (yet) reachable: refused, reset, timed out, lost. Transient.

    `path` says whether the failure lies on the way in rather than at the server (no route,
    a ProxyCommand that exits, the bastion): `wait_for_ssh` gives up on those early."""

    def __init__(
        self, label: str, cause: BaseException, *, bastion: bool = False, hint: str | None = None
    ):
        self.label = label
        self.hint = hint
        self.path = _path_failure(cause, bastion)
        reason = str(cause) or type(cause).__name__
        via = f" (way in: {hint})" if hint and self.path else ""
        super().__init__(f"SSH to {label} not reachable: {type(cause).__name__}: {reason}{via}")


def _path_failure(cause: BaseException, bastion: bool) -> str | None:
    """Why the way in (not the server) failed, or None when the server may just be slow."""
    if bastion:
        return f"the bastion is not reachable ({type(cause).__name__}: {cause or 'no answer'})"
    if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to the address from where the flow runs"
    if isinstance(cause, asyncssh.ConnectionLost):
        return "the ProxyCommand exited before the server answered"
    return None


class SSHConnectError(RemoteError):
    """SSH failed for a reason retrying will not fix (bad proxy command, protocol error)."""

    def __init__(self, label: str, cause: BaseException):
        self.label = label
        reason = str(cause) or type(cause).__name__
        super().__init__(f"SSH to {label} failed: {type(cause).__name__}: {reason}")


class SSHAccessError(RemoteError, PermanentError):
    """The way in to a cloud's servers cannot work: no route from where the flow runs, a
    ProxyCommand that exits, a bastion that cannot be reached, refuses us or shows an unpinned
    host key. Permanent: the message names the cloud's access setting to fix."""

    def __init__(self, label: str, reason: str, hint: str | None):
        self.label = label
        self.reason = reason
        self.hint = hint
        fix = f" Fix {hint}." if hint else ""
        super().__init__(f"SSH to {label} cannot work: {reason}.{fix}")


def connection_error(target: SSHTarget, exc: BaseException) -> RemoteError:
    label = target.label
    if target.key_block is not None:  # a bastion: the way in itself failed
        return SSHUnreachable(label, exc, bastion=True, hint=target.hint)
    if is_transient(exc):
        return SSHUnreachable(label, exc, hint=target.hint)
    return SSHConnectError(label, exc)
