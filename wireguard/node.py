"""WireGuard on a node, over any `RemoteShell`: the private key made there (only the public key
comes back), wg0.conf uploaded and assembled, wg0 up or synced, forwarding and MSS clamping, the
tools, routes, and the key rotation steps.

The private key is made on its node and never leaves it. The rendered config therefore has no
`PrivateKey` line; the node joins it in from its key file (see `assemble_command`), so the key
crosses no wire and never appears in a process argument. We deliberately do not load the key
with `PostUp`: `wg syncconf` of a stripped config without `PrivateKey` wipes the key and drops
every peer.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network
from typing import Literal

from pydantic import BaseModel

from hybridgrid.shell import RemoteShell
from hybridgrid.wgconfig import WgConfig, check_wg_public_key
from hybridgrid.wireguard.commands import (
    activate_key_command,
    assemble_command,
    bring_up_command,
    genkey_command,
    install_tools_command,
    ip_forward_command,
    mss_clamp_command,
    rollback_key_command,
    routes_command,
    stage_key_command,
)
from hybridgrid.wireguard.render import WgPaths, render_wg_conf


class WgApplyResult(BaseModel):
    iface: str
    action: Literal["started", "synced"]
    changed: bool  # wg0.conf content changed (False: a rerun with the same config)
    peers: int


def _last_line(text: str, allowed: tuple[str, ...], what: str) -> str:
    lines = text.strip().splitlines()
    if not lines or lines[-1] not in allowed:
        raise ValueError(f"{what}: unexpected output, expected one of {', '.join(allowed)}")
    return lines[-1]


async def ensure_wg_key(host: RemoteShell, paths: WgPaths | None = None) -> str:
    """Private key on the node (made once, reused); returns only the public key."""
    res = await host.run(genkey_command(paths), name="wg-genkey", timeout=30)
    return check_wg_public_key(res.stdout.strip())


async def apply_wg_config(
    host: RemoteShell, config: WgConfig, paths: WgPaths | None = None
) -> WgApplyResult:
    """Upload the rendered body, join the key in on the node, then up or syncconf."""
    p = paths or WgPaths()
    body = render_wg_conf(config, p).encode()
    await host.upload(p.body, body, mode=0o600, name=f"upload {p.iface}.conf.body")
    asm = await host.run(assemble_command(p), name=f"assemble {p.iface}.conf", timeout=30)
    changed = _last_line(asm.stdout, ("changed", "unchanged"), "assemble") == "changed"
    res = await host.run(
        bring_up_command(p, config.interface.mtu), name=f"bring up {p.iface}", timeout=60
    )
    action = _last_line(res.stdout, ("started", "synced"), f"bring up {p.iface}")
    return WgApplyResult(
        iface=p.iface,
        action=action,  # type: ignore[arg-type]
        changed=changed,
        peers=len(config.peers),
    )


async def enable_forwarding(host: RemoteShell, *, clamp_mss: bool) -> None:
    await host.run(ip_forward_command(), name="enable ip_forward", timeout=30)
    if clamp_mss:
        await host.run(mss_clamp_command(), name="nft mss clamp", timeout=30)


async def ensure_wireguard_tools(host: RemoteShell) -> str:
    """`present` or `installed`."""
    res = await host.run(install_tools_command(), name="install wireguard-tools", timeout=600)
    return res.stdout.strip().splitlines()[-1]


async def ensure_routes(
    host: RemoteShell,
    routes: list[IPv4Network],
    via: ipaddress.IPv4Address,
    *,
    name: str = "hybridgrid",
) -> str:
    """Routes via the local hub/spoke; returns how they were persisted."""
    res = await host.run(routes_command(routes, via, name=name), name="ip route replace")
    return res.stdout.strip().splitlines()[-1]


async def stage_key(host: RemoteShell, paths: WgPaths | None = None) -> str:
    res = await host.run(stage_key_command(paths), name="wg stage key", timeout=30)
    return check_wg_public_key(res.stdout.strip())


async def activate_key(
    host: RemoteShell, config: WgConfig, paths: WgPaths | None = None
) -> tuple[str, WgApplyResult]:
    """Switch to the staged key and apply `config` (syncconf): returns the new public key."""
    res = await host.run(activate_key_command(paths), name="wg activate key", timeout=30)
    return check_wg_public_key(res.stdout.strip()), await apply_wg_config(host, config, paths)


async def rollback_key(
    host: RemoteShell, config: WgConfig, paths: WgPaths | None = None
) -> tuple[str, WgApplyResult]:
    res = await host.run(rollback_key_command(paths), name="wg rollback key", timeout=30)
    return check_wg_public_key(res.stdout.strip()), await apply_wg_config(host, config, paths)
