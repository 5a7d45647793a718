"""Parse `wg show <iface> dump` into typed records (for verification and drift checks).

The raw dump's first line carries the interface's private key and peer lines carry preshared
keys. `wg_dump_command` masks both on the node before anything is sent back, and the parser
never keeps those fields even when handed an unmasked dump.
"""

from __future__ import annotations

import ipaddress
import shlex
from ipaddress import IPv4Network, IPv6Network

from pydantic import BaseModel, Field

from hybridgrid.shell import RemoteCommandError, RemoteShell
from hybridgrid.wgstate import HANDSHAKE_MAX_AGE, WgInterfaceState, WgPeerState, WgState

NONE = "(none)"
HIDDEN = "(hidden)"


class WgDumpParseError(ValueError):
    """Malformed dump. Names the line number only: a raw line could hold a private key."""


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
        "command -v wg >/dev/null || { echo 'wireguard-tools missing' >&2; exit 4; }\n"
        f"wg show {i} >/dev/null || exit 3\n"
        f"wg show {i} dump | awk -F '\\t' -v OFS='\\t' "
        f"""'NR == 1 && $1 != "{NONE}" {{ $1 = "{HIDDEN}" }} """
        f"""NR > 1 && $2 != "{NONE}" {{ $2 = "{HIDDEN}" }} {{ print }}'\n"""
    )


async def read_wg_state(
    host: RemoteShell, iface: str = "wg0", *, missing_ok: bool = False
) -> WgState | None:
    """The interface's state; None when it does not exist and `missing_ok`."""
    res = await host.run(
        wg_dump_command(iface), name=f"wg show {iface} dump", timeout=30, check=not missing_ok
    )
    if res.exit_status != 0:
        if res.exit_status == 3:
            return None
        raise RemoteCommandError(f"wg show {iface} dump", host.label, res.exit_status, res.stderr)
    return parse_wg_dump(res.stdout, iface)


# ---------------------------------------------------------------- verification (pure)


class ExpectedPeer(BaseModel):
    """What a peer should look like on the interface (from the topology / registry)."""

    public_key: str
    name: str | None = None
    endpoint: str | None = None
    allowed_ips: list[IPv4Network | IPv6Network] = Field(default_factory=list)


class WgCheck(BaseModel):
    """A verification verdict: `ok`, and one line per problem naming the likely cause."""

    ok: bool
    problems: list[str] = Field(default_factory=list)


def check_wg_state(
    state: WgState | None,
    *,
    node: str,
    iface: str = "wg0",
    public_key: str | None,
    peers: list[ExpectedPeer],
    now: float | None = None,
    max_age: float = HANDSHAKE_MAX_AGE,
    check_handshake: bool = True,
) -> WgCheck:
    """Compare the running interface with what it should be; pure."""
    if state is None:
        return WgCheck(
            ok=False,
            problems=[f"{iface} is down on {node}: bring it up (`wg-quick up {iface}`)"],
        )
    problems: list[str] = []
    if not state.interface.has_private_key:
        problems.append(
            f"{iface} on {node} has no private key: a config without PrivateKey was applied "
            f"(the key was wiped); re-apply the assembled {iface}.conf"
        )
    if public_key and state.interface.public_key != public_key:
        problems.append(
            f"{iface} on {node} runs with public key {state.interface.public_key}, the registry "
            f"has {public_key}: wrong key file or a regenerated key; redo the key exchange"
        )
    want = {p.public_key: p for p in peers}
    for p in peers:
        label = p.name or p.public_key
        got = state.peer(p.public_key)
        if got is None:
            problems.append(
                f"peer {label} is missing on {node}'s {iface} (or has another public key): "
                f"re-add the peer with its current key"
            )
            continue
        if p.endpoint and got.endpoint and got.endpoint != p.endpoint:
            problems.append(f"peer {label} endpoint is {got.endpoint}, expected {p.endpoint}")
        if p.endpoint and not got.endpoint:
            problems.append(f"peer {label} has no endpoint on {node}; expected {p.endpoint}")
        missing = sorted(set(map(str, p.allowed_ips)) - set(map(str, got.allowed_ips)))
        if missing:
            problems.append(f"peer {label} on {node} lacks AllowedIPs {', '.join(missing)}")
        if check_handshake:
            age = got.handshake_age(now)
            if age is None:
                problems.append(
                    f"no handshake between {node} and {label} yet: likely UDP "
                    f"{state.interface.listen_port or 51820} blocked (security group rule from "
                    f"the peer's /32 missing), a wrong endpoint, or a wrong public key on one end"
                )
            elif age >= max_age:
                problems.append(
                    f"last handshake between {node} and {label} was {int(age)} s ago "
                    f"(limit {int(max_age)} s): the peer is down or UDP is blocked"
                )
    for extra in state.peers:
        if extra.public_key not in want:
            problems.append(f"unexpected peer {extra.public_key} on {node}'s {iface}")
    return WgCheck(ok=not problems, problems=problems)
