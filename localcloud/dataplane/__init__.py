"""localcloud part 2: the real hosts and networks behind the API (network namespaces).

``make_backend(state_dir)`` returns the :class:`NamespaceBackend` that implements
``localcloud.backend.Backend``.
"""

from __future__ import annotations

from pathlib import Path

from localcloud.dataplane.namespace_backend import NamespaceBackend
from localcloud.dataplane.netns import DataplaneError, open_connection_socket


def make_backend(state_dir: Path) -> NamespaceBackend:
    return NamespaceBackend(Path(state_dir))


__all__ = ["DataplaneError", "NamespaceBackend", "make_backend", "open_connection_socket"]
