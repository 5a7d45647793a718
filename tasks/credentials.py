"""SSH identities by block name, cached per process.

Tasks take the SSHKey block's *name* (safe to log and to keep as a task parameter) and resolve
it here, so a private key never travels as a task argument, result or cache key.
"""

from __future__ import annotations

import threading

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


async def ssh_key(name: str) -> SSHKey:
    with _lock:
        if name in _keys:
            return _keys[name]
    key = await SSHKey.aload(name)
    with _lock:
        return _keys.setdefault(name, key)
