"""WireGuard key rotation on a node, as Prefect tasks over `hybridgrid.wireguard`'s staged
commands: stage (new key beside the old one) → activate (+ syncconf) → confirm a fresh
handshake → forget the old key; or roll back. Keys never leave the node: only public keys
come back."""

from __future__ import annotations

import asyncio
import shlex
import time
from ipaddress import IPv4Address

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from hybridgrid.retry.policy import TRANSIENT, progress_logger
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks.node_tasks import session
from hybridgrid.wgconfig import WgConfig
from hybridgrid.wireguard import commands as wg_commands
from hybridgrid.wireguard import node as wg_node
from hybridgrid.wireguard.render import WgPaths
from hybridgrid.wireguard.state import read_wg_state

STEP = dict(persist_result=False)


@task(task_run_name="stage a new wireguard key on {target.label}", **TRANSIENT, **STEP)
async def stage_key(target: SSHTarget, key_block: str) -> str:
    """The next key's public half (made once; a rerun reuses the staged key)."""
    async with session(target, key_block) as host:
        return await wg_node.stage_key(host)


@task(task_run_name="switch {target.label} to its new key", **TRANSIENT, **STEP)
async def activate_key(target: SSHTarget, key_block: str, config: WgConfig) -> str:
    async with session(target, key_block) as host:
        public, _ = await wg_node.activate_key(host, config)
        return public


@task(task_run_name="roll {target.label} back to its previous key", **TRANSIENT, **STEP)
async def rollback_key(target: SSHTarget, key_block: str, config: WgConfig) -> str:
    async with session(target, key_block) as host:
        public, _ = await wg_node.rollback_key(host, config)
        return public


@task(task_run_name="delete the previous key on {target.label}", **TRANSIENT, **STEP)
async def forget_previous_key(target: SSHTarget, key_block: str) -> bool:
    """True when no previous or staged key file is left on the node."""
    p = WgPaths()
    async with session(target, key_block) as host:
        await host.run(wg_commands.forget_previous_key_command(p), name="wg forget previous key")
        res = await host.run(
            f"test ! -e {shlex.quote(p.previous_key)} && test ! -e {shlex.quote(p.staged_key)}",
            name="check no old key",
            check=False,
        )
        return res.exit_status == 0


class HandshakeWait(BaseModel):
    target: SSHTarget
    key_block: str
    peer: str  # the peer's public key
    nudge: IPv4Address | None = None  # ping this overlay address to trigger a handshake


@task(task_run_name="wait for fresh handshakes", cache_policy=NO_CACHE, **STEP)
async def wait_handshakes(waits: list[HandshakeWait], since: float, timeout: float) -> list[str]:
    """Poll until every node shows a handshake with its peer at or after `since` (epoch s);
    returns the nodes that did not get one within `timeout` (empty: all fresh)."""

    async def one(w: HandshakeWait) -> bool:
        started = reported = time.monotonic()
        deadline = started + timeout
        async with session(w.target, w.key_block) as host:
            while True:
                if w.nudge is not None:
                    await host.run(
                        f"ping -n -q -c 1 -W 1 {w.nudge} >/dev/null 2>&1 || true",
                        name="nudge handshake",
                        timeout=10,
                    )
                state = await read_wg_state(host, missing_ok=True)
                peer = state.peer(w.peer) if state else None
                # the kernel's clock and ours are the same host's; allow a second of rounding
                if peer is not None and peer.latest_handshake >= int(since) - 1:
                    return True
                now = time.monotonic()
                if now > deadline:
                    return False
                if now - reported >= 15:
                    reported = now
                    progress_logger().info(
                        "still waiting for a fresh handshake on %s (%.0f s so far, %.0f s left)",
                        w.target.label,
                        now - started,
                        deadline - now,
                    )
                await asyncio.sleep(1.0)

    results = await asyncio.gather(*(one(w) for w in waits), return_exceptions=True)
    return [w.target.label for w, ok in zip(waits, results, strict=True) if ok is not True]
