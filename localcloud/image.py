"""Glance 2 over HTTP: version discovery and the read-only, pre-seeded image list."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from localcloud.errors import ApiError
from localcloud.runtime import Cloud
from localcloud.seed import IMAGES

router = APIRouter()
P = "/{cloud}/image/v2"
_CREATED = "2024-04-25T12:00:00Z"


def _cloud(request: Request) -> Cloud:
    return request.scope["lc.cloud"]


def image_view(cloud: Cloud, image: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha512(image["id"].encode()).hexdigest()
    return {
        "id": image["id"],
        "name": image["name"],
        "status": "active",
        "visibility": "public",
        "protected": False,
        "os_hidden": False,
        "owner": cloud.project["id"],
        "checksum": hashlib.md5(image["id"].encode(), usedforsecurity=False).hexdigest(),
        "os_hash_algo": "sha512",
        "os_hash_value": digest,
        "size": image["size"],
        "virtual_size": None,
        "min_ram": 0,
        "min_disk": 0,
        "disk_format": "qcow2",
        "container_format": "bare",
        "created_at": _CREATED,
        "updated_at": _CREATED,
        "tags": [],
        "os_distro": image["os_distro"],
        "os_version": image["os_version"],
        "hw_disk_bus": "virtio",
        "file": f"/v2/images/{image['id']}/file",
        "self": f"/v2/images/{image['id']}",
        "schema": "/v2/schemas/image",
    }


@router.get("/{cloud}/image")
@router.get("/{cloud}/image/versions")
async def versions(request: Request) -> JSONResponse:
    """Glance answers its root with 300 Multiple Choices, `/versions` with 200."""
    href = _cloud(request).endpoint("image") + "/v2/"
    status = 200 if request.url.path.endswith("/versions") else 300
    return JSONResponse(
        {
            "versions": [
                {"id": "v2.16", "status": "CURRENT", "links": [{"rel": "self", "href": href}]},
                {"id": "v2.0", "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]},
            ]
        },
        status_code=status,
    )


def _matches(image: dict[str, Any], key: str, value: str) -> bool:
    if value.startswith("in:"):
        return str(image.get(key)) in value[3:].split(",")
    if value.startswith("eq:"):
        value = value[3:]
    return str(image.get(key)) == value


@router.get(P + "/images")
async def list_images(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    views = [image_view(cloud, i) for i in IMAGES]
    for key, value in request.query_params.multi_items():
        if key in ("limit", "marker", "sort", "sort_key", "sort_dir", "member_status"):
            continue
        if key == "tag":
            views = [v for v in views if value in v["tags"]]
        else:
            views = [v for v in views if _matches(v, key, value)]
    return JSONResponse({"images": views, "first": "/v2/images", "schema": "/v2/schemas/images"})


@router.get(P + "/images/{image_id}")
async def show_image(request: Request, image_id: str) -> JSONResponse:
    image = next((i for i in IMAGES if i["id"] == image_id), None)
    if image is None:
        raise ApiError(404, f"No image found with ID {image_id}")
    return JSONResponse(image_view(_cloud(request), image))
