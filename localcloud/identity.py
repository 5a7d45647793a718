"""Keystone v3: discovery, password and application-credential auth, tokens, catalog.

Tokens are signed, not stored (like Fernet tokens): base64(JSON claims) + HMAC-SHA256 with a
per-state-directory key, so validation needs no database and tokens survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.responses import JSONResponse

from localcloud.errors import ApiError
from localcloud.runtime import DOMAIN, Cloud, iso

router = APIRouter()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(key: bytes, claims: dict[str, Any]) -> str:
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def read_token(key: bytes, token: str | None, cloud: str) -> dict[str, Any] | None:
    """The token's claims if it is genuine, unexpired and for this cloud; else None."""
    if not token or token.count(".") != 1:
        return None
    body, sig = token.split(".")
    want = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(sig, want):
        return None
    try:
        claims = json.loads(_unb64(body))
    except ValueError:
        return None
    if claims.get("c") != cloud or claims.get("e", 0) <= time.time():
        return None
    return claims


# The one user holds every role on the one project.
ROLES = [
    {"id": "c0ffee00000000000000000000000001", "name": "admin"},
    {"id": "c0ffee00000000000000000000000002", "name": "member"},
    {"id": "c0ffee00000000000000000000000003", "name": "reader"},
]


def _unauthorized(message: str = "The request you have made requires authentication.") -> ApiError:
    return ApiError(401, message)


def catalog(cloud: Cloud) -> list[dict[str, Any]]:
    region = cloud.config.region
    names = {"identity": "keystone", "compute": "nova", "network": "neutron", "image": "glance"}
    out = []
    for service, name in names.items():
        sid = hashlib.md5(f"{cloud.name}/{service}".encode(), usedforsecurity=False).hexdigest()
        out.append(
            {
                "id": sid,
                "type": service,
                "name": name,
                "endpoints": [
                    {
                        "id": hashlib.md5(sid.encode(), usedforsecurity=False).hexdigest(),
                        "interface": "public",
                        "region": region,
                        "region_id": region,
                        "url": cloud.endpoint(service),
                    }
                ],
            }
        )
    return out


def token_body(cloud: Cloud, claims: dict[str, Any]) -> dict[str, Any]:
    user = cloud.user
    project = cloud.project
    token: dict[str, Any] = {
        "methods": claims["m"],
        "user": {
            "id": user["id"],
            "name": user["name"],
            "domain": DOMAIN,
            "password_expires_at": None,
        },
        "audit_ids": [claims["n"]],
        "expires_at": iso(claims["e"]),
        "issued_at": iso(claims["i"]),
        "project": {"id": project["id"], "name": project["name"], "domain": DOMAIN},
        "is_domain": False,
        "roles": [dict(r) for r in ROLES],
        "catalog": catalog(cloud),
    }
    if claims.get("a"):
        ac = cloud.store.meta["appcred"]
        token["application_credential"] = {"id": ac["id"], "name": ac["name"], "restricted": True}
    return {"token": token}


def _check_domain(ref: dict[str, Any] | None) -> bool:
    if not ref:
        return True
    if not isinstance(ref, dict):
        return False
    return ref.get("id") in (None, "default") and ref.get("name") in (None, "Default")


def authenticate(cloud: Cloud, body: dict[str, Any]) -> dict[str, Any]:
    """Claims for a valid auth request, else a 401 (or 400 for a malformed body)."""
    auth = body.get("auth")
    ident = auth.get("identity") if isinstance(auth, dict) else None
    if not isinstance(ident, dict) or not isinstance(ident.get("methods"), list):
        raise ApiError(400, "Expecting to find identity in auth - the server could not comply.")
    methods = [m for m in ident["methods"] if isinstance(m, str)]
    for method in ("password", "application_credential", "token"):
        if method in methods and not isinstance(ident.get(method), dict | None):
            raise ApiError(400, f"Expecting to find {method} in identity as an object.")
    scope = auth.get("scope")
    if not isinstance(scope, dict | None) or not isinstance(
        (scope or {}).get("project"), dict | None
    ):
        raise ApiError(400, "Expecting to find scope as an object with a project object.")
    meta = cloud.store.meta
    appcred = None
    if "password" in methods:
        u = (ident.get("password") or {}).get("user") or {}
        if not isinstance(u, dict):
            raise ApiError(400, "Expecting to find user in password as an object.")
        user = meta["user"]
        ok_user = (u.get("id") == user["id"]) or (
            u.get("name") == user["name"] and _check_domain(u.get("domain"))
        )
        if not ok_user or not hmac.compare_digest(
            str(u.get("password", "")).encode(), user["password"].encode()
        ):
            raise _unauthorized("The request you have made requires authentication.")
        scope = (auth.get("scope") or {}).get("project")
        if scope is not None:
            project = meta["project"]
            ok = scope.get("id") == project["id"] or (
                scope.get("name") == project["name"] and _check_domain(scope.get("domain"))
            )
            if not ok:
                raise _unauthorized(f"User {user['id']} has no access to project {scope}.")
    elif "application_credential" in methods:
        a = ident.get("application_credential") or {}
        appcred = meta["appcred"]
        ok_id = a.get("id") == appcred["id"] or (
            a.get("name") == appcred["name"]
            and isinstance(a.get("user") or {}, dict)
            and (a.get("user") or {}).get("name", meta["user"]["name"]) == meta["user"]["name"]
        )
        if not ok_id or not hmac.compare_digest(
            str(a.get("secret", "")).encode(), appcred["secret"].encode()
        ):
            raise _unauthorized("The request you have made requires authentication.")
        expires = cloud.config.appcred_expires_at
        if expires is not None and time.time() >= expires:
            # Keystone's ApplicationCredentialAuthError text (as with insecure_debug on).
            raise _unauthorized(
                "Error authenticating with application credential: Application credential "
                f"{appcred['id']} has expired"
            )
    elif "token" in methods:
        tok = (ident.get("token") or {}).get("id")
        old = read_token(cloud.runtime.token_key, tok, cloud.name)
        if old is None:
            raise _unauthorized("The token is invalid or expired.")
        methods = old["m"]
        appcred = meta["appcred"] if old.get("a") else None
    else:
        raise _unauthorized(f"Unsupported authentication methods {methods}.")
    now = time.time()
    return {
        "c": cloud.name,
        "u": meta["user"]["id"],
        "p": meta["project"]["id"],
        "m": ["application_credential"] if appcred else ["password"],
        "a": appcred["id"] if appcred else None,
        "i": now,
        "e": now + cloud.config.token_ttl,
        "n": secrets.token_urlsafe(16),
    }


def _cloud(request: Request) -> Cloud:
    return request.scope["lc.cloud"]


def version_v3(cloud: Cloud) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": cloud.endpoint("identity") + "/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


@router.get("/{cloud}/identity")
async def versions(request: Request) -> JSONResponse:
    return JSONResponse({"versions": {"values": [version_v3(_cloud(request))]}}, status_code=300)


@router.get("/{cloud}/identity/v3")
async def version(request: Request) -> JSONResponse:
    return JSONResponse({"version": version_v3(_cloud(request))})


@router.post("/{cloud}/identity/v3/auth/tokens")
async def issue(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(400, "Malformed request body: expecting JSON.") from exc
    claims = authenticate(cloud, body if isinstance(body, dict) else {})
    token = make_token(cloud.runtime.token_key, claims)
    return JSONResponse(
        token_body(cloud, claims), status_code=201, headers={"X-Subject-Token": token}
    )


def _subject(request: Request) -> dict[str, Any]:
    cloud = _cloud(request)
    claims = read_token(cloud.runtime.token_key, request.headers.get("x-subject-token"), cloud.name)
    if claims is None:
        raise ApiError(404, "Could not find token.")
    return claims


@router.get("/{cloud}/identity/v3/auth/tokens")
async def validate(request: Request) -> JSONResponse:
    claims = _subject(request)
    token = request.headers["x-subject-token"]
    return JSONResponse(token_body(_cloud(request), claims), headers={"X-Subject-Token": token})


@router.head("/{cloud}/identity/v3/auth/tokens")
async def check(request: Request) -> Response:
    _subject(request)
    return Response(status_code=200)


@router.delete("/{cloud}/identity/v3/auth/tokens")
async def revoke(request: Request) -> Response:
    _subject(request)  # signed tokens cannot be revoked early; they expire (documented)
    return Response(status_code=204)


@router.get("/{cloud}/identity/v3/auth/catalog")
async def get_catalog(request: Request) -> JSONResponse:
    return JSONResponse({"catalog": catalog(_cloud(request))})


def _project(cloud: Cloud) -> dict[str, Any]:
    p = cloud.project
    return {
        "id": p["id"],
        "name": p["name"],
        "domain_id": "default",
        "description": "",
        "enabled": True,
        "parent_id": "default",
        "is_domain": False,
        "tags": [],
        "options": {},
        "links": {"self": f"{cloud.endpoint('identity')}/projects/{p['id']}"},
    }


@router.get("/{cloud}/identity/v3/auth/projects")
@router.get("/{cloud}/identity/v3/projects")
async def list_projects(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    name = request.query_params.get("name")
    projects = [_project(cloud)]
    if name is not None:
        projects = [p for p in projects if p["name"] == name]
    return JSONResponse({"projects": projects, "links": {"self": None, "next": None}})


@router.get("/{cloud}/identity/v3/projects/{project_id}")
async def get_project(request: Request, project_id: str) -> JSONResponse:
    cloud = _cloud(request)
    if project_id not in (cloud.project["id"], cloud.project["name"]):
        raise ApiError(404, f"Could not find project: {project_id}.")
    return JSONResponse({"project": _project(cloud)})


def _user(cloud: Cloud) -> dict[str, Any]:
    u = cloud.user
    return {
        "id": u["id"],
        "name": u["name"],
        "domain_id": "default",
        "enabled": True,
        "default_project_id": cloud.project["id"],
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{cloud.endpoint('identity')}/users/{u['id']}"},
    }


def _the_user(cloud: Cloud, user_id: str) -> dict[str, Any]:
    if user_id not in (cloud.user["id"], cloud.user["name"]):
        raise ApiError(404, f"Could not find user: {user_id}.")
    return _user(cloud)


def _role(cloud: Cloud, role: dict[str, Any]) -> dict[str, Any]:
    link = f"{cloud.endpoint('identity')}/roles/{role['id']}"
    return {**role, "domain_id": None, "description": None, "options": {}, "links": {"self": link}}


def _listing(key: str, items: list[dict[str, Any]], request: Request) -> JSONResponse:
    """A Keystone list, filtered by `name` when given (Keystone's one common filter)."""
    name = request.query_params.get("name")
    if name is not None:
        items = [i for i in items if i.get("name") == name]
    return JSONResponse({key: items, "links": {"self": str(request.url), "next": None}})


@router.get("/{cloud}/identity/v3/users")
async def list_users(request: Request) -> JSONResponse:
    return _listing("users", [_user(_cloud(request))], request)


@router.get("/{cloud}/identity/v3/users/{user_id}")
async def get_user(request: Request, user_id: str) -> JSONResponse:
    return JSONResponse({"user": _the_user(_cloud(request), user_id)})


@router.get("/{cloud}/identity/v3/users/{user_id}/projects")
async def list_user_projects(request: Request, user_id: str) -> JSONResponse:
    cloud = _cloud(request)
    _the_user(cloud, user_id)
    return _listing("projects", [_project(cloud)], request)


@router.get("/{cloud}/identity/v3/roles")
async def list_roles(request: Request) -> JSONResponse:
    cloud = _cloud(request)
    return _listing("roles", [_role(cloud, r) for r in ROLES], request)


@router.get("/{cloud}/identity/v3/roles/{role_id}")
async def get_role(request: Request, role_id: str) -> JSONResponse:
    cloud = _cloud(request)
    role = next((r for r in ROLES if role_id in (r["id"], r["name"])), None)
    if role is None:
        raise ApiError(404, f"Could not find role: {role_id}.")
    return JSONResponse({"role": _role(cloud, role)})


@router.get("/{cloud}/identity/v3/projects/{project_id}/users/{user_id}/roles")
async def list_project_user_roles(request: Request, project_id: str, user_id: str) -> JSONResponse:
    cloud = _cloud(request)
    if project_id not in (cloud.project["id"], cloud.project["name"]):
        raise ApiError(404, f"Could not find project: {project_id}.")
    _the_user(cloud, user_id)
    return _listing("roles", [_role(cloud, r) for r in ROLES], request)


@router.get("/{cloud}/identity/v3/role_assignments")
async def list_role_assignments(request: Request) -> JSONResponse:
    """The one user holds every role on the one project; filters that exclude it empty the list."""
    cloud = _cloud(request)
    q = request.query_params
    wanted = {
        "user.id": cloud.user["id"],
        "scope.project.id": cloud.project["id"],
    }
    if any(q.get(k) not in (None, v) for k, v in wanted.items()) or q.get("group.id"):
        return JSONResponse({"role_assignments": [], "links": {"self": str(request.url)}})
    roles = [r for r in ROLES if q.get("role.id") in (None, r["id"])]
    base = f"{cloud.endpoint('identity')}/projects/{cloud.project['id']}/users/{cloud.user['id']}"
    assignments = [
        {
            "role": {"id": r["id"], "name": r["name"]} if "include_names" in q else {"id": r["id"]},
            "user": {"id": cloud.user["id"]},
            "scope": {"project": {"id": cloud.project["id"]}},
            "links": {"assignment": f"{base}/roles/{r['id']}"},
        }
        for r in roles
    ]
    return JSONResponse({"role_assignments": assignments, "links": {"self": str(request.url)}})


@router.get("/{cloud}/identity/v3/domains")
async def list_domains(request: Request) -> JSONResponse:
    return JSONResponse({"domains": [{**DOMAIN, "enabled": True, "description": ""}]})


@router.get("/{cloud}/identity/v3/regions")
async def list_regions(request: Request) -> JSONResponse:
    region = _cloud(request).config.region
    return JSONResponse({"regions": [{"id": region, "description": "", "parent_region_id": None}]})
