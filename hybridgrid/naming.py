"""Names and ownership tags of everything hybridgrid creates (docs/architecture.md §3).

Every resource is named ``hg-<site>-<role>[-<n>]`` and carries the tags ``hybridgrid`` and
``hybridgrid-site=<site>``; Nova servers carry the same facts as metadata because server tags
are not what the seed's tooling reads. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

PREFIX = "hg"
TAG = "hybridgrid"
SITE_TAG_KEY = "hybridgrid-site"

# Roles used across the flows; a role is a short lowercase word (``worker`` gets a number).
NET = "net"
SUBNET = "subnet"
ROUTER = "router"
SG = "sg"
VPN = "vpn"
WORKER = "worker"
MASTER = "master"
KEY = "key"

_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_ROLE = re.compile(r"^[a-z][a-z0-9]*$")


def resource_name(site: str, role: str, n: int | None = None) -> str:
    """``hg-<site>-<role>[-<n>]``, e.g. ``hg-giessen-worker-1``."""
    if not _LABEL.match(site):
        raise ValueError(f"site {site!r} is not a DNS label (lowercase letters, digits, '-')")
    if not _ROLE.match(role):
        raise ValueError(f"role {role!r} must be a lowercase word such as 'vpn' or 'worker'")
    if n is not None and n < 1:
        raise ValueError(f"resource number must be ≥ 1, got {n}")
    name = f"{PREFIX}-{site}-{role}"
    return name if n is None else f"{name}-{n}"


def site_tag(site: str) -> str:
    return f"{SITE_TAG_KEY}={site}"


def tags(site: str) -> list[str]:
    """Neutron tags of a resource owned by ``site``."""
    return [TAG, site_tag(site)]


def server_metadata(site: str) -> dict[str, str]:
    """Nova metadata standing in for tags on servers."""
    return {TAG: "true", SITE_TAG_KEY: site}


def is_owned(resource_tags: Iterable[str], site: str | None = None) -> bool:
    """True when the tags mark a hybridgrid resource (of ``site`` when given)."""
    found = set(resource_tags)
    if TAG not in found:
        return False
    return site is None or site_tag(site) in found


def site_of_tags(resource_tags: Iterable[str]) -> str | None:
    """The owning site from tags, or None when the resource is not ours."""
    found = list(resource_tags)
    if TAG not in found:
        return None
    for tag in found:
        if tag.startswith(SITE_TAG_KEY + "="):
            return tag.split("=", 1)[1]
    return None


def site_of_metadata(metadata: Mapping[str, str] | None) -> str | None:
    """The owning site from server metadata, or None when the server is not ours."""
    if not metadata or metadata.get(TAG) != "true":
        return None
    return metadata.get(SITE_TAG_KEY)
