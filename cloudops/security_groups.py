"""Security groups and their rules. Rules carry no tags: the description of a rule we add
names the site that added it, so a removal takes exactly those (groups may be shared, e.g. the
home's)."""

from __future__ import annotations

from typing import Any

from openstack import exceptions as osexc
from openstack.connection import Connection

from hybridgrid import naming
from hybridgrid.cloudops.finder import find_owned, read
from hybridgrid.records import (
    RuleRecord,
    SecurityGroupRecord,
)
from hybridgrid.rules import RuleSpec, normalized_cidr


def rule_description(site: str) -> str:
    """Security-group rules have no tags: their description marks the site that added them."""
    return naming.site_tag(site)


def rule_key(rule: Any) -> tuple[Any, ...]:
    # "from anywhere" is either no prefix or 0.0.0.0/0, depending on who made the rule.
    prefix = normalized_cidr(rule.remote_ip_prefix) if rule.remote_ip_prefix else None
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


def find_security_group(conn: Connection, site: str, name: str) -> Any | None:
    """The site's own group named `name` (None when missing): the flows look the home's and a
    site's group up by name."""
    return find_owned(conn, "security group", site, name)


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
        rule_key(r): r for r in read(conn.network.security_group_rules, security_group_id=group_id)
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
                rule_key(r): r
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
        if r.description == rule_description(owner_site) and rule_key(r) not in keep_keys:
            conn.network.delete_security_group_rule(r, ignore_missing=True)
            out.append(RuleRecord(name=r.description, id=r.id, action="deleted"))
    return out
