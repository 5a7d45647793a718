"""The OpenStack operations' permanent errors: each says what is wrong and what to do."""

from __future__ import annotations

from hybridgrid.retry.classify import PermanentError


class OwnershipError(PermanentError):
    """Several resources carry the same name and our tags: refuse to guess which is ours."""


class ResourceConflict(PermanentError):
    """A resource of ours exists but differs in a way we must not change silently."""


class ServerBootFailed(PermanentError):
    """A server went to ERROR more often than we replace it."""


class ServerStuck(PermanentError):
    """A server neither became ACTIVE nor went away in time (waiting again would not help)."""
