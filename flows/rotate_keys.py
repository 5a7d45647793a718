"""rotate_keys (docs/architecture.md §5): a new WireGuard key pair for a site's spoke (and,
with hub=True, for the master), made on the node; the other end learns the public key first
(live syncconf, under the hub lock); then the node switches; a fresh handshake on both ends
confirms it, else both ends roll back to the old key. The old private key is deleted from
the node and the registry holds only the new public key.

The spoke's rotation touches only its own peer on the hub: every other site's session
stays up (syncconf changes nothing else). A hub rotation necessarily re-keys every site.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from hybridgrid import desired, naming
from hybridgrid.blocks.loading import ssh_key
from hybridgrid.blocks.registry import DEFAULT_REGISTRY, load_registry, update_registry
from hybridgrid.flows import runs
from hybridgrid.flows.home import ReadyHome, master_with_floating_ip, require_home
from hybridgrid.flows.hub import apply_hub, hub_lock
from hybridgrid.flows.ssh_access import door
from hybridgrid.model import TopologyError, tunnel_mtu
from hybridgrid.registry_data import RegistryData, SiteUpdate
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import node_tasks as nodes
from hybridgrid.tasks import rotation_tasks as rot
from hybridgrid.wgconfig import WgConfig


class RotationFailed(RuntimeError):
    """No fresh handshake with the new key in time; both ends are back on the old key."""


class RotateResult(BaseModel):
    site: str
    spoke_public_key: str
    hub_public_key: str
    hub_rotated: bool = False
    old_keys_removed: list[str] = Field(default_factory=list)  # nodes without an old key


def _run_name() -> str:
    return "rotate " + runs.run_name_from("site")


class _Spoke(BaseModel):
    name: str
    target: SSHTarget
    key_block: str
    wg_address: str
    mtu: int


@dataclass(frozen=True)
class _Rotation:
    """What a rotation reads: the registry, the hub (its key and the way in) and the spoke."""

    registry: str
    data: RegistryData
    home: ReadyHome
    hub_public_key: str
    master_target: SSHTarget
    master_fip: str
    spoke: _Spoke


def _spoke_config(data: RegistryData, site: str, hub_pub: str, master_fip: str) -> WgConfig:
    """The spoke's wg0 as add_remote_site renders it (the site's wiring): the hub its only
    peer."""
    return desired.spoke_config(data, desired.wiring(data, site, master_fip=master_fip), hub_pub)


async def _spoke(data: RegistryData, site: str) -> _Spoke:
    entry = data.sites[site]
    vpn = naming.resource_name(site, naming.VPN)
    block = entry.ssh_key_block or naming.resource_name(site, "ssh")
    key = await ssh_key(block)
    if "vpn" not in entry.public_ips or not entry.host_keys.get(vpn):
        raise TopologyError(
            "site", f"{site} has no recorded VPN node address or host key", "rerun add-site"
        )
    return _Spoke(
        name=site,
        target=door(entry.cloud, str(entry.public_ips["vpn"]), entry.host_keys[vpn], key),
        key_block=block,
        wg_address=str(entry.wg_address),
        mtu=tunnel_mtu(entry.network_mtu),
    )


@flow(
    name="rotate-keys",
    flow_run_name=_run_name,
    description="New WireGuard keys for a site's VPN node (hub=True: the master's too), "
    "confirmed by a fresh handshake or rolled back.",
)
async def rotate_keys(
    site: str,
    hub: bool = False,
    registry: str = DEFAULT_REGISTRY,
    handshake_timeout: Annotated[
        float, Field(gt=0, description="seconds to wait for a fresh handshake")
    ] = 60,
) -> RotateResult:
    await runs.tag_run("site", site)
    rotation = await _prepare(site, registry)
    new_spoke, removed = await _rotate_spoke(rotation, handshake_timeout)
    hub_pub = rotation.hub_public_key
    if hub:
        hub_pub = await _rotate_hub(rotation, handshake_timeout)
        removed.append(rotation.master_target.label)
    return RotateResult(
        site=site,
        spoke_public_key=new_spoke,
        hub_public_key=hub_pub,
        hub_rotated=hub,
        old_keys_removed=removed,
    )


async def _prepare(site: str, registry: str) -> _Rotation:
    """The registry's home and site (a completely added one), the master's way in."""
    data = await load_registry(registry)
    home = require_home(data, registry)
    entry = data.sites.get(site)
    if entry is None or not entry.spoke_public_key or entry.spec is None:
        raise TopologyError(
            "site",
            f"{site!r} is not a completely added site of registry {registry!r}",
            f"choose one of {', '.join(sorted(data.sites)) or '(none)'}, or add it first",
        )
    if not home.public_key:
        raise TopologyError(
            "home", "the registry holds no WireGuard key of the hub", "rerun bootstrap-home"
        )
    master = await master_with_floating_ip(home)
    master_fip = str(master.floating_ip)
    home_key = await ssh_key(home.ssh_key_block)
    return _Rotation(
        registry=registry,
        data=data,
        home=home,
        hub_public_key=home.public_key,
        master_target=door(home.cloud, master_fip, home.master_host_keys, home_key),
        master_fip=master_fip,
        spoke=await _spoke(data, site),
    )


async def _rotate_spoke(r: _Rotation, timeout: float) -> tuple[str, list[str]]:
    """The spoke's new key: staged, learnt by the hub, switched to, confirmed (or rolled
    back); returns it and the node whose old key is gone."""
    log, spoke = get_run_logger(), r.spoke
    old_spoke = r.data.sites[spoke.name].spoke_public_key or ""
    since = time.time()
    new_spoke = await rot.stage_key(spoke.target, spoke.key_block)
    log.info("Staged a new key on %s: %s", spoke.target.label, new_spoke)
    await _hub_learns(r, new_spoke)
    cfg = _spoke_config(r.data, spoke.name, r.hub_public_key, r.master_fip)
    await rot.activate_key(spoke.target, spoke.key_block, cfg)
    late = await rot.wait_handshakes(
        [
            rot.HandshakeWait(
                target=spoke.target,
                key_block=spoke.key_block,
                peer=r.hub_public_key,
                nudge=r.home.wg_address,
            ),
            rot.HandshakeWait(
                target=r.master_target, key_block=r.home.ssh_key_block, peer=new_spoke
            ),
        ],
        since,
        timeout,
    )
    if late:
        log.error("No fresh handshake on %s: rolling back", ", ".join(late))
        await rot.rollback_key(spoke.target, spoke.key_block, cfg)
        await _hub_learns(r, old_spoke)
        raise RotationFailed(
            f"site {spoke.name}: no fresh handshake within {timeout:.0f} s on "
            f"{', '.join(late)}; both ends are back on the previous key {old_spoke}"
        )
    removed = (
        [spoke.target.label] if await rot.forget_previous_key(spoke.target, spoke.key_block) else []
    )
    log.info("Site %s now uses %s (was %s)", spoke.name, new_spoke, old_spoke)
    return new_spoke, removed


async def _hub_learns(r: _Rotation, spoke_public_key: str) -> None:
    """The site's peer on the hub gets `spoke_public_key` (live, under the hub lock)."""
    async with hub_lock(r.home.name):
        await apply_hub(
            r.registry,
            r.spoke.name,
            SiteUpdate(spoke_public_key=spoke_public_key),
            r.master_target,
            r.home.ssh_key_block,
            r.spoke.mtu,
        )


async def _rotate_hub(r: _Rotation, timeout: float) -> str:
    """Every spoke learns the new hub key, then the master switches; all sites re-handshake."""
    log, home, master = get_run_logger(), r.home, r.master_target
    async with hub_lock(home.name):
        data = await load_registry(r.registry)
        names = [n for n, e in sorted(data.sites.items()) if e.spoke_public_key and e.spec]
        spokes = await asyncio.gather(*(_spoke(data, n) for n in names))
        since = time.time()
        new_hub = await rot.stage_key(master, home.ssh_key_block)
        log.info("Staged a new hub key on %s: %s", master.label, new_hub)
        await _point_spokes(data, spokes, new_hub, r.master_fip)
        hub_cfg = desired.hub_config(data, desired.hub_mtu(data, tunnel_mtu(home.network_mtu)))
        await rot.activate_key(master, home.ssh_key_block, hub_cfg)
        waits = [
            rot.HandshakeWait(
                target=s.target,
                key_block=s.key_block,
                peer=new_hub,
                nudge=data.home.wg_address if data.home else None,
            )
            for s in spokes
        ]
        late = await rot.wait_handshakes(waits, since, timeout)
        if late:
            log.error("No fresh handshake with the new hub key on %s: rolling back", late)
            await rot.rollback_key(master, home.ssh_key_block, hub_cfg)
            await _point_spokes(data, spokes, r.hub_public_key, r.master_fip)
            raise RotationFailed(
                f"hub {home.master}: no fresh handshake within {timeout:.0f} s on "
                f"{', '.join(late)}; the hub and every spoke are back on {r.hub_public_key}"
            )
        await update_registry(_hub_key_recorder(names, new_hub), r.registry)
        await rot.forget_previous_key(master, home.ssh_key_block)
    log.info("Hub %s now uses %s (was %s)", home.master, new_hub, r.hub_public_key)
    return new_hub


async def _point_spokes(
    data: RegistryData, spokes: list[_Spoke], hub_pub: str, master_fip: str
) -> None:
    """Every spoke's wg0 with `hub_pub` as its hub's key, at once."""
    await asyncio.gather(
        *(
            nodes.apply_wireguard(
                s.target, s.key_block, _spoke_config(data, s.name, hub_pub, master_fip)
            )
            for s in spokes
        )
    )


def _hub_key_recorder(names: list[str], new_hub: str) -> Callable[[RegistryData], None]:
    def record(d: RegistryData) -> None:
        if d.home is None:  # the rotation holds the hub lock: only a concurrent wipe gets here
            raise RuntimeError("the registry's home disappeared during the hub's rotation")
        d.home.public_key = new_hub
        for n in names:
            if n in d.sites:
                d.sites[n].hub_public_key = new_hub

    return record


__all__ = ["RotateResult", "RotationFailed", "rotate_keys"]
