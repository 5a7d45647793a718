"""Where and how to reach a host over SSH (plain data): `SSHTarget` with its pinned host keys
and its way in (a jump host, a ProxyCommand or a socket). It holds no secret; the client key is
passed separately to `hybridgrid.sshclient`.

Host-key lines are checked here without an SSH library: an OpenSSH line names a known key type
and carries a base64 blob in the SSH wire format whose first field repeats that type.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
import socket
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def _wire_fields(blob: bytes) -> list[bytes] | None:
    """The length-prefixed fields of an SSH public key blob; None unless they fill it exactly."""
    fields, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "big")
        if at + 4 + size > len(blob):
            return None
        fields.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return fields


def is_public_key_line(line: str) -> bool:
    """Whether `line` is an OpenSSH public key line ("ssh-ed25519 AAAA… [comment]")."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        return False
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return False
    fields = _wire_fields(blob)
    return fields is not None and len(fields) >= 2 and fields[0] == parts[0].encode()


_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")


class SSHTarget(BaseModel):
    """Where and how to reach a host. Holds no secret (the client key is passed separately)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    host_keys: list[str] = Field(
        default_factory=list, description="pinned OpenSSH public key lines (ssh-ed25519 AAAA…)"
    )
    host_key_fingerprints: list[str] = Field(
        default_factory=list, description="pinned SHA256:… fingerprints (cloud-init console log)"
    )
    jump: SSHTarget | None = None
    proxy_command: str | None = Field(
        default=None, description="OpenSSH-style ProxyCommand; %h, %p, %r and %% are expanded"
    )
    sock_factory: Callable[[], socket.socket] | None = Field(default=None, exclude=True)
    connect_timeout: float = Field(default=15, gt=0)
    key_block: str | None = Field(
        default=None,
        description="SSHKey block this hop logs in with (a bastion's own key); None: the "
        "key of the target behind it",
    )
    hint: str | None = Field(
        default=None, description="the setting that decides the way in, named in errors"
    )

    @field_validator("host_keys")
    @classmethod
    def _parse_keys(cls, v: list[str]) -> list[str]:
        for i, line in enumerate(v):
            if not is_public_key_line(line.strip()):
                raise ValueError(
                    f"host_keys[{i}] is not an OpenSSH public key line "
                    f"(expected e.g. 'ssh-ed25519 AAAA… root@host')"
                )
        return [line.strip() for line in v]

    @field_validator("host_key_fingerprints")
    @classmethod
    def _fps(cls, v: list[str]) -> list[str]:
        for i, fp in enumerate(v):
            if not _FINGERPRINT.match(fp):
                raise ValueError(f"host_key_fingerprints[{i}] must look like SHA256:<43 chars>")
        return v

    @model_validator(mode="after")
    def _pinned(self) -> SSHTarget:
        if not self.host_keys and not self.host_key_fingerprints:
            raise ValueError(
                f"host_keys: no pinned host key for {self.host}; pin the keys from the server's "
                f"console log first (hybridgrid.sshclient.hostkeys.parse_console_host_keys)"
            )
        ways = [
            self.jump is not None,
            self.proxy_command is not None,
            self.sock_factory is not None,
        ]
        if sum(ways) > 1:
            raise ValueError("jump, proxy_command and sock_factory are alternatives: set one")
        return self

    @property
    def label(self) -> str:
        via = f" via {self.jump.label}" if self.jump else ""
        return f"{self.user}@{self.host}:{self.port}{via}"

    def expanded_proxy_command(self) -> list[str] | None:
        if self.proxy_command is None:
            return None
        subst = {"%h": self.host, "%p": str(self.port), "%r": self.user, "%%": "%"}
        return [
            re.sub(r"%[hpr%]", lambda m: subst[m.group(0)], arg)
            for arg in shlex.split(self.proxy_command)
        ]
