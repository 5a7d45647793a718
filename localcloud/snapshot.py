"""Build the backend's `CloudSnapshot` from one cloud's store (pure: reads only).

Imports only the store and the backend's models: the runtime calls it (one direction), so it
takes the cloud's name, index and store rather than the runtime's `Cloud`.
"""

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
from localcloud.store import Doc, Store


def _decode(user_data: str | None) -> str | None:
    if not user_data:
        return None
    try:
        return base64.b64decode(user_data).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None


def _networks(store: Store) -> list[Network]:
    subnets = store.all("subnets")
    return [
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


def _port(p: Doc) -> Port:
    return Port(
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


def _rule(r: Doc) -> Rule:
    return Rule(
        id=r["id"],
        direction=r["direction"],
        ethertype=r["ethertype"],
        protocol=r["protocol"],
        port_range_min=r["port_range_min"],
        port_range_max=r["port_range_max"],
        remote_ip_prefix=r["remote_ip_prefix"],
        remote_group_id=r["remote_group_id"],
    )


def _security_groups(store: Store) -> list[SecurityGroup]:
    rules = store.all("security_group_rules")
    return [
        SecurityGroup(
            id=g["id"],
            name=g["name"],
            rules=[_rule(r) for r in rules if r["security_group_id"] == g["id"]],
        )
        for g in store.all("security_groups")
    ]


def _routers(store: Store, ports: list[Doc]) -> list[Router]:
    return [
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


def _floating_ips(store: Store) -> list[FloatingIP]:
    return [
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


def _server(store: Store, s: Doc, ports: list[Doc]) -> Server:
    keypair = store.get("keypairs", s["key_name"]) if s.get("key_name") else None
    return Server(
        id=s["id"],
        name=s["name"],
        # a booting server is ACTIVE for the backend first: the host starts before Nova says so
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


def build_snapshot(cloud: str, index: int, store: Store) -> CloudSnapshot:
    """Everything the backend needs about cloud `cloud` (number `index`), read from `store`."""
    ports = store.all("ports")
    return CloudSnapshot(
        cloud=cloud,
        index=index,
        networks=_networks(store),
        ports=[_port(p) for p in ports],
        security_groups=_security_groups(store),
        routers=_routers(store, ports),
        floating_ips=_floating_ips(store),
        servers=[_server(store, s, ports) for s in store.all("servers")],
    )
