"""Permanent errors said for people: one sentence naming the cause and the fix."""

from __future__ import annotations

import re

import keystoneauth1.exceptions as ksa
import openstack.exceptions as osx
import requests.exceptions as rqx

from hybridgrid.retry.classify import http_status, http_text, is_quota_error


def _quota_message(exc: BaseException) -> str:
    text = http_text(exc)
    resource = None
    m = re.search(r"Quota exceeded for resources?:?\s*\[?'?([A-Za-z_-]+)", text, re.IGNORECASE)
    m = m or re.search(r"Quota exceeded for ([A-Za-z_-]+)", text, re.IGNORECASE)
    if m:
        resource = m.group(1)
    used = re.search(r"Requested (\d+), but already used (\d+) of (\d+)", text)
    what = resource or "a resource"
    if used:
        req, cur, limit = (int(x) for x in used.groups())
        free = max(1, cur + req - limit)
        return (
            f"quota for {what} exceeded (used {cur} of {limit}, requested {req}): "
            f"free {free} {what} in the project or ask the cloud operator to raise the quota"
        )
    return (
        f"quota for {what} exceeded: free some {what} in the project or ask the cloud "
        f"operator to raise the quota"
    )


_KINDS = {
    "images": "image",
    "flavors": "flavor",
    "networks": "network",
    "subnets": "subnet",
    "routers": "router",
    "servers": "server",
    "ports": "port",
    "security-groups": "security group",
    "floatingips": "floating IP",
    "os-keypairs": "keypair",
}


def _not_found_target(exc: BaseException) -> str:
    url = str(getattr(exc, "url", None) or "")
    m = re.search(r"/(" + "|".join(map(re.escape, _KINDS)) + r")(?:[/?]|$)", url)
    if m:
        return _KINDS[m.group(1)]
    m = re.search(r"\b(image|flavor|network)\b", str(exc), re.IGNORECASE)
    return m.group(1).lower() if m else "resource"


def friendly_error(
    exc: BaseException, *, credentials_block: str | None = None, cloud: str | None = None
) -> str:
    """One sentence naming the cause and the fix, for a permanent error."""
    where = f" by cloud {cloud}" if cloud else ""
    block = (
        f"the credentials block {credentials_block!r}"
        if credentials_block
        else ("the OpenStack credentials block")
    )
    status = http_status(exc)
    detail = str(getattr(exc, "details", "") or "").strip() or str(exc)
    if isinstance(exc, ksa.Unauthorized) or status == 401:
        if re.search(r"application credential.*expired", detail, re.IGNORECASE | re.DOTALL):
            return (
                f"the application credential in {block} has expired{where}: create a new one "
                f"(openstack application credential create) and save its id and secret in "
                f"{block}"
            )
        return (
            f"authentication rejected{where}: check {block} (auth URL, user or application "
            f"credential id/secret, project and domain)"
        )
    if is_quota_error(exc):
        return _quota_message(exc) + (f" ({cloud})" if cloud else "")
    if status == 403:
        return f"forbidden{where}: {detail}; the account in {block} lacks the needed role"
    if status == 404 or isinstance(exc, osx.NotFoundException):
        return (
            f"{_not_found_target(exc)} not found{where}: {detail}; check the name in the site "
            f"spec (names are case-sensitive) against `openstack image/flavor/network list`"
        )
    if status == 400:
        return f"request rejected as invalid{where}: {detail}; fix the named value in the spec"
    if isinstance(exc, ksa.AuthorizationFailure | ksa.MissingAuthPlugin):
        return f"cannot authenticate{where}: {exc}; check {block}"
    if isinstance(exc, ksa.EndpointNotFound | osx.EndpointNotFound):
        return f"service endpoint missing{where}: {exc}; check region and interface in {block}"
    if isinstance(exc, ksa.SSLError | rqx.SSLError):
        return f"TLS failure talking to the API{where}: check the CA bundle/verify in {block}"
    return f"{type(exc).__name__}: {exc}"
