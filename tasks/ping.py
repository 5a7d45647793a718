"""Ping probes for verification: the command (iputils), its parsed result, a likely cause.

Used for: ping over the tunnel (10.0.0.x), worker ⇄ worker both ways, and a full-size ping
with DF set at the tunnel MTU (payload = MTU − 20 IPv4 − 8 ICMP).
"""

from __future__ import annotations

import re
import shlex
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from hybridgrid.tasks.remote import RemoteShell

IP_ICMP_HEADERS = 28

_STATS = re.compile(
    r"(?P<tx>\d+) packets transmitted, (?P<rx>\d+) (?:packets )?received"
    r"(?:, \+(?P<err>\d+) errors)?.*?(?P<loss>[\d.]+)% packet loss"
)
_RTT = re.compile(r"= [\d.]+/(?P<avg>[\d.]+)/[\d.]+")
_MTU = re.compile(r"(?:message too long, mtu=|Frag needed and DF set \(mtu = )(?P<mtu>\d+)")
_UNREACH = re.compile(r"Network is unreachable|Destination (?:Host|Net) Unreachable|No route")


class PingResult(BaseModel):
    target: str
    transmitted: int = 0
    received: int = 0
    errors: int = 0
    loss_pct: float = 100.0
    rtt_avg_ms: float | None = None
    mtu_error: int | None = Field(default=None, description="path MTU reported by a DF failure")
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.received > 0 and self.mtu_error is None


def df_payload(mtu: int) -> int:
    """ICMP payload size that makes an IPv4 packet of exactly `mtu` bytes."""
    if mtu < 68:
        raise ValueError("mtu must be at least 68")
    return mtu - IP_ICMP_HEADERS


def ping_command(
    dest: IPv4Address | str,
    *,
    count: int = 3,
    size: int | None = None,
    df: bool = False,
    wait: float = 2.0,
    interval: float = 0.2,
    source: IPv4Address | str | None = None,
) -> str:
    d = IPv4Address(str(dest))  # validates: only an address reaches the shell
    args = ["ping", "-n", "-c", str(int(count)), "-W", f"{wait:g}", "-i", f"{interval:g}"]
    if size is not None:
        args += ["-s", str(int(size))]
    if df:
        args += ["-M", "do"]
    if source is not None:
        args += ["-I", str(IPv4Address(str(source)))]
    args.append(str(d))
    # ping exits 1 on no reply; the parsed statistics say what happened
    return " ".join(shlex.quote(a) for a in args) + " 2>&1 || true\n"


def parse_ping(output: str, target: str) -> PingResult:
    result = PingResult(target=target)
    m = _STATS.search(output)
    if m:
        result.transmitted = int(m["tx"])
        result.received = int(m["rx"])
        result.errors = int(m["err"] or 0)
        result.loss_pct = float(m["loss"])
    r = _RTT.search(output)
    if r:
        result.rtt_avg_ms = float(r["avg"])
    mtu = _MTU.search(output)
    if mtu:
        result.mtu_error = int(mtu["mtu"])
    result.unreachable = bool(_UNREACH.search(output))
    return result


def ping_cause(result: PingResult, *, layer: str, mtu: int | None = None) -> str | None:
    """None when fine; else one sentence with the likely cause for this verification layer."""
    if result.mtu_error is not None:
        return (
            f"{layer}: {result.target} is reachable only below {result.mtu_error} bytes "
            f"(DF ping at {mtu or '?'} failed): lower the tunnel MTU to the underlay MTU − 80 "
            f"and clamp TCP MSS on the hub"
        )
    if result.unreachable:
        return f"{layer}: no route to {result.target}: routes via the hub/spoke are missing"
    if result.received == 0:
        return (
            f"{layer}: no reply from {result.target}: check the WireGuard handshake, AllowedIPs, "
            f"the allowed-address pairs on the forwarding ports and the security group ingress"
        )
    return None


async def ping(
    host: RemoteShell,
    dest: IPv4Address | str,
    *,
    count: int = 3,
    size: int | None = None,
    df: bool = False,
    wait: float = 2.0,
    source: IPv4Address | str | None = None,
) -> PingResult:
    cmd = ping_command(dest, count=count, size=size, df=df, wait=wait, source=source)
    res = await host.run(cmd, name=f"ping {dest}", timeout=count * (wait + 0.2) + 10)
    return parse_ping(res.stdout, str(dest))
