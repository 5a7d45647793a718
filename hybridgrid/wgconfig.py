"""WireGuard config models (pure data): the [Interface] and [Peer] sections of a wg0.conf,
validated. Rendering and the node-side shell live in `hybridgrid.wireguard`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from ipaddress import IPv4Interface, IPv4Network
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_PORT = 51820
KEEPALIVE = 25


def check_wg_public_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            "not a WireGuard public key (expected 44 base64 characters encoding 32 bytes, "
            "as printed by `wg pubkey`)"
        )
    return value


WgPublicKey = Annotated[str, AfterValidator(check_wg_public_key)]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _check_endpoint(value: str) -> str:
    """host:port, [v6]:port; the host an IPv4 address or a DNS name."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value)
    if not m:
        raise ValueError("endpoint must be HOST:PORT (e.g. 203.0.113.10:51820) or [IPv6]:PORT")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"endpoint port {port} is outside 1..65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(
                f"endpoint host {host!r} is neither an IP address nor a DNS name"
            ) from None
    return value


class WgInterface(BaseModel):
    """The [Interface] section, minus the private key (joined in on the node)."""

    model_config = ConfigDict(frozen=True)

    address: IPv4Interface = Field(description="Tunnel address with prefix, e.g. 10.0.0.1/24")
    listen_port: int | None = Field(default=DEFAULT_PORT, ge=1, le=65535)
    mtu: int | None = Field(default=None, ge=576, le=9000, description="underlay MTU - 80")


class WgPeer(BaseModel):
    model_config = ConfigDict(frozen=True)

    public_key: WgPublicKey
    endpoint: Annotated[str, AfterValidator(_check_endpoint)] | None = None
    allowed_ips: list[IPv4Network] = Field(min_length=1)
    keepalive: int | None = Field(default=KEEPALIVE, ge=0, le=65535)
    name: str | None = Field(default=None, description="comment line only, e.g. hg-giessen-vpn")

    @field_validator("name")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", v):
            raise ValueError("peer name may use letters, digits and . _ @ - (max 64)")
        return v


class WgConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    interface: WgInterface
    peers: list[WgPeer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_duplicates(self) -> WgConfig:
        keys = [p.public_key for p in self.peers]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"peers: public key {sorted(dup)[0]} appears more than once")
        seen: dict[IPv4Network, str] = {}
        for p in self.peers:
            for net in p.allowed_ips:
                for other, owner in seen.items():
                    if net.overlaps(other) and owner != p.public_key:
                        raise ValueError(
                            f"peers: AllowedIPs {net} of {p.name or p.public_key} overlaps {other} "
                            f"of another peer; WireGuard routes each address to one peer only"
                        )
                seen[net] = p.public_key
        return self
