"""SSH identities by block name, cached per process.

Tasks take the SSHKey block's *name* (safe to log and to keep as a task parameter) and resolve
it here, so a private key never travels as a task argument, result or cache key.
"""

from __future__ import annotations

import threading

from pydantic import ValidationError

from hybridgrid.blocks.ssh import SSHKey

_lock = threading.Lock()
_keys: dict[str, SSHKey] = {}


def use_ssh_key(name: str, key: SSHKey) -> None:
    """Register a key under a block name without a Prefect server (tests, the demo)."""
    with _lock:
        _keys[name] = key


def forget_ssh_key(name: str) -> None:
    with _lock:
        _keys.pop(name, None)


def forget_all() -> None:
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
