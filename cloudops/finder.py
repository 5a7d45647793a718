"""Finding what is ours: reads that retry in place, and one finder for the resources a site
owns (its name and hybridgrid's tags; several matches are an error, never a guess)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from openstack import exceptions as osexc
from openstack.connection import Connection

from hybridgrid import naming
from hybridgrid.cloudops.errors import OwnershipError
from hybridgrid.retry.classify import is_transient

# Reads retry in place: they are safe to repeat, and a task with a dozen reads would otherwise
# need many whole-task retries at a modest error rate. Writes are never repeated here: the
# task retries, finds what an earlier attempt made, and goes on from there (no duplicates).
READ_ATTEMPTS = 4
READ_BACKOFF = 0.2  # seconds, doubling, ±50 % jitter


def read(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a read-only SDK method (lists are materialised), retrying transient errors."""
    for attempt in range(READ_ATTEMPTS):
        try:
            out = fn(*args, **kwargs)
            return list(out) if isinstance(out, Iterator) else out
        except Exception as exc:
            if attempt == READ_ATTEMPTS - 1 or not is_transient(exc):
                raise
            time.sleep(READ_BACKOFF * 2**attempt * random.uniform(0.5, 1.5))  # noqa: S311
    raise AssertionError("unreachable")


def find_or_none(finder: Callable[..., Any], name_or_id: str) -> Any | None:
    """`conn.<service>.find_<kind>` by name or id, None when missing (the SDK's own
    `ignore_missing=True` is deprecated)."""
    try:
        return read(finder, name_or_id, ignore_missing=False)
    except osexc.NotFoundException:
        return None


def tag_filter(site: str) -> str:
    """Neutron's `tags=` filter (all must match), in its documented comma-separated form."""
    return ",".join(naming.tags(site))


def owned(items: Iterable[Any], site: str) -> list[Any]:
    # Neutron filters by tags already; checking again costs nothing and guards a cloud that
    # silently ignores an unknown filter (older Neutron without standard-attr-tag).
    want = set(naming.tags(site))
    return [x for x in items if want <= set(getattr(x, "tags", None) or [])]


OwnedKind = Literal["network", "subnet", "router", "security group"]
_LISTS: dict[OwnedKind, str] = {
    "network": "networks",
    "subnet": "subnets",
    "router": "routers",
    "security group": "security_groups",
}


def find_owned(conn: Connection, kind: OwnedKind, site: str, name: str) -> Any | None:
    """The Neutron resource of `kind` named `name` that carries `site`'s tags: None when there
    is none, `OwnershipError` when there are several."""
    found = read(getattr(conn.network, _LISTS[kind]), name=name, tags=tag_filter(site))
    return only(owned(found, site), kind, name)


def only(items: Iterable[Any], kind: str, name: str) -> Any | None:
    """The one item, None when there is none; several are an `OwnershipError`."""
    found = list(items)
    if len(found) > 1:
        ids = ", ".join(sorted(x.id for x in found))
        raise OwnershipError(
            f"{len(found)} {kind}s named {name!r} carry hybridgrid's tags ({ids}); "
            f"hybridgrid will not guess which is its own: delete the extra ones, then rerun"
        )
    return found[0] if found else None
