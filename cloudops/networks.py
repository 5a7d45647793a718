"""A site's network, subnet and router (attached to the external network)."""

from __future__ import annotations

import ipaddress
from typing import Any

from openstack.connection import Connection

from hybridgrid import naming
from hybridgrid.cloudops.errors import (
    ResourceConflict,
)
from hybridgrid.cloudops.finder import find_or_none, find_owned, read
from hybridgrid.records import (
    Action,
    NetworkRecord,
    RouterRecord,
    SubnetRecord,
)


def ensure_network(conn: Connection, site: str, name: str) -> NetworkRecord:
    net = find_owned(conn, "network", site, name)
    if net is not None:
        return NetworkRecord(name=name, id=net.id, mtu=net.mtu or 1450, action="reused")
    net = conn.network.create_network(name=name, tags=naming.tags(site))
    return NetworkRecord(name=name, id=net.id, mtu=net.mtu or 1450, action="created")


def ensure_subnet(
    conn: Connection,
    site: str,
    name: str,
    network_id: str,
    cidr: str,
    dns_nameservers: list[str] | None = None,
) -> SubnetRecord:
    sub = find_owned(conn, "subnet", site, name)
    if sub is not None:
        if ipaddress.ip_network(sub.cidr) != ipaddress.ip_network(cidr):
            raise ResourceConflict(
                f"subnet {name} ({sub.id}) has CIDR {sub.cidr}, the site wants {cidr}: a "
                f"subnet's CIDR cannot change — remove the site (hybridgrid site remove) or "
                f"put {sub.cidr} back in the spec"
            )
        return SubnetRecord(
            name=name,
            id=sub.id,
            cidr=sub.cidr,
            gateway_ip=sub.gateway_ip,
            network_id=sub.network_id,
            action="reused",
        )
    sub = conn.network.create_subnet(
        name=name,
        network_id=network_id,
        ip_version=4,
        cidr=cidr,
        dns_nameservers=dns_nameservers or [],
        tags=naming.tags(site),
    )
    return SubnetRecord(
        name=name,
        id=sub.id,
        cidr=sub.cidr,
        gateway_ip=sub.gateway_ip,
        network_id=sub.network_id,
        action="created",
    )


def external_network(conn: Connection, name: str) -> Any:
    net = find_or_none(conn.network.find_network, name)
    if net is None or not net.is_router_external:
        raise LookupError(
            f"external network {name!r} not found on this cloud: set external_network to one "
            f"of: {', '.join(_external_names(conn))}"
        )
    return net


def _external_names(conn: Connection) -> list[str]:
    return sorted(n.name for n in read(conn.network.networks, is_router_external=True))


def ensure_router(
    conn: Connection, site: str, name: str, external_network_id: str, subnet_id: str
) -> RouterRecord:
    router = find_owned(conn, "router", site, name)
    action: Action = "reused"
    if router is None:
        router = conn.network.create_router(
            name=name,
            external_gateway_info={"network_id": external_network_id},
            tags=naming.tags(site),
        )
        action = "created"
    elif (router.external_gateway_info or {}).get("network_id") != external_network_id:
        router = conn.network.update_router(
            router, external_gateway_info={"network_id": external_network_id}
        )
        action = "updated"
    attached = any(
        any(ip.get("subnet_id") == subnet_id for ip in (p.fixed_ips or []))
        for p in read(conn.network.ports, device_id=router.id)
    )
    if not attached:
        conn.network.add_interface_to_router(router, subnet=subnet_id)
        action = "created" if action == "created" else "updated"
    ext_ips = (router.external_gateway_info or {}).get("external_fixed_ips") or []
    return RouterRecord(
        name=name,
        id=router.id,
        action=action,
        external_ip=ext_ips[0]["ip_address"] if ext_ips else None,
    )
