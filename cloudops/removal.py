"""Removal of a site's resources: only what carries our tags (or server metadata), in
dependency order; "in use" by something not ours is said, never forced."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from openstack import exceptions as osexc
from openstack.connection import Connection

from hybridgrid import naming
from hybridgrid.cloudops.errors import (
    ResourceConflict,
)
from hybridgrid.cloudops.finder import owned, read, tag_filter
from hybridgrid.cloudops.servers import wait_gone
from hybridgrid.records import (
    Record,
)


def _delete_or_explain(
    delete: Any, resource: Any, kind: str, users: Callable[[], list[str]]
) -> None:
    """Delete; when Neutron says "in use" and something not ours really uses it, say what.

    A 409 is transient in general (and localcloud injects them), so only a real user turns
    it into a permanent error."""
    try:
        delete(resource, ignore_missing=True)
    except osexc.ConflictException:
        in_use = users()
        if in_use:
            raise ResourceConflict(
                f"{kind} {resource.name} ({resource.id}) is still used by {', '.join(in_use)}, "
                f"which hybridgrid did not create: detach or delete those, then rerun the removal"
            ) from None
        raise


def remove_site_resources(conn: Connection, site: str, timeout: float = 300) -> list[Record]:
    """Delete every resource tagged for `site`, in dependency order. Safe to rerun: what is
    gone is skipped, and nothing without our tags (or server metadata) is touched."""
    out: list[Record] = []
    servers = [s for s in read(conn.compute.servers) if naming.site_of_metadata(s.metadata) == site]
    for server in servers:
        conn.compute.delete_server(server, ignore_missing=True)
        out.append(Record(kind="server", name=server.name, id=server.id, action="deleted"))
    for server in servers:
        wait_gone(conn, server.id, timeout, 0.5)
    for fip in owned(read(conn.network.ips, tags=tag_filter(site)), site):
        conn.network.delete_ip(fip, ignore_missing=True)
        out.append(
            Record(kind="floating_ip", name=fip.floating_ip_address, id=fip.id, action="deleted")
        )
    for router in owned(read(conn.network.routers, tags=tag_filter(site)), site):
        if router.routes:  # Neutron keeps an interface a route's nexthop needs
            router = conn.network.update_router(router, routes=[])
        for port in read(conn.network.ports, device_id=router.id):
            if port.device_owner == "network:router_interface":
                with contextlib.suppress(osexc.NotFoundException):
                    conn.network.remove_interface_from_router(router, port=port.id)
        conn.network.delete_router(router, ignore_missing=True)
        out.append(Record(kind="router", name=router.name, id=router.id, action="deleted"))
    for sub in owned(read(conn.network.subnets, tags=tag_filter(site)), site):
        users = functools.partial(_port_users, conn, network_id=sub.network_id)
        _delete_or_explain(conn.network.delete_subnet, sub, "subnet", users)
        out.append(Record(kind="subnet", name=sub.name, id=sub.id, action="deleted"))
    for net in owned(read(conn.network.networks, tags=tag_filter(site)), site):
        users = functools.partial(_port_users, conn, network_id=net.id)
        _delete_or_explain(conn.network.delete_network, net, "network", users)
        out.append(Record(kind="network", name=net.name, id=net.id, action="deleted"))
    for sg in owned(read(conn.network.security_groups, tags=tag_filter(site)), site):
        users = functools.partial(_port_users, conn, security_group=sg.id)
        _delete_or_explain(conn.network.delete_security_group, sg, "security group", users)
        out.append(Record(kind="security_group", name=sg.name, id=sg.id, action="deleted"))
    return out


def _port_users(conn: Connection, *, network_id: str = "", security_group: str = "") -> list[str]:
    """Ports that keep a network or group in use (DHCP ports go with their network)."""
    ports = (
        read(conn.network.ports, network_id=network_id)
        if network_id
        else [p for p in read(conn.network.ports) if security_group in (p.security_group_ids or [])]
    )
    return [
        f"port {p.id} ({p.device_owner or 'unattached'})"
        for p in ports
        if p.device_owner != "network:dhcp"
    ]
