"""A WireGuard interface as it runs (plain data): its public key, port and peers with their
endpoints, AllowedIPs and latest handshakes — never a private or preshared key.
`hybridgrid.wireguard.state` reads it from a node; `hybridgrid.drift` compares it."""

from __future__ import annotations

import time
from ipaddress import IPv4Network, IPv6Network

from pydantic import BaseModel, ConfigDict, Field

HANDSHAKE_MAX_AGE = 180  # s; WireGuard re-handshakes every 120 s while traffic flows


class WgInterfaceState(BaseModel):
    model_config = ConfigDict(frozen=True)

    public_key: str | None
    listen_port: int | None
    fwmark: int | None
    has_private_key: bool


class WgPeerState(BaseModel):
    model_config = ConfigDict(frozen=True)

    public_key: str
    has_preshared_key: bool
    endpoint: str | None
    allowed_ips: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    latest_handshake: int = Field(description="epoch seconds; 0 = never")
    rx_bytes: int
    tx_bytes: int
    keepalive: int | None

    def handshake_age(self, now: float | None = None) -> float | None:
        """Seconds since the latest handshake, None if there never was one."""
        if not self.latest_handshake:
            return None
        return max(0.0, (time.time() if now is None else now) - self.latest_handshake)

    def handshake_fresh(self, now: float | None = None, max_age: float = HANDSHAKE_MAX_AGE) -> bool:
        age = self.handshake_age(now)
        return age is not None and age < max_age


class WgState(BaseModel):
    model_config = ConfigDict(frozen=True)

    iface: str
    interface: WgInterfaceState
    peers: list[WgPeerState]

    def peer(self, public_key: str) -> WgPeerState | None:
        return next((p for p in self.peers if p.public_key == public_key), None)
