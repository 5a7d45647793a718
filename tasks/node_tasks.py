"""Prefect tasks that act on the nodes themselves (over SSH with pinned host keys).

Each task opens its own connection (tasks may run on different workers), does one idempotent
thing, and returns a small typed result without secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network

from prefect import task
from pydantic import BaseModel

from hybridgrid.blocks.loading import connection, ssh_key
from hybridgrid.cloudops.preflight import UdpPortState, hub_port_command, parse_hub_port
from hybridgrid.cloudops.servers import console_output
from hybridgrid.retry.policy import TRANSIENT, with_retries
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.sshclient.client import RemoteHost
from hybridgrid.sshclient.connect import connect, wait_for_ssh
from hybridgrid.sshclient.hostkeys import parse_console_host_keys
from hybridgrid.wgconfig import WgConfig
from hybridgrid.wireguard import node as wg_node


@contextlib.asynccontextmanager
async def session(target: SSHTarget, key_block: str) -> AsyncIterator[RemoteHost]:
    """An SSH session to `target` with the private key of SSHKey block `key_block`."""
    async with connect(target, (await ssh_key(key_block)).private_key) as host:
        yield host


class NodeSetup(BaseModel):
    public_key: str
    tools: str  # present | installed
    action: str  # started | synced
    changed: bool


@task(task_run_name="the way in to {cloud}")
async def check_access(cloud: str, timeout: float = 45) -> str:
    """Pre-flight of a cloud's access setting, read-only: with a bastion, log in to it (its
    host key pinned, its key block's key) and leave — a refused or unpinned bastion fails
    the run before anything is made. Returns the access mode."""
    from hybridgrid.access import bastion_hop
    from hybridgrid.blocks.loading import access
    from hybridgrid.sshclient.client import hop_key
    from hybridgrid.sshclient.errors import SSHAccessError, SSHUnreachable

    way = access(cloud)
    bastion = bastion_hop(way, cloud)
    if bastion is None:
        return way.mode

    async def attempt() -> None:
        async with connect(bastion, await hop_key(bastion, None)):  # type: ignore[arg-type]
            pass

    try:
        await with_retries(
            attempt, attempts=100, deadline=timeout, what=f"bastion {bastion.label}",
            progress_every=15.0,
        )  # fmt: skip
    except SSHUnreachable as exc:
        raise SSHAccessError(bastion.label, exc.path or str(exc), exc.hint) from exc
    return way.mode


@task(task_run_name="read host keys of {name} from its console", **TRANSIENT)
async def pin_host_keys(cloud: str, server_id: str, name: str, timeout: float = 300) -> list[str]:
    """The host keys cloud-init printed on the console (waits until they appear)."""
    conn = connection(cloud)

    async def read() -> list[str]:
        text = await asyncio.to_thread(console_output, conn, server_id)
        return parse_console_host_keys(text, name).host_key_lines

    # poll at least every ~1 s (one GET each): the keys appear seconds after ACTIVE, and the
    # lag between their appearing and our reading them is on add-site's critical path
    return await with_retries(
        read,
        attempts=10_000,
        base=0.5,
        max_delay=1.0,
        deadline=timeout,
        what=f"the host keys of {name} on its console",
        progress_every=15.0,
    )


@task(task_run_name="wait for ssh on {target.label}")
async def ssh_ready(target: SSHTarget, key_block: str, timeout: float = 300) -> str:
    """Wait until the node runs commands over SSH; returns the host key it proved."""
    return await wait_for_ssh(target, (await ssh_key(key_block)).private_key, timeout=timeout)


@task(task_run_name="wireguard key on {target.label}", **TRANSIENT)
async def ensure_node_key(target: SSHTarget, key_block: str) -> str:
    """wireguard-tools present, private key made on the node (once); returns the public key."""
    async with session(target, key_block) as host:
        await wg_node.ensure_wireguard_tools(host)
        return await wg_node.ensure_wg_key(host)


@task(task_run_name="configure wg0 on {target.label}", **TRANSIENT)
async def apply_wireguard(
    target: SSHTarget, key_block: str, config: WgConfig, forwarding: bool = True
) -> NodeSetup:
    """Render + upload wg0.conf (key joined in on the node), bring up or syncconf, forward."""
    async with session(target, key_block) as host:
        tools = await wg_node.ensure_wireguard_tools(host)
        public = await wg_node.ensure_wg_key(host)
        res = await wg_node.apply_wg_config(host, config)
        if forwarding:
            await wg_node.enable_forwarding(host, clamp_mss=True)
    return NodeSetup(public_key=public, tools=tools, action=res.action, changed=res.changed)


@task(task_run_name="who holds UDP {port} on {target.label}", **TRANSIENT)
async def udp_port_state(target: SSHTarget, key_block: str, port: int) -> UdpPortState:
    """Read-only, one command: the sockets bound to UDP `port` and wg0's listen port."""
    async with session(target, key_block) as host:
        res = await host.run(hub_port_command(port), name=f"who holds UDP {port}", timeout=30)
    return parse_hub_port(port, res.stdout)


@task(task_run_name="routes on {target.label}", **TRANSIENT)
async def ensure_routes(
    target: SSHTarget, key_block: str, routes: list[IPv4Network], via: IPv4Address
) -> str:
    async with session(target, key_block) as host:
        return await wg_node.ensure_routes(host, routes, via)


@task(task_run_name="remove peer from wg0 on {target.label}", **TRANSIENT)
async def remove_wg_peer(target: SSHTarget, key_block: str, config: WgConfig) -> NodeSetup:
    """Apply the hub's config without the peer (syncconf: the other peers keep sessions)."""
    async with session(target, key_block) as host:
        public = await wg_node.ensure_wg_key(host)
        res = await wg_node.apply_wg_config(host, config)
    return NodeSetup(public_key=public, tools="present", action=res.action, changed=res.changed)
