"""Pieces the flows share: run names and tags, the registry's view of the home, SSH key
blocks, the hub lock and the hub's apply, and the layered verification (what a site's wiring
must be is `hybridgrid.desired`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import ObjectNotFound

from hybridgrid import desired, naming
from hybridgrid.access import front_door
from hybridgrid.blocks import loading as clouds
from hybridgrid.blocks.loading import ssh_key, use_ssh_key
from hybridgrid.blocks.registry import ensure_lock, update_registry
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.cloudops.finder import read
from hybridgrid.desired import SiteWiring
from hybridgrid.model import (
    HomeSite,
    MasterSpec,
    RemoteSite,
    Topology,
    TopologyError,
)
from hybridgrid.registry_data import HomeEntry, RegistryData
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import node_tasks as nodes
from hybridgrid.tasks import site_tasks as st
from hybridgrid.tasks import verify as vf
from hybridgrid.wireguard.state import ExpectedPeer


class VerificationFailed(RuntimeError):
    """The site was built but a verification layer failed (the message names the cause)."""


# ---------------------------------------------------------------- checkpoints (test hook)

KILL_ENV = "HYBRIDGRID_KILL_AFTER"
KILL_EXIT_CODE = 137  # what a SIGKILLed process reports

# The step boundaries of add_remote_site, in order (reliability tests kill after each one).
ADD_SITE_STEPS = (
    "validated",
    "preflight",
    "allocated",
    "network",
    "servers-launched",
    "rules",
    "ssh-ready",
    "spoke-key",
    "spoke",  # spoke, hub and routes run concurrently: killing after one may cut the others
    "hub-applied",  # inside the hub lock (common.hub_lock), the peer and pairs applied
    "hub",
    "routes",
    "verified",
    "recorded",
)
# remove_remote_site: inside the hub lock with the peer off wg0 and its pair off the master's
# port, then after the lock, the home rules/routes + the site's tagged resources, key pair +
# key block, the registry entry. ("hub-applied" fires in every flow that takes the hub lock.)
REMOVE_SITE_STEPS = ("hub-applied", "peer-removed", "resources-removed", "keys-removed", "released")
BOOTSTRAP_STEPS = ("preflight", "servers-launched", "master-ready", "recorded")


def checkpoint(step: str) -> None:
    """Mark a step boundary of a flow.

    Test hook: with ``HYBRIDGRID_KILL_AFTER=<step>`` (any flow) or ``<flow>:<step>`` (e.g.
    ``add-remote-site:servers-launched``) in the environment, the whole PROCESS exits at once
    (``os._exit(137)``, like SIGKILL: no cleanup, no final state reported to Prefect — the run
    stays "Running" — and locks left to expire) right after that step: what a crashed worker
    or a killed laptop leaves behind. A rerun must converge from there. Steps:
    ``ADD_SITE_STEPS``, ``REMOVE_SITE_STEPS``, ``BOOTSTRAP_STEPS``. Unset in normal use.
    """
    want = os.environ.get(KILL_ENV)
    if not want:
        return
    if ":" in want:
        from prefect.runtime import flow_run

        want_flow, _, want_step = want.partition(":")
        hit = want_step == step and flow_run.flow_name == want_flow
    else:
        hit = want == step
    if hit:
        with contextlib.suppress(Exception):
            get_run_logger().warning("%s=%s: exiting the process now (test hook)", KILL_ENV, step)
        sys.stderr.write(f"hybridgrid: {KILL_ENV}={step}: killed after step {step!r}\n")
        sys.stderr.flush()
        os._exit(KILL_EXIT_CODE)


# ---------------------------------------------------------------- run identity


def run_name_from(param: str) -> str:
    """Flow run name = the site's name (from the `param` parameter, a model or a dict)."""
    from prefect.runtime import flow_run

    value = flow_run.parameters.get(param)
    if isinstance(value, dict):
        return str(value.get("name", "site"))
    if isinstance(value, str):
        return value
    return str(getattr(value, "name", "site"))


async def tag_run(kind: str, name: str) -> None:
    """Add `hybridgrid` and `<kind>:<name>` to the running flow run's tags (UI filters)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
        tags = sorted({*run.tags, naming.TAG, f"{kind}:{name}"})
        if tags != sorted(run.tags):
            await client.update_flow_run(run_id, tags=tags)


def call_counts() -> dict[str, int]:
    return {name: c.mutating for name, c in clouds.api_calls().items()}


def calls_since(before: dict[str, int]) -> dict[str, int]:
    now = call_counts()
    return {name: n - before.get(name, 0) for name, n in now.items() if n - before.get(name, 0)}


# ---------------------------------------------------------------- registry's home


def require_home(data: RegistryData, registry: str) -> HomeEntry:
    home = data.home
    if home is None or home.master is None or home.ssh_key_block is None:
        raise TopologyError(
            "home",
            f"registry {registry!r} has no home cluster",
            "run the bootstrap-home flow first (hybridgrid home bootstrap SPEC)",
        )
    if home.master not in home.host_keys:
        raise TopologyError(
            "home.master",
            f"no pinned host key for the master {home.master}",
            "rerun bootstrap-home so the master's host key is pinned",
        )
    return home


def topology_for(data: RegistryData, sites: list[RemoteSite]) -> Topology:
    home = data.home
    assert home is not None
    return Topology(
        wireguard=data.wireguard,
        home=HomeSite(
            name=home.name,
            cloud=home.cloud,
            master=MasterSpec(name=home.master),
            subnet=home.subnet,
            wg_address=home.wg_address,
            listen_port=home.listen_port,
            external_network=home.external_network,
        ),
        site_pool=data.site_pool,
        sites=sites,
    )


async def find_ssh_key(block: str) -> SSHKey | None:
    """The SSHKey block `block`, or None when no such block exists. A block that exists but
    holds no usable key raises `SSHKeyBlockError` (cause and fix): read-only, so a run can
    check its key blocks before it reserves or creates anything."""
    try:
        return await ssh_key(block)
    except ObjectNotFound:
        return None
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            return None
        raise


async def make_ssh_key(block: str, user: str) -> SSHKey:
    """A new ed25519 pair saved as SSHKey block `block` (never overwrites one)."""
    key = SSHKey.generate(user=user, comment=block)
    await key.asave(block, overwrite=False)
    use_ssh_key(block, key)
    get_run_logger().info("Made SSH key pair %s (ed25519) and saved it as a block", block)
    return key


async def ensure_ssh_key(block: str, user: str) -> SSHKey:
    """The SSHKey block `block`; made (ed25519) and saved when it does not exist yet."""
    return await find_ssh_key(block) or await make_ssh_key(block, user)


def door(cloud: str, address: str, host_keys: list[str], key: SSHKey) -> SSHTarget:
    """A master or VPN node at its public address, reached the way its cloud says
    (credentials block `cloud`'s `access`: direct, ProxyCommand or bastion)."""
    return front_door(address, host_keys, key, clouds.access(cloud), cloud)


async def master_with_floating_ip(
    home: HomeEntry, master: st.NodeFacts | None = None
) -> st.NodeFacts:
    """The master's port, fixed and floating IP and network MTU (a floating IP is allocated,
    tagged as the home's, when the adopted master has none). `master`: facts already read."""
    assert home.master is not None
    master = master or await st.lookup_node(home.cloud, home.master)
    if master.floating_ip is None:
        fip = await st.ensure_floating_ip(
            home.cloud, home.name, master.port_id, home.external_network
        )
        master = master.model_copy(update={"floating_ip": fip.address})
    return master


async def host_keys(
    data: RegistryData, site: str, cloud: str, server_id: str, name: str, role: str
) -> list[str]:
    """Pinned host keys: the registry's, while the server is the one they were pinned for
    (never re-pinned silently); read from the console for a new or replaced server."""
    entry = data.sites.get(site)
    if entry and entry.resource_ids.get(role) == server_id and entry.host_keys.get(name):
        return entry.host_keys[name]
    return await nodes.pin_host_keys(cloud, server_id, name)


# ---------------------------------------------------------------- the hub


@contextlib.asynccontextmanager
async def hub_lock(home: str) -> AsyncIterator[None]:
    """One editor of the master's wg0 and port at a time, across processes and hosts."""
    from prefect.concurrency.asyncio import concurrency

    await ensure_lock(hub_lock_name(home))
    # Lease 60 s (the server's minimum; the client renews at 75 %): a crashed holder blocks
    # the next editor at most ~75 s on a server that reaps expired leases (its repossessor).
    async with concurrency(
        hub_lock_name(home), occupy=1, strict=True, timeout_seconds=600, lease_duration=60
    ):
        yield
        # test hook: a kill with the hub's edit done and the lock still held (its lease left
        # to expire), deterministically — the concurrent spoke/routes steps only sometimes
        checkpoint("hub-applied")


def hub_lock_name(home: str) -> str:
    return f"hybridgrid-hub-{home}"


async def apply_hub(
    registry: str,
    site: str,
    entry_update: dict[str, Any],
    master_target: SSHTarget,
    key_block: str,
    tunnel_mtu: int,
) -> nodes.NodeSetup:
    """Record the site's keys and addresses, then apply the hub config with every site.

    Call under `hub_lock`: the config is rendered from the registry, so concurrent sites each
    see the others' peers."""

    def record(d: RegistryData) -> RegistryData:
        entry = d.sites[site]
        for k, v in entry_update.items():
            setattr(entry, k, v)
        d.sites[site] = type(entry).model_validate(entry.model_dump())
        return d

    data = await update_registry(record, registry)
    cfg = desired.hub_config(data, desired.hub_mtu(data, tunnel_mtu))
    res = await nodes.apply_wireguard(master_target, key_block, cfg)

    def record_home(d: RegistryData) -> None:
        assert d.home is not None
        d.home.public_key = res.public_key

    if data.home is None or data.home.public_key != res.public_key:
        await update_registry(record_home, registry)
    return res


# ---------------------------------------------------------------- verification


async def verify_site(
    *,
    home: HomeEntry,
    site_name: str,
    site_cloud: str,
    master: st.NodeFacts,
    master_target: SSHTarget,
    home_key_block: str,
    hub_pub: str,
    vpn: Any,
    vpn_fip: str,
    vpn_target: SSHTarget,
    site_key_block: str,
    spoke_pub: str,
    wiring: SiteWiring,
    worker_targets: list[tuple[Any, SSHTarget]],
    home_targets: list[tuple[st.NodeFacts, SSHTarget]],
) -> list[vf.LayerResult]:
    mtu = wiring.tunnel_mtu
    api = vf.verify_api(
        [
            (
                home.cloud,
                vf.ApiExpectation(
                    node=f"master {home.master}",
                    port_id=master.port_id,
                    wg_source=vpn_fip,
                    wg_port=home.listen_port,
                    pairs=[str(n) for n in wiring.home_must_cover],
                ),
            ),
            (
                site_cloud,
                vf.ApiExpectation(
                    node=f"VPN node {vpn.name}",
                    port_id=vpn.port_id,
                    wg_source=str(master.floating_ip),
                    wg_port=wiring.listen_port,
                    pairs=[str(n) for n in wiring.vpn_pairs],
                ),
            ),
        ]
    )
    wgl = vf.verify_wireguard(
        [
            vf.WgExpectation(
                node=f"master {home.master}",
                target=master_target,
                key_block=home_key_block,
                public_key=hub_pub,
                peers=[
                    ExpectedPeer(
                        public_key=spoke_pub,
                        name=vpn.name,
                        endpoint=f"{vpn_fip}:{wiring.listen_port}",
                        allowed_ips=list(wiring.hub_allowed_ips),
                    )
                ],
                only_listed=False,
            ),
            vf.WgExpectation(
                node=f"VPN node {vpn.name}",
                target=vpn_target,
                key_block=site_key_block,
                public_key=spoke_pub,
                peers=[
                    ExpectedPeer(
                        public_key=hub_pub,
                        name=home.master,
                        endpoint=f"{master.floating_ip}:{home.listen_port}",
                        allowed_ips=list(wiring.spoke_allowed_ips),
                    )
                ],
            ),
        ]
    )
    api_layer, wg_layers = await asyncio.gather(api, wgl)
    hub_addr, spoke_addr = str(home.wg_address), str(wiring.wg_address)
    tunnel_cause = "wg0 is up but packets do not cross: check AllowedIPs and the handshake"
    overlay = vf.verify_pings(
        "overlay ping",
        [
            vf.PingCheck(
                src_name=home.master or "master",
                src=master_target,
                key_block=home_key_block,
                dst_name=vpn.name,
                dst=spoke_addr,
                cause=tunnel_cause,
            ),
            vf.PingCheck(
                src_name=vpn.name,
                src=vpn_target,
                key_block=site_key_block,
                dst_name=home.master or "master",
                dst=hub_addr,
                cause=tunnel_cause,
            ),
        ],
    )
    worker_checks = []
    if worker_targets and home_targets:
        (sw, st_), (hw, ht) = worker_targets[0], home_targets[0]
        cause = (
            "the tunnel works but routed traffic does not: a missing allowed-address pair on "
            "the master's or VPN node's port, a missing route on a worker, or a security group "
            "without ingress from the remote subnet"
        )
        worker_checks = [
            vf.PingCheck(
                src_name=sw.name,
                src=st_,
                key_block=site_key_block,
                dst_name=hw.name,
                dst=str(hw.fixed_ip),
                cause=cause,
            ),
            vf.PingCheck(
                src_name=hw.name,
                src=ht,
                key_block=home_key_block,
                dst_name=sw.name,
                dst=str(sw.fixed_ip),
                cause=cause,
            ),
        ]
    workers = vf.verify_pings("worker ping", worker_checks)
    mtu_check = vf.verify_pings(
        "mtu",
        [
            vf.PingCheck(
                src_name=home.master or "master",
                src=master_target,
                key_block=home_key_block,
                dst_name=vpn.name,
                dst=spoke_addr,
                cause=f"full-size packets ({mtu} bytes, DF) are dropped: the tunnel MTU is too "
                f"large for the underlay (network MTU − 80 expected)",
            )
        ],
        size=mtu - 28,
    )
    overlay_l, workers_l, mtu_l = await asyncio.gather(overlay, workers, mtu_check)
    return [api_layer, *wg_layers, overlay_l, workers_l, mtu_l]


async def home_workers(cloud: str, master: st.NodeFacts) -> list[str]:
    """An adopted cluster's workers: the other servers on the master's network."""

    def find(conn: Any) -> list[str]:
        ids = {
            p.device_id
            for p in read(conn.network.ports, network_id=master.network_id)
            if (p.device_owner or "").startswith("compute:") and p.device_id != master.server_id
        }
        return sorted(read(conn.compute.get_server, i).name for i in ids)

    return await asyncio.to_thread(find, clouds.connection(cloud))
