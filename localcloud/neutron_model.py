# ruff: noqa: E501 - OpenStack error messages are kept verbatim, on one line each
"""Neutron's rules as plain functions over one cloud's store: IP allocation, ports, quotas,
filters and views. The HTTP layer (network.py) and Nova (compute.py) both use them."""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterable
from typing import Any

from localcloud.errors import ApiError, bad_request, conflict
from localcloud.runtime import Cloud, new_id, new_mac, now_iso
from localcloud.store import Doc

# Store kind → Neutron's singular name, its quota name and its error prefix.
KINDS = {
    "networks": ("network", "network", "Network"),
    "subnets": ("subnet", "subnet", "Subnet"),
    "ports": ("port", "port", "Port"),
    "routers": ("router", "router", "Router"),
    "security_groups": ("security_group", "security_group", "SecurityGroup"),
    "security_group_rules": ("security_group_rule", "security_group_rule", "SecurityGroupRule"),
    "floatingips": ("floatingip", "floatingip", "FloatingIP"),
}
TAGGABLE = ("networks", "subnets", "ports", "routers", "security_groups", "floatingips")
PAGING = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}
TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")


def not_found(kind: str, id_: str) -> ApiError:
    singular, _, prefix = KINDS[kind]
    label = {"floatingips": "Floating IP", "security_group_rules": "Security group rule"}.get(
        kind, singular.replace("_", " ").capitalize() if kind != "networks" else "Network"
    )
    return ApiError(404, f"{label} {id_} could not be found.", f"{prefix}NotFound")


def get(cloud: Cloud, kind: str, id_: str) -> Doc:
    doc = cloud.store.get(kind, id_)
    if doc is None:
        raise not_found(kind, id_)
    return doc


def _check_common(body: dict[str, Any]) -> None:
    tags = body.get("tags")
    if tags is not None and (
        not isinstance(tags, list)
        or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in tags)
    ):
        raise bad_request(f"Invalid input for tags. Reason: '{tags}' is not a list of strings.")
    for key in ("name", "description", "project_id", "tenant_id"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise bad_request(
                f"Invalid input for {key}. Reason: '{body[key]}' is not a valid string."
            )


def common_fields(cloud: Cloud, body: dict[str, Any]) -> dict[str, Any]:
    _check_common(body)
    now = now_iso()
    pid = cloud.project["id"]
    return {
        "id": new_id(),
        "project_id": body.get("project_id") or body.get("tenant_id") or pid,
        "tenant_id": body.get("project_id") or body.get("tenant_id") or pid,
        "description": body.get("description") or "",
        "tags": list(dict.fromkeys(body.get("tags") or [])),
        "created_at": now,
        "updated_at": now,
        "revision_number": 1,
    }


def touch(doc: Doc) -> Doc:
    doc["updated_at"] = now_iso()
    doc["revision_number"] = doc.get("revision_number", 0) + 1
    return doc


def check_fields(
    body: dict[str, Any], allowed: Iterable[str], readonly: Iterable[str] = ()
) -> None:
    ro = [k for k in body if k in set(readonly)]
    if ro:
        raise bad_request(f"Cannot update read-only attribute {ro[0]}")
    unknown = sorted(k for k in body if k not in set(allowed))
    if unknown:
        raise bad_request("Unrecognized attribute(s) '" + ", ".join(unknown) + "'")


# ---- quotas -----------------------------------------------------------------------------


def usage(cloud: Cloud, quota_name: str) -> int:
    kind = next(k for k, (_, q, _) in KINDS.items() if q == quota_name)
    return len(cloud.store.all(kind))


def check_quota(cloud: Cloud, kind: str, adding: int = 1) -> None:
    quota_name = KINDS[kind][1]
    limit = getattr(cloud.quotas(), quota_name)
    if limit >= 0 and usage(cloud, quota_name) + adding > limit:
        raise conflict(f"Quota exceeded for resources: ['{quota_name}'].", "OverQuota")


# ---- filters and views ------------------------------------------------------------------


def _values(params: list[tuple[str, str]], key: str) -> list[str]:
    out: list[str] = []
    for k, v in params:
        if k == key:
            out.extend(x for x in v.split(",") if x)
    return out


def _match(value: Any, wanted: set[str]) -> bool:
    if isinstance(value, bool):
        return str(value).lower() in {w.lower() for w in wanted}
    if isinstance(value, list):
        return any(str(v) in wanted for v in value)
    if value is None:
        return bool(wanted & {"", "None", "null"})
    return str(value) in wanted


def filter_docs(docs: list[Doc], params: list[tuple[str, str]]) -> list[Doc]:
    """Neutron's server-side filters: equality (repeat = any of), fixed_ips, tag filters."""
    keys = {k for k, _ in params} - PAGING - set(TAG_FILTERS)
    out = []
    for doc in docs:
        ok = True
        for key in keys:
            values = [v for k, v in params if k == key]
            if key == "fixed_ips":
                for cond in values:
                    field, _, val = cond.partition("=")
                    if not any(str(ip.get(field)) == val for ip in doc.get("fixed_ips", [])):
                        ok = False
            elif key in doc and not _match(doc[key], set(values)):
                ok = False
            if not ok:
                break
        if ok and "tags" in doc:
            tags = set(doc["tags"])
            if (want := _values(params, "tags")) and not set(want) <= tags:
                ok = False
            if (want := _values(params, "tags-any")) and not set(want) & tags:
                ok = False
            if (want := _values(params, "not-tags")) and set(want) <= tags:
                ok = False
            if (want := _values(params, "not-tags-any")) and set(want) & tags:
                ok = False
        if ok:
            out.append(doc)
    return out


def project_fields(doc: Doc, params: list[tuple[str, str]]) -> Doc:
    fields = [v for k, v in params if k == "fields"]
    if not fields:
        return doc
    return {k: v for k, v in doc.items() if k in fields}


def public(cloud: Cloud, doc: Doc) -> Doc:
    """The stored document as Neutron shows it: no private keys, no disabled extensions."""
    out = {k: v for k, v in doc.items() if not k.startswith("_")}
    if not cloud.config.has_extension("port-security"):
        out.pop("port_security_enabled", None)
    if not cloud.config.has_extension("allowed-address-pairs"):
        out.pop("allowed_address_pairs", None)
    return out


# ---- IP allocation ----------------------------------------------------------------------


def used_ips(cloud: Cloud, subnet: Doc) -> set[str]:
    used = {
        ip["ip_address"]
        for port in cloud.store.all("ports")
        for ip in port["fixed_ips"]
        if ip["subnet_id"] == subnet["id"]
    }
    net = ipaddress.ip_network(subnet["cidr"])
    used |= {
        f["floating_ip_address"]
        for f in cloud.store.all("floatingips")
        if ipaddress.ip_address(f["floating_ip_address"]) in net
    }
    return used


def allocate_ip(cloud: Cloud, subnet: Doc, requested: str | None = None) -> str:
    """An address from the subnet's pools; the pointer moves on, so released addresses are
    handed out again only after the pool has wrapped around."""
    used = used_ips(cloud, subnet)
    net = ipaddress.ip_network(subnet["cidr"])
    if requested is not None:
        try:
            addr = ipaddress.ip_address(requested)
        except ValueError as exc:
            raise bad_request(
                f"Invalid input for operation: '{requested}' is not a valid IP address."
            ) from exc
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise bad_request(
                f"IP address {requested} is not a valid IP for the specified subnet.",
                "InvalidIpForSubnet",
            )
        if requested in used:
            raise conflict(
                f"IP address {requested} already allocated in subnet {subnet['id']}",
                "IpAddressAlreadyAllocated",
            )
        return requested
    gateway = subnet.get("gateway_ip")
    ranges = [
        (int(ipaddress.ip_address(p["start"])), int(ipaddress.ip_address(p["end"])))
        for p in subnet["allocation_pools"]
    ]
    start = subnet.get("_next", ranges[0][0] if ranges else 0)
    # From the pointer to the pools' end, then wrap around (lazily: a /16 has 65k addresses).
    ordered = itertools.chain(
        (i for lo, hi in ranges for i in range(max(lo, start), hi + 1)),
        (i for lo, hi in ranges for i in range(lo, min(hi, start - 1) + 1)),
    )
    for i in ordered:
        ip = str(ipaddress.ip_address(i))
        if ip not in used and ip != gateway:
            doc = cloud.store.edit("subnets", subnet["id"])
            assert doc is not None
            doc["_next"] = i + 1
            cloud.store.put("subnets", doc)
            return ip
    raise conflict(
        f"No more IP addresses available on network {subnet['network_id']}.",
        "IpAddressGenerationFailure",
    )


def network_subnets(cloud: Cloud, network_id: str) -> list[Doc]:
    return [s for s in cloud.store.all("subnets") if s["network_id"] == network_id]


def fixed_ips_for(cloud: Cloud, network: Doc, requested: list[dict] | None) -> list[dict]:
    subnets = network_subnets(cloud, network["id"])
    if requested is None:
        v4 = [s for s in subnets if s["ip_version"] == 4]
        return [{"subnet_id": v4[0]["id"], "ip_address": allocate_ip(cloud, v4[0])}] if v4 else []
    if not isinstance(requested, list):
        raise bad_request(f"Invalid input for fixed_ips. Reason: '{requested}' is not a list.")
    out = []
    for item in requested:
        if not isinstance(item, dict):
            raise bad_request("Invalid input for fixed_ips: each entry must be an object.")
        subnet = None
        if item.get("subnet_id"):
            subnet = next((s for s in subnets if s["id"] == item["subnet_id"]), None)
            if subnet is None:
                raise bad_request(
                    f"Invalid input for operation: Failed to create port on network "
                    f"{network['id']}, because fixed_ips included invalid subnet "
                    f"{item['subnet_id']}.",
                    "InvalidInput",
                )
        elif item.get("ip_address"):
            try:
                addr = ipaddress.ip_address(item["ip_address"])
            except ValueError as exc:
                raise bad_request(
                    f"Invalid input for fixed_ips. Reason: '{item['ip_address']}' is not a valid IP address.",
                    "InvalidInput",
                ) from exc
            subnet = next((s for s in subnets if addr in ipaddress.ip_network(s["cidr"])), None)
            if subnet is None:
                raise bad_request(
                    f"IP address {addr} is not a valid IP for any subnet on network "
                    f"{network['id']}.",
                    "InvalidIpForNetwork",
                )
        else:
            raise bad_request("Invalid input for fixed_ips: give subnet_id or ip_address.")
        ip = allocate_ip(cloud, subnet, item.get("ip_address"))
        out.append({"subnet_id": subnet["id"], "ip_address": ip})
    return out


# ---- ports ------------------------------------------------------------------------------

PORT_CREATE = {
    "network_id", "name", "description", "tags", "admin_state_up", "mac_address", "fixed_ips",
    "device_id", "device_owner", "security_groups", "port_security_enabled",
    "allowed_address_pairs", "binding:host_id", "binding:profile", "binding:vnic_type",
    "extra_dhcp_opts", "project_id", "tenant_id", "dns_name", "qos_policy_id",
    "propagate_uplink_status", "numa_affinity_policy",
}  # fmt: skip
PORT_UPDATE = PORT_CREATE - {"network_id", "project_id", "tenant_id"}


def check_extension_fields(cloud: Cloud, body: dict[str, Any]) -> None:
    for field, ext in (
        ("allowed_address_pairs", "allowed-address-pairs"),
        ("port_security_enabled", "port-security"),
    ):
        if field in body and not cloud.config.has_extension(ext):
            raise bad_request(f"Unrecognized attribute(s) '{field}'")


def resolve_security_groups(cloud: Cloud, ids: list[str]) -> list[str]:
    if not isinstance(ids, list):
        raise bad_request(f"Invalid input for security_groups. Reason: '{ids}' is not a list.")
    out = []
    for sg in ids:
        doc = cloud.store.get("security_groups", sg)
        if doc is None:
            raise ApiError(404, f"Security group {sg} does not exist", "SecurityGroupNotFound")
        out.append(doc["id"])
    return list(dict.fromkeys(out))


def default_sg_id(cloud: Cloud) -> str:
    return next(s["id"] for s in cloud.store.all("security_groups") if s["name"] == "default")


_MAC = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$")


def check_address_pairs(pairs: Any) -> list[dict]:
    if not isinstance(pairs, list):
        raise bad_request("Invalid input for allowed_address_pairs: must be a list.")
    out, seen = [], set()
    for p in pairs:
        if not isinstance(p, dict) or "ip_address" not in p:
            raise bad_request(
                "AllowedAddressPair must contain ip_address", "AllowedAddressPairsMissingIP"
            )
        unknown = set(p) - {"ip_address", "mac_address"}
        if unknown:
            raise bad_request(f"Unrecognized attribute(s) '{', '.join(sorted(unknown))}'")
        mac = p.get("mac_address")
        if mac is not None and not (isinstance(mac, str) and _MAC.match(mac)):
            raise bad_request(f"Invalid input for operation: '{mac}' is not a valid MAC address.")
        try:
            if not isinstance(p["ip_address"], str):
                raise ValueError(p["ip_address"])
            ipaddress.ip_network(p["ip_address"], strict=False)
        except ValueError as exc:
            raise bad_request(
                f"Invalid input for operation: '{p['ip_address']}' is not a valid IP address."
            ) from exc
        key = (p["ip_address"], p.get("mac_address"))
        if key in seen:
            raise bad_request(
                "Request contains duplicate address pair: " + str(p),
                "DuplicateAddressPairInRequest",
            )
        seen.add(key)
        out.append({"ip_address": p["ip_address"], "mac_address": p.get("mac_address")})
    if len(out) > 10:
        raise bad_request(
            "Exceeded maximum amount of allowed address pairs 10", "AllowedAddressPairExhausted"
        )
    return out


def _fill_pair_macs(pairs: list[dict], mac: str) -> list[dict]:
    return [{"ip_address": p["ip_address"], "mac_address": p["mac_address"] or mac} for p in pairs]


def create_port(cloud: Cloud, body: dict[str, Any]) -> Doc:
    """Validate and store a port (Neutron's POST /ports semantics)."""
    check_fields(body, PORT_CREATE)
    check_extension_fields(cloud, body)
    if not body.get("network_id"):
        raise bad_request("Invalid input for operation: network_id is required.")
    network = get(cloud, "networks", body["network_id"])
    check_quota(cloud, "ports")
    taken = {p["mac_address"] for p in cloud.store.all("ports")}
    mac = body.get("mac_address") or new_mac(taken)
    if mac in taken:
        raise conflict(
            f"Unable to complete operation for network {network['id']}. The mac address {mac} is in use.",
            "MacAddressInUse",
        )
    owner = body.get("device_owner") or ""
    port_security = body.get("port_security_enabled", network.get("port_security_enabled", True))
    if "security_groups" in body:
        sgs = resolve_security_groups(cloud, body["security_groups"] or [])
    elif port_security and not owner.startswith("network:"):
        sgs = [default_sg_id(cloud)]
    else:
        sgs = []
    if not port_security and sgs:
        raise bad_request(
            "Port has security group associated. Cannot disable port security or ip address "
            "until security group is removed",
            "PortSecurityAndIPRequiredForSecurityGroups",
        )
    pairs = check_address_pairs(body.get("allowed_address_pairs") or [])
    if pairs and not port_security:
        raise conflict(
            "Port Security must be enabled in order to have allowed address pairs on a port.",
            "AddressPairAndPortSecurityRequired",
        )
    with cloud.store.tx():
        fixed = fixed_ips_for(cloud, network, body.get("fixed_ips"))
        port = {
            **common_fields(cloud, body),
            "name": body.get("name") or "",
            "network_id": network["id"],
            "mac_address": mac,
            "admin_state_up": body.get("admin_state_up", True),
            "fixed_ips": fixed,
            "device_id": body.get("device_id") or "",
            "device_owner": owner,
            "security_groups": sgs,
            "port_security_enabled": bool(port_security),
            "allowed_address_pairs": _fill_pair_macs(pairs, mac),
            "binding:vnic_type": body.get("binding:vnic_type", "normal"),
            "binding:host_id": body.get("binding:host_id", ""),
            "binding:profile": body.get("binding:profile") or {},
            "binding:vif_details": {},
            "extra_dhcp_opts": body.get("extra_dhcp_opts") or [],
            "qos_policy_id": None,
            "ip_allocation": "immediate",
        }
        set_port_status(port)
        cloud.store.put("ports", port)
    return port


def set_port_status(port: Doc) -> None:
    bound = bool(port["device_id"] and port["device_owner"])
    port["status"] = "ACTIVE" if bound else "DOWN"
    port["binding:vif_type"] = "ovs" if bound else "unbound"
    if port["device_owner"].startswith("compute:") and not port.get("binding:host_id"):
        port["binding:host_id"] = "localcloud"


def update_port(cloud: Cloud, port_id: str, body: dict[str, Any]) -> Doc:
    check_fields(body, PORT_UPDATE, readonly={"network_id"})
    check_extension_fields(cloud, body)
    port = cloud.store.edit("ports", port_id)
    if port is None:
        raise not_found("ports", port_id)
    with cloud.store.tx():
        for key in ("name", "description", "admin_state_up", "device_id", "device_owner",
                    "binding:host_id", "binding:profile", "binding:vnic_type", "extra_dhcp_opts"):  # fmt: skip
            if key in body:
                port[key] = (
                    body[key]
                    if body[key] is not None
                    else ("" if key in ("device_id", "device_owner") else body[key])
                )
        if "tags" in body:
            port["tags"] = list(dict.fromkeys(body["tags"] or []))
        if "security_groups" in body:
            port["security_groups"] = resolve_security_groups(cloud, body["security_groups"] or [])
        if "port_security_enabled" in body:
            port["port_security_enabled"] = bool(body["port_security_enabled"])
        if "allowed_address_pairs" in body:
            pairs = check_address_pairs(body["allowed_address_pairs"] or [])
            port["allowed_address_pairs"] = _fill_pair_macs(pairs, port["mac_address"])
        if not port["port_security_enabled"]:
            if port["security_groups"]:
                raise conflict(
                    "Port has security group associated. Cannot disable port security or ip "
                    "address until security group is removed",
                    "PortSecurityPortHasSecurityGroup",
                )
            if port["allowed_address_pairs"]:
                raise conflict(
                    "Port Security must be enabled in order to have allowed address pairs on a "
                    "port.",
                    "AddressPairAndPortSecurityRequired",
                )
        if "fixed_ips" in body:
            network = get(cloud, "networks", port["network_id"])
            keep = {(ip["subnet_id"], ip["ip_address"]) for ip in port["fixed_ips"]}
            old = port["fixed_ips"]
            port["fixed_ips"] = []  # release before re-allocating
            cloud.store.put("ports", port)
            new = []
            for item in body["fixed_ips"] or []:
                match = next(
                    (ip for ip in old if ip["ip_address"] == item.get("ip_address")
                     and (not item.get("subnet_id") or ip["subnet_id"] == item["subnet_id"])),
                    None,
                )  # fmt: skip
                if match and (match["subnet_id"], match["ip_address"]) in keep:
                    new.append(match)
                else:
                    new.extend(fixed_ips_for(cloud, network, [item]))
            port["fixed_ips"] = new
        set_port_status(port)
        cloud.store.put("ports", touch(port))
    return port


def delete_port(cloud: Cloud, port_id: str, force: bool = False) -> None:
    port = get(cloud, "ports", port_id)
    owner = port["device_owner"]
    if not force and owner in (
        "network:router_interface",
        "network:router_gateway",
        "network:router_interface_distributed",
    ):
        raise conflict(
            f"Port {port_id} cannot be deleted directly via the port API: has device owner {owner}.",
            "ServicePortInUse",
        )
    with cloud.store.tx():
        for fip in cloud.store.all("floatingips"):
            if fip["port_id"] == port_id:
                disassociate(cloud, fip["id"])
        cloud.store.delete("ports", port_id)


# ---- floating IPs -----------------------------------------------------------------------


def router_for(cloud: Cloud, port: Doc, fixed_ip: str, floating_network_id: str) -> str:
    """The router that connects the port's subnet to the floating network (Neutron's check)."""
    subnet_id = next(ip["subnet_id"] for ip in port["fixed_ips"] if ip["ip_address"] == fixed_ip)
    iface_routers = {
        p["device_id"]
        for p in cloud.store.all("ports")
        if p["device_owner"] == "network:router_interface"
        and any(ip["subnet_id"] == subnet_id for ip in p["fixed_ips"])
    }
    for rid in iface_routers:
        router = cloud.store.get("routers", rid)
        gw = (router or {}).get("external_gateway_info") or {}
        if gw.get("network_id") == floating_network_id:
            return rid
    raise ApiError(
        404,
        f"External network {floating_network_id} is not reachable from subnet {subnet_id}.  "
        f"Therefore, cannot associate Port {port['id']} with a Floating IP.",
        "ExternalGatewayForFloatingIPNotFound",
    )


def associate(cloud: Cloud, fip: Doc, port_id: str, fixed_ip: str | None) -> None:
    port = cloud.store.get("ports", port_id)
    if port is None:
        raise ApiError(404, f"Port {port_id} could not be found.", "PortNotFound")
    v4 = [ip["ip_address"] for ip in port["fixed_ips"] if ":" not in ip["ip_address"]]
    if not v4:
        raise bad_request(
            f"Bad floatingip request: Port {port_id} does not have any IPv4 address.",
            "BadRequest",
        )
    if fixed_ip is None:
        if len(v4) > 1:
            raise bad_request(
                f"Bad floatingip request: Port {port_id} has multiple fixed IPv4 addresses. "
                "Must provide a specific IPv4 address when assigning a floating IP.",
            )
        fixed_ip = v4[0]
    elif fixed_ip not in v4:
        raise bad_request(
            f"Bad floatingip request: Port {port_id} does not have fixed ip {fixed_ip}."
        )
    for other in cloud.store.all("floatingips"):
        if (
            other["id"] != fip["id"]
            and other["port_id"] == port_id
            and other["fixed_ip_address"] == fixed_ip
        ):
            raise conflict(
                f"Cannot associate floating IP {fip['floating_ip_address']} ({fip['id']}) with "
                f"port {port_id} using fixed IP {fixed_ip}, as that fixed IP already has a "
                f"floating IP on external network {other['floating_network_id']}.",
                "FloatingIPPortAlreadyAssociated",
            )
    fip["router_id"] = router_for(cloud, port, fixed_ip, fip["floating_network_id"])
    fip["port_id"] = port_id
    fip["fixed_ip_address"] = fixed_ip
    fip["status"] = "ACTIVE"
    fip["port_details"] = {
        "name": port["name"],
        "network_id": port["network_id"],
        "mac_address": port["mac_address"],
        "admin_state_up": port["admin_state_up"],
        "status": port["status"],
        "device_id": port["device_id"],
        "device_owner": port["device_owner"],
    }


def disassociate(cloud: Cloud, fip_id: str) -> None:
    fip = cloud.store.edit("floatingips", fip_id)
    if fip is None:
        return
    fip.update(
        port_id=None, fixed_ip_address=None, router_id=None, status="DOWN", port_details=None
    )
    cloud.store.put("floatingips", touch(fip))
