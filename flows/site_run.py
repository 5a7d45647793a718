"""What one add-site run knows, step by step (typed, nothing optional once a step is done),
and what it derives from that without I/O: the site's registry update, the two ends of its
tunnel for the verification, and the site summary.

`Request` (validated) → `SiteRun` (allocated: what every later step reads) → `Network` →
`Servers` → `HostKeys` → `Logins` → `Link`; the steps are `flows.add_site_steps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from hybridgrid import desired
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.flows.forms import AddSiteOptions, SiteForm
from hybridgrid.flows.home import ReadyHome
from hybridgrid.flows.verification import TunnelEnd, Worker
from hybridgrid.model import ResolvedSite, Topology
from hybridgrid.records import FloatingIPRecord, KeypairRecord, PortRecord, Record, ServerRecord
from hybridgrid.registry_data import RegistryData, SiteUpdate
from hybridgrid.report import NodeLine, SiteSummary
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import site_tasks as st

T = TypeVar("T")

# ---------------------------------------------------------------- what the steps know


@dataclass(frozen=True)
class Request:
    """A validated request: the site planned against the registry, nothing created yet."""

    site: SiteForm
    options: AddSiteOptions
    data: RegistryData
    home: ReadyHome
    topo: Topology
    draft: ResolvedSite  # the plan before allocation (a new site's addresses may still move)
    key_block: str  # the site's SSHKey block

    @property
    def is_new(self) -> bool:
        return self.site.name not in self.data.sites


@dataclass(frozen=True)
class Preflight:
    master: st.NodeFacts
    home_key: SSHKey
    site_key: SSHKey | None  # None: the site's key block does not exist yet


@dataclass(frozen=True)
class SiteRun(Request):
    """What every step after allocation reads."""

    resolved: ResolvedSite  # the allocated site: subnet, WireGuard address, port
    site_key: SSHKey
    home_key: SSHKey


@dataclass(frozen=True)
class Network:
    """The site network, both groups and the key pair, and the home side as looked up."""

    net: st.SiteNetwork
    site_sg: st.GroupResult
    keypair: KeypairRecord
    home_sg: st.GroupResult
    master: st.NodeFacts  # with its floating IP
    home_workers: list[st.NodeFacts]
    master_target: SSHTarget
    tunnel_mtu: int


@dataclass(frozen=True)
class Servers:
    vpn: ServerRecord
    vpn_fip: FloatingIPRecord
    workers: list[ServerRecord]
    hub_public_key: str
    boot_wait: float  # seconds from launch until all were ACTIVE and the VPN node had its IP
    wiring: desired.SiteWiring  # everything the link must be, the floating IPs known


@dataclass(frozen=True)
class HostKeys:
    vpn: list[str]
    workers: list[list[str]]  # in the order of `Servers.workers`


@dataclass(frozen=True)
class Logins:
    """The nodes the run logs into: the VPN node, the site's workers through it, the home
    workers through the master."""

    vpn: SSHTarget
    workers: list[SSHTarget]
    home_workers: list[SSHTarget]


@dataclass(frozen=True)
class Link:
    spoke_public_key: str
    master_port: PortRecord
    vpn_port: PortRecord


def site_wiring(
    run: SiteRun, network_mtu: int, master: st.NodeFacts, vpn_fip: str | None
) -> desired.SiteWiring:
    """The site's wiring (`hybridgrid.desired`: plan, verification and the drift check read
    the same) with what the run has found so far."""
    facts = desired.facts_for(run.resolved, network_mtu=network_mtu, vpn_fip=vpn_fip)
    return desired.wiring(
        run.data, facts, master_fip=str(master.floating_ip), home_network_mtu=master.network_mtu
    )


# ---------------------------------------------------------------- what they derive


def site_update(
    run: SiteRun, net: Network, servers: Servers, keys: HostKeys, spoke_public_key: str
) -> SiteUpdate:
    """What the registry records about the built site (with the hub's apply)."""
    vpn, workers = servers.vpn, servers.workers
    return SiteUpdate(
        spoke_public_key=spoke_public_key,
        hub_public_key=servers.hub_public_key,
        spec=run.site,
        listen_port=run.resolved.listen_port,
        network_mtu=net.net.network.mtu,
        ssh_key_block=run.key_block,
        public_ips={"vpn": servers.vpn_fip.address},
        fixed_ips={"vpn": vpn.fixed_ip, **_by_worker(w.fixed_ip for w in workers)},
        host_keys={
            vpn.name: keys.vpn,
            **{w.name: k for w, k in zip(workers, keys.workers, strict=True)},
        },
        resource_ids={
            "net": net.net.network.id,
            "subnet": net.net.subnet.id,
            "router": net.net.router.id,
            "sg": net.site_sg.group.id,
            "vpn": vpn.id,
            "vpn-port": vpn.port_id,
            "vpn-fip": servers.vpn_fip.id or "",
            **_by_worker(w.id for w in workers),
        },
    )


def _by_worker(values: Iterable[T]) -> dict[str, T]:
    return {f"worker-{i}": v for i, v in enumerate(values, 1)}


def tunnel_ends(
    run: SiteRun, net: Network, servers: Servers, logins: Logins, link: Link
) -> tuple[TunnelEnd, TunnelEnd]:
    """The hub and the spoke as the verification expects them."""
    home, wiring = run.home, servers.wiring
    hub = TunnelEnd(
        role="master",
        name=home.master,
        cloud=home.cloud,
        port_id=net.master.port_id,
        public_ip=str(net.master.floating_ip),
        listen_port=home.listen_port,
        wg_address=str(home.wg_address),
        public_key=servers.hub_public_key,
        target=net.master_target,
        key_block=home.ssh_key_block,
        pairs=[str(n) for n in wiring.home_must_cover],
        allowed_ips=list(wiring.hub_allowed_ips),
    )
    spoke = TunnelEnd(
        role="VPN node",
        name=servers.vpn.name,
        cloud=run.site.cloud,
        port_id=servers.vpn.port_id,
        public_ip=str(servers.vpn_fip.address),
        listen_port=wiring.listen_port,
        wg_address=str(wiring.wg_address),
        public_key=link.spoke_public_key,
        target=logins.vpn,
        key_block=run.key_block,
        pairs=[str(n) for n in wiring.vpn_pairs],
        allowed_ips=list(wiring.spoke_allowed_ips),
    )
    return hub, spoke


def workers_across(
    run: SiteRun, net: Network, servers: Servers, logins: Logins
) -> tuple[Worker, Worker] | None:
    """The site's first worker and the home's first worker (None: a side has none)."""
    if not (logins.workers and logins.home_workers):
        return None
    site_w, home_w = servers.workers[0], net.home_workers[0]
    return (
        Worker(
            name=site_w.name,
            fixed_ip=str(site_w.fixed_ip),
            target=logins.workers[0],
            key_block=run.key_block,
        ),
        Worker(
            name=home_w.name,
            fixed_ip=str(home_w.fixed_ip),
            target=logins.home_workers[0],
            key_block=run.home.ssh_key_block,
        ),
    )


def site_summary(run: SiteRun, net: Network, servers: Servers, link: Link) -> SiteSummary:
    """The run's summary (artifacts and result), the verification layers still to come."""
    wiring = servers.wiring
    return SiteSummary(
        site=run.site.name,
        home=run.home.name,
        wireguard_cidr=str(run.data.wireguard.cidr),
        listen_port=run.resolved.listen_port,
        tunnel_mtu=net.tunnel_mtu,
        home_subnet=str(run.home.subnet),
        site_subnet=str(run.resolved.subnet),
        hub_allowed_ips=[str(n) for n in wiring.hub_allowed_ips],
        spoke_allowed_ips=[str(n) for n in wiring.spoke_allowed_ips],
        nodes=_node_lines(run, net, servers, link),
        resources=_resources(run, net, servers, link),
    )


def _node_lines(run: SiteRun, net: Network, servers: Servers, link: Link) -> list[NodeLine]:
    site, home, vpn = run.site, run.home, servers.vpn
    return [
        NodeLine(
            role="master (hub)",
            cloud=home.cloud,
            name=home.master,
            fixed_ip=str(net.master.fixed_ip),
            floating_ip=str(net.master.floating_ip),
            wg_address=str(home.wg_address),
            public_key=servers.hub_public_key,
        ),
        NodeLine(
            role="VPN node (spoke)",
            cloud=site.cloud,
            name=vpn.name,
            fixed_ip=str(vpn.fixed_ip),
            floating_ip=str(servers.vpn_fip.address),
            wg_address=str(run.resolved.wg_address),
            public_key=link.spoke_public_key,
        ),
        *(
            NodeLine(role=f"worker-{i}", cloud=site.cloud, name=w.name, fixed_ip=str(w.fixed_ip))
            for i, w in enumerate(servers.workers, 1)
        ),
    ]


def _resources(
    run: SiteRun, net: Network, servers: Servers, link: Link
) -> list[tuple[str, Record]]:
    site_side: list[Record] = [
        *net.net.records,
        net.site_sg.group,
        *net.site_sg.rules,
        net.keypair,
        servers.vpn,
        servers.vpn_fip,
        *servers.workers,
        link.vpn_port,
    ]
    home_side: list[Record] = [net.home_sg.group, *net.home_sg.rules, link.master_port]
    return [
        *((run.site.cloud, r) for r in site_side),
        *((run.home.cloud, r) for r in home_side),
    ]
