"""What every new cloud starts with: a project, a user, an application credential, the public
network, the default security group; and the fixed flavor and image catalogues."""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from typing import Any

from localcloud.runtime import Cloud, new_id, now_iso
from localcloud.store import Store

_NS = uuid.UUID("6d1c6a4e-8f0a-4c39-9a4e-5f0d7c0a1b00")

# (name, vcpus, ram MiB, disk GiB) — de.NBI style names.
FLAVORS = [
    {"id": str(uuid.uuid5(_NS, f"flavor/{name}")), "name": name, "vcpus": v, "ram": r, "disk": d}
    for name, v, r, d in [
        ("de.NBI tiny", 1, 1024, 10),
        ("de.NBI mini", 1, 2048, 20),
        ("de.NBI small", 2, 4096, 20),
        ("de.NBI medium", 4, 8192, 50),
        ("de.NBI large", 8, 16384, 50),
    ]
]

IMAGES = [
    {
        "id": str(uuid.uuid5(_NS, f"image/{name}")),
        "name": name,
        "os_distro": "ubuntu",
        "os_version": version,
        "size": size,
    }
    for name, version, size in [
        ("ubuntu-22.04", "22.04", 675_282_944),
        ("ubuntu-24.04", "24.04", 594_673_664),
    ]
]


def default_security_group(cloud: Cloud) -> dict[str, Any]:
    """Neutron's per-project `default` group: all egress, ingress only from its own members."""
    project_id = cloud.project["id"]
    sg_id = new_id()
    now = now_iso()
    rules = []
    for direction, ethertype in [
        ("egress", "IPv4"),
        ("egress", "IPv6"),
        ("ingress", "IPv4"),
        ("ingress", "IPv6"),
    ]:
        rules.append(
            {
                "id": new_id(),
                "security_group_id": sg_id,
                "direction": direction,
                "ethertype": ethertype,
                "protocol": None,
                "port_range_min": None,
                "port_range_max": None,
                "remote_ip_prefix": None,
                "remote_group_id": sg_id if direction == "ingress" else None,
                "remote_address_group_id": None,
                "normalized_cidr": None,
                "description": "",
                "project_id": project_id,
                "tenant_id": project_id,
                "created_at": now,
                "updated_at": now,
                "revision_number": 0,
                "tags": [],
            }
        )
    group = {
        "id": sg_id,
        "name": "default",
        "description": "Default security group",
        "project_id": project_id,
        "tenant_id": project_id,
        "stateful": True,
        "shared": False,
        "tags": [],
        "created_at": now,
        "updated_at": now,
        "revision_number": 1,
    }
    return {"group": group, "rules": rules}


def _seed_identity(store: Store, cloud_name: str) -> str:
    """The cloud's one project, user and application credential; returns the project id."""
    project_id = uuid.uuid4().hex
    store.set_meta("project", {"id": project_id, "name": "admin"})
    store.set_meta(
        "user",
        {"id": uuid.uuid4().hex, "name": "admin", "password": secrets.token_urlsafe(24)},
    )
    store.set_meta(
        "appcred",
        {
            "id": uuid.uuid4().hex,
            "name": f"{cloud_name}-localcloud",
            "secret": secrets.token_urlsafe(32),
        },
    )
    return project_id


def _public_network(common: dict[str, Any], net_id: str) -> dict[str, Any]:
    return {
        **common,
        "id": net_id,
        "name": "public",
        "admin_state_up": True,
        "status": "ACTIVE",
        "mtu": 1450,
        "router:external": True,
        "shared": False,
        "is_default": True,
        "port_security_enabled": True,
        "availability_zones": ["nova"],
        "availability_zone_hints": [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "qos_policy_id": None,
        "provider:network_type": "flat",
        "provider:physical_network": "public",
        "provider:segmentation_id": None,
    }


def _public_subnet(
    common: dict[str, Any], net_id: str, cidr: ipaddress.IPv4Network
) -> dict[str, Any]:
    """Gateway .1; floating IPs and router gateways from .10 up."""
    hosts = list(cidr.hosts())
    return {
        **common,
        "id": new_id(),
        "name": "public-subnet",
        "network_id": net_id,
        "ip_version": 4,
        "cidr": str(cidr),
        "gateway_ip": str(hosts[0]),
        "allocation_pools": [{"start": str(hosts[9]), "end": str(hosts[-1])}],
        "dns_nameservers": [],
        "host_routes": [],
        "enable_dhcp": False,
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "subnetpool_id": None,
        "service_types": [],
        "segment_id": None,
        "_next": int(ipaddress.IPv4Address(str(hosts[9]))),
    }


def seed_cloud(cloud: Cloud) -> None:
    """Create the cloud's first state once; later starts find it in the store."""
    store = cloud.store
    if store.meta.get("seeded"):
        return
    with store.tx():
        project_id = _seed_identity(store, cloud.name)
        now = now_iso()
        common = {
            "project_id": project_id,
            "tenant_id": project_id,
            "description": "",
            "tags": [],
            "created_at": now,
            "updated_at": now,
            "revision_number": 1,
        }
        net_id = new_id()
        store.put("networks", _public_network(common, net_id))
        store.put("subnets", _public_subnet(common, net_id, cloud.config.external_cidr))
        sg = default_security_group(cloud)
        store.put("security_groups", sg["group"])
        for rule in sg["rules"]:
            store.put("security_group_rules", rule)
        store.set_meta("seeded", True)
