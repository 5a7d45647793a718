"""Layered verification of a site's link (docs/architecture.md §9). Each layer returns a
typed verdict with the likely cause on failure, so a user reads *why*, not just *that*:

api objects (rules, pairs) → wg0 up with the expected peer/key/endpoint → handshake younger
than 180 s on both ends → ping over the overlay → worker ⇄ worker both ways → full-size ping
with DF set at the tunnel MTU.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from openstack.connection import Connection
from prefect import task
from pydantic import BaseModel, Field

from hybridgrid.cloudops.finder import read
from hybridgrid.drift import ping_command
from hybridgrid.layers import Layer, LayerResult
from hybridgrid.retry.policy import TRANSIENT
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks.node_tasks import session
from hybridgrid.wgstate import WgState
from hybridgrid.wireguard.state import ExpectedPeer, check_wg_state, read_wg_state


class ApiExpectation(BaseModel):
    """A port must admit UDP `port` from `source` and may send from each of `pairs`."""

    node: str
    port_id: str
    wg_source: str | None = None  # the peer's public IP
    wg_port: int = 51820
    pairs: list[str] = Field(default_factory=list)


def _rule_admits(rule: dict, source: str, port: int) -> bool:
    if rule.get("direction") != "ingress" or rule.get("ethertype", "IPv4") != "IPv4":
        return False
    if rule.get("protocol") not in (None, "udp", "17"):
        return False
    lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
    if lo is not None and not (lo <= port <= (hi or lo)):
        return False
    prefix = rule.get("remote_ip_prefix")
    if rule.get("remote_group_id"):
        return False  # group rules admit group members, not a peer across the internet
    return prefix is None or ipaddress.ip_address(source) in ipaddress.ip_network(prefix)


def check_api(conn: Connection, exp: ApiExpectation) -> list[str]:
    """Problems with one port's security-group rules and allowed-address pairs."""
    problems: list[str] = []
    port = read(conn.network.get_port, exp.port_id)
    if exp.wg_source:
        rules = [
            dict(r)
            for g in port.security_group_ids or []
            for r in read(conn.network.security_group_rules, security_group_id=g)
        ]
        if not any(_rule_admits(r, exp.wg_source, exp.wg_port) for r in rules):
            problems.append(
                f"{exp.node}: no security-group rule admits UDP {exp.wg_port} from "
                f"{exp.wg_source}/32 — the peer cannot start a handshake (rule deleted, or the "
                f"peer's floating IP changed)"
            )
    if exp.pairs and port.is_port_security_enabled is not False:
        have = {
            ipaddress.ip_network(p["ip_address"], strict=False)
            for p in port.allowed_address_pairs or []
        }
        for want in exp.pairs:
            net = ipaddress.ip_network(want, strict=False)
            if not any(net.subnet_of(h) for h in have):
                problems.append(
                    f"{exp.node}: allowed-address pair {want} missing on port {exp.port_id} — "
                    f"Neutron drops forwarded packets with that source"
                )
    return problems


@task(task_run_name="verify api objects", **TRANSIENT)
async def verify_api(checks: list[tuple[str, ApiExpectation]]) -> LayerResult:
    """`checks`: (cloud block name, expectation) pairs."""
    from hybridgrid.blocks.loading import connection

    results = await asyncio.gather(
        *(asyncio.to_thread(check_api, connection(cloud), exp) for cloud, exp in checks)
    )
    problems = [p for r in results for p in r]
    detail = "security-group rules and allowed-address pairs in place"
    return LayerResult(layer="api", ok=not problems, detail=detail, problems=problems)


class WgExpectation(BaseModel):
    node: str
    target: SSHTarget
    key_block: str
    public_key: str | None
    peers: list[ExpectedPeer]
    only_listed: bool = True  # a spoke has exactly one peer; the hub may have other sites


def check_wg(
    state: WgState | None, exp: WgExpectation, *, handshake: bool, now: float | None = None
) -> list[str]:
    verdict = check_wg_state(
        state,
        node=exp.node,
        public_key=exp.public_key,
        peers=exp.peers,
        check_handshake=handshake,
        now=now,
    )
    problems = verdict.problems
    if not exp.only_listed:
        problems = [p for p in problems if not p.startswith("unexpected peer")]
    if handshake:
        # the handshake layer reports only handshakes; config problems belong to the layer above
        problems = [p for p in problems if "handshake" in p]
    return problems


async def _read(exp: WgExpectation) -> WgState | None:
    async with session(exp.target, exp.key_block) as host:
        return await read_wg_state(host, missing_ok=True)


@task(task_run_name="verify wg0 and handshakes", **TRANSIENT)
async def verify_wireguard(
    expectations: list[WgExpectation], wait_handshake: float = 20.0
) -> list[LayerResult]:
    """Layers 'wireguard' (up, key, peers, endpoints) and 'handshake' (< 180 s, both ends).
    Waits up to `wait_handshake` seconds for a first handshake after a fresh bring-up."""
    deadline = time.monotonic() + wait_handshake
    while True:
        states = await asyncio.gather(*(_read(e) for e in expectations))
        conf = [
            p
            for s, e in zip(states, expectations, strict=True)
            for p in check_wg(s, e, handshake=False)
        ]
        hs = [
            p
            for s, e in zip(states, expectations, strict=True)
            for p in check_wg(s, e, handshake=True)
        ]
        if conf or not hs or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    wg_layer = LayerResult(
        layer="wireguard",
        ok=not conf,
        detail="wg0 up on both ends with the expected keys, peers and endpoints",
        problems=conf,
    )
    hs_layer = LayerResult(
        layer="handshake",
        ok=not hs and not conf,
        detail="latest handshake younger than 180 s on both ends",
        problems=hs or (["skipped: wg0 is not configured as expected"] if conf else []),
    )
    return [wg_layer, hs_layer]


async def _ping(target: SSHTarget, key_block: str, address: str, size: int | None) -> bool:
    async with session(target, key_block) as host:
        res = await host.run(
            ping_command(address, count=3, size=size),
            name=f"ping {address}",
            timeout=30,
            check=False,
        )
        return res.exit_status == 0


class PingCheck(BaseModel):
    src_name: str
    src: SSHTarget
    key_block: str
    dst_name: str
    dst: str
    cause: str  # what is most likely wrong when this ping fails


@task(task_run_name="verify {layer}", **TRANSIENT)
async def verify_pings(
    layer: Layer, checks: list[PingCheck], size: int | None = None
) -> LayerResult:
    if not checks:
        return LayerResult(layer=layer, ok=None, detail="nothing to ping (no workers)")
    results = await asyncio.gather(*(_ping(c.src, c.key_block, c.dst, size) for c in checks))
    problems = [
        f"{c.src_name} → {c.dst_name} ({c.dst}) fails: {c.cause}"
        for c, ok in zip(checks, results, strict=True)
        if not ok
    ]
    what = ", ".join(f"{c.src_name} → {c.dst_name}" for c in checks)
    if size is not None:
        what += f" with {size + 28}-byte packets, DF set"
    return LayerResult(layer=layer, ok=not problems, detail=what, problems=problems)
