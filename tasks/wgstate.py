"""Parse `wg show <iface> dump` into typed records (for verification and drift checks).

The raw dump's first line carries the interface's private key and peer lines carry preshared
keys. `wg_dump_command` masks both on the node before anything is sent back, and the parser
never keeps those fields even when handed an unmasked dump.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from hybridgrid.tasks.remote import RemoteShell

NONE = "(none)"
HIDDEN = "(hidden)"
HANDSHAKE_MAX_AGE = 180  # s; WireGuard re-handshakes every 120 s while traffic flows


class WgDumpParseError(ValueError):
    """Malformed dump. Names the line number only: a raw line could hold a private key."""


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


def _opt_int(value: str, what: str, lineno: int) -> int | None:
    if value in ("off", NONE, "0") and what in ("fwmark", "keepalive"):
        return None
    try:
        return int(value, 16 if value.startswith("0x") else 10)  # wg prints fwmark as 0x…
    except ValueError:
        raise WgDumpParseError(f"wg dump line {lineno}: {what} is not a number") from None


def _int(value: str, what: str, lineno: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise WgDumpParseError(f"wg dump line {lineno}: {what} is not a number") from None


def parse_wg_dump(text: str, iface: str = "wg0") -> WgState:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise WgDumpParseError(f"wg dump of {iface} is empty (is {iface} up?)")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise WgDumpParseError(
            f"wg dump line 1: expected 4 tab-separated interface fields, got {len(head)}"
        )
    private, public, port, fwmark = head
    interface = WgInterfaceState(
        public_key=None if public == NONE else public,
        listen_port=_opt_int(port, "listen port", 1),
        fwmark=_opt_int(fwmark, "fwmark", 1),
        has_private_key=private != NONE,
    )
    peers = []
    for lineno, line in enumerate(lines[1:], start=2):
        f = line.split("\t")
        if len(f) != 8:
            raise WgDumpParseError(
                f"wg dump line {lineno}: expected 8 tab-separated peer fields, got {len(f)}"
            )
        pub, psk, endpoint, allowed, handshake, rx, tx, keepalive = f
        try:
            nets = [] if allowed == NONE else [ipaddress.ip_network(a) for a in allowed.split(",")]
        except ValueError:
            raise WgDumpParseError(f"wg dump line {lineno}: bad allowed-ips") from None
        peers.append(
            WgPeerState(
                public_key=pub,
                has_preshared_key=psk != NONE,
                endpoint=None if endpoint == NONE else endpoint,
                allowed_ips=nets,
                latest_handshake=_int(handshake, "latest handshake", lineno),
                rx_bytes=_int(rx, "transfer rx", lineno),
                tx_bytes=_int(tx, "transfer tx", lineno),
                keepalive=_opt_int(keepalive, "keepalive", lineno),
            )
        )
    return WgState(iface=iface, interface=interface, peers=peers)


def wg_dump_command(iface: str = "wg0") -> str:
    """`wg show IFACE dump` with the private and preshared keys masked on the node."""
    i = shlex.quote(iface)
    return (
        f"wg show {i} >/dev/null || exit 3\n"
        f"wg show {i} dump | awk -F '\\t' -v OFS='\\t' "
        f"""'NR == 1 && $1 != "{NONE}" {{ $1 = "{HIDDEN}" }} """
        f"""NR > 1 && $2 != "{NONE}" {{ $2 = "{HIDDEN}" }} {{ print }}'\n"""
    )


async def read_wg_state(host: RemoteShell, iface: str = "wg0") -> WgState:
    res = await host.run(wg_dump_command(iface), name=f"wg show {iface} dump", timeout=30)
    return parse_wg_dump(res.stdout, iface)
