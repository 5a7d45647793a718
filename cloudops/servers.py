"""Idempotent OpenStack operations: find by name + ownership tags, then create, reuse or update.

Every function here is plain (takes an `openstack.connection.Connection`) so it can be tested
and composed; `tasks/site_tasks.py` runs them as step-sized Prefect tasks with the retry policy.
Rules (docs/architecture.md §3): none found → create; one → compare and update; several →
a clear error, never a guess. Removal only ever deletes what carries our tags (or, for rules
on a group we share, our description).

Retries: reads retry in place (`read`), writes never do — a failed task is retried whole by
Prefect, finds what an earlier attempt made, and goes on from there, so a retry never
duplicates a resource. Every `ensure_*` rerun on a converged cloud makes no mutating call.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from openstack import exceptions as osexc
from openstack.connection import Connection
from pydantic import BaseModel, Field

from hybridgrid import naming
from hybridgrid.rules import RuleSpec as RuleSpec  # moved to the core; re-exported
from hybridgrid.tasks.retry import PermanentError, is_transient, progress_logger

Action = Literal["created", "reused", "updated", "deleted", "absent"]

ROLE_KEY = "hybridgrid-role"  # server metadata: vpn, worker, master


def rule_description(site: str) -> str:
    """Security-group rules have no tags: their description marks the site that added them."""
    return naming.site_tag(site)


class OwnershipError(PermanentError):
    """Several resources carry the same name and our tags: refuse to guess which is ours."""


class ResourceConflict(PermanentError):
    """A resource of ours exists but differs in a way we must not change silently."""


class ServerBootFailed(PermanentError):
    """A server went to ERROR more often than we replace it."""


class ServerStuck(PermanentError):
    """A server neither became ACTIVE nor went away in time (waiting again would not help)."""


class Record(BaseModel):
    kind: str
    name: str
    id: str | None = None
    action: Action


class NetworkRecord(Record):
    kind: str = "network"
    mtu: int = 1450


class SubnetRecord(Record):
    kind: str = "subnet"
    cidr: str
    gateway_ip: str | None = None
    network_id: str


class RouterRecord(Record):
    kind: str = "router"
    external_ip: str | None = None


class SecurityGroupRecord(Record):
    kind: str = "security_group"


class RuleRecord(Record):
    kind: str = "security_group_rule"


class KeypairRecord(Record):
    kind: str = "keypair"


class ServerRecord(Record):
    kind: str = "server"
    status: str
    port_id: str | None = None
    fixed_ip: str | None = None
    replaced: int = 0


class FloatingIPRecord(Record):
    kind: str = "floating_ip"
    address: str
    port_id: str | None = None


class PortRecord(Record):
    kind: str = "port"
    fixed_ip: str
    network_id: str
    allowed_address_pairs: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    port_security_enabled: bool = True


def wireguard_rule(peer_ip: str, port: int = 51820) -> RuleSpec:
    """UDP to the WireGuard port from one peer's public address (/32)."""
    return RuleSpec(protocol="udp", port_min=port, port_max=port, remote_ip_prefix=f"{peer_ip}/32")


def ssh_rule(source: str | None = None) -> RuleSpec:
    """TCP 22, from `source` (a CIDR) or from anywhere."""
    return RuleSpec(protocol="tcp", port_min=22, port_max=22, remote_ip_prefix=source)


def subnet_rule(cidr: str) -> RuleSpec:
    """All ingress from a remote site's subnet (or the WireGuard CIDR)."""
    return RuleSpec(remote_ip_prefix=cidr)


def _rule_key(rule: Any) -> tuple[Any, ...]:
    # "from anywhere" is either no prefix or 0.0.0.0/0, depending on who made the rule.
    prefix = _norm(rule.remote_ip_prefix) if rule.remote_ip_prefix else None
    if prefix == "0.0.0.0/0":
        prefix = None
    return (
        rule.direction,
        rule.ether_type or "IPv4",
        rule.protocol,
        rule.port_range_min,
        rule.port_range_max,
        prefix,
        rule.remote_group_id,
    )


# ---------------------------------------------------------------------------------------------
# finding what is ours


def _only(items: Iterable[Any], kind: str, name: str) -> Any | None:
    found = list(items)
    if len(found) > 1:
        ids = ", ".join(sorted(x.id for x in found))
        raise OwnershipError(
            f"{len(found)} {kind}s named {name!r} carry hybridgrid's tags ({ids}); "
            f"hybridgrid will not guess which is its own: delete the extra ones, then rerun"
        )
    return found[0] if found else None


# Reads retry in place: they are safe to repeat, and a task with a dozen reads would otherwise
# need many whole-task retries at a modest error rate. Writes are never repeated here: the
# task retries, finds what an earlier attempt made, and goes on from there (no duplicates).
READ_ATTEMPTS = 4
READ_BACKOFF = 0.2  # seconds, doubling, ±50 % jitter


def read(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a read-only SDK method (lists are materialised), retrying transient errors."""
    for attempt in range(READ_ATTEMPTS):
        try:
            out = fn(*args, **kwargs)
            return list(out) if isinstance(out, Iterator) else out
        except Exception as exc:
            if attempt == READ_ATTEMPTS - 1 or not is_transient(exc):
                raise
            time.sleep(READ_BACKOFF * 2**attempt * random.uniform(0.5, 1.5))  # noqa: S311
    raise AssertionError("unreachable")


def find_or_none(finder: Callable[..., Any], name_or_id: str) -> Any | None:
    """`conn.<service>.find_<kind>` by name or id, None when missing (the SDK's own
    `ignore_missing=True` is deprecated)."""
    try:
        return read(finder, name_or_id, ignore_missing=False)
    except osexc.NotFoundException:
        return None


def tag_filter(site: str) -> str:
    """Neutron's `tags=` filter (all must match), in its documented comma-separated form."""
    return ",".join(naming.tags(site))


def _owned(items: Iterable[Any], site: str) -> list[Any]:
    # Neutron filters by tags already; checking again costs nothing and guards a cloud that
    # silently ignores an unknown filter (older Neutron without standard-attr-tag).
    want = set(naming.tags(site))
    return [x for x in items if want <= set(getattr(x, "tags", None) or [])]


def find_network(conn: Connection, site: str, name: str) -> Any | None:
    found = read(conn.network.networks, name=name, tags=tag_filter(site))
    return _only(_owned(found, site), "network", name)


def find_subnet(conn: Connection, site: str, name: str) -> Any | None:
    found = read(conn.network.subnets, name=name, tags=tag_filter(site))
    return _only(_owned(found, site), "subnet", name)


def find_router(conn: Connection, site: str, name: str) -> Any | None:
    found = read(conn.network.routers, name=name, tags=tag_filter(site))
    return _only(_owned(found, site), "router", name)


def find_security_group(conn: Connection, site: str, name: str) -> Any | None:
    found = read(conn.network.security_groups, name=name, tags=tag_filter(site))
    return _only(_owned(found, site), "security group", name)


def find_server(conn: Connection, site: str, name: str) -> Any | None:
    # Nova's name filter is a regular expression: anchor it, then keep only exact names that
    # carry our metadata.
    servers = read(conn.compute.servers, name=f"^{re.escape(name)}$")
    ours = [s for s in servers if s.name == name and naming.site_of_metadata(s.metadata) == site]
    return _only(ours, "server", name)


# ---------------------------------------------------------------------------------------------
# network, subnet, router


def ensure_network(conn: Connection, site: str, name: str) -> NetworkRecord:
    net = find_network(conn, site, name)
    if net is not None:
        return NetworkRecord(name=name, id=net.id, mtu=net.mtu or 1450, action="reused")
    net = conn.network.create_network(name=name, tags=naming.tags(site))
    return NetworkRecord(name=name, id=net.id, mtu=net.mtu or 1450, action="created")


def ensure_subnet(
    conn: Connection,
    site: str,
    name: str,
    network_id: str,
    cidr: str,
    dns_nameservers: list[str] | None = None,
) -> SubnetRecord:
    sub = find_subnet(conn, site, name)
    if sub is not None:
        if ipaddress.ip_network(sub.cidr) != ipaddress.ip_network(cidr):
            raise ResourceConflict(
                f"subnet {name} ({sub.id}) has CIDR {sub.cidr}, the site wants {cidr}: a "
                f"subnet's CIDR cannot change — remove the site (hybridgrid site remove) or "
                f"put {sub.cidr} back in the spec"
            )
        return SubnetRecord(
            name=name,
            id=sub.id,
            cidr=sub.cidr,
            gateway_ip=sub.gateway_ip,
            network_id=sub.network_id,
            action="reused",
        )
    sub = conn.network.create_subnet(
        name=name,
        network_id=network_id,
        ip_version=4,
        cidr=cidr,
        dns_nameservers=dns_nameservers or [],
        tags=naming.tags(site),
    )
    return SubnetRecord(
        name=name,
        id=sub.id,
        cidr=sub.cidr,
        gateway_ip=sub.gateway_ip,
        network_id=sub.network_id,
        action="created",
    )


def external_network(conn: Connection, name: str) -> Any:
    net = find_or_none(conn.network.find_network, name)
    if net is None or not net.is_router_external:
        raise LookupError(
            f"external network {name!r} not found on this cloud: set external_network to one "
            f"of: {', '.join(_external_names(conn))}"
        )
    return net


def _external_names(conn: Connection) -> list[str]:
    return sorted(n.name for n in read(conn.network.networks, is_router_external=True))


def ensure_router(
    conn: Connection, site: str, name: str, external_network_id: str, subnet_id: str
) -> RouterRecord:
    router = find_router(conn, site, name)
    action: Action = "reused"
    if router is None:
        router = conn.network.create_router(
            name=name,
            external_gateway_info={"network_id": external_network_id},
            tags=naming.tags(site),
        )
        action = "created"
    elif (router.external_gateway_info or {}).get("network_id") != external_network_id:
        router = conn.network.update_router(
            router, external_gateway_info={"network_id": external_network_id}
        )
        action = "updated"
    attached = any(
        any(ip.get("subnet_id") == subnet_id for ip in (p.fixed_ips or []))
        for p in read(conn.network.ports, device_id=router.id)
    )
    if not attached:
        conn.network.add_interface_to_router(router, subnet=subnet_id)
        action = "created" if action == "created" else "updated"
    ext_ips = (router.external_gateway_info or {}).get("external_fixed_ips") or []
    return RouterRecord(
        name=name,
        id=router.id,
        action=action,
        external_ip=ext_ips[0]["ip_address"] if ext_ips else None,
    )


# ---------------------------------------------------------------------------------------------
# security groups and rules


def ensure_security_group(
    conn: Connection, site: str, name: str, description: str = ""
) -> SecurityGroupRecord:
    sg = find_security_group(conn, site, name)
    if sg is not None:
        return SecurityGroupRecord(name=name, id=sg.id, action="reused")
    sg = conn.network.create_security_group(
        name=name,
        description=description or f"hybridgrid site {site}",
        tags=naming.tags(site),
    )
    return SecurityGroupRecord(name=name, id=sg.id, action="created")


def ensure_rules(
    conn: Connection, group_id: str, owner_site: str, rules: list[RuleSpec]
) -> list[RuleRecord]:
    """Each wanted rule exists once in the group. Rules we add carry a description naming
    the site, so a later removal takes exactly those (groups may be shared, e.g. the hub's)."""
    existing = {
        _rule_key(r): r for r in read(conn.network.security_group_rules, security_group_id=group_id)
    }
    out: list[RuleRecord] = []
    for spec in rules:
        have = existing.get(spec.key())
        if have is not None:
            out.append(RuleRecord(name=spec.describe(), id=have.id, action="reused"))
            continue
        try:
            rule = conn.network.create_security_group_rule(
                security_group_id=group_id,
                direction=spec.direction,
                ethertype="IPv4",
                protocol=spec.protocol,
                port_range_min=spec.port_min,
                port_range_max=spec.port_max,
                remote_ip_prefix=spec.remote_ip_prefix,
                description=rule_description(owner_site),
            )
        except osexc.ConflictException:
            # Created by an earlier attempt whose reply was lost: Neutron says "rule exists".
            again = {
                _rule_key(r): r
                for r in read(conn.network.security_group_rules, security_group_id=group_id)
            }
            if spec.key() not in again:
                raise
            rule = again[spec.key()]
        existing[spec.key()] = rule
        out.append(RuleRecord(name=spec.describe(), id=rule.id, action="created"))
    return out


def remove_rules(
    conn: Connection, group_id: str, owner_site: str, keep: list[RuleSpec] | None = None
) -> list[RuleRecord]:
    """Delete the rules this site added to a group (by description), except those in `keep`."""
    keep_keys = {r.key() for r in keep or []}
    out: list[RuleRecord] = []
    for r in read(conn.network.security_group_rules, security_group_id=group_id):
        if r.description == rule_description(owner_site) and _rule_key(r) not in keep_keys:
            conn.network.delete_security_group_rule(r, ignore_missing=True)
            out.append(RuleRecord(name=r.description, id=r.id, action="deleted"))
    return out


# ---------------------------------------------------------------------------------------------
# key pairs and servers


def ensure_keypair(conn: Connection, name: str, public_key: str) -> KeypairRecord:
    kp = find_or_none(conn.compute.find_keypair, name)
    want = " ".join(public_key.split()[:2])
    if kp is not None:
        if " ".join((kp.public_key or "").split()[:2]) != want:
            raise ResourceConflict(
                f"key pair {name} exists with a different public key: it was made for another "
                f"SSH key block — delete the key pair (openstack keypair delete {name}) or use "
                f"the SSH key block it was made from"
            )
        return KeypairRecord(name=name, id=kp.name, action="reused")
    try:
        kp = conn.compute.create_keypair(name=name, public_key=public_key)
    except osexc.ConflictException:
        # Made by an earlier attempt whose answer was lost; if not, the 409 was something
        # else (transient) and the retry policy takes it from here.
        kp = find_or_none(conn.compute.find_keypair, name)
        if kp is None:
            raise
    return KeypairRecord(name=name, id=kp.name, action="created")


def server_port(conn: Connection, server_id: str, network_id: str | None = None) -> Any:
    ports = [
        p
        for p in read(conn.network.ports, device_id=server_id)
        if network_id is None or p.network_id == network_id
    ]
    if not ports:
        raise LookupError(
            f"server {server_id} has no port" + (f" on network {network_id}" if network_id else "")
        )
    return sorted(ports, key=lambda p: p.id)[0]


def port_record(
    conn: Connection, port: Any, name: str = "", action: Action = "reused"
) -> PortRecord:
    return PortRecord(
        name=name or port.name or port.id,
        id=port.id,
        action=action,
        fixed_ip=port.fixed_ips[0]["ip_address"],
        network_id=port.network_id,
        allowed_address_pairs=[p["ip_address"] for p in port.allowed_address_pairs or []],
        security_group_ids=list(port.security_group_ids or []),
        port_security_enabled=port.is_port_security_enabled is not False,
    )


class ServerSpec(BaseModel):
    name: str
    site: str
    role: str
    image: str
    flavor: str
    network_id: str
    key_name: str | None = None
    security_groups: list[str] = Field(default_factory=list)
    user_data: str | None = None  # plain text (cloud-config); encoded for Nova here


# Seconds between progress lines while a server boots.
PROGRESS_EVERY = 15.0

# States a server does not leave by itself: waiting for ACTIVE would only time out.
_PARKED = {"SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED", "RESCUE", "SOFT_DELETED"}


def _wait_active(conn: Connection, server: Any, timeout: float, poll: float) -> Any:
    """Poll until ACTIVE, ERROR or SHUTOFF (returned), or a parked state (a clear error);
    a progress line goes to the run's log every ~15 s."""
    started = time.monotonic()
    deadline = started + timeout
    reported = started
    while True:
        server = read(conn.compute.get_server, server.id)
        if server.status in ("ACTIVE", "ERROR", "SHUTOFF"):
            return server
        now = time.monotonic()
        if now - reported >= PROGRESS_EVERY:
            reported = now
            progress_logger().info(
                "still waiting for server %s to be ACTIVE: %s (%.0f s so far, %.0f s left)",
                server.name,
                server.status,
                now - started,
                max(0.0, deadline - now),
            )
        if server.status in _PARKED:
            raise ServerStuck(
                f"server {server.name} ({server.id}) is {server.status}: hybridgrid will not "
                f"change that on its own — resume or unshelve it (openstack server resume/"
                f"unshelve {server.id}), or delete it to get a new one, then rerun"
            )
        if time.monotonic() > deadline:
            # Not a network timeout: retrying the task would only wait the same way again.
            raise ServerStuck(
                f"server {server.name} still {server.status} after {timeout:.0f} s: the cloud is "
                f"slow or stuck — check the server in the cloud, then rerun to keep waiting"
            )
        time.sleep(poll)


def wait_gone(conn: Connection, server_id: str, timeout: float, poll: float) -> None:
    """Until Nova says 404 for the server (polls retry transient errors in place)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            read(conn.compute.get_server, server_id)
        except osexc.NotFoundException:
            return
        if time.monotonic() > deadline:
            raise ServerStuck(
                f"server {server_id} is still there {timeout:.0f} s after its deletion: check "
                f"it in the cloud (openstack server show {server_id}), then rerun"
            )
        time.sleep(poll)


def launch_server(conn: Connection, spec: ServerSpec) -> Any:
    """Create the server unless ours exists; does not wait (so several boot together)."""
    server = find_server(conn, spec.site, spec.name)
    if server is not None:
        return server
    image = read(conn.image.find_image, spec.image, ignore_missing=False)
    flavor = read(conn.compute.find_flavor, spec.flavor, ignore_missing=False)
    return conn.compute.create_server(
        name=spec.name,
        image_id=image.id,
        flavor_id=flavor.id,
        networks=[{"uuid": spec.network_id}],
        key_name=spec.key_name,
        security_groups=[{"name": g} for g in spec.security_groups] or None,
        # The proxy layer sends user_data as given; Nova wants base64.
        user_data=base64.b64encode(spec.user_data.encode()).decode() if spec.user_data else None,
        metadata={**naming.server_metadata(spec.site), ROLE_KEY: spec.role},
    )


def ensure_server(
    conn: Connection,
    spec: ServerSpec,
    *,
    timeout: float = 600,
    poll: float = 1.0,
    max_replacements: int = 2,
) -> ServerRecord:
    """Launch (or find) the server and wait for ACTIVE; a server in ERROR is deleted and
    launched again, at most `max_replacements` times; one of ours found SHUTOFF is started."""
    existed = find_server(conn, spec.site, spec.name) is not None
    replaced = 0
    started = False
    while True:
        server = launch_server(conn, spec)
        server = _wait_active(conn, server, timeout, poll)
        if server.status == "SHUTOFF" and not started:  # ours, stopped: start it again
            conn.compute.start_server(server)
            started = True
            server = _wait_active(conn, server, timeout, poll)
        if server.status == "ACTIVE":
            break
        if server.status == "SHUTOFF":
            raise ServerStuck(
                f"server {spec.name} ({server.id}) stays SHUTOFF after a start: check it in "
                f"the cloud (openstack server show {server.id}), then rerun"
            )
        fault = (server.fault or {}).get("message", "no fault message")
        if replaced >= max_replacements:
            raise ServerBootFailed(
                f"server {spec.name} went to ERROR {replaced + 1} times (last: {fault}): the "
                f"cloud cannot boot it — check image {spec.image!r} and flavor {spec.flavor!r}"
            )
        conn.compute.delete_server(server, ignore_missing=True)
        wait_gone(conn, server.id, timeout, poll)
        replaced += 1
    port = server_port(conn, server.id, spec.network_id)
    action: Action = "reused" if existed and not replaced else "created"
    if action == "reused" and started:
        action = "updated"
    return ServerRecord(
        name=spec.name,
        id=server.id,
        action=action,
        status=server.status,
        port_id=port.id,
        fixed_ip=port.fixed_ips[0]["ip_address"],
        replaced=replaced,
    )


def console_output(conn: Connection, server_id: str) -> str:
    return read(conn.compute.get_server_console_output, server_id).get("output", "") or ""


# ---------------------------------------------------------------------------------------------
# floating IPs and ports


def ensure_floating_ip(
    conn: Connection, site: str, port_id: str, external_network_id: str
) -> FloatingIPRecord:
    """Reuse a floating IP already on the port (ours or not); else allocate one, tagged."""
    on_port = list(read(conn.network.ips, port_id=port_id))
    if on_port:
        fip = sorted(on_port, key=lambda f: f.id)[0]
        return FloatingIPRecord(
            name=fip.floating_ip_address,
            id=fip.id,
            address=fip.floating_ip_address,
            port_id=port_id,
            action="reused",
        )
    # An earlier attempt may have allocated one and died before associating it.
    tagged = read(conn.network.ips, floating_network_id=external_network_id, tags=tag_filter(site))
    spare = [f for f in _owned(tagged, site) if not f.port_id]
    if spare:
        fip = conn.network.update_ip(sorted(spare, key=lambda f: f.id)[0], port_id=port_id)
        action: Action = "updated"
    else:
        fip = conn.network.create_ip(
            floating_network_id=external_network_id, port_id=port_id, tags=naming.tags(site)
        )
        action = "created"
    return FloatingIPRecord(
        name=fip.floating_ip_address,
        id=fip.id,
        address=fip.floating_ip_address,
        port_id=port_id,
        action=action,
    )


def floating_ip_of_port(conn: Connection, port_id: str) -> str | None:
    ips = sorted(read(conn.network.ips, port_id=port_id), key=lambda f: f.id)
    return ips[0].floating_ip_address if ips else None


def ensure_allowed_address_pairs(conn: Connection, port_id: str, cidrs: list[str]) -> PortRecord:
    """Merge pairs into the port's list: what someone else set stays."""
    port = read(conn.network.get_port, port_id)
    if port.is_port_security_enabled is False:
        # No anti-spoofing on this port, so nothing to allow; Neutron would refuse pairs with
        # a 409 (AddressPairAndPortSecurityRequired) that looks transient to the retry policy.
        return port_record(conn, port)
    have = [dict(p) for p in port.allowed_address_pairs or []]
    have_ips = {_norm(p["ip_address"]) for p in have}
    missing = [c for c in cidrs if _norm(c) not in have_ips]
    if not missing:
        return port_record(conn, port)
    port = conn.network.update_port(
        port, allowed_address_pairs=have + [{"ip_address": c} for c in missing]
    )
    return port_record(conn, port, action="updated")


def remove_allowed_address_pairs(conn: Connection, port_id: str, cidrs: list[str]) -> PortRecord:
    port = read(conn.network.get_port, port_id)
    drop = {_norm(c) for c in cidrs}
    have = [dict(p) for p in port.allowed_address_pairs or []]
    keep = [p for p in have if _norm(p["ip_address"]) not in drop]
    if len(keep) == len(have):
        return port_record(conn, port)
    port = conn.network.update_port(port, allowed_address_pairs=keep)
    return port_record(conn, port, action="updated")


def ensure_port_security_groups(conn: Connection, port_id: str, group_ids: list[str]) -> PortRecord:
    """Add groups to a port, keeping the ones already there."""
    port = read(conn.network.get_port, port_id)
    have = list(port.security_group_ids or [])
    missing = [g for g in group_ids if g not in have]
    if not missing:
        return port_record(conn, port)
    port = conn.network.update_port(port, security_groups=have + missing)
    return port_record(conn, port, action="updated")


def _norm(ip: str) -> str:
    return str(ipaddress.ip_network(ip, strict=False))


# ---------------------------------------------------------------------------------------------
# removal: only what carries our tags


def remove_keypair(conn: Connection, name: str, public_key: str) -> KeypairRecord:
    """Key pairs carry no tags: delete one only when it holds our public key."""
    kp = find_or_none(conn.compute.find_keypair, name)
    want = " ".join(public_key.split()[:2])
    if kp is None or " ".join((kp.public_key or "").split()[:2]) != want:
        return KeypairRecord(name=name, id=kp.name if kp else None, action="absent")
    conn.compute.delete_keypair(kp, ignore_missing=True)
    return KeypairRecord(name=name, id=kp.name, action="deleted")


def _delete_or_explain(
    delete: Any, resource: Any, kind: str, users: Callable[[], list[str]]
) -> None:
    """Delete; when Neutron says "in use" and something not ours really uses it, say what.

    A 409 is transient in general (and localcloud injects them), so only a real user turns
    it into a permanent error."""
    try:
        delete(resource, ignore_missing=True)
    except osexc.ConflictException:
        in_use = users()
        if in_use:
            raise ResourceConflict(
                f"{kind} {resource.name} ({resource.id}) is still used by {', '.join(in_use)}, "
                f"which hybridgrid did not create: detach or delete those, then rerun the removal"
            ) from None
        raise


def remove_site_resources(conn: Connection, site: str, timeout: float = 300) -> list[Record]:
    """Delete every resource tagged for `site`, in dependency order. Safe to rerun: what is
    gone is skipped, and nothing without our tags (or server metadata) is touched."""
    out: list[Record] = []
    servers = [s for s in read(conn.compute.servers) if naming.site_of_metadata(s.metadata) == site]
    for server in servers:
        conn.compute.delete_server(server, ignore_missing=True)
        out.append(Record(kind="server", name=server.name, id=server.id, action="deleted"))
    for server in servers:
        wait_gone(conn, server.id, timeout, 0.5)
    for fip in _owned(read(conn.network.ips, tags=tag_filter(site)), site):
        conn.network.delete_ip(fip, ignore_missing=True)
        out.append(
            Record(kind="floating_ip", name=fip.floating_ip_address, id=fip.id, action="deleted")
        )
    for router in _owned(read(conn.network.routers, tags=tag_filter(site)), site):
        if router.routes:  # Neutron keeps an interface a route's nexthop needs
            router = conn.network.update_router(router, routes=[])
        for port in read(conn.network.ports, device_id=router.id):
            if port.device_owner == "network:router_interface":
                with contextlib.suppress(osexc.NotFoundException):
                    conn.network.remove_interface_from_router(router, port=port.id)
        conn.network.delete_router(router, ignore_missing=True)
        out.append(Record(kind="router", name=router.name, id=router.id, action="deleted"))
    for sub in _owned(read(conn.network.subnets, tags=tag_filter(site)), site):
        users = functools.partial(_port_users, conn, network_id=sub.network_id)
        _delete_or_explain(conn.network.delete_subnet, sub, "subnet", users)
        out.append(Record(kind="subnet", name=sub.name, id=sub.id, action="deleted"))
    for net in _owned(read(conn.network.networks, tags=tag_filter(site)), site):
        users = functools.partial(_port_users, conn, network_id=net.id)
        _delete_or_explain(conn.network.delete_network, net, "network", users)
        out.append(Record(kind="network", name=net.name, id=net.id, action="deleted"))
    for sg in _owned(read(conn.network.security_groups, tags=tag_filter(site)), site):
        users = functools.partial(_port_users, conn, security_group=sg.id)
        _delete_or_explain(conn.network.delete_security_group, sg, "security group", users)
        out.append(Record(kind="security_group", name=sg.name, id=sg.id, action="deleted"))
    return out


def _port_users(conn: Connection, *, network_id: str = "", security_group: str = "") -> list[str]:
    """Ports that keep a network or group in use (DHCP ports go with their network)."""
    ports = (
        read(conn.network.ports, network_id=network_id)
        if network_id
        else [p for p in read(conn.network.ports) if security_group in (p.security_group_ids or [])]
    )
    return [
        f"port {p.id} ({p.device_owner or 'unattached'})"
        for p in ports
        if p.device_owner != "network:dhcp"
    ]
