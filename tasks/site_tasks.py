"""Step-sized Prefect tasks for the flows: each does one step of a flow on one cloud
(docs/architecture.md §4).

They are async (the flows gather them: whatever can run concurrently does) and call the plain
idempotent functions of `hybridgrid.cloudops` in a worker thread (openstacksdk is blocking).
Step-sized rather than call-sized: fewer task runs keep the Prefect overhead small, and each
step still retries as a whole, which is safe because every function in it is idempotent.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import keystoneauth1.exceptions as ksa
import openstack.exceptions as osx
from prefect import task
from pydantic import BaseModel, Field

from hybridgrid import naming
from hybridgrid.blocks.loading import connection, name_of
from hybridgrid.cloudops import (
    finder,
    floating_ips,
    keypairs,
    networks,
    ports,
    removal,
    security_groups,
    servers,
)
from hybridgrid.cloudops.preflight import (
    PreflightError,
    PreflightReport,
    PreflightRequest,
    preflight,
)
from hybridgrid.cloudops.servers import ServerSpec
from hybridgrid.records import (
    FloatingIPRecord,
    KeypairRecord,
    NetworkRecord,
    PortRecord,
    Record,
    RouterRecord,
    RuleRecord,
    SecurityGroupRecord,
    ServerRecord,
    SubnetRecord,
)
from hybridgrid.retry.classify import PermanentError, is_transient
from hybridgrid.retry.messages import friendly_error
from hybridgrid.retry.policy import TRANSIENT
from hybridgrid.rules import RuleSpec


class CloudError(PermanentError):
    """A permanent OpenStack error (auth, quota, validation, ownership), said in one sentence
    with its fix; the SDK's exception stays as `__cause__`. Not retried."""


async def _run(fn, conn, *args, **kwargs):
    """Run a blocking SDK step on `conn` in a thread; a permanent API error becomes one
    sentence with its fix (transient ones propagate unchanged, for the retry policy)."""
    try:
        return await asyncio.to_thread(fn, conn, *args, **kwargs)
    except (osx.SDKException, ksa.ClientException) as exc:
        if is_transient(exc):
            raise
        raise CloudError(friendly_error(exc, credentials_block=name_of(conn))) from exc


@task(task_run_name="pre-flight {req.cloud}", **TRANSIENT)
async def preflight_cloud(req: PreflightRequest) -> PreflightReport:
    report = await _run(preflight, connection(req.cloud), req)
    if not report.ok:
        raise PreflightError(report)
    return report


class SiteNetwork(BaseModel):
    network: NetworkRecord
    subnet: SubnetRecord
    router: RouterRecord

    @property
    def records(self) -> list[Record]:
        return [self.network, self.subnet, self.router]


@task(task_run_name="network, subnet and router of {site}", **TRANSIENT)
async def ensure_site_network(
    cloud: str, site: str, cidr: str, external_network: str
) -> SiteNetwork:
    conn = connection(cloud)
    ext = await _run(networks.external_network, conn, external_network)
    net = await _run(networks.ensure_network, conn, site, naming.resource_name(site, naming.NET))
    sub = await _run(
        networks.ensure_subnet, conn, site, naming.resource_name(site, naming.SUBNET), net.id, cidr
    )
    router = await _run(
        networks.ensure_router,
        conn,
        site,
        naming.resource_name(site, naming.ROUTER),
        ext.id,
        sub.id,
    )
    return SiteNetwork(network=net, subnet=sub, router=router)


class GroupResult(BaseModel):
    group: SecurityGroupRecord
    rules: list[RuleRecord] = Field(default_factory=list)


@task(task_run_name="security group {name}", **TRANSIENT)
async def ensure_group(
    cloud: str, site: str, name: str, rules: list[RuleSpec], rule_owner: str | None = None
) -> GroupResult:
    """The group (owned by `site`) with `rules` (marked as added by `rule_owner`)."""
    conn = connection(cloud)
    group = await _run(security_groups.ensure_security_group, conn, site, name)
    recs = await _run(security_groups.ensure_rules, conn, group.id, rule_owner or site, rules)
    return GroupResult(group=group, rules=recs)


@task(task_run_name="rules for {owner} in group {group_id}", **TRANSIENT)
async def ensure_rules(
    cloud: str, group_id: str, owner: str, rules: list[RuleSpec]
) -> list[RuleRecord]:
    return await _run(security_groups.ensure_rules, connection(cloud), group_id, owner, rules)


@task(task_run_name="key pair {name}", **TRANSIENT)
async def ensure_keypair(cloud: str, name: str, public_key: str) -> KeypairRecord:
    return await _run(keypairs.ensure_keypair, connection(cloud), name, public_key)


@task(task_run_name="server {spec.name}", **TRANSIENT)
async def ensure_server(
    cloud: str, spec: ServerSpec, timeout: float = 600, poll: float = 1.0
) -> ServerRecord:
    return await _run(servers.ensure_server, connection(cloud), spec, timeout=timeout, poll=poll)


@task(task_run_name="floating IP for {site} port {port_id}", **TRANSIENT)
async def ensure_floating_ip(
    cloud: str, site: str, port_id: str, external_network: str
) -> FloatingIPRecord:
    conn = connection(cloud)
    ext = await _run(networks.external_network, conn, external_network)
    return await _run(floating_ips.ensure_floating_ip, conn, site, port_id, ext.id)


@task(task_run_name="port {port_id}: pairs and groups", **TRANSIENT)
async def ensure_port(
    cloud: str, port_id: str, pairs: list[str], group_ids: list[str]
) -> PortRecord:
    """Merge allowed-address pairs and security groups into a port (never drops others')."""
    conn = connection(cloud)
    updated = False
    if group_ids:
        rec = await _run(ports.ensure_port_security_groups, conn, port_id, group_ids)
        updated |= rec.action == "updated"
    if pairs:
        rec = await _run(ports.ensure_allowed_address_pairs, conn, port_id, pairs)
        updated |= rec.action == "updated"
    port = await _run(lambda c: finder.read(c.network.get_port, port_id), conn)
    return ports.port_record(conn, port, action="updated" if updated else "reused")


class NodeFacts(BaseModel):
    """An existing server as the flows need it."""

    name: str
    server_id: str
    port_id: str
    network_id: str
    fixed_ip: IPv4Address
    floating_ip: IPv4Address | None = None
    network_mtu: int = 1450
    security_group_ids: list[str] = Field(default_factory=list)
    allowed_address_pairs: list[str] = Field(default_factory=list)
    port_security: bool = True


def node_facts(conn, name: str, site: str | None = None) -> NodeFacts:
    if site is not None:
        server = servers.find_server(conn, site, name)
    else:
        server = finder.find_or_none(conn.compute.find_server, name)
        if server is not None:
            server = finder.read(conn.compute.get_server, server.id)
    if server is None:
        raise LookupError(
            f"server {name!r} not found: check the name (the master to adopt must exist)"
        )
    port = servers.server_port(conn, server.id)
    net = finder.read(conn.network.get_network, port.network_id)
    fip = floating_ips.floating_ip_of_port(conn, port.id)
    return NodeFacts(
        name=name,
        server_id=server.id,
        port_id=port.id,
        network_id=port.network_id,
        fixed_ip=port.fixed_ips[0]["ip_address"],
        floating_ip=fip,
        network_mtu=net.mtu or 1450,
        security_group_ids=list(port.security_group_ids or []),
        allowed_address_pairs=[p["ip_address"] for p in port.allowed_address_pairs or []],
        port_security=port.is_port_security_enabled is not False,
    )


@task(task_run_name="look up {name}", **TRANSIENT)
async def lookup_node(cloud: str, name: str, site: str | None = None) -> NodeFacts:
    return await _run(node_facts, connection(cloud), name, site)


@task(task_run_name="remove {site}'s resources from {cloud}", **TRANSIENT)
async def remove_site_resources(cloud: str, site: str, timeout: float = 300) -> list[Record]:
    return await _run(removal.remove_site_resources, connection(cloud), site, timeout=timeout)


@task(task_run_name="remove {owner}'s rules from group {group_id}", **TRANSIENT)
async def remove_rules(cloud: str, group_id: str, owner: str) -> list[RuleRecord]:
    return await _run(security_groups.remove_rules, connection(cloud), group_id, owner)


@task(task_run_name="remove pairs from port {port_id}", **TRANSIENT)
async def remove_pairs(cloud: str, port_id: str, cidrs: list[str]) -> PortRecord:
    return await _run(ports.remove_allowed_address_pairs, connection(cloud), port_id, cidrs)
