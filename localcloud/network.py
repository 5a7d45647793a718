# ruff: noqa: E501 - OpenStack error messages are kept verbatim, on one line each
"""Neutron 2.0 over HTTP: networks, subnets, ports, routers, security groups, floating IPs,
tags, quotas, extensions. The rules themselves live in neutron_model."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.responses import JSONResponse

from localcloud import neutron_model as nm
from localcloud.config import EXTENSIONS
from localcloud.errors import ApiError, bad_request, conflict
from localcloud.runtime import Cloud
from localcloud.store import Doc

router = APIRouter()
P = "/{cloud}/network/v2.0"


def _cloud(request: Request) -> Cloud:
    return request.scope["lc.cloud"]


async def _body(request: Request, key: str) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body: expecting JSON.") from exc
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise bad_request(f"Resource body required: expected an object under '{key}'.")
    return data[key]


def view(cloud: Cloud, kind: str, doc: Doc) -> Doc:
    out = nm.public(cloud, doc)
    if kind == "networks":
        out["subnets"] = [s["id"] for s in nm.network_subnets(cloud, doc["id"])]
    elif kind == "security_groups":
        out["security_group_rules"] = [
            nm.public(cloud, r)
            for r in cloud.store.all("security_group_rules")
            if r["security_group_id"] == doc["id"]
        ]
    return out


def _one(cloud: Cloud, kind: str, doc: Doc, status: int = 200) -> JSONResponse:
    return JSONResponse({nm.KINDS[kind][0]: view(cloud, kind, doc)}, status_code=status)


def _kind(kind: str) -> str:
    k = kind.replace("-", "_")
    if k not in nm.KINDS:
        raise ApiError(404, "The resource could not be found.", "HTTPNotFound")
    return k


# ---- discovery and extensions ----------------------------------------------------------


@router.get("/{cloud}/network")
async def versions(request: Request) -> JSONResponse:
    href = _cloud(request).endpoint("network") + "/v2.0/"
    return JSONResponse(
        {
            "versions": [
                {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}
            ]
        }
    )


@router.get(P)
async def resources(request: Request) -> JSONResponse:
    base = _cloud(request).endpoint("network") + "/v2.0/"
    return JSONResponse(
        {
            "resources": [
                {"name": s, "collection": k, "links": [{"rel": "self", "href": base + k}]}
                for k, (s, _, _) in nm.KINDS.items()
            ]
        }
    )


def _extension(alias: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "name": alias.replace("-", " ").title(),
        "description": f"localcloud implements {alias}",
        "updated": "2024-01-01T00:00:00-00:00",
        "links": [],
    }


def _extensions(cloud: Cloud) -> list[str]:
    return [
        e
        # subnet-external-network: subnets of an external network are visible to every
        # project (what localcloud does; Tempest checks it against this alias)
        for e in (*EXTENSIONS, "extraroute-atomic", "subnet-external-network")
        if cloud.config.has_extension(e) or e in ("extraroute-atomic", "subnet-external-network")
    ]


@router.get(P + "/extensions")
async def list_extensions(request: Request) -> JSONResponse:
    return JSONResponse({"extensions": [_extension(a) for a in _extensions(_cloud(request))]})


@router.get(P + "/extensions/{alias}")
async def get_extension(request: Request, alias: str) -> JSONResponse:
    if alias not in _extensions(_cloud(request)):
        raise ApiError(404, f"Extension with alias {alias} does not exist", "HTTPNotFound")
    return JSONResponse({"extension": _extension(alias)})


# ---- quotas -----------------------------------------------------------------------------

_NEUTRON_QUOTAS = (
    "network", "subnet", "port", "router", "floatingip", "security_group", "security_group_rule",
)  # fmt: skip


def _check_project(cloud: Cloud, project_id: str) -> None:
    if project_id != cloud.project["id"]:
        raise ApiError(404, f"Project {project_id} could not be found.", "HTTPNotFound")


@router.get(P + "/quotas")
async def list_quotas(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    q = cloud.quotas()
    return JSONResponse(
        {
            "quotas": [
                {"project_id": cloud.project["id"], **{k: getattr(q, k) for k in _NEUTRON_QUOTAS}}
            ]
        }
    )


@router.get(P + "/quotas/{project_id}")
@router.get(P + "/quotas/{project_id}/default")
async def get_quota(request: Request, project_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _check_project(cloud, project_id)
    q = cloud.quotas()
    return JSONResponse({"quota": {k: getattr(q, k) for k in _NEUTRON_QUOTAS}})


@router.get(P + "/quotas/{project_id}/details")
async def get_quota_details(request: Request, project_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _check_project(cloud, project_id)
    q = cloud.quotas()
    return JSONResponse(
        {
            "quota": {
                k: {"limit": getattr(q, k), "used": nm.usage(cloud, k), "reserved": 0}
                for k in _NEUTRON_QUOTAS
            }
        }
    )


@router.put(P + "/quotas/{project_id}")
async def update_quota(request: Request, project_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _check_project(cloud, project_id)
    body = await _body(request, "quota")
    nm.check_fields(body, _NEUTRON_QUOTAS)
    cloud.store.set_meta(
        "quotas",
        cloud.store.meta.get("quotas", {}) | {k: quota_limit(k, v) for k, v in body.items()},
    )
    q = cloud.quotas()
    return JSONResponse({"quota": {k: getattr(q, k) for k in _NEUTRON_QUOTAS}})


@router.delete(P + "/quotas/{project_id}")
async def reset_quota(request: Request, project_id: str) -> Response:
    cloud = _cloud(request)
    _check_project(cloud, project_id)
    quotas = {
        k: v for k, v in cloud.store.meta.get("quotas", {}).items() if k not in _NEUTRON_QUOTAS
    }
    cloud.store.set_meta("quotas", quotas)
    return Response(status_code=204)


# ---- routers: interfaces and extra routes ---------------------------------------------


def _router_subnets(cloud: Cloud, router_id: str) -> list[tuple[Doc, Doc]]:
    """(interface port, subnet) pairs of a router."""
    out = []
    for p in cloud.store.all("ports"):
        if p["device_owner"] == "network:router_interface" and p["device_id"] == router_id:
            for ip in p["fixed_ips"]:
                subnet = cloud.store.get("subnets", ip["subnet_id"])
                if subnet:
                    out.append((p, subnet))
    return out


def _iface_body(router: Doc, port: Doc) -> Doc:
    subnet_ids = [ip["subnet_id"] for ip in port["fixed_ips"]]
    return {
        "id": router["id"],
        "tenant_id": router["tenant_id"],
        "project_id": router["project_id"],
        "port_id": port["id"],
        "network_id": port["network_id"],
        "subnet_id": subnet_ids[0] if subnet_ids else None,
        "subnet_ids": subnet_ids,
        "tags": [],
    }


@router.put(P + "/routers/{router_id}/add_router_interface")
async def add_interface(request: Request, router_id: str) -> JSONResponse:
    cloud = _cloud(request)
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body: expecting JSON.") from exc
    router_doc = nm.get(cloud, "routers", router_id)
    if not isinstance(body, dict) or bool(body.get("subnet_id")) == bool(body.get("port_id")):
        raise bad_request("Bad router request: Either subnet_id or port_id must be specified.")
    existing = _router_subnets(cloud, router_id)
    with cloud.store.tx():
        if body.get("subnet_id"):
            subnet = nm.get(cloud, "subnets", body["subnet_id"])
            if not subnet.get("gateway_ip"):
                raise bad_request(
                    f"Bad router request: Subnet {subnet['id']} does not have a gateway IP."
                )
            new_subnets = [subnet]
        else:
            port = nm.get(cloud, "ports", body["port_id"])
            if port["device_id"]:
                raise conflict(f"Port {port['id']} is still in use.", "PortInUse")
            if not port["fixed_ips"]:
                raise bad_request(
                    "Bad router request: Router port must have at least one fixed IP."
                )
            new_subnets = [nm.get(cloud, "subnets", ip["subnet_id"]) for ip in port["fixed_ips"]]
        for subnet in new_subnets:
            network = nm.get(cloud, "networks", subnet["network_id"])
            if network.get("router:external"):
                raise bad_request(
                    f"Bad router request: Router interface on external network {network['id']} is not allowed."
                )
            new_net = ipaddress.ip_network(subnet["cidr"])
            for _, other in existing:
                if other["id"] == subnet["id"]:
                    raise bad_request(
                        f"Bad router request: Router already has a port on subnet {subnet['id']}."
                    )
                if new_net.overlaps(ipaddress.ip_network(other["cidr"])):
                    raise bad_request(
                        f"Bad router request: Cidr {subnet['cidr']} of subnet {subnet['id']} "
                        f"overlaps with cidr {other['cidr']} of subnet {other['id']}."
                    )
        if body.get("subnet_id"):
            subnet = new_subnets[0]
            port = nm.create_port(
                cloud,
                {
                    "network_id": subnet["network_id"],
                    "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": subnet["gateway_ip"]}],
                    "device_id": router_id,
                    "device_owner": "network:router_interface",
                    "security_groups": [],
                    "project_id": router_doc["project_id"],
                },
            )
        else:
            port = nm.update_port(
                cloud,
                body["port_id"],
                {"device_id": router_id, "device_owner": "network:router_interface"},
            )
    await cloud.changed()
    return JSONResponse(_iface_body(router_doc, port))


@router.put(P + "/routers/{router_id}/remove_router_interface")
async def remove_interface(request: Request, router_id: str) -> JSONResponse:
    cloud = _cloud(request)
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body: expecting JSON.") from exc
    router_doc = nm.get(cloud, "routers", router_id)
    if not isinstance(body, dict) or not (body.get("subnet_id") or body.get("port_id")):
        raise bad_request("Bad router request: Either subnet_id or port_id must be specified.")
    pairs = _router_subnets(cloud, router_id)
    match = [
        (p, s)
        for p, s in pairs
        if (body.get("port_id") and p["id"] == body["port_id"])
        or (body.get("subnet_id") and s["id"] == body["subnet_id"])
    ]
    if not match:
        if body.get("port_id"):
            raise ApiError(
                404,
                f"Router {router_id} does not have an interface with id {body['port_id']}",
                "RouterInterfaceNotFound",
            )
        raise ApiError(
            404,
            f"Router {router_id} has no interface on subnet {body['subnet_id']}",
            "RouterInterfaceNotFoundForSubnet",
        )
    port, subnet = match[0]
    net = ipaddress.ip_network(subnet["cidr"])
    for fip in cloud.store.all("floatingips"):
        if (
            fip["router_id"] == router_id
            and fip["fixed_ip_address"]
            and ipaddress.ip_address(fip["fixed_ip_address"]) in net
        ):
            raise conflict(
                f"Router interface for subnet {subnet['id']} on router {router_id} cannot be "
                f"deleted, as it is required by one or more floating IPs.",
                "RouterInterfaceInUseByFloatingIP",
            )
    for route in router_doc.get("routes", []):
        if ipaddress.ip_address(route["nexthop"]) in net:
            raise conflict(
                f"Router interface for subnet {subnet['id']} on router {router_id} cannot be "
                f"deleted, as it is required by one or more routes.",
                "RouterInterfaceInUseByRoute",
            )
    nm.delete_port(cloud, port["id"], force=True)
    await cloud.changed()
    return JSONResponse(_iface_body(router_doc, port))


def _check_routes(cloud: Cloud, router_id: str, routes: Any) -> list[dict]:
    if not isinstance(routes, list):
        raise bad_request("Invalid input for routes: must be a list.")
    nets = [ipaddress.ip_network(s["cidr"]) for _, s in _router_subnets(cloud, router_id)]
    out = []
    for r in routes:
        try:
            dest = ipaddress.ip_network(r["destination"])
            hop = ipaddress.ip_address(r["nexthop"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad_request(f"Invalid input for routes: {r!r} is not a valid route.") from exc
        if not any(hop in n for n in nets):
            raise bad_request(
                f"Invalid format for routes: {r}, the nexthop is not connected with router",
                "InvalidRoutes",
            )
        out.append({"destination": str(dest), "nexthop": str(hop)})
    return list({(x["destination"], x["nexthop"]): x for x in out}.values())


@router.put(P + "/routers/{router_id}/add_extraroutes")
@router.put(P + "/routers/{router_id}/remove_extraroutes")
async def extraroutes(request: Request, router_id: str) -> JSONResponse:
    cloud = _cloud(request)
    body = await _body(request, "router")
    doc = cloud.store.edit("routers", router_id)
    if doc is None:
        raise nm.not_found("routers", router_id)
    routes = _check_routes(cloud, router_id, body.get("routes", []))
    current = doc.get("routes", [])
    if request.url.path.endswith("add_extraroutes"):
        doc["routes"] = current + [r for r in routes if r not in current]
    else:
        doc["routes"] = [r for r in current if r not in routes]
    cloud.store.put("routers", nm.touch(doc))
    await cloud.changed()
    return _one(cloud, "routers", doc)


def _external_network(cloud: Cloud, net_id: str | None, request: str, is_not: str) -> Doc:
    """The external network a router gateway or floating IP asks for, with Neutron's errors."""
    network = cloud.store.get("networks", net_id or "")
    if network is None:
        raise ApiError(404, f"Network {net_id} could not be found.", "NetworkNotFound")
    if not network.get("router:external"):
        raise bad_request(
            f"Bad {request} request: Network {network['id']} is not {is_not}.", "BadRequest"
        )
    return network


def quota_limit(key: str, value: Any) -> int:
    """A quota limit as Neutron and Nova take it: an integer (or its digits), -1 = unlimited."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise bad_request(f"Invalid input for {key}. Reason: '{value}' is not an integer >= -1.")
    return value


def _set_gateway(cloud: Cloud, router: Doc, info: dict[str, Any] | None) -> None:
    """Create, keep or remove the router's gateway port as `external_gateway_info` asks."""
    old_port_id = router.get("_gw_port_id")
    if not info:
        if old_port_id:
            if any(f["router_id"] == router["id"] for f in cloud.store.all("floatingips")):
                raise conflict(
                    f"Gateway cannot be updated for router {router['id']}, since a gateway to "
                    "external network is required by one or more floating IPs.",
                    "RouterExternalGatewayInUseByFloatingIp",
                )
            nm.delete_port(cloud, old_port_id, force=True)
        router["external_gateway_info"] = None
        router["_gw_port_id"] = None
        return
    if not isinstance(info, dict):
        raise bad_request(
            f"Invalid input for external_gateway_info. Reason: '{info}' is not a dictionary."
        )
    nm.check_fields(info, {"network_id", "enable_snat", "external_fixed_ips", "qos_policy_id"})
    network = _external_network(cloud, info.get("network_id"), "router", "an external network")
    gw = router.get("external_gateway_info") or {}
    if old_port_id and gw.get("network_id") == network["id"] and "external_fixed_ips" not in info:
        port = nm.get(cloud, "ports", old_port_id)
    else:
        if old_port_id:
            _set_gateway(cloud, router, None)
        port = nm.create_port(
            cloud,
            {
                "network_id": network["id"],
                "fixed_ips": info.get("external_fixed_ips"),
                "device_id": router["id"],
                "device_owner": "network:router_gateway",
                "security_groups": [],
                "project_id": router["project_id"],
            },
        )
    router["_gw_port_id"] = port["id"]
    router["external_gateway_info"] = {
        "network_id": network["id"],
        "enable_snat": bool(info.get("enable_snat", gw.get("enable_snat", True))),
        "external_fixed_ips": port["fixed_ips"],
    }


# ---- tags -------------------------------------------------------------------------------


def _taggable(cloud: Cloud, kind: str, id_: str) -> Doc:
    k = _kind(kind)
    if k not in nm.TAGGABLE:
        raise ApiError(404, "The resource could not be found.", "HTTPNotFound")
    doc = cloud.store.edit(k, id_)
    if doc is None:
        raise nm.not_found(k, id_)
    return doc


@router.get(P + "/{kind}/{id_}/tags")
async def get_tags(request: Request, kind: str, id_: str) -> JSONResponse:
    return JSONResponse({"tags": _taggable(_cloud(request), kind, id_)["tags"]})


@router.put(P + "/{kind}/{id_}/tags")
async def replace_tags(request: Request, kind: str, id_: str) -> JSONResponse:
    cloud = _cloud(request)
    doc = _taggable(cloud, kind, id_)
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body: expecting JSON.") from exc
    tags = body.get("tags") if isinstance(body, dict) else None
    if not isinstance(tags, list) or not all(
        isinstance(t, str) and 0 < len(t) <= 255 for t in tags
    ):
        raise bad_request(
            "Invalid input for tags: expected a list of strings of 1..255 characters."
        )
    doc["tags"] = list(dict.fromkeys(tags))
    cloud.store.put(_kind(kind), nm.touch(doc))
    return JSONResponse({"tags": doc["tags"]})


@router.delete(P + "/{kind}/{id_}/tags")
async def clear_tags(request: Request, kind: str, id_: str) -> Response:
    cloud = _cloud(request)
    doc = _taggable(cloud, kind, id_)
    doc["tags"] = []
    cloud.store.put(_kind(kind), nm.touch(doc))
    return Response(status_code=204)


@router.get(P + "/{kind}/{id_}/tags/{tag}")
async def has_tag(request: Request, kind: str, id_: str, tag: str) -> Response:
    if tag not in _taggable(_cloud(request), kind, id_)["tags"]:
        raise ApiError(404, f"Tag {tag} could not be found for {kind} {id_}.", "TagNotFound")
    return Response(status_code=204)


@router.put(P + "/{kind}/{id_}/tags/{tag}")
async def add_tag(request: Request, kind: str, id_: str, tag: str) -> Response:
    cloud = _cloud(request)
    doc = _taggable(cloud, kind, id_)
    if tag not in doc["tags"]:
        doc["tags"].append(tag)
        cloud.store.put(_kind(kind), nm.touch(doc))
    return Response(status_code=201)


@router.delete(P + "/{kind}/{id_}/tags/{tag}")
async def remove_tag(request: Request, kind: str, id_: str, tag: str) -> Response:
    cloud = _cloud(request)
    doc = _taggable(cloud, kind, id_)
    if tag not in doc["tags"]:
        raise ApiError(404, f"Tag {tag} could not be found for {kind} {id_}.", "TagNotFound")
    doc["tags"].remove(tag)
    cloud.store.put(_kind(kind), nm.touch(doc))
    return Response(status_code=204)


# ---- generic list / show ----------------------------------------------------------------


@router.get(P + "/{kind}")
async def list_kind(request: Request, kind: str) -> JSONResponse:
    cloud = _cloud(request)
    k = _kind(kind)
    params = list(request.query_params.multi_items())
    views = [view(cloud, k, d) for d in cloud.store.all(k)]
    docs = nm.filter_docs(views, params)
    return JSONResponse({k: [nm.project_fields(d, params) for d in docs]})


@router.get(P + "/{kind}/{id_}")
async def show_kind(request: Request, kind: str, id_: str) -> JSONResponse:
    cloud = _cloud(request)
    k = _kind(kind)
    params = list(request.query_params.multi_items())
    doc = view(cloud, k, nm.get(cloud, k, id_))
    return JSONResponse({nm.KINDS[k][0]: nm.project_fields(doc, params)})


# ---- create -----------------------------------------------------------------------------

NETWORK_FIELDS = {
    "name", "description", "tags", "admin_state_up", "mtu", "port_security_enabled",
    "router:external", "shared", "availability_zone_hints", "provider:network_type",
    "provider:physical_network", "provider:segmentation_id", "qos_policy_id", "is_default",
    "project_id", "tenant_id", "dns_domain",
}  # fmt: skip
SUBNET_FIELDS = {
    "name", "description", "tags", "network_id", "cidr", "ip_version", "gateway_ip",
    "allocation_pools", "dns_nameservers", "host_routes", "enable_dhcp", "subnetpool_id",
    "ipv6_ra_mode", "ipv6_address_mode", "service_types", "segment_id", "project_id",
    "tenant_id", "use_default_subnetpool", "prefixlen", "dns_publish_fixed_ip",
}  # fmt: skip
ROUTER_FIELDS = {
    "name", "description", "tags", "admin_state_up", "external_gateway_info", "distributed",
    "ha", "availability_zone_hints", "flavor_id", "project_id", "tenant_id",
}  # fmt: skip
SG_FIELDS = {"name", "description", "tags", "stateful", "project_id", "tenant_id"}
RULE_FIELDS = {
    "security_group_id", "direction", "ethertype", "protocol", "port_range_min",
    "port_range_max", "remote_ip_prefix", "remote_group_id", "remote_address_group_id",
    "description", "project_id", "tenant_id",
}  # fmt: skip
FIP_FIELDS = {
    "floating_network_id", "port_id", "fixed_ip_address", "floating_ip_address",
    "description", "tags", "subnet_id", "project_id", "tenant_id", "dns_name", "dns_domain",
    "qos_policy_id",
}  # fmt: skip


def _mtu(body: dict[str, Any]) -> int:
    mtu = body.get("mtu", 1450)
    if not isinstance(mtu, int) or mtu < 68:
        raise bad_request(f"Invalid input for mtu: {mtu!r} is not an integer of at least 68.")
    if mtu > 1450:
        raise bad_request("Requested MTU is too big, maximum is 1450", "InvalidInput")
    return mtu


def _create_network(cloud: Cloud, body: dict[str, Any]) -> Doc:
    nm.check_fields(body, NETWORK_FIELDS)
    nm.check_extension_fields(cloud, body)
    nm.check_quota(cloud, "networks")
    doc = {
        **nm.common_fields(cloud, body),
        "name": body.get("name") or "",
        "admin_state_up": body.get("admin_state_up", True),
        "status": "ACTIVE",
        "mtu": _mtu(body),
        "router:external": bool(body.get("router:external", False)),
        "shared": bool(body.get("shared", False)),
        "is_default": bool(body.get("is_default", False)),
        "port_security_enabled": bool(body.get("port_security_enabled", True)),
        "availability_zones": ["nova"],
        "availability_zone_hints": body.get("availability_zone_hints") or [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "qos_policy_id": None,
        "provider:network_type": body.get("provider:network_type", "vxlan"),
        "provider:physical_network": body.get("provider:physical_network"),
        "provider:segmentation_id": body.get("provider:segmentation_id"),
    }
    cloud.store.put("networks", doc)
    return doc


def _pools(net: ipaddress.IPv4Network, gateway: str | None, pools: Any) -> list[dict]:
    hosts_first, hosts_last = net.network_address + 1, net.broadcast_address - 1
    if pools is None:
        if gateway and ipaddress.ip_address(gateway) == hosts_first:
            return [{"start": str(hosts_first + 1), "end": str(hosts_last)}]
        return [{"start": str(hosts_first), "end": str(hosts_last)}]
    out, spans = [], []
    for p in pools:
        try:
            lo, hi = ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad_request(f"Invalid input for allocation_pools: {p!r}.") from exc
        if lo not in net or hi not in net or lo > hi:
            raise bad_request(
                f"The allocation pool {p['start']}-{p['end']} spans beyond the subnet cidr {net}.",
                "OutOfBoundsAllocationPool",
            )
        if gateway and lo <= ipaddress.ip_address(gateway) <= hi:
            raise conflict(
                f"Gateway ip {gateway} conflicts with allocation pool {p['start']}-{p['end']}.",
                "GatewayConflictWithAllocationPools",
            )
        for a, b in spans:
            if lo <= b and a <= hi:
                raise bad_request(
                    "Found overlapping allocation pools.", "OverlappingAllocationPools"
                )
        spans.append((lo, hi))
        out.append({"start": str(lo), "end": str(hi)})
    return out


def _create_subnet(cloud: Cloud, body: dict[str, Any]) -> Doc:
    nm.check_fields(body, SUBNET_FIELDS)
    if not body.get("network_id"):
        raise bad_request("Invalid input for operation: network_id is required.")
    network = nm.get(cloud, "networks", body["network_id"])
    if body.get("ip_version", 4) != 4:
        raise bad_request("localcloud supports ip_version 4 only.")
    try:
        net = ipaddress.IPv4Network(body.get("cidr") or "", strict=False)
    except ValueError as exc:
        raise bad_request(
            f"Invalid input for cidr. Reason: '{body.get('cidr')}' is not a valid IP subnet."
        ) from exc
    if net.prefixlen > 30:
        raise bad_request(f"Invalid input for cidr: {net} is too small (use at most /30).")
    for other in nm.network_subnets(cloud, network["id"]):
        if net.overlaps(ipaddress.ip_network(other["cidr"])):
            raise bad_request(
                f"Invalid input for operation: Requested subnet with cidr: {net} for network: "
                f"{network['id']} overlaps with another subnet.",
            )
    gateway = body.get("gateway_ip", str(net.network_address + 1))
    if gateway is not None:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError as exc:
            raise bad_request(
                f"Invalid input for gateway_ip: '{gateway}' is not a valid IP address."
            ) from exc
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise bad_request(
                "Invalid input for operation: Gateway is not valid on subnet.", "InvalidInput"
            )
    pools = _pools(net, gateway, body.get("allocation_pools"))
    nm.check_quota(cloud, "subnets")
    doc = {
        **nm.common_fields(cloud, body),
        "name": body.get("name") or "",
        "network_id": network["id"],
        "ip_version": 4,
        "cidr": str(net),
        "gateway_ip": gateway,
        "allocation_pools": pools,
        "dns_nameservers": list(body.get("dns_nameservers") or []),
        "host_routes": list(body.get("host_routes") or []),
        "enable_dhcp": bool(body.get("enable_dhcp", True)),
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "subnetpool_id": None,
        "service_types": list(body.get("service_types") or []),
        "segment_id": None,
        "_next": int(ipaddress.ip_address(pools[0]["start"])) if pools else 0,
    }
    cloud.store.put("subnets", doc)
    return doc


def _create_router(cloud: Cloud, body: dict[str, Any]) -> Doc:
    nm.check_fields(body, ROUTER_FIELDS)
    nm.check_quota(cloud, "routers")
    doc = {
        **nm.common_fields(cloud, body),
        "name": body.get("name") or "",
        "admin_state_up": body.get("admin_state_up", True),
        "status": "ACTIVE",
        "external_gateway_info": None,
        "routes": [],
        "distributed": False,
        "ha": False,
        "flavor_id": None,
        "availability_zones": ["nova"],
        "availability_zone_hints": body.get("availability_zone_hints") or [],
        "_gw_port_id": None,
    }
    with cloud.store.tx():
        _set_gateway(cloud, doc, body.get("external_gateway_info"))
        cloud.store.put("routers", doc)
    return doc


def _create_sg(cloud: Cloud, body: dict[str, Any]) -> Doc:
    nm.check_fields(body, SG_FIELDS)
    nm.check_quota(cloud, "security_groups")
    if body.get("name") == "default":
        raise conflict(
            "Default security group already exists.", "SecurityGroupDefaultAlreadyExists"
        )
    doc = {
        **nm.common_fields(cloud, body),
        "name": body.get("name") or "",
        "stateful": bool(body.get("stateful", True)),
        "shared": False,
    }
    with cloud.store.tx():
        cloud.store.put("security_groups", doc)
        for ethertype in ("IPv4", "IPv6"):
            _store_rule(
                cloud,
                {"security_group_id": doc["id"], "direction": "egress", "ethertype": ethertype},
                quota=False,
            )
    return doc


_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132, "icmpv6": 58, "ipv6-icmp": 58}


def _check_icmp(icmp_type: Any, code: Any) -> None:
    """ICMP rules carry type and code in port_range_min/max (Neutron's messages)."""
    for value, what in ((icmp_type, "type"), (code, "code")):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255
        ):
            raise bad_request(
                f"Invalid value for ICMP {what} (port-range-{'min' if what == 'type' else 'max'}): {value}. It must be 0 to 255.",
                "SecurityGroupInvalidIcmpValue",
            )
    if icmp_type is None and code is not None:
        raise bad_request(
            f"ICMP code (port-range-max) {code} is provided but ICMP type (port-range-min) is missing.",
            "SecurityGroupMissingIcmpType",
        )


def _rule_group(cloud: Cloud, body: dict[str, Any]) -> Doc:
    sg = cloud.store.get("security_groups", body.get("security_group_id") or "")
    if sg is None:
        raise ApiError(
            404,
            f"Security group {body.get('security_group_id')} does not exist",
            "SecurityGroupNotFound",
        )
    return sg


def _rule_direction_and_ethertype(body: dict[str, Any]) -> tuple[str, str]:
    direction = body.get("direction")
    if direction not in ("ingress", "egress"):
        raise bad_request(
            f"Invalid input for direction. Reason: {direction!r} is not in ['ingress', 'egress']."
        )
    ethertype = body.get("ethertype") or "IPv4"
    if ethertype not in ("IPv4", "IPv6"):
        raise bad_request(
            f"Invalid input for ethertype. Reason: {ethertype!r} is not in ['IPv4', 'IPv6']."
        )
    return direction, ethertype


def _rule_protocol(body: dict[str, Any]) -> str | None:
    """Lower case, a name Neutron knows or a number 0…255; None (also for "any") is any."""
    protocol = body.get("protocol")
    if protocol is None:
        return None
    protocol = str(protocol).lower()
    if protocol == "any":
        return None
    if protocol not in _PROTOCOLS and not (protocol.isdigit() and 0 <= int(protocol) <= 255):
        raise bad_request(
            f"Security group rule protocol {protocol} not supported. Only protocol values "
            f"{sorted(_PROTOCOLS)} and integer representations [0 to 255] are supported.",
            "SecurityGroupRuleInvalidProtocol",
        )
    return protocol


def _rule_ports(body: dict[str, Any], protocol: str | None) -> tuple[Any, Any]:
    """port_range_min/max as stored (ICMP: type and code)."""
    pmin, pmax = body.get("port_range_min"), body.get("port_range_max")
    if protocol in ("icmp", "1", "icmpv6", "ipv6-icmp", "58"):
        _check_icmp(pmin, pmax)
    for v in (pmin, pmax):
        if v is not None and (not isinstance(v, int) or not 0 <= v <= 65535):
            raise bad_request(f"Invalid value for port {v}.", "SecurityGroupInvalidPortValue")
    if (pmin is not None or pmax is not None) and protocol is None:
        raise bad_request(
            "Must also specify protocol if port range is given.",
            "SecurityGroupProtocolRequiredWithPorts",
        )
    if protocol in ("tcp", "udp", "sctp", "6", "17", "132"):
        if pmin == 0 or pmax == 0:
            raise bad_request("Invalid value for port 0.", "SecurityGroupInvalidPortValue")
        if pmin is not None and pmax is None:
            pmax = pmin  # one port (lenient: Neutron wants both; clients send both)
        if (pmin is None and pmax is not None) or (pmin is not None and pmin > pmax):
            raise bad_request(
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                "SecurityGroupInvalidPortRange",
            )
    return pmin, pmax


def _rule_remote(cloud: Cloud, body: dict[str, Any], ethertype: str) -> tuple[Any, Any]:
    """remote_ip_prefix and remote_group_id (at most one of them)."""
    prefix, remote_group = body.get("remote_ip_prefix"), body.get("remote_group_id")
    if prefix and remote_group:
        raise bad_request(
            "Only remote_ip_prefix or remote_group_id may be provided.",
            "SecurityGroupRemoteGroupAndRemoteIpPrefix",
        )
    if prefix:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError as exc:
            raise bad_request(
                f"Invalid input for remote_ip_prefix: '{prefix}' is not a valid CIDR."
            ) from exc
        if f"IPv{net.version}" != ethertype:
            raise bad_request(
                f"Conflicting value ethertype {ethertype} for CIDR {prefix}",
                "SecurityGroupRuleParameterConflict",
            )
    if remote_group and cloud.store.get("security_groups", remote_group) is None:
        raise ApiError(
            404, f"Security group {remote_group} does not exist", "SecurityGroupNotFound"
        )
    return prefix, remote_group


def _checked_rule(cloud: Cloud, body: dict[str, Any]) -> dict[str, Any]:
    """The rule's identifying fields, checked in Neutron's order of complaints."""
    nm.check_fields(body, RULE_FIELDS)
    sg = _rule_group(cloud, body)
    direction, ethertype = _rule_direction_and_ethertype(body)
    protocol = _rule_protocol(body)
    pmin, pmax = _rule_ports(body, protocol)
    prefix, remote_group = _rule_remote(cloud, body, ethertype)
    return {
        "security_group_id": sg["id"],
        "direction": direction,
        "ethertype": ethertype,
        "protocol": protocol,
        "port_range_min": pmin,
        "port_range_max": pmax,
        "remote_ip_prefix": prefix or None,
        "remote_group_id": remote_group or None,
        "remote_address_group_id": None,
    }


def _store_rule(cloud: Cloud, body: dict[str, Any], quota: bool = True) -> Doc:
    rule = _checked_rule(cloud, body)
    for other in cloud.store.all("security_group_rules"):
        if all(other[k] == v for k, v in rule.items()):
            raise conflict(
                f"Security group rule already exists. Rule id is {other['id']}.",
                "SecurityGroupRuleExists",
            )
    if quota:
        nm.check_quota(cloud, "security_group_rules")
    prefix = rule["remote_ip_prefix"]
    doc = {
        **nm.common_fields(cloud, body),
        **rule,
        "normalized_cidr": str(ipaddress.ip_network(prefix, strict=False)) if prefix else None,
        "revision_number": 0,
    }
    doc.pop("tags", None)
    cloud.store.put("security_group_rules", doc)
    sg_doc = cloud.store.edit("security_groups", rule["security_group_id"])
    assert sg_doc is not None
    cloud.store.put("security_groups", nm.touch(sg_doc))
    return doc


def _create_fip(cloud: Cloud, body: dict[str, Any]) -> Doc:
    nm.check_fields(body, FIP_FIELDS)
    network = _external_network(
        cloud, body.get("floating_network_id"), "floatingip", "a valid external network"
    )
    nm.check_quota(cloud, "floatingips")
    subnets = [s for s in nm.network_subnets(cloud, network["id"]) if s["ip_version"] == 4]
    if body.get("subnet_id"):
        subnets = [s for s in subnets if s["id"] == body["subnet_id"]]
    if not subnets:
        raise bad_request(f"Bad floatingip request: Network {network['id']} has no usable subnet.")
    common = nm.common_fields(cloud, body)
    with cloud.store.tx():
        address = nm.allocate_ip(cloud, subnets[0], body.get("floating_ip_address"))
        doc = {
            **common,
            "floating_ip_address": address,
            "floating_network_id": network["id"],
            "router_id": None,
            "port_id": None,
            "fixed_ip_address": None,
            "status": "DOWN",
            "port_details": None,
            "port_forwardings": [],
            "qos_policy_id": None,
            "dns_name": "",
            "dns_domain": "",
        }
        if body.get("port_id"):
            nm.associate(cloud, doc, body["port_id"], body.get("fixed_ip_address"))
        cloud.store.put("floatingips", doc)
    return doc


_CREATORS = {
    "networks": _create_network,
    "subnets": _create_subnet,
    "ports": nm.create_port,
    "routers": _create_router,
    "security_groups": _create_sg,
    "security_group_rules": _store_rule,
    "floatingips": _create_fip,
}


@router.post(P + "/{kind}")
async def create(request: Request, kind: str) -> JSONResponse:
    cloud = _cloud(request)
    k = _kind(kind)
    singular = nm.KINDS[k][0]
    try:
        data = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body: expecting JSON.") from exc
    if isinstance(data, dict) and isinstance(data.get(k), list):  # bulk create
        with cloud.store.tx():
            docs = [_CREATORS[k](cloud, dict(item)) for item in data[k]]
        await cloud.changed()
        return JSONResponse({k: [view(cloud, k, d) for d in docs]}, status_code=201)
    if not isinstance(data, dict) or not isinstance(data.get(singular), dict):
        raise bad_request(f"Resource body required: expected an object under '{singular}'.")
    doc = _CREATORS[k](cloud, dict(data[singular]))
    await cloud.changed()
    return _one(cloud, k, doc, 201)


# ---- update -----------------------------------------------------------------------------


def _update_simple(cloud: Cloud, k: str, id_: str, body: dict[str, Any], allowed: set[str]) -> Doc:
    doc = cloud.store.edit(k, id_)
    if doc is None:
        raise nm.not_found(k, id_)
    nm.check_fields(body, allowed)
    for key, value in body.items():
        doc[key] = list(dict.fromkeys(value or [])) if key == "tags" else value
    cloud.store.put(k, nm.touch(doc))
    return doc


def _update_network(cloud: Cloud, id_: str, body: dict[str, Any]) -> Doc:
    nm.check_extension_fields(cloud, body)
    if "mtu" in body:
        _mtu(body)
    allowed = {"name", "description", "tags", "admin_state_up", "mtu", "port_security_enabled",
               "router:external", "shared", "qos_policy_id", "is_default", "dns_domain"}  # fmt: skip
    return _update_simple(cloud, "networks", id_, body, allowed)


def _update_subnet(cloud: Cloud, id_: str, body: dict[str, Any]) -> Doc:
    nm.check_fields(
        body,
        {
            "name",
            "description",
            "tags",
            "gateway_ip",
            "allocation_pools",
            "dns_nameservers",
            "host_routes",
            "enable_dhcp",
            "service_types",
        },
        readonly={"cidr", "network_id", "ip_version"},
    )
    doc = nm.get(cloud, "subnets", id_)
    if "allocation_pools" in body or "gateway_ip" in body:
        net = ipaddress.ip_network(doc["cidr"])
        gateway = body.get("gateway_ip", doc["gateway_ip"])
        body["allocation_pools"] = _pools(
            net, gateway, body.get("allocation_pools", doc["allocation_pools"])
        )
    return _update_simple(cloud, "subnets", id_, body, set(body))


def _update_router(cloud: Cloud, id_: str, body: dict[str, Any]) -> Doc:
    nm.check_fields(
        body,
        {
            "name",
            "description",
            "tags",
            "admin_state_up",
            "external_gateway_info",
            "routes",
            "distributed",
            "ha",
        },
    )
    doc = cloud.store.edit("routers", id_)
    if doc is None:
        raise nm.not_found("routers", id_)
    with cloud.store.tx():
        if "external_gateway_info" in body:
            _set_gateway(cloud, doc, body["external_gateway_info"])
        if "routes" in body:
            doc["routes"] = _check_routes(cloud, id_, body["routes"] or [])
        for key in ("name", "description", "admin_state_up"):
            if key in body:
                doc[key] = body[key]
        if "tags" in body:
            doc["tags"] = list(dict.fromkeys(body["tags"] or []))
        cloud.store.put("routers", nm.touch(doc))
    return doc


def _update_sg(cloud: Cloud, id_: str, body: dict[str, Any]) -> Doc:
    doc = nm.get(cloud, "security_groups", id_)
    # The default group is found by its name (server create, port create): a second one
    # would make every later lookup ambiguous. Neutron's name validator refuses it too.
    if doc["name"] != "default" and body.get("name") == "default":
        raise conflict(
            "Default security group already exists.", "SecurityGroupDefaultAlreadyExists"
        )
    if doc["name"] == "default" and body.get("name", "default") != "default":
        raise conflict(
            "Insufficient rights for renaming the default security group.",
            "SecurityGroupCannotUpdateDefault",
        )
    return _update_simple(
        cloud, "security_groups", id_, body, {"name", "description", "tags", "stateful"}
    )


def _update_fip(cloud: Cloud, id_: str, body: dict[str, Any]) -> Doc:
    nm.check_fields(body, {"port_id", "fixed_ip_address", "description", "tags", "qos_policy_id"})
    doc = cloud.store.edit("floatingips", id_)
    if doc is None:
        raise nm.not_found("floatingips", id_)
    with cloud.store.tx():
        if "port_id" in body:
            if body["port_id"]:
                nm.associate(cloud, doc, body["port_id"], body.get("fixed_ip_address"))
            else:
                doc.update(
                    port_id=None,
                    fixed_ip_address=None,
                    router_id=None,
                    status="DOWN",
                    port_details=None,
                )
        for key in ("description", "qos_policy_id"):
            if key in body:
                doc[key] = body[key]
        if "tags" in body:
            doc["tags"] = list(dict.fromkeys(body["tags"] or []))
        cloud.store.put("floatingips", nm.touch(doc))
    return doc


_UPDATERS = {
    "networks": _update_network,
    "subnets": _update_subnet,
    "ports": nm.update_port,
    "routers": _update_router,
    "security_groups": _update_sg,
    "floatingips": _update_fip,
}


@router.put(P + "/{kind}/{id_}")
async def update(request: Request, kind: str, id_: str) -> JSONResponse:
    cloud = _cloud(request)
    k = _kind(kind)
    if k not in _UPDATERS:
        raise ApiError(405, "The method is not allowed for the requested URL.")
    body = await _body(request, nm.KINDS[k][0])
    nm.get(cloud, k, id_)
    doc = _UPDATERS[k](cloud, id_, dict(body))
    await cloud.changed()
    return _one(cloud, k, doc)


# ---- delete -----------------------------------------------------------------------------


def _delete_network(cloud: Cloud, id_: str) -> None:
    nm.get(cloud, "networks", id_)
    if any(
        p["network_id"] == id_ and p["device_owner"] != "network:dhcp"
        for p in cloud.store.all("ports")
    ):
        raise conflict(
            f"Unable to complete operation on network {id_}. There are one or more ports still "
            "in use on the network.",
            "NetworkInUse",
        )
    with cloud.store.tx():
        for s in nm.network_subnets(cloud, id_):
            cloud.store.delete("subnets", s["id"])
        cloud.store.delete("networks", id_)


def _delete_subnet(cloud: Cloud, id_: str) -> None:
    nm.get(cloud, "subnets", id_)
    if any(ip["subnet_id"] == id_ for p in cloud.store.all("ports") for ip in p["fixed_ips"]):
        raise conflict(
            f"Unable to complete operation on subnet {id_}: One or more ports have an IP "
            "allocation from this subnet.",
            "SubnetInUse",
        )
    cloud.store.delete("subnets", id_)


def _delete_router(cloud: Cloud, id_: str) -> None:
    doc = cloud.store.edit("routers", id_)
    if doc is None:
        raise nm.not_found("routers", id_)
    if _router_subnets(cloud, id_):
        raise conflict(f"Router {id_} still has ports", "RouterInUse")
    with cloud.store.tx():
        _set_gateway(cloud, doc, None)
        cloud.store.delete("routers", id_)


def _delete_sg(cloud: Cloud, id_: str) -> None:
    doc = nm.get(cloud, "security_groups", id_)
    if doc["name"] == "default":
        raise conflict(
            "Insufficient rights for removing default security group.",
            "SecurityGroupCannotRemoveDefault",
        )
    if any(id_ in p["security_groups"] for p in cloud.store.all("ports")):
        raise conflict(f"Security Group {id_} in use.", "SecurityGroupInUse")
    with cloud.store.tx():
        for r in cloud.store.all("security_group_rules"):
            if r["security_group_id"] == id_ or r["remote_group_id"] == id_:
                cloud.store.delete("security_group_rules", r["id"])
        cloud.store.delete("security_groups", id_)


def _delete_rule(cloud: Cloud, id_: str) -> None:
    rule = nm.get(cloud, "security_group_rules", id_)
    with cloud.store.tx():
        cloud.store.delete("security_group_rules", id_)
        sg = cloud.store.edit("security_groups", rule["security_group_id"])
        if sg is not None:
            cloud.store.put("security_groups", nm.touch(sg))


def _delete_fip(cloud: Cloud, id_: str) -> None:
    nm.get(cloud, "floatingips", id_)
    cloud.store.delete("floatingips", id_)


_DELETERS = {
    "networks": _delete_network,
    "subnets": _delete_subnet,
    "ports": nm.delete_port,
    "routers": _delete_router,
    "security_groups": _delete_sg,
    "security_group_rules": _delete_rule,
    "floatingips": _delete_fip,
}


@router.delete(P + "/{kind}/{id_}")
async def delete(request: Request, kind: str, id_: str) -> Response:
    cloud = _cloud(request)
    _DELETERS[_kind(kind)](cloud, id_)
    await cloud.changed()
    return Response(status_code=204)
