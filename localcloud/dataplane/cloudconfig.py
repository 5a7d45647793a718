"""The subset of cloud-init that emulated servers honour (pure parsing, no side effects).

Supported: ``#cloud-config`` with ``ssh_authorized_keys``, ``write_files`` (content,
encoding b64/gzip/gz+b64, permissions, owner, append) and ``runcmd``; or a ``#!`` script,
which runs like a runcmd. Anything else is ignored, as cloud-init ignores unknown keys.
"""

from __future__ import annotations

import base64
import gzip
import shlex

import yaml
from pydantic import BaseModel, Field


class FileToWrite(BaseModel):
    path: str
    content: bytes = b""
    permissions: int = 0o644
    owner: str = "root:root"
    append: bool = False


class CloudInit(BaseModel):
    ssh_authorized_keys: list[str] = Field(default_factory=list)
    write_files: list[FileToWrite] = Field(default_factory=list)
    runcmd: list[str] = Field(default_factory=list)  # shell lines, in order


class UserDataError(ValueError):
    pass


def _decode(content: str | bytes, encoding: str | None) -> bytes:
    raw = content.encode() if isinstance(content, str) else content
    enc = (encoding or "text/plain").lower()
    if enc in ("b64", "base64"):
        return base64.b64decode(raw)
    if enc in ("gz", "gzip"):
        return gzip.decompress(raw)
    if enc in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        return gzip.decompress(base64.b64decode(raw))
    return raw


def parse_user_data(user_data: str | None) -> CloudInit:
    if not user_data or not user_data.strip():
        return CloudInit()
    if user_data.startswith("#!"):
        return CloudInit(runcmd=[user_data])
    if not user_data.lstrip().startswith("#cloud-config"):
        return CloudInit()
    try:
        doc = yaml.safe_load(user_data) or {}
    except yaml.YAMLError as exc:
        raise UserDataError(f"user_data: invalid cloud-config YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise UserDataError("user_data: cloud-config must be a YAML mapping")
    files = []
    for i, item in enumerate(doc.get("write_files") or []):
        if not isinstance(item, dict) or not item.get("path"):
            raise UserDataError(f"user_data: write_files[{i}] needs a 'path'")
        perms = item.get("permissions", "0644")
        files.append(
            FileToWrite(
                path=str(item["path"]),
                content=_decode(item.get("content", ""), item.get("encoding")),
                permissions=int(str(perms), 8) if isinstance(perms, str) else int(perms),
                owner=str(item.get("owner", "root:root")),
                append=bool(item.get("append", False)),
            )
        )
    commands = []
    for cmd in doc.get("runcmd") or []:
        commands.append(shlex.join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd))
    keys = [str(k).strip() for k in doc.get("ssh_authorized_keys") or []]
    return CloudInit(ssh_authorized_keys=keys, write_files=files, runcmd=commands)
