"""Ports: allowed-address pairs and security groups merged in (what others set stays)."""

from __future__ import annotations

from typing import Any

from openstack.connection import Connection

from hybridgrid.cloudops.finder import read
from hybridgrid.records import (
    Action,
    PortRecord,
)
from hybridgrid.rules import normalized_cidr


def port_record(
    conn: Connection, port: Any, name: str = "", action: Action = "reused"
) -> PortRecord:
    return PortRecord(
        name=name or port.name or port.id,
        id=port.id,
        action=action,
        fixed_ip=port.fixed_ips[0]["ip_address"],
        network_id=port.network_id,
        allowed_address_pairs=[p["ip_address"] for p in port.allowed_address_pairs or []],
        security_group_ids=list(port.security_group_ids or []),
        port_security_enabled=port.is_port_security_enabled is not False,
    )


def ensure_allowed_address_pairs(conn: Connection, port_id: str, cidrs: list[str]) -> PortRecord:
    """Merge pairs into the port's list: what someone else set stays."""
    port = read(conn.network.get_port, port_id)
    if port.is_port_security_enabled is False:
        # No anti-spoofing on this port, so nothing to allow; Neutron would refuse pairs with
        # a 409 (AddressPairAndPortSecurityRequired) that looks transient to the retry policy.
        return port_record(conn, port)
    have = [dict(p) for p in port.allowed_address_pairs or []]
    have_ips = {normalized_cidr(p["ip_address"]) for p in have}
    missing = [c for c in cidrs if normalized_cidr(c) not in have_ips]
    if not missing:
        return port_record(conn, port)
    port = conn.network.update_port(
        port, allowed_address_pairs=have + [{"ip_address": c} for c in missing]
    )
    return port_record(conn, port, action="updated")


def remove_allowed_address_pairs(conn: Connection, port_id: str, cidrs: list[str]) -> PortRecord:
    port = read(conn.network.get_port, port_id)
    drop = {normalized_cidr(c) for c in cidrs}
    have = [dict(p) for p in port.allowed_address_pairs or []]
    keep = [p for p in have if normalized_cidr(p["ip_address"]) not in drop]
    if len(keep) == len(have):
        return port_record(conn, port)
    port = conn.network.update_port(port, allowed_address_pairs=keep)
    return port_record(conn, port, action="updated")


def ensure_port_security_groups(conn: Connection, port_id: str, group_ids: list[str]) -> PortRecord:
    """Add groups to a port, keeping the ones already there."""
    port = read(conn.network.get_port, port_id)
    have = list(port.security_group_ids or [])
    missing = [g for g in group_ids if g not in have]
    if not missing:
        return port_record(conn, port)
    port = conn.network.update_port(port, security_groups=have + missing)
    return port_record(conn, port, action="updated")
