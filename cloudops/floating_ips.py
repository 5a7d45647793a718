"""Floating IPs: reuse the one on the port, else a spare of ours, else allocate one."""

from __future__ import annotations

from openstack.connection import Connection

from hybridgrid import naming
from hybridgrid.cloudops.finder import owned, read, tag_filter
from hybridgrid.records import (
    Action,
    FloatingIPRecord,
)


def ensure_floating_ip(
    conn: Connection, site: str, port_id: str, external_network_id: str
) -> FloatingIPRecord:
    """Reuse a floating IP already on the port (ours or not); else allocate one, tagged."""
    on_port = list(read(conn.network.ips, port_id=port_id))
    if on_port:
        fip = sorted(on_port, key=lambda f: f.id)[0]
        return FloatingIPRecord(
            name=fip.floating_ip_address,
            id=fip.id,
            address=fip.floating_ip_address,
            port_id=port_id,
            action="reused",
        )
    # An earlier attempt may have allocated one and died before associating it.
    tagged = read(conn.network.ips, floating_network_id=external_network_id, tags=tag_filter(site))
    spare = [f for f in owned(tagged, site) if not f.port_id]
    if spare:
        fip = conn.network.update_ip(sorted(spare, key=lambda f: f.id)[0], port_id=port_id)
        action: Action = "updated"
    else:
        fip = conn.network.create_ip(
            floating_network_id=external_network_id, port_id=port_id, tags=naming.tags(site)
        )
        action = "created"
    return FloatingIPRecord(
        name=fip.floating_ip_address,
        id=fip.id,
        address=fip.floating_ip_address,
        port_id=port_id,
        action=action,
    )


def floating_ip_of_port(conn: Connection, port_id: str) -> str | None:
    ips = sorted(read(conn.network.ips, port_id=port_id), key=lambda f: f.id)
    return ips[0].floating_ip_address if ips else None
