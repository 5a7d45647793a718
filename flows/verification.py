"""The layered verification of one site's link (docs/architecture.md §9), wired from the two
ends of its tunnel: the API objects, wg0 and its handshakes, overlay pings, worker-to-worker
pings across the link, and full-size packets. What each layer expects is the site's wiring
(`hybridgrid.desired`); the checks themselves are `hybridgrid.tasks.verify`."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network

from pydantic import BaseModel, ConfigDict

from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import verify as vf
from hybridgrid.wireguard.state import ExpectedPeer

TUNNEL_CAUSE = "wg0 is up but packets do not cross: check AllowedIPs and the handshake"
ROUTED_CAUSE = (
    "the tunnel works but routed traffic does not: a missing allowed-address pair on the "
    "master's or VPN node's port, a missing route on a worker, or a security group without "
    "ingress from the remote subnet"
)


class VerificationFailed(RuntimeError):
    """The site was built but a verification layer failed (the message names the cause)."""


class TunnelEnd(BaseModel):
    """One end of a site's tunnel (the master, or the site's VPN node) as it must be."""

    model_config = ConfigDict(frozen=True)

    role: str  # "master" or "VPN node"
    name: str
    cloud: str
    port_id: str
    public_ip: str
    listen_port: int
    wg_address: str
    public_key: str
    target: SSHTarget
    key_block: str
    pairs: list[str]  # what its port's allowed-address pairs must cover
    allowed_ips: list[IPv4Network]  # its AllowedIPs for the other end

    @property
    def node(self) -> str:
        return f"{self.role} {self.name}"


class Worker(BaseModel):
    """A worker that pings across the link."""

    model_config = ConfigDict(frozen=True)

    name: str
    fixed_ip: str
    target: SSHTarget
    key_block: str


async def verify_site(
    hub: TunnelEnd, spoke: TunnelEnd, mtu: int, workers: tuple[Worker, Worker] | None
) -> list[vf.LayerResult]:
    """Every layer, in order: api, wireguard (one per end), overlay ping, worker ping, mtu.
    `workers`: a site worker and a home worker (None: the worker layer is n/a)."""
    api, wg_layers = await asyncio.gather(
        vf.verify_api([_api(hub, spoke), _api(spoke, hub)]),
        vf.verify_wireguard([_wg(hub, spoke, only_listed=False), _wg(spoke, hub)]),
    )
    overlay, routed, full_size = await asyncio.gather(
        vf.verify_pings("overlay ping", [_overlay(hub, spoke), _overlay(spoke, hub)]),
        vf.verify_pings("worker ping", _across(*workers) if workers else []),
        vf.verify_pings("mtu", [_full_size(hub, spoke, mtu)], size=mtu - 28),
    )
    return [api, *wg_layers, overlay, routed, full_size]


def _api(end: TunnelEnd, peer: TunnelEnd) -> tuple[str, vf.ApiExpectation]:
    expectation = vf.ApiExpectation(
        node=end.node,
        port_id=end.port_id,
        wg_source=peer.public_ip,
        wg_port=end.listen_port,
        pairs=end.pairs,
    )
    return end.cloud, expectation


def _wg(end: TunnelEnd, peer: TunnelEnd, only_listed: bool = True) -> vf.WgExpectation:
    # a spoke has exactly one peer; the hub has the other sites too
    expected = ExpectedPeer(
        public_key=peer.public_key,
        name=peer.name,
        endpoint=f"{peer.public_ip}:{peer.listen_port}",
        allowed_ips=list(end.allowed_ips),
    )
    return vf.WgExpectation(
        node=end.node,
        target=end.target,
        key_block=end.key_block,
        public_key=end.public_key,
        peers=[expected],
        only_listed=only_listed,
    )


def _overlay(src: TunnelEnd, dst: TunnelEnd) -> vf.PingCheck:
    return vf.PingCheck(
        src_name=src.name,
        src=src.target,
        key_block=src.key_block,
        dst_name=dst.name,
        dst=dst.wg_address,
        cause=TUNNEL_CAUSE,
    )


def _across(site_worker: Worker, home_worker: Worker) -> list[vf.PingCheck]:
    return [_worker_ping(site_worker, home_worker), _worker_ping(home_worker, site_worker)]


def _worker_ping(src: Worker, dst: Worker) -> vf.PingCheck:
    return vf.PingCheck(
        src_name=src.name,
        src=src.target,
        key_block=src.key_block,
        dst_name=dst.name,
        dst=dst.fixed_ip,
        cause=ROUTED_CAUSE,
    )


def _full_size(src: TunnelEnd, dst: TunnelEnd, mtu: int) -> vf.PingCheck:
    return _overlay(src, dst).model_copy(
        update={
            "cause": f"full-size packets ({mtu} bytes, DF) are dropped: the tunnel MTU is too "
            f"large for the underlay (network MTU − 80 expected)"
        }
    )
