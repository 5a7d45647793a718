"""Names of everything the data plane makes (pure functions).

Every namespace starts with ``lc<tag>-`` where the tag is derived from the state directory,
so several localcloud instances (the demo's and a test run's) live side by side and
``destroy`` finds all of one instance's leftovers by prefix. Links and nftables tables live
only inside those namespaces, never in the root namespace, so their names need to be unique
per namespace only; they are built from short hashes of the OpenStack ids (link names must
stay within Linux's 15 characters).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

NS_PREFIX = "lc"
INSTANCE_NS_RE = re.compile(r"^lc([0-9a-f]{4})-inet$")
BASTION_NS_RE = re.compile(r"^lc([0-9a-f]{4})-bastion$")


def short(ident: str, n: int = 10) -> str:
    return hashlib.sha256(ident.encode()).hexdigest()[:n]


def instance_tag(state_dir: Path) -> str:
    """3–4 hex characters naming one localcloud instance (one state directory)."""
    return short(str(Path(state_dir).resolve()), 4)


def prefix(tag: str) -> str:
    return f"{NS_PREFIX}{tag}-"


def inet_ns(tag: str) -> str:
    return f"{prefix(tag)}inet"


def bastion_ns(tag: str) -> str:
    """The instance's bastion host (at most one), linked to the internet namespace."""
    return f"{prefix(tag)}bastion"


# The bastion's veth: its own end and the internet namespace's end (no other link there
# starts with "v": external networks' ends are "x…").
BASTION_LINK = "eth0"
BASTION_INET_LINK = "vbastion"


def fabric_ns(tag: str, cloud: str) -> str:
    return f"{prefix(tag)}f{short(cloud, 6)}"


def server_ns(tag: str, server_id: str) -> str:
    return f"{prefix(tag)}s{short(server_id)}"


def router_ns(tag: str, router_id: str) -> str:
    return f"{prefix(tag)}r{short(router_id)}"


def bridge(network_id: str) -> str:
    """The tenant/external network's bridge in the cloud's fabric namespace."""
    return f"b{short(network_id, 12)}"


def port_link(port_id: str) -> str:
    """Fabric-side end of a port's veth (the 'tap' Neutron would plug into the bridge)."""
    return f"t{short(port_id, 12)}"


def uplink(network_id: str) -> str:
    """Fabric-side end of an external network's link to the internet namespace."""
    return f"u{short(network_id, 12)}"


def inet_link(network_id: str) -> str:
    """Internet-namespace end of an external network's link."""
    return f"x{short(network_id, 12)}"


def router_gw_link(port_id: str) -> str:
    return f"qg{short(port_id, 11)}"


def router_if_link(port_id: str) -> str:
    return f"qr{short(port_id, 11)}"
