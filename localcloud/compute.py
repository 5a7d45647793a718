# ruff: noqa: E501 - OpenStack error messages are kept verbatim, on one line each
"""Nova 2.1 over HTTP: discovery, flavors, keypairs, servers (life cycle, addresses, metadata,
console output, interfaces), limits and quota sets."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
import re
import time
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import APIRouter, Request, Response
from starlette.responses import JSONResponse

from localcloud import neutron_model as nm
from localcloud.errors import ApiError, bad_request, conflict
from localcloud.network import quota_limit
from localcloud.runtime import Cloud, iso, log, new_id, now_iso
from localcloud.seed import FLAVORS, IMAGES
from localcloud.store import Doc

router = APIRouter()
P = "/{cloud}/compute/v2.1"
MAX_MICROVERSION = "2.96"
MIN, MAX = (2, 1), (2, 96)
_MV = re.compile(r"^\s*(?:compute\s+)?(\d+)\.(\d+)\s*$|^\s*(?:compute\s+)?latest\s*$", re.I)


def _cloud(request: Request) -> Cloud:
    return request.scope["lc.cloud"]


def _requested_version(headers: dict[bytes, bytes]) -> str | None:
    """Nova reads `OpenStack-API-Version: compute X` first (other services' entries in it are
    ignored), then the legacy `X-OpenStack-Nova-API-Version`."""
    for part in headers.get(b"openstack-api-version", b"").decode("latin-1").split(","):
        service, _, version = part.strip().partition(" ")
        if service.lower() == "compute" and version.strip():
            return version.strip()
    legacy = headers.get(b"x-openstack-nova-api-version", b"").decode("latin-1").strip()
    return legacy or None


def negotiate(headers: dict[bytes, bytes]) -> tuple[int, int]:
    """The microversion a request asks for: 2.1 without a header, 2.96 for `latest`;
    400 for a malformed one, 406 for one outside 2.1 … 2.96 (as Nova answers)."""
    raw = _requested_version(headers)
    if raw is None:
        return (2, 1)
    if raw.lower() == "latest":
        return MAX
    m = _MV.match(raw)
    if not m or m.group(1) is None:
        raise bad_request(
            f"Version string '{raw}' is not in the correct format. Use 'compute 2.x' or 'latest'."
        )
    mv = (int(m.group(1)), int(m.group(2)))
    if not MIN <= mv <= MAX:
        raise ApiError(
            406,
            f"Version {mv[0]}.{mv[1]} is not supported by the API. Minimum is 2.1 and maximum is {MAX_MICROVERSION}.",
        )
    return mv


def version_headers(mv: tuple[int, int]) -> list[tuple[bytes, bytes]]:
    """What Nova adds to every answer of the 2.1 API: the version it used, both spellings."""
    text = f"{mv[0]}.{mv[1]}".encode()
    return [
        (b"openstack-api-version", b"compute " + text),
        (b"x-openstack-nova-api-version", text),
        (b"vary", b"OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    ]


def microversion(request: Request) -> tuple[int, int]:
    """The negotiated version (the gateway puts it in the scope; a direct call parses)."""
    mv = request.scope.get("lc.mv")
    return mv if mv is not None else negotiate(dict(request.scope["headers"]))


async def _body(request: Request, key: str) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body") from exc
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise bad_request(f"Invalid input for field/attribute {key}: an object is required.")
    return data[key]


def _link(cloud: Cloud, kind: str, id_: str) -> list[dict[str, str]]:
    base = cloud.endpoint("compute")
    return [
        {"rel": "self", "href": f"{base}/{kind}/{id_}"},
        {"rel": "bookmark", "href": f"{base.removesuffix('/v2.1')}/{kind}/{id_}"},
    ]


# ---- discovery --------------------------------------------------------------------------


def _version(cloud: Cloud) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": MAX_MICROVERSION,
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": cloud.endpoint("compute") + "/"}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


@router.get("/{cloud}/compute")
async def versions(request: Request) -> JSONResponse:
    return JSONResponse({"versions": [_version(_cloud(request))]})


@router.get(P)
async def version(request: Request) -> JSONResponse:
    return JSONResponse({"version": _version(_cloud(request))})


# ---- flavors ----------------------------------------------------------------------------


def _flavor(cloud: Cloud, f: dict[str, Any], mv: tuple[int, int], detail: bool = True) -> Doc:
    out: Doc = {"id": f["id"], "name": f["name"], "links": _link(cloud, "flavors", f["id"])}
    if mv >= (2, 55):
        out["description"] = None
    if not detail:
        return out
    out.update(
        {
            "vcpus": f["vcpus"],
            "ram": f["ram"],
            "disk": f["disk"],
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "OS-FLV-DISABLED:disabled": False,
            "swap": 0 if mv >= (2, 75) else "",
            "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True,
        }
    )
    if mv >= (2, 61):
        out["extra_specs"] = {}
    return out


def find_flavor(ref: str) -> dict[str, Any] | None:
    ref = ref.rstrip("/").rsplit("/", 1)[-1]
    return next((f for f in FLAVORS if f["id"] == ref), None)


def find_image(ref: str) -> dict[str, Any] | None:
    ref = ref.rstrip("/").rsplit("/", 1)[-1]
    return next((i for i in IMAGES if i["id"] == ref), None)


@router.get(P + "/flavors")
@router.get(P + "/flavors/detail")
async def list_flavors(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    mv = microversion(request)
    detail = request.url.path.endswith("/detail")
    flavors = _filter_flavors(request.query_params)
    out: Doc = {"flavors": [_flavor(cloud, f, mv, detail) for f in flavors]}
    limit = _non_negative(request.query_params, "limit")
    if limit is not None and flavors and len(flavors) == limit:
        base = cloud.endpoint("compute") + ("/flavors/detail" if detail else "/flavors")
        next_href = f"{base}?limit={limit}&marker={flavors[-1]['id']}"
        out["flavors_links"] = [{"rel": "next", "href": next_href}]
    return JSONResponse(out)


def _non_negative(params: Any, key: str) -> int | None:
    raw = params.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(
            f"Invalid {key} filter [{raw}]: a non-negative integer is required."
        ) from exc
    if value < 0:
        raise bad_request(f"Invalid {key} filter [{raw}]: a non-negative integer is required.")
    return value


def _filter_flavors(params: Any) -> list[dict[str, Any]]:
    """Nova's flavor list filters: minRam, minDisk, is_public, then marker and limit."""
    flavors = list(FLAVORS)
    min_ram, min_disk = _non_negative(params, "minRam"), _non_negative(params, "minDisk")
    if min_ram is not None:
        flavors = [f for f in flavors if f["ram"] >= min_ram]
    if min_disk is not None:
        flavors = [f for f in flavors if f["disk"] >= min_disk]
    if str(params.get("is_public", "true")).lower() in ("false", "f", "0", "no", "off"):
        flavors = []  # every seeded flavor is public
    marker = params.get("marker")
    if marker is not None:
        ids = [f["id"] for f in FLAVORS]
        if marker not in ids:
            raise bad_request(f"marker [{marker}] not found")
        after = ids.index(marker)
        flavors = [f for f in flavors if ids.index(f["id"]) > after]
    limit = _non_negative(params, "limit")
    return flavors[:limit] if limit is not None else flavors


@router.get(P + "/flavors/{flavor_id}")
async def show_flavor(request: Request, flavor_id: str) -> JSONResponse:
    f = find_flavor(flavor_id)
    if f is None:
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")
    return JSONResponse({"flavor": _flavor(_cloud(request), f, microversion(request))})


@router.get(P + "/flavors/{flavor_id}/os-extra_specs")
async def flavor_extra_specs(request: Request, flavor_id: str) -> JSONResponse:
    if find_flavor(flavor_id) is None:
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")
    return JSONResponse({"extra_specs": {}})


# ---- keypairs ---------------------------------------------------------------------------

_KEYPAIR_NAME = re.compile(r"^[A-Za-z0-9 _.@-]{1,255}$")


def _fingerprint(public_key: str) -> str:
    try:
        serialization.load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1])
    except (ValueError, IndexError, binascii.Error, TypeError) as exc:
        raise bad_request("Keypair data is invalid: failed to generate fingerprint") from exc
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def _keypair(doc: Doc, mv: tuple[int, int], full: bool = True) -> Doc:
    out = {
        "name": doc["name"],
        "public_key": doc["public_key"],
        "fingerprint": doc["fingerprint"],
    }
    if mv >= (2, 2):
        out["type"] = doc["type"]
    if full:
        out.update(
            user_id=doc["user_id"],
            created_at=doc["created_at"],
            deleted=False,
            deleted_at=None,
            updated_at=None,
            id=doc["num"],
        )
    return out


@router.get(P + "/os-keypairs")
async def list_keypairs(request: Request) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    return JSONResponse(
        {
            "keypairs": [
                {"keypair": _keypair(k, mv, full=False)} for k in cloud.store.all("keypairs")
            ]
        }
    )


@router.post(P + "/os-keypairs")
async def create_keypair(request: Request) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    body = await _body(request, "keypair")
    name = body.get("name")
    if not isinstance(name, str) or not _KEYPAIR_NAME.match(name):
        raise bad_request(
            "Keypair data is invalid: Keypair name must be string and between 1 and 255 "
            "characters long (letters, digits, space, '_', '.', '@', '-')"
        )
    if cloud.store.get("keypairs", name):
        raise conflict(f"Key pair '{name}' already exists.")
    limit = cloud.quotas().key_pairs
    if limit >= 0 and len(cloud.store.all("keypairs")) >= limit:
        raise ApiError(403, "Quota exceeded, too many key pairs.")
    private = None
    public = body.get("public_key")
    if public is not None and not isinstance(public, str):
        raise bad_request("Keypair data is invalid: public_key must be a string.")
    if body.get("type", "ssh") not in ("ssh", "x509"):
        raise bad_request(
            f"Invalid input for field/attribute type. Value: {body.get('type')!r}. Use 'ssh' or 'x509'."
        )
    if body.get("user_id") is not None and not isinstance(body["user_id"], str):
        raise bad_request("Invalid input for field/attribute user_id: a string is required.")
    if public is None:
        if mv >= (2, 92):
            raise bad_request(
                "Invalid input for field/attribute keypair. Value: public_key is required"
            )
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
            + " Generated-by-Nova"
        )
    doc = {
        "id": name,
        "name": name,
        "public_key": public.strip(),
        "fingerprint": _fingerprint(public),
        "type": body.get("type", "ssh"),
        "user_id": body.get("user_id") or cloud.user["id"],
        "created_at": now_iso(),
        "num": len(cloud.store.all("keypairs")) + 1,
    }
    cloud.store.put("keypairs", doc)
    # Nova's create answer (schema `create_keypair`) has only these; show adds the bookkeeping.
    out = _keypair(doc, mv, full=False) | {"user_id": doc["user_id"]}
    if private is not None:
        out["private_key"] = private
    status = 201 if mv >= (2, 2) else 200
    return JSONResponse({"keypair": out}, status_code=status)


@router.get(P + "/os-keypairs/{name}")
async def show_keypair(request: Request, name: str) -> JSONResponse:
    cloud = _cloud(request)
    doc = cloud.store.get("keypairs", name)
    if doc is None:
        raise ApiError(404, f"Keypair {name} not found for user {cloud.user['id']}")
    return JSONResponse({"keypair": _keypair(doc, microversion(request))})


@router.delete(P + "/os-keypairs/{name}")
async def delete_keypair(request: Request, name: str) -> Response:
    cloud = _cloud(request)
    if cloud.store.get("keypairs", name) is None:
        raise ApiError(404, f"Keypair {name} not found for user {cloud.user['id']}")
    cloud.store.delete("keypairs", name)
    status = 204 if microversion(request) >= (2, 2) else 202
    return Response(status_code=status)


# ---- limits and quota sets --------------------------------------------------------------

_NOVA_QUOTAS = ("instances", "cores", "ram", "key_pairs")
_SERVER_GROUPS, _SERVER_GROUP_MEMBERS = 10, 10  # Nova's defaults, as the quota sets show


def _usage(cloud: Cloud) -> dict[str, int]:
    servers = cloud.store.all("servers")
    flavors = [find_flavor(s["flavor_id"]) or {"vcpus": 0, "ram": 0} for s in servers]
    return {
        "instances": len(servers),
        "cores": sum(f["vcpus"] for f in flavors),
        "ram": sum(f["ram"] for f in flavors),
        "key_pairs": len(cloud.store.all("keypairs")),
    }


@router.get(P + "/limits")
async def limits(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    q, used = cloud.quotas(), _usage(cloud)
    absolute = {
        "maxTotalInstances": q.instances,
        "maxTotalCores": q.cores,
        "maxTotalRAMSize": q.ram,
        "maxTotalKeypairs": q.key_pairs,
        "maxServerMeta": 128,
        "maxImageMeta": 128,
        "maxPersonality": 5,
        "maxPersonalitySize": 10240,
        "maxServerGroups": _SERVER_GROUPS,
        "maxServerGroupMembers": 10,
        "totalInstancesUsed": used["instances"],
        "totalCoresUsed": used["cores"],
        "totalRAMUsed": used["ram"],
        "totalServerGroupsUsed": len(cloud.store.all("server_groups")),
    }
    return JSONResponse({"limits": {"rate": [], "absolute": absolute}})


def _quota_set(cloud: Cloud, project_id: str, detail: bool, mv: tuple[int, int] = MAX) -> Doc:
    if project_id not in (cloud.project["id"], cloud.project["name"]):
        raise ApiError(404, f"Project {project_id} could not be found.")
    q, used = cloud.quotas(), _usage(cloud)
    values: dict[str, Any] = {k: getattr(q, k) for k in _NOVA_QUOTAS}
    values |= {"metadata_items": 128, "server_groups": 10, "server_group_members": 10}
    if mv < (2, 36):  # the nova-network era quotas, answered as Nova does below 2.36
        values |= {
            "floating_ips": q.floatingip, "fixed_ips": -1,
            "security_groups": q.security_group, "security_group_rules": q.security_group_rule,
        }  # fmt: skip
    if mv < (2, 57):
        values |= {
            "injected_files": 5, "injected_file_content_bytes": 10240,
            "injected_file_path_bytes": 255,
        }  # fmt: skip
    if detail:
        values = {
            k: {"limit": v, "in_use": used.get(k, 0), "reserved": 0} for k, v in values.items()
        }
    return {"id": project_id, **values}


@router.get(P + "/os-quota-sets/{project_id}")
@router.get(P + "/os-quota-sets/{project_id}/defaults")
async def show_quota_set(request: Request, project_id: str) -> JSONResponse:
    return JSONResponse(
        {"quota_set": _quota_set(_cloud(request), project_id, False, microversion(request))}
    )


@router.get(P + "/os-quota-sets/{project_id}/detail")
async def show_quota_detail(request: Request, project_id: str) -> JSONResponse:
    return JSONResponse(
        {"quota_set": _quota_set(_cloud(request), project_id, True, microversion(request))}
    )


@router.put(P + "/os-quota-sets/{project_id}")
async def update_quota_set(request: Request, project_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _quota_set(cloud, project_id, False)
    body = await _body(request, "quota_set")
    body.pop("force", None)
    unknown = [k for k in body if k not in _NOVA_QUOTAS]
    if unknown:
        raise bad_request(
            f"Invalid input for field/attribute quota_set. Additional properties are not allowed ({unknown} were unexpected)"
        )
    limits = {k: quota_limit(k, v) for k, v in body.items()}
    cloud.store.set_meta("quotas", cloud.store.meta.get("quotas", {}) | limits)
    return JSONResponse({"quota_set": _quota_set(cloud, project_id, False, microversion(request))})


@router.get(P + "/os-availability-zone")
@router.get(P + "/os-availability-zone/detail")
async def availability_zones(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "availabilityZoneInfo": [
                {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}
            ]
        }
    )


# ---- servers: views ---------------------------------------------------------------------


def server_ports(cloud: Cloud, server_id: str) -> list[Doc]:
    return [
        p
        for p in cloud.store.all("ports")
        if p["device_id"] == server_id and p["device_owner"].startswith("compute:")
    ]


def _addresses(cloud: Cloud, server_id: str) -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {}
    fips = cloud.store.all("floatingips")
    for port in server_ports(cloud, server_id):
        net = cloud.store.get("networks", port["network_id"]) or {"name": port["network_id"]}
        entries = out.setdefault(net["name"] or port["network_id"], [])
        for ip in port["fixed_ips"]:
            entries.append(
                {
                    "version": 6 if ":" in ip["ip_address"] else 4,
                    "addr": ip["ip_address"],
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
        for fip in fips:
            if fip["port_id"] == port["id"]:
                entries.append(
                    {
                        "version": 4,
                        "addr": fip["floating_ip_address"],
                        "OS-EXT-IPS:type": "floating",
                        "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                    }
                )
    return out


_VM_STATE = {"BUILD": "building", "ACTIVE": "active", "ERROR": "error", "SHUTOFF": "stopped"}
_POWER = {"BUILD": 0, "ACTIVE": 1, "ERROR": 0, "SHUTOFF": 4}


def _host_id(cloud: Cloud) -> str:
    return hashlib.sha224(f"{cloud.project['id']}localcloud".encode()).hexdigest()


def server_view(cloud: Cloud, doc: Doc, mv: tuple[int, int]) -> Doc:
    flavor = find_flavor(doc["flavor_id"]) or {
        "id": doc["flavor_id"],
        "name": "",
        "vcpus": 0,
        "ram": 0,
        "disk": 0,
    }
    if mv >= (2, 47):
        flavor_view: Doc = {
            "vcpus": flavor["vcpus"],
            "ram": flavor["ram"],
            "disk": flavor["disk"],
            "ephemeral": 0,
            "swap": 0,
            "original_name": flavor["name"],
            "extra_specs": {},
        }
    else:
        flavor_view = {"id": flavor["id"], "links": _link(cloud, "flavors", flavor["id"])[1:]}
    image: Doc | str = (
        {"id": doc["image_id"], "links": _link(cloud, "images", doc["image_id"])[1:]}
        if doc.get("image_id")
        else ""
    )
    status = doc["status"]
    out = {
        "id": doc["id"],
        "name": doc["name"],
        "status": status,
        "tenant_id": cloud.project["id"],
        "user_id": cloud.user["id"],
        "metadata": doc["metadata"],
        "hostId": _host_id(cloud),
        "image": image,
        "flavor": flavor_view,
        "created": doc["created"],
        "updated": doc["updated"],
        "addresses": _addresses(cloud, doc["id"]),
        "accessIPv4": doc.get("accessIPv4") or "",
        "accessIPv6": doc.get("accessIPv6") or "",
        "links": _link(cloud, "servers", doc["id"]),
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": "",
        "key_name": doc.get("key_name"),
        "OS-SRV-USG:launched_at": doc.get("launched_at"),
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:task_state": "spawning" if status == "BUILD" else None,
        "OS-EXT-STS:vm_state": _VM_STATE.get(status, "active"),
        "OS-EXT-STS:power_state": _POWER.get(status, 0),
        "os-extended-volumes:volumes_attached": [],
    }
    if status in ("BUILD", "ACTIVE"):  # Nova shows progress only while it means something
        out["progress"] = 0 if status == "BUILD" else 100
    if doc.get("security_group_names"):  # Nova leaves the key out when there are none
        out["security_groups"] = [{"name": n} for n in doc["security_group_names"]]
    if mv >= (2, 9):
        out["locked"] = bool(doc.get("locked"))
    if mv >= (2, 19):
        out["description"] = doc.get("description")
    if mv >= (2, 26):
        out["tags"] = doc.get("tags", [])
    if mv >= (2, 63):
        out["trusted_image_certificates"] = None
    if mv >= (2, 73):
        out["locked_reason"] = doc.get("locked_reason")
    if mv >= (2, 71):
        out["server_groups"] = [
            g["id"] for g in cloud.store.all("server_groups") if doc["id"] in g["members"]
        ]
    if mv >= (2, 96):
        out["pinned_availability_zone"] = None
    if status == "ERROR" and doc.get("fault"):
        out["fault"] = doc["fault"]
    return out


def _get_server(cloud: Cloud, server_id: str) -> Doc:
    doc = cloud.store.get("servers", server_id)
    if doc is None:
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return doc


# ---- servers: create --------------------------------------------------------------------

SERVER_FIELDS = {
    "name", "imageRef", "flavorRef", "networks", "key_name", "security_groups", "user_data",
    "metadata", "min_count", "max_count", "return_reservation_id", "block_device_mapping_v2",
    "block_device_mapping", "availability_zone", "config_drive", "adminPass", "description",
    "tags", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig", "hostname", "personality",
    "trusted_image_certificates", "host", "hypervisor_hostname",
}  # fmt: skip


def _resolve_groups(cloud: Cloud, groups: Any) -> list[Doc]:
    if groups is None:
        groups = [{"name": "default"}]
    if not isinstance(groups, list):
        raise bad_request("Invalid input for field/attribute security_groups.")
    out = []
    all_groups = cloud.store.all("security_groups")
    for g in groups:
        ref = g.get("name") if isinstance(g, dict) else None
        if not ref:
            raise bad_request(
                "Invalid input for field/attribute security_groups: name is required."
            )
        by_id = [s for s in all_groups if s["id"] == ref]
        found = by_id or [s for s in all_groups if s["name"] == ref]
        if not found:
            raise bad_request(f"Unable to find security_group with name or id '{ref}'")
        if len(found) > 1:
            raise conflict(
                f"Multiple security groups found matching '{ref}'. Use an ID to be more specific."
            )
        if found[0] not in out:
            out.append(found[0])
    return out


def _requested_networks(cloud: Cloud, networks: Any) -> list[dict[str, Any]]:
    """Nova's `networks`: 'auto', 'none' or a list of {uuid|port[, fixed_ip]}."""
    if networks in (None, "auto"):
        candidates = [n for n in cloud.store.all("networks") if not n.get("router:external")]
        if not candidates:
            raise bad_request(
                "Unable to automatically allocate a network for project: no network exists."
            )
        if len(candidates) > 1:
            raise conflict(
                "Multiple possible networks found, use a Network ID to be more specific."
            )
        return [{"uuid": candidates[0]["id"]}]
    if networks == "none":
        return []
    if not isinstance(networks, list):
        raise bad_request(
            "Invalid input for field/attribute networks: use 'auto', 'none' or a list."
        )
    out = []
    for item in networks:
        if not isinstance(item, dict) or not (item.get("uuid") or item.get("port")):
            raise bad_request("Invalid input for field/attribute networks: give uuid or port.")
        if item.get("port"):
            port = cloud.store.get("ports", item["port"])
            if port is None:
                raise bad_request(f"Port {item['port']} could not be found.")
            if port["device_id"]:
                raise conflict(f"Port {item['port']} is still in use.")
        else:
            if cloud.store.get("networks", item["uuid"]) is None:
                raise bad_request(f"Network {item['uuid']} could not be found.")
        out.append(item)
    return out


def _user_data(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 65535:
        raise bad_request(
            "User data too large. User data must be no larger than 65535 bytes once base64 encoded."
        )
    try:
        base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request("User data needs to be valid base 64.") from exc
    return raw


def _metadata(meta: Any) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise bad_request("Invalid input for field/attribute metadata: an object is required.")
    if len(meta) > 128:
        raise ApiError(403, "Quota exceeded for metadata_items: at most 128 are allowed.")
    for k, v in meta.items():
        if (
            not isinstance(k, str)
            or not 1 <= len(k) <= 255
            or not isinstance(v, str)
            or len(v) > 255
        ):
            raise bad_request(
                f"Invalid input for field/attribute metadata. Value: {meta}. keys and values must be strings of at most 255 characters"
            )
    return dict(meta)


def _check_quota(cloud: Cloud, flavor: dict[str, Any], count: int = 1) -> None:
    q, used = cloud.quotas(), _usage(cloud)
    wanted = (("instances", 1), ("cores", flavor["vcpus"]), ("ram", flavor["ram"]))
    for name, add in ((n, a * count) for n, a in wanted):
        limit = getattr(q, name)
        if limit >= 0 and used[name] + add > limit:
            raise ApiError(
                403,
                f"Quota exceeded for {name}: Requested {add}, but already used {used[name]} "
                f"of {limit} {name}",
            )


def _host_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def _count(body: dict[str, Any], key: str) -> int:
    """Nova's schema: an integer, or a string of digits."""
    value = body.get(key, 1)
    if (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.isdigit()
    ):
        return int(value)
    raise bad_request(
        f"Invalid input for field/attribute {key}. Value: {value!r}. An integer is required."
    )


def _image_ref(body: dict[str, Any]) -> str:
    """`imageRef`, or the boot image of a `block_device_mapping_v2` (boot from image)."""
    ref = body.get("imageRef")
    if ref not in (None, "") and not isinstance(ref, str):
        raise bad_request(
            f"Invalid input for field/attribute imageRef. Value: {ref!r}. {ref!r} is not of type 'string'"
        )
    bdms = body.get("block_device_mapping_v2") or []
    if not isinstance(bdms, list) or not all(isinstance(b, dict) for b in bdms):
        raise bad_request(
            "Invalid input for field/attribute block_device_mapping_v2: a list of objects is required."
        )
    if ref:
        return ref
    for bdm in bdms:
        if bdm.get("source_type") == "image" and bdm.get("boot_index") in (0, "0"):
            uuid = bdm.get("uuid")
            if isinstance(uuid, str) and uuid:
                return uuid
    raise bad_request("Invalid input for field/attribute imageRef: an image id is required.")


def _access_ip(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value in (None, ""):
        return None
    version = 4 if key == "accessIPv4" else 6
    try:
        if not isinstance(value, str) or ipaddress.ip_address(value).version != version:
            raise ValueError(value)
        value = str(ipaddress.ip_address(value))  # Nova answers the canonical form (RFC 5952)
    except ValueError as exc:
        raise bad_request(
            f"Invalid input for field/attribute {key}. Value: {value!r}. {value!r} is not a 'ipv{version}'"
        ) from exc
    return value


def _server_name(body: dict[str, Any]) -> str:
    unknown = sorted(k for k in body if k not in SERVER_FIELDS)
    if unknown:
        raise bad_request(
            f"Invalid input for field/attribute server. Additional properties are not allowed ({', '.join(map(repr, unknown))} were unexpected)"
        )
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise bad_request(
            "Invalid input for field/attribute name: a non-empty string of at most 255 characters is required."
        )
    return name


def _counts(body: dict[str, Any]) -> tuple[int, int]:
    """`min_count` and `max_count` of a multiple create (1 and 1 without them)."""
    min_count = _count(body, "min_count")
    max_count = _count(body, "max_count") if "max_count" in body else min_count
    if min_count < 1 or max_count < 1:
        raise bad_request(
            "Invalid input for field/attribute min_count/max_count: the minimum is 1."
        )
    if max_count < min_count:
        raise bad_request("min_count must be <= max_count")
    return min_count, max_count


def _image_and_flavor(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    image = find_image(_image_ref(body))
    if image is None:
        raise bad_request(f"Image {_image_ref(body)} could not be found.")
    flavor_ref = body.get("flavorRef")
    if not isinstance(flavor_ref, str | int) or isinstance(flavor_ref, bool):
        raise bad_request(
            f"Invalid input for field/attribute flavorRef. Value: {flavor_ref!r}. "
            "A flavor id or link (string or integer) is required."
        )
    flavor = find_flavor(str(flavor_ref))
    if flavor is None:
        raise bad_request(f"Flavor {flavor_ref} could not be found.")
    return image, flavor


def _plain_fields(cloud: Cloud, body: dict[str, Any]) -> dict[str, Any]:
    """The fields stored as given once checked: key name, access IPs, tags, description."""
    key_name = body.get("key_name")
    if key_name is not None and not isinstance(key_name, str):
        raise bad_request(f"Invalid input for field/attribute key_name. Value: {key_name!r}.")
    fields = {k: _access_ip(body, k) for k in ("accessIPv4", "accessIPv6")}
    tags = body.get("tags") or []
    if not isinstance(tags, list) or len(tags) > _MAX_TAGS:
        raise bad_request(f"Invalid input for field/attribute tags: a list of at most {_MAX_TAGS}.")
    fields["tags"] = list(dict.fromkeys(_check_tag(t) for t in tags))
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 255):
        raise bad_request("Invalid input for field/attribute description: at most 255 characters.")
    fields["description"] = description
    if key_name and cloud.store.get("keypairs", key_name) is None:
        raise bad_request("Invalid key_name provided.")
    fields["key_name"] = key_name
    return fields


def _created(
    cloud: Cloud, body: dict[str, Any], made: list[str], groups: list[Doc], reservation_id: str
) -> JSONResponse:
    """Nova's 202: the reservation id if asked for, else the first server's id and links."""
    if body.get("return_reservation_id") in (True, "True", "true"):
        return JSONResponse({"reservation_id": reservation_id}, status_code=202)
    server_id = made[0]
    return JSONResponse(
        {
            "server": {
                "id": server_id,
                "links": _link(cloud, "servers", server_id),
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": g["name"]} for g in groups],
            }
        },
        status_code=202,
        headers={"Location": _link(cloud, "servers", server_id)[0]["href"]},
    )


@router.post(P + "/servers")
async def create_server(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    body = await _body(request, "server")
    name = _server_name(body)
    min_count, max_count = _counts(body)
    image, flavor = _image_and_flavor(body)
    fields = _plain_fields(cloud, body)
    groups = _resolve_groups(cloud, body.get("security_groups"))
    requested = _requested_networks(cloud, body.get("networks"))
    fields["user_data"] = _user_data(body.get("user_data"))
    fields["metadata"] = _metadata(body.get("metadata"))
    if max_count > 1 and any(item.get("port") or item.get("fixed_ip") for item in requested):
        raise bad_request(
            "Unable to launch multiple instances with a single configured port ID or fixed IP."
        )
    group = await _hinted_group(request)
    count = _fitting_count(cloud, flavor, min_count, max_count)
    fields["reservation_id"] = "r-" + new_id()[:8]
    with cloud.store.tx():
        made = [
            _store_server(
                cloud, f"{name}-{i + 1}" if count > 1 else name, requested, groups, flavor, image,
                fields,
            )
            for i in range(count)
        ]  # fmt: skip
    for server_id in made:
        record_action(cloud, request, server_id, "create")
        if group is not None:
            _join_group(cloud, group["id"], server_id)
    await cloud.changed()
    for server_id in made:
        cloud.runtime.spawn(boot(cloud, server_id))
    return _created(cloud, body, made, groups, fields["reservation_id"])


def _fitting_count(cloud: Cloud, flavor: dict[str, Any], min_count: int, max_count: int) -> int:
    """As Nova: as many as the quota allows up to max_count, at least min_count (else 403)."""
    for count in range(max_count, min_count - 1, -1):
        try:
            _check_quota(cloud, flavor, count)
            return count
        except ApiError:
            if count == min_count:
                raise
    raise AssertionError("unreachable")


def _store_server(
    cloud: Cloud,
    name: str,
    requested: list[dict[str, Any]],
    groups: list[Doc],
    flavor: dict[str, Any],
    image: dict[str, Any],
    fields: dict[str, Any],
) -> str:
    """One server's ports and document (inside the caller's transaction); returns its id."""
    server_id = new_id()
    now = now_iso()
    with cloud.store.tx():  # nested in the caller's: one transaction
        nova_ports = []
        for item in requested:
            if item.get("port"):
                nm.update_port(
                    cloud, item["port"], {"device_id": server_id, "device_owner": "compute:nova"}
                )
                continue
            network = nm.get(cloud, "networks", item["uuid"])
            port_body: dict[str, Any] = {
                "network_id": network["id"],
                "device_id": server_id,
                "device_owner": "compute:nova",
                "security_groups": [g["id"] for g in groups]
                if network.get("port_security_enabled", True)
                else [],
            }
            if item.get("fixed_ip"):
                port_body["fixed_ips"] = [{"ip_address": item["fixed_ip"]}]
            try:
                port = nm.create_port(cloud, port_body)
            except ApiError as exc:
                if exc.kind == "OverQuota":
                    raise ApiError(403, "Maximum number of ports exceeded") from exc
                raise
            nova_ports.append(port["id"])
        doc = {
            "id": server_id,
            "name": name,
            "status": "BUILD",
            "flavor_id": flavor["id"],
            "image_id": image["id"],
            "security_group_names": [g["name"] for g in groups],
            **fields,
            "created": now,
            "updated": now,
            "launched_at": None,
            "fault": None,
            "_created_ts": time.time(),
            "_nova_ports": nova_ports,
            "_host_key": _host_key(),
        }
        cloud.store.put("servers", doc)
    return server_id


async def boot(cloud: Cloud, server_id: str) -> None:
    """BUILD → (boot delay) → ACTIVE, or ERROR on an injected failure or a data-plane error."""
    doc = cloud.store.get("servers", server_id)
    if doc is None or doc["status"] != "BUILD":
        return
    faults = cloud.runtime.faults
    delay = faults.for_cloud(cloud.name).boot_delay - (time.time() - doc["_created_ts"])
    if delay > 0:
        await asyncio.sleep(delay)
    doc = cloud.store.edit("servers", server_id)
    if doc is None or doc["status"] != "BUILD":
        return
    if faults.boot_fails(cloud.name):
        _fail(cloud, doc, "No valid host was found. (boot failure injected by localcloud)")
        await cloud.changed()
        return
    doc["_dp_status"] = "ACTIVE"  # the backend starts the host before Nova reports ACTIVE
    cloud.store.put("servers", doc)
    try:
        await cloud.applier.apply()
    except Exception as exc:
        doc = cloud.store.edit("servers", server_id)
        if doc is not None:
            _fail(cloud, doc, f"Build of instance {server_id} aborted: data plane: {exc}")
            await cloud.changed()
        return
    doc = cloud.store.edit("servers", server_id)
    if doc is None or doc["status"] != "BUILD":
        return
    doc.pop("_dp_status", None)
    doc.update(status="ACTIVE", launched_at=now_iso(), updated=now_iso(), _active_ts=time.time())
    cloud.store.put("servers", doc)
    log.info("server %s (%s) on %s is ACTIVE", doc["name"], server_id, cloud.name)


def _fail(cloud: Cloud, doc: Doc, message: str) -> None:
    doc.pop("_dp_status", None)
    doc.update(
        status="ERROR",
        updated=now_iso(),
        fault={"code": 500, "created": now_iso(), "message": message, "details": message},
    )
    cloud.store.put("servers", doc)


# ---- servers: list, show, update, delete ------------------------------------------------


@router.get(P + "/servers")
@router.get(P + "/servers/detail")
async def list_servers(request: Request) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    q = request.query_params
    docs = list(reversed(cloud.store.all("servers")))  # newest first, as Nova sorts
    if q.get("name"):
        try:
            pattern = re.compile(q["name"])
        except re.error as exc:
            raise bad_request(f"Invalid filter name: {exc}") from exc
        docs = [d for d in docs if pattern.search(d["name"])]
    if q.get("status"):
        docs = [d for d in docs if d["status"] == q["status"].upper()]
    if q.get("flavor"):
        docs = [d for d in docs if d["flavor_id"] == q["flavor"]]
    if q.get("image"):
        docs = [d for d in docs if d["image_id"] == q["image"]]
    if q.get("key_name"):
        docs = [d for d in docs if d.get("key_name") == q["key_name"]]
    if q.get("reservation_id"):
        docs = [d for d in docs if d.get("reservation_id") == q["reservation_id"]]
    for key in ("ip", "ip6"):
        if q.get(key):
            docs = _by_ip(cloud, docs, q[key], 4 if key == "ip" else 6)
    if q.get("changes-since") or q.get("changes-before"):
        docs = _changed(docs, q.get("changes-since"), q.get("changes-before"))
    docs = _page(docs, q.get("marker"), _non_negative(q, "limit"))
    detail = request.url.path.endswith("/detail")
    out: Doc = {
        "servers": [
            _list_view(server_view(cloud, d, mv))
            if detail
            else {"id": d["id"], "name": d["name"], "links": _link(cloud, "servers", d["id"])}
            for d in docs
        ]
    }
    limit = _non_negative(q, "limit")
    if limit and len(docs) == limit:
        base = cloud.endpoint("compute") + ("/servers/detail" if detail else "/servers")
        out["servers_links"] = [
            {"rel": "next", "href": f"{base}?limit={limit}&marker={docs[-1]['id']}"}
        ]
    return JSONResponse(out)


def _timestamp(value: str, key: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise bad_request(
            f"Invalid input for query parameters {key}. Value: {value}. '{value}' is not a 'date-time'"
        ) from exc


def _changed(docs: list[Doc], since: str | None, before: str | None) -> list[Doc]:
    """Nova's changes-since / changes-before: by the server's `updated` time."""
    low = _timestamp(since, "changes-since") if since else float("-inf")
    high = _timestamp(before, "changes-before") if before else float("inf")
    return [d for d in docs if low <= _timestamp(d["updated"], "updated") <= high]


def _by_ip(cloud: Cloud, docs: list[Doc], pattern: str, version: int) -> list[Doc]:
    """Nova's `ip`/`ip6` filters: a regular expression searched in the fixed addresses."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise bad_request(f"Invalid filter ip: {exc}") from exc
    return [
        d
        for d in docs
        if any(
            e["version"] == version and rx.search(e["addr"])
            for entries in _addresses(cloud, d["id"]).values()
            for e in entries
            if e["OS-EXT-IPS:type"] == "fixed"
        )
    ]


def _page(docs: list[Doc], marker: str | None, limit: int | None) -> list[Doc]:
    if marker is not None:
        ids = [d["id"] for d in docs]
        if marker not in ids:
            raise bad_request(f"marker [{marker}] not found")
        docs = docs[ids.index(marker) + 1 :]
    return docs[:limit] if limit is not None else docs


def _list_view(view: Doc) -> Doc:
    """A server in a detailed list: as show, less `server_groups` (show/update/rebuild only)."""
    view.pop("server_groups", None)
    return view


# What Nova's update answer leaves out before 2.75 (from 2.75 on it is the show view).
_NOT_IN_UPDATE = (
    "OS-EXT-AZ:availability_zone", "OS-EXT-STS:power_state", "OS-EXT-STS:task_state",
    "OS-EXT-STS:vm_state", "OS-SRV-USG:launched_at", "OS-SRV-USG:terminated_at",
    "config_drive", "key_name", "os-extended-volumes:volumes_attached", "security_groups",
)  # fmt: skip


def _update_view(view: Doc, mv: tuple[int, int]) -> Doc:
    if mv < (2, 75):
        for key in _NOT_IN_UPDATE:
            view.pop(key, None)
    return view


@router.get(P + "/servers/{server_id}")
async def show_server(request: Request, server_id: str) -> JSONResponse:
    cloud = _cloud(request)
    return JSONResponse(
        {"server": server_view(cloud, _get_server(cloud, server_id), microversion(request))}
    )


@router.put(P + "/servers/{server_id}")
async def update_server(request: Request, server_id: str) -> JSONResponse:
    cloud = _cloud(request)
    body = await _body(request, "server")
    unknown = [
        k for k in body if k not in ("name", "description", "accessIPv4", "accessIPv6", "hostname")
    ]
    if unknown:
        raise bad_request(
            f"Invalid input for field/attribute server. Additional properties are not allowed ({unknown} were unexpected)"
        )
    doc = cloud.store.edit("servers", server_id) or _get_server(cloud, server_id)
    if "name" in body and (
        not isinstance(body["name"], str) or not body["name"].strip() or len(body["name"]) > 255
    ):
        raise bad_request(
            "Invalid input for field/attribute name: a non-empty string of at most 255 characters is required."
        )
    if "description" in body and not isinstance(body["description"], str | None):
        raise bad_request("Invalid input for field/attribute description: a string is required.")
    for key in ("name", "description"):
        if key in body:
            doc[key] = body[key]
    for key in ("accessIPv4", "accessIPv6"):
        if key in body:
            doc[key] = _access_ip(body, key)
    doc["updated"] = now_iso()
    cloud.store.put("servers", doc)
    await cloud.changed()
    mv = microversion(request)
    return JSONResponse({"server": _update_view(server_view(cloud, doc, mv), mv)})


@router.delete(P + "/servers/{server_id}")
async def delete_server(request: Request, server_id: str) -> Response:
    cloud = _cloud(request)
    doc = _get_server(cloud, server_id)
    if doc.get("locked"):
        raise conflict(f"Instance {server_id} is locked")
    with cloud.store.tx():
        for port in server_ports(cloud, server_id):
            if port["id"] in doc.get("_nova_ports", []):
                nm.delete_port(cloud, port["id"], force=True)
            else:  # a port the user made stays, detached (preserve_on_delete)
                nm.update_port(cloud, port["id"], {"device_id": "", "device_owner": ""})
        cloud.store.delete("servers", server_id)
        _leave_groups(cloud, server_id)
        record_action(cloud, request, server_id, "delete")
    await cloud.changed()
    return Response(status_code=204)


# ---- server addresses (ips) ---------------------------------------------------------------


def _ips(cloud: Cloud, server_id: str) -> dict[str, list[Doc]]:
    """Nova's `ips` view: per network, only `addr` and `version` (no type or MAC)."""
    return {
        net: [{"version": e["version"], "addr": e["addr"]} for e in entries]
        for net, entries in _addresses(cloud, server_id).items()
    }


@router.get(P + "/servers/{server_id}/ips")
async def list_ips(request: Request, server_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _get_server(cloud, server_id)
    return JSONResponse({"addresses": _ips(cloud, server_id)})


@router.get(P + "/servers/{server_id}/ips/{network}")
async def show_ips(request: Request, server_id: str, network: str) -> JSONResponse:
    cloud = _cloud(request)
    _get_server(cloud, server_id)
    ips = _ips(cloud, server_id)
    if network not in ips:
        raise ApiError(404, "Instance is not a member of specified network")
    return JSONResponse({network: ips[network]})


# ---- server groups ------------------------------------------------------------------------
# Policies are recorded, not enforced: every server of a cloud runs on its one host.

_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


def _group_view(cloud: Cloud, doc: Doc, mv: tuple[int, int]) -> Doc:
    out: Doc = {"id": doc["id"], "name": doc["name"], "members": doc["members"]}
    if mv >= (2, 64):
        out |= {"policy": doc["policy"], "rules": doc["rules"]}
    else:
        out |= {"policies": [doc["policy"]], "metadata": {}}
    if mv >= (2, 13):
        out |= {"project_id": cloud.project["id"], "user_id": cloud.user["id"]}
    return out


def _new_group(body: dict[str, Any], mv: tuple[int, int]) -> Doc:
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 255:
        raise bad_request(
            "Invalid input for field/attribute name: a string of 1 to 255 characters."
        )
    if mv >= (2, 64):
        policy, rules = body.get("policy"), body.get("rules") or {}
        if not isinstance(rules, dict) or (rules and policy != "anti-affinity"):
            raise bad_request(
                "Invalid input for field/attribute rules: only anti-affinity has rules."
            )
    else:
        policies, rules = body.get("policies"), {}
        if not isinstance(policies, list) or len(policies) != 1:
            raise bad_request(
                "Invalid input for field/attribute policies: give exactly one policy."
            )
        policy = policies[0]
    if policy not in _POLICIES:
        raise bad_request(
            f"Invalid input for field/attribute policy. Value: {policy!r}. Use one of {list(_POLICIES)}."
        )
    return {"id": new_id(), "name": name, "policy": policy, "rules": rules, "members": []}


@router.post(P + "/os-server-groups")
async def create_group(request: Request) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    doc = _new_group(await _body(request, "server_group"), mv)
    if len(cloud.store.all("server_groups")) >= _SERVER_GROUPS:
        raise ApiError(403, "Quota exceeded, too many server groups.")
    cloud.store.put("server_groups", doc)
    return JSONResponse({"server_group": _group_view(cloud, doc, mv)})


@router.get(P + "/os-server-groups")
async def list_groups(request: Request) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    groups = [_group_view(cloud, g, mv) for g in cloud.store.all("server_groups")]
    return JSONResponse({"server_groups": groups})


def _get_group(cloud: Cloud, group_id: str) -> Doc:
    doc = cloud.store.get("server_groups", group_id)
    if doc is None:
        raise ApiError(404, f"Instance group {group_id} could not be found.")
    return doc


@router.get(P + "/os-server-groups/{group_id}")
async def show_group(request: Request, group_id: str) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    return JSONResponse({"server_group": _group_view(cloud, _get_group(cloud, group_id), mv)})


@router.delete(P + "/os-server-groups/{group_id}")
async def delete_group(request: Request, group_id: str) -> Response:
    cloud = _cloud(request)
    _get_group(cloud, group_id)
    cloud.store.delete("server_groups", group_id)
    return Response(status_code=204)


async def _hinted_group(request: Request) -> Doc | None:
    """`os:scheduler_hints: {"group": <id>}` beside `server` in a create request."""
    data = await request.json()
    hints = data.get("os:scheduler_hints") or data.get("OS-SCH-HNT:scheduler_hints")
    if hints is None:
        return None
    if not isinstance(hints, dict):
        raise bad_request("Invalid input for field/attribute os:scheduler_hints: an object.")
    group_id = hints.get("group")
    if group_id is None:
        return None
    group = _cloud(request).store.get("server_groups", group_id)
    if group is None:
        raise bad_request(f"Invalid input for field/attribute group. Value: {group_id!r}.")
    if len(group["members"]) >= _SERVER_GROUP_MEMBERS:
        raise ApiError(403, "Quota exceeded, too many servers in group")
    return group


def _join_group(cloud: Cloud, group_id: str, server_id: str) -> None:
    group = cloud.store.edit("server_groups", group_id)
    if group is not None:
        group["members"] = [*group["members"], server_id]
        cloud.store.put("server_groups", group)


def _leave_groups(cloud: Cloud, server_id: str) -> None:
    for g in cloud.store.all("server_groups"):
        if server_id in g["members"]:
            group = cloud.store.edit("server_groups", g["id"])
            assert group is not None
            group["members"] = [m for m in group["members"] if m != server_id]
            cloud.store.put("server_groups", group)


# ---- instance actions -------------------------------------------------------------------

_MAX_ACTIONS = 2000  # per cloud; the oldest go first (Nova keeps them with the deleted server)


def record_action(cloud: Cloud, request: Request, server_id: str, action: str) -> None:
    """Nova's instance action log: what was done to a server, by which request."""
    rid = request.scope.get("lc.request_id") or f"req-{new_id()}"
    now = now_iso()
    cloud.store.put(
        "instance_actions",
        {"id": f"{server_id}/{rid}", "server_id": server_id, "request_id": rid,
         "action": action, "start_time": now, "updated_at": now},
    )  # fmt: skip
    actions = cloud.store.all("instance_actions")
    for old in actions[: max(0, len(actions) - _MAX_ACTIONS)]:
        cloud.store.delete("instance_actions", old["id"])


def _action_view(cloud: Cloud, doc: Doc, mv: tuple[int, int], events: bool) -> Doc:
    out: Doc = {
        "action": doc["action"],
        "request_id": doc["request_id"],
        "user_id": cloud.user["id"],
        "project_id": cloud.project["id"],
        "start_time": doc["start_time"],
        "message": None,
        "instance_uuid": doc["server_id"],
    }
    if mv >= (2, 58):
        out["updated_at"] = doc["updated_at"]
    if events:
        event: Doc = {
            "event": f"compute_{doc['action']}_instance",
            "start_time": doc["start_time"],
            "finish_time": doc["updated_at"],
            "result": "Success",
            "traceback": None,
        }
        if mv >= (2, 62):
            event |= {"host": "localcloud", "hostId": _host_id(cloud)}
        if mv >= (2, 84):
            event["details"] = None
        out["events"] = [event]
    return out


def _actions_of(cloud: Cloud, server_id: str, mv: tuple[int, int]) -> list[Doc]:
    if mv < (2, 21):  # the actions of a deleted server are visible from 2.21 on
        _get_server(cloud, server_id)
    actions = [a for a in cloud.store.all("instance_actions") if a["server_id"] == server_id]
    if not actions:
        _get_server(cloud, server_id)
    return actions


@router.get(P + "/servers/{server_id}/os-instance-actions")
async def list_actions(request: Request, server_id: str) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    actions = _actions_of(cloud, server_id, mv)
    views = [_action_view(cloud, a, mv, events=False) for a in reversed(actions)]
    return JSONResponse({"instanceActions": views})


@router.get(P + "/servers/{server_id}/os-instance-actions/{request_id}")
async def show_action(request: Request, server_id: str, request_id: str) -> JSONResponse:
    cloud, mv = _cloud(request), microversion(request)
    found = [a for a in _actions_of(cloud, server_id, mv) if a["request_id"] == request_id]
    if not found:
        raise ApiError(404, f"Action {request_id} not found")
    return JSONResponse({"instanceAction": _action_view(cloud, found[0], mv, events=True)})


# ---- server tags (2.26) -------------------------------------------------------------------

_MAX_TAGS = 50


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not 1 <= len(tag) <= 60 or "/" in tag or "," in tag:
        raise bad_request(
            f"Invalid input for field/attribute tags. Value: {tag!r}. A tag is a string of 1 to 60 characters without '/' or ','."
        )
    return tag


def _tagged_server(request: Request, server_id: str) -> Doc:
    if microversion(request) < (2, 26):
        raise ApiError(404, "The resource could not be found.")
    cloud = _cloud(request)
    return cloud.store.edit("servers", server_id) or _get_server(cloud, server_id)


def _save_tags(cloud: Cloud, doc: Doc, tags: list[str]) -> None:
    if len(tags) > _MAX_TAGS:
        raise bad_request(f"The number of tags exceeded the per-server limit {_MAX_TAGS}")
    doc["tags"] = tags
    doc["updated"] = now_iso()
    cloud.store.put("servers", doc)


@router.get(P + "/servers/{server_id}/tags")
async def list_tags(request: Request, server_id: str) -> JSONResponse:
    return JSONResponse({"tags": _tagged_server(request, server_id).get("tags", [])})


@router.put(P + "/servers/{server_id}/tags")
async def replace_tags(request: Request, server_id: str) -> JSONResponse:
    doc = _tagged_server(request, server_id)
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body") from exc
    tags = body.get("tags") if isinstance(body, dict) else None
    if not isinstance(tags, list):
        raise bad_request("Invalid input for field/attribute tags: a list is required.")
    _save_tags(_cloud(request), doc, list(dict.fromkeys(_check_tag(t) for t in tags)))
    return JSONResponse({"tags": doc["tags"]})


@router.delete(P + "/servers/{server_id}/tags")
async def delete_tags(request: Request, server_id: str) -> Response:
    _save_tags(_cloud(request), _tagged_server(request, server_id), [])
    return Response(status_code=204)


@router.get(P + "/servers/{server_id}/tags/{tag}")
async def has_tag(request: Request, server_id: str, tag: str) -> Response:
    if tag not in _tagged_server(request, server_id).get("tags", []):
        raise ApiError(404, f"Tag {tag} could not be found.")
    return Response(status_code=204)


@router.put(P + "/servers/{server_id}/tags/{tag}")
async def add_tag(request: Request, server_id: str, tag: str) -> Response:
    doc = _tagged_server(request, server_id)
    tags = doc.get("tags", [])
    location = {"Location": f"{_link(_cloud(request), 'servers', server_id)[0]['href']}/tags/{tag}"}
    if tag in tags:
        return Response(status_code=204, headers=location)
    _save_tags(_cloud(request), doc, [*tags, _check_tag(tag)])
    return Response(status_code=201, headers=location)


@router.delete(P + "/servers/{server_id}/tags/{tag}")
async def remove_tag(request: Request, server_id: str, tag: str) -> Response:
    doc = _tagged_server(request, server_id)
    if tag not in doc.get("tags", []):
        raise ApiError(404, f"Tag {tag} could not be found.")
    _save_tags(_cloud(request), doc, [t for t in doc["tags"] if t != tag])
    return Response(status_code=204)


# ---- server password (the metadata service's encrypted admin password) -------------------


@router.get(P + "/servers/{server_id}/os-server-password")
async def get_password(request: Request, server_id: str) -> JSONResponse:
    """No metadata service posts a password in localcloud: always the empty one."""
    _get_server(_cloud(request), server_id)
    return JSONResponse({"password": ""})


@router.delete(P + "/servers/{server_id}/os-server-password")
async def clear_password(request: Request, server_id: str) -> Response:
    _get_server(_cloud(request), server_id)
    return Response(status_code=204)


# ---- server metadata --------------------------------------------------------------------


@router.get(P + "/servers/{server_id}/metadata")
async def get_metadata(request: Request, server_id: str) -> JSONResponse:
    return JSONResponse({"metadata": _get_server(_cloud(request), server_id)["metadata"]})


@router.post(P + "/servers/{server_id}/metadata")
@router.put(P + "/servers/{server_id}/metadata")
async def set_metadata(request: Request, server_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _get_server(cloud, server_id)
    try:
        data = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body") from exc
    meta = _metadata(data.get("metadata") if isinstance(data, dict) else None)
    doc = cloud.store.edit("servers", server_id)
    assert doc is not None
    doc["metadata"] = (doc["metadata"] | meta) if request.method == "POST" else meta
    _metadata(doc["metadata"])
    doc["updated"] = now_iso()
    cloud.store.put("servers", doc)
    await cloud.changed()
    return JSONResponse({"metadata": doc["metadata"]})


@router.get(P + "/servers/{server_id}/metadata/{key}")
async def get_metadata_item(request: Request, server_id: str, key: str) -> JSONResponse:
    meta = _get_server(_cloud(request), server_id)["metadata"]
    if key not in meta:
        raise ApiError(404, "Metadata item was not found")
    return JSONResponse({"meta": {key: meta[key]}})


@router.put(P + "/servers/{server_id}/metadata/{key}")
async def set_metadata_item(request: Request, server_id: str, key: str) -> JSONResponse:
    cloud = _cloud(request)
    _get_server(cloud, server_id)
    body = await _body(request, "meta")
    if list(body) != [key]:
        raise bad_request("Request body and URI mismatch")
    doc = cloud.store.edit("servers", server_id)
    assert doc is not None
    doc["metadata"] = _metadata(doc["metadata"] | body)
    cloud.store.put("servers", doc)
    await cloud.changed()
    return JSONResponse({"meta": body})


@router.delete(P + "/servers/{server_id}/metadata/{key}")
async def delete_metadata_item(request: Request, server_id: str, key: str) -> Response:
    cloud = _cloud(request)
    doc = cloud.store.edit("servers", server_id) or _get_server(cloud, server_id)
    if key not in doc["metadata"]:
        raise ApiError(404, "Metadata item was not found")
    del doc["metadata"][key]
    cloud.store.put("servers", doc)
    await cloud.changed()
    return Response(status_code=204)


# ---- interfaces, security groups of a server --------------------------------------------


def _interface(port: Doc) -> Doc:
    return {
        "port_id": port["id"],
        "net_id": port["network_id"],
        "mac_addr": port["mac_address"],
        "port_state": port["status"],
        "fixed_ips": port["fixed_ips"],
    }


@router.get(P + "/servers/{server_id}/os-interface")
async def list_interfaces(request: Request, server_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _get_server(cloud, server_id)
    return JSONResponse(
        {"interfaceAttachments": [_interface(p) for p in server_ports(cloud, server_id)]}
    )


@router.get(P + "/servers/{server_id}/os-interface/{port_id}")
async def show_interface(request: Request, server_id: str, port_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _get_server(cloud, server_id)
    port = next((p for p in server_ports(cloud, server_id) if p["id"] == port_id), None)
    if port is None:
        raise ApiError(404, f"Port {port_id} is not attached")
    return JSONResponse({"interfaceAttachment": _interface(port)})


@router.get(P + "/servers/{server_id}/os-security-groups")
async def server_security_groups(request: Request, server_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _get_server(cloud, server_id)
    ids = {sg for p in server_ports(cloud, server_id) for sg in p["security_groups"]}
    groups = [g for g in cloud.store.all("security_groups") if g["id"] in ids]
    return JSONResponse(
        {
            "security_groups": [
                {
                    "id": g["id"],
                    "name": g["name"],
                    "description": g["description"],
                    "tenant_id": g["tenant_id"],
                    "rules": [],
                }
                for g in groups
            ]
        }
    )


# ---- actions ----------------------------------------------------------------------------


def console_text(cloud: Cloud, doc: Doc) -> str:
    """A short cloud-init style boot log (used when the backend has no console of its own)."""
    ips = [
        a["addr"]
        for entries in _addresses(cloud, doc["id"]).values()
        for a in entries
        if a["OS-EXT-IPS:type"] == "fixed"
    ]
    lines = [
        "[    0.000000] Linux version 5.15.0-91-generic (localcloud) #101-Ubuntu SMP",
        f"[    1.234567] cloud-init[312]: Cloud-init v. 23.3.3 running 'init-local' for {doc['name']}",
        f"ci-info: | eth0 | True | {ips[0] if ips else '.'} | 255.255.255.0 | global |",
    ]
    active_ts = doc.get("_active_ts")
    delay = cloud.runtime.faults.for_cloud(cloud.name).console_delay
    if doc["status"] == "ACTIVE" and active_ts and time.time() - active_ts >= delay:
        key = doc["_host_key"]
        blob = base64.b64decode(key.split()[1])
        fp = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        lines += [
            "-----BEGIN SSH HOST KEY FINGERPRINTS-----",
            f"256 SHA256:{fp} root@{doc['name']} (ED25519)",
            "-----END SSH HOST KEY FINGERPRINTS-----",
            "-----BEGIN SSH HOST KEY KEYS-----",
            f"{key} root@{doc['name']}",
            "-----END SSH HOST KEY KEYS-----",
            f"cloud-init[601]: Cloud-init v. 23.3.3 finished at {iso(active_ts)}. "
            "Datasource DataSourceOpenStackLocal [net,ver=2].  Up 12.34 seconds",
        ]
    return "\n".join(lines) + "\n"


async def _console(cloud: Cloud, doc: Doc, length: Any) -> JSONResponse:
    if doc["status"] == "BUILD":
        raise conflict(
            f"Cannot 'os-getConsoleOutput' instance {doc['id']} while it is in vm_state building"
        )
    try:
        text = await asyncio.to_thread(cloud.runtime.backend.console_log, cloud.name, doc["id"])
    except Exception:
        log.exception("backend console_log failed for %s on %s", doc["id"], cloud.name)
        text = ""
    active_ts = doc.get("_active_ts") or 0
    delay = cloud.runtime.faults.for_cloud(cloud.name).console_delay
    if not text or time.time() - active_ts < delay:
        text = console_text(cloud, doc)
    if length is not None:
        try:
            n = int(length)
        except (TypeError, ValueError) as exc:
            raise bad_request(
                f"Invalid input for field/attribute length. Value: {length}."
            ) from exc
        if n < -1:
            raise bad_request(
                f"Invalid input for field/attribute length. Value: {length}. {n} is less than the minimum of -1"
            )
        if n >= 0:  # -1: everything
            # Nova's _tail_log: the last N pieces of a split on newlines (a trailing newline
            # makes the last piece empty), joined again.
            text = "\n".join(text.split("\n")[-n:]) if n > 0 else ""
    return JSONResponse({"output": text})


# Server actions that change nothing: they only return console output or a console URL.
# The API accounting counts them as reads, not as mutating calls (Nova's API reference lists
# them as "show"/"get" operations; its policy still wants a project member, because a console
# may show secrets). Only os-getConsoleOutput is implemented; the others answer 400 here.
READ_ONLY_ACTIONS = frozenset(
    {
        "os-getConsoleOutput",
        "os-getVNCConsole",
        "os-getSPICEConsole",
        "os-getRDPConsole",
        "os-getSerialConsole",
    }
)
_ACTION_PATH = re.compile(r"^/v2\.1/servers/[^/]+/action$")


def is_action_path(rest: str) -> bool:
    """`rest` (the path after /<cloud>/compute) is a server action."""
    return bool(_ACTION_PATH.match(rest))


def is_read_only_action(body: bytes) -> bool:
    """A server action's body names exactly one action, and that one only reads."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (the router answers 400), or nested deep
        return False
    return isinstance(doc, dict) and len(doc) == 1 and next(iter(doc)) in READ_ONLY_ACTIONS


_REFUSED_WHEN_LOCKED = {"os-stop", "os-start", "reboot", "addSecurityGroup", "removeSecurityGroup"}


@router.post(P + "/servers/{server_id}/action")
async def server_action(request: Request, server_id: str) -> Response:
    cloud = _cloud(request)
    doc = _get_server(cloud, server_id)
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request("Malformed request body") from exc
    if not isinstance(body, dict) or len(body) != 1:
        raise bad_request("Invalid action: give exactly one action object.")
    action, args = next(iter(body.items()))
    args = args or {}
    if not isinstance(args, dict):
        raise bad_request(f"Invalid input for field/attribute {action}: an object is required.")
    if action == "os-getConsoleOutput":
        return await _console(cloud, doc, args.get("length"))
    if action in ("lock", "unlock"):
        doc = cloud.store.edit("servers", server_id) or doc
        doc["locked"] = action == "lock"
        reason = args.get("locked_reason") if isinstance(args, dict) else None
        doc["locked_reason"] = reason if action == "lock" else None
        cloud.store.put("servers", doc)
        record_action(cloud, request, server_id, action)
        return Response(status_code=202)
    if doc.get("locked") and action in _REFUSED_WHEN_LOCKED:
        # No policy in localcloud: nobody overrides a lock (in Nova only an admin may).
        raise conflict(f"Instance {server_id} is locked")
    if action in ("os-stop", "os-start", "reboot"):
        want = {"os-stop": "ACTIVE", "os-start": "SHUTOFF"}.get(action)
        if doc["status"] not in ("ACTIVE", "SHUTOFF") or (want and doc["status"] != want):
            raise conflict(
                f"Cannot '{action}' instance {server_id} while it is in vm_state {_VM_STATE.get(doc['status'])}"
            )
        doc = cloud.store.edit("servers", server_id) or doc
        doc["status"] = "SHUTOFF" if action == "os-stop" else "ACTIVE"
        doc["updated"] = now_iso()
        cloud.store.put("servers", doc)
        record_action(cloud, request, server_id, action.removeprefix("os-"))
        await cloud.changed()
        return Response(status_code=202)
    if action in ("addSecurityGroup", "removeSecurityGroup"):
        group = _resolve_groups(cloud, [{"name": args.get("name")}])[0]
        with cloud.store.tx():
            for port in server_ports(cloud, server_id):
                sgs = [s for s in port["security_groups"] if s != group["id"]]
                if action == "addSecurityGroup":
                    sgs.append(group["id"])
                nm.update_port(cloud, port["id"], {"security_groups": sgs})
            doc = cloud.store.edit("servers", server_id) or doc
            names = [n for n in doc["security_group_names"] if n != group["name"]]
            doc["security_group_names"] = names + (
                [group["name"]] if action == "addSecurityGroup" else []
            )
            cloud.store.put("servers", doc)
        await cloud.changed()
        return Response(status_code=202)
    raise bad_request(f"There is no such action: {action}")
