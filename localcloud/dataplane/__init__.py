"""localcloud part 2: the real hosts and networks behind the API (network namespaces).

``make_backend(state_dir)`` returns the :class:`NamespaceBackend` that implements
``localcloud.backend.Backend``.

Imports are lazy (PEP 562): every SSH connection to a localcloud server starts
``python -m localcloud.dataplane.cli proxy`` as its ProxyCommand, and that path needs only
``netns`` — not the backend, pydantic or typer (≈ 0.3–0.5 s of imports per connection).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localcloud.dataplane.namespace_backend import NamespaceBackend
    from localcloud.dataplane.netns import DataplaneError, open_connection_socket

_LAZY = {
    "NamespaceBackend": "localcloud.dataplane.namespace_backend",
    "DataplaneError": "localcloud.dataplane.netns",
    "open_connection_socket": "localcloud.dataplane.netns",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def make_backend(state_dir: Path) -> NamespaceBackend:
    from localcloud.dataplane.namespace_backend import NamespaceBackend

    return NamespaceBackend(Path(state_dir))


__all__ = ["DataplaneError", "NamespaceBackend", "make_backend", "open_connection_socket"]
