"""Build the backend's `CloudSnapshot` from one cloud's store (pure: reads only)."""

from __future__ import annotations

import base64
import binascii

from localcloud.backend import (
    AddressPair,
    CloudSnapshot,
    FixedIP,
    FloatingIP,
    Network,
    Port,
    Route,
    Router,
    Rule,
    SecurityGroup,
    Server,
    Subnet,
)
from localcloud.runtime import Cloud


def _decode(user_data: str | None) -> str | None:
    if not user_data:
        return None
    try:
        return base64.b64decode(user_data).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None


def build_snapshot(cloud: Cloud) -> CloudSnapshot:
    store = cloud.store
    subnets = store.all("subnets")
    ports = store.all("ports")
    networks = [
        Network(
            id=n["id"],
            name=n["name"],
            mtu=n["mtu"],
            external=bool(n.get("router:external")),
            subnets=[
                Subnet(
                    id=s["id"],
                    network_id=s["network_id"],
                    cidr=s["cidr"],
                    gateway_ip=s["gateway_ip"],
                )
                for s in subnets
                if s["network_id"] == n["id"]
            ],
        )
        for n in store.all("networks")
    ]
    snap_ports = [
        Port(
            id=p["id"],
            network_id=p["network_id"],
            mac_address=p["mac_address"],
            fixed_ips=[FixedIP(**ip) for ip in p["fixed_ips"]],
            device_id=p["device_id"],
            device_owner=p["device_owner"],
            port_security_enabled=p["port_security_enabled"],
            allowed_address_pairs=[AddressPair(**a) for a in p["allowed_address_pairs"]],
            security_group_ids=list(p["security_groups"]),
        )
        for p in ports
    ]
    rules = store.all("security_group_rules")
    groups = [
        SecurityGroup(
            id=g["id"],
            name=g["name"],
            rules=[
                Rule(
                    id=r["id"],
                    direction=r["direction"],
                    ethertype=r["ethertype"],
                    protocol=r["protocol"],
                    port_range_min=r["port_range_min"],
                    port_range_max=r["port_range_max"],
                    remote_ip_prefix=r["remote_ip_prefix"],
                    remote_group_id=r["remote_group_id"],
                )
                for r in rules
                if r["security_group_id"] == g["id"]
            ],
        )
        for g in store.all("security_groups")
    ]
    routers = [
        Router(
            id=r["id"],
            name=r["name"],
            gateway_port_id=r.get("_gw_port_id"),
            interface_port_ids=[
                p["id"]
                for p in ports
                if p["device_id"] == r["id"] and p["device_owner"] == "network:router_interface"
            ],
            routes=[Route(**x) for x in r.get("routes", [])],
            enable_snat=bool((r.get("external_gateway_info") or {}).get("enable_snat", True)),
        )
        for r in store.all("routers")
    ]
    fips = [
        FloatingIP(
            id=f["id"],
            floating_ip_address=f["floating_ip_address"],
            floating_network_id=f["floating_network_id"],
            port_id=f["port_id"],
            fixed_ip_address=f["fixed_ip_address"],
            router_id=f["router_id"],
        )
        for f in store.all("floatingips")
    ]
    servers = []
    for s in store.all("servers"):
        keypair = store.get("keypairs", s["key_name"]) if s.get("key_name") else None
        servers.append(
            Server(
                id=s["id"],
                name=s["name"],
                status=s.get("_dp_status") or s["status"],
                port_ids=[
                    p["id"]
                    for p in ports
                    if p["device_id"] == s["id"] and p["device_owner"].startswith("compute:")
                ],
                authorized_keys=[keypair["public_key"]] if keypair else [],
                user_data=_decode(s.get("user_data")),
                metadata=s["metadata"],
            )
        )
    return CloudSnapshot(
        cloud=cloud.name,
        index=cloud.config.index,
        networks=networks,
        ports=snap_ports,
        security_groups=groups,
        routers=routers,
        floating_ips=fips,
        servers=servers,
    )
