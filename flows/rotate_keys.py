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
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from hybridgrid import desired, naming
from hybridgrid.blocks.loading import ssh_key
from hybridgrid.blocks.registry import DEFAULT_REGISTRY, load_registry, update_registry
from hybridgrid.flows import common
from hybridgrid.model import TopologyError, tunnel_mtu
from hybridgrid.registry_data import HomeEntry, RegistryData
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
    return "rotate " + common.run_name_from("site")


class _Spoke(BaseModel):
    name: str
    target: SSHTarget
    key_block: str
    wg_address: str
    mtu: int


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
        target=common.door(entry.cloud, str(entry.public_ips["vpn"]), entry.host_keys[vpn], key),
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
    log = get_run_logger()
    await common.tag_run("site", site)
    data = await load_registry(registry)
    home = common.require_home(data, registry)
    entry = data.sites.get(site)
    if entry is None or not entry.spoke_public_key or entry.spec is None:
        raise TopologyError(
            "site",
            f"{site!r} is not a completely added site of registry {registry!r}",
            f"choose one of {', '.join(sorted(data.sites)) or '(none)'}, or add it first",
        )
    assert home.master is not None and home.ssh_key_block is not None and home.public_key
    master = await common.master_with_floating_ip(home)
    master_fip = str(master.floating_ip)
    master_target = common.door(
        home.cloud, master_fip, home.host_keys[home.master], await ssh_key(home.ssh_key_block)
    )
    spoke = await _spoke(data, site)
    mtu = spoke.mtu
    removed: list[str] = []

    # ---- the spoke
    old_spoke = entry.spoke_public_key
    since = time.time()
    new_spoke = await rot.stage_key(spoke.target, spoke.key_block)
    log.info("Staged a new key on %s: %s", spoke.target.label, new_spoke)
    async with common.hub_lock(home.name):
        await common.apply_hub(
            registry,
            site,
            {"spoke_public_key": new_spoke},
            master_target,
            home.ssh_key_block,
            mtu,
        )
    cfg = _spoke_config(data, site, home.public_key, master_fip)
    await rot.activate_key(spoke.target, spoke.key_block, cfg)
    late = await rot.wait_handshakes(
        [
            rot.HandshakeWait(
                target=spoke.target,
                key_block=spoke.key_block,
                peer=home.public_key,
                nudge=home.wg_address,
            ),
            rot.HandshakeWait(target=master_target, key_block=home.ssh_key_block, peer=new_spoke),
        ],
        since,
        handshake_timeout,
    )
    if late:
        log.error("No fresh handshake on %s: rolling back", ", ".join(late))
        await rot.rollback_key(spoke.target, spoke.key_block, cfg)
        async with common.hub_lock(home.name):
            await common.apply_hub(
                registry,
                site,
                {"spoke_public_key": old_spoke},
                master_target,
                home.ssh_key_block,
                mtu,
            )
        raise RotationFailed(
            f"site {site}: no fresh handshake within {handshake_timeout:.0f} s on "
            f"{', '.join(late)}; both ends are back on the previous key {old_spoke}"
        )
    if await rot.forget_previous_key(spoke.target, spoke.key_block):
        removed.append(spoke.target.label)
    log.info("Site %s now uses %s (was %s)", site, new_spoke, old_spoke)

    hub_pub = home.public_key
    if hub:
        hub_pub = await _rotate_hub(registry, home, master_target, master_fip, handshake_timeout)
        removed.append(master_target.label)
    return RotateResult(
        site=site,
        spoke_public_key=new_spoke,
        hub_public_key=hub_pub,
        hub_rotated=hub,
        old_keys_removed=removed,
    )


async def _rotate_hub(
    registry: str, home: HomeEntry, master_target: SSHTarget, master_fip: str, timeout: float
) -> str:
    """Every spoke learns the new hub key, then the master switches; all sites re-handshake."""
    log = get_run_logger()
    assert home.ssh_key_block is not None and home.public_key is not None
    old_hub = home.public_key
    async with common.hub_lock(home.name):
        data = await load_registry(registry)
        names = [n for n, e in sorted(data.sites.items()) if e.spoke_public_key and e.spec]
        spokes = await asyncio.gather(*(_spoke(data, n) for n in names))
        since = time.time()
        new_hub = await rot.stage_key(master_target, home.ssh_key_block)
        log.info("Staged a new hub key on %s: %s", master_target.label, new_hub)

        async def point_spokes(hub_pub: str) -> None:
            await asyncio.gather(
                *(
                    nodes.apply_wireguard(
                        s.target, s.key_block, _spoke_config(data, s.name, hub_pub, master_fip)
                    )
                    for s in spokes
                )
            )

        await point_spokes(new_hub)
        hub_cfg = desired.hub_config(data, desired.hub_mtu(data, tunnel_mtu(home.network_mtu)))
        await rot.activate_key(master_target, home.ssh_key_block, hub_cfg)
        late = await rot.wait_handshakes(
            [
                rot.HandshakeWait(
                    target=s.target,
                    key_block=s.key_block,
                    peer=new_hub,
                    nudge=data.home.wg_address if data.home else None,
                )
                for s in spokes
            ],
            since,
            timeout,
        )
        if late:
            log.error("No fresh handshake with the new hub key on %s: rolling back", late)
            await rot.rollback_key(master_target, home.ssh_key_block, hub_cfg)
            await point_spokes(old_hub)
            raise RotationFailed(
                f"hub {home.master}: no fresh handshake within {timeout:.0f} s on "
                f"{', '.join(late)}; the hub and every spoke are back on {old_hub}"
            )

        def record(d: RegistryData) -> None:
            assert d.home is not None
            d.home.public_key = new_hub
            for n in names:
                if n in d.sites:
                    d.sites[n].hub_public_key = new_hub

        await update_registry(record, registry)
        await rot.forget_previous_key(master_target, home.ssh_key_block)
    log.info("Hub %s now uses %s (was %s)", home.master, new_hub, old_hub)
    return new_hub


__all__ = ["RotateResult", "RotationFailed", "rotate_keys"]
