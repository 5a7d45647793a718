"""Least privilege: every ingress rule in every security group hybridgrid made, on both clouds,
after the suite's sites exist, compared with the exact set the design allows:

- home group hg-<home>-sg: all from the home subnet and the WireGuard CIDR, SSH from the
  configured source; per site: all from the site's subnet, UDP 51820 from its VPN node's /32;
- site group hg-<site>-sg: SSH from the site's configured source, all from its own subnet,
  the home subnet, the WireGuard CIDR and the site pool, UDP 51820 from the master's /32.

Nothing else: no other group, no IPv6 ingress, no remote-group rule, no open port range. The
concurrency home (registry reliab-conc) uses narrow SSH sources, the suite's home the default.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from reliab_support import HOME_CLOUD, REGISTRY, SITE_CLOUD, SUMMARY

from hybridgrid.blocks.registry import load_registry

pytestmark = pytest.mark.dataplane

REGISTRIES = (REGISTRY, "reliab-conc")
ALL = (None, None, None)  # protocol, port min, port max: any traffic


def _actual(conn) -> dict[str, Counter]:
    """group name -> Counter of ingress rules (ethertype, protocol, min, max, prefix, group)."""
    out = {}
    for g in conn.network.security_groups(tags="hybridgrid"):
        out[g.name] = Counter(
            (
                r.ether_type,
                r.protocol,
                r.port_range_min,
                r.port_range_max,
                r.remote_ip_prefix,
                r.remote_group_id,
            )
            for r in conn.network.security_group_rules(security_group_id=g.id)
            if r.direction == "ingress"
        )
    return out


def _rule(proto_ports: tuple, prefix: str) -> tuple:
    return ("IPv4", *proto_ports, prefix, None)


def _fip_of(conn, server_name: str) -> str:
    server = next(conn.compute.servers(name=server_name))
    port = next(conn.network.ports(device_id=server.id))
    return next(conn.network.ips(port_id=port.id)).floating_ip_address


def _expected(rel) -> tuple[dict[str, Counter], dict[str, Counter]]:
    home_groups: dict[str, Counter] = {}
    site_groups: dict[str, Counter] = {}
    conn_h = rel.conn(HOME_CLOUD)
    for registry in REGISTRIES:
        data = asyncio.run(load_registry(registry))
        if data.home is None:
            continue
        home = data.home
        wg = str(data.wireguard.cidr)
        udp = ("udp", data.wireguard.port, data.wireguard.port)
        ssh = ("tcp", 22, 22)
        home_ssh = ["203.0.113.1/32"] if registry != REGISTRY else ["0.0.0.0/0"]
        rules = Counter([_rule(ALL, str(home.subnet)), _rule(ALL, wg)])
        rules.update(_rule(ssh, p) for p in home_ssh)
        master_fip = _fip_of(conn_h, home.master)
        for name, entry in data.sites.items():
            if not entry.spoke_public_key:
                continue  # registered but never built (a bad-input case): no rules
            rules.update(
                [_rule(ALL, str(entry.subnet)), _rule(udp, f"{entry.public_ips['vpn']}/32")]
            )
            site_rules = Counter(
                _rule(ALL, str(n))
                for n in dict.fromkeys(
                    [entry.subnet, home.subnet, data.wireguard.cidr, data.site_pool]
                )
            )
            site_rules.update(_rule(ssh, str(p)) for p in entry.spec.ssh_source)
            site_rules.update([_rule(udp, f"{master_fip}/32")])
            site_groups[f"hg-{name}-sg"] = site_rules
        home_groups[f"hg-{home.name}-sg"] = rules
    return home_groups, site_groups


def test_ingress_rules_are_exactly_the_allowed_set(rel):
    home_expected, site_expected = _expected(rel)
    # reliab always; reliab-conc when test_concurrency.py ran first (file order)
    assert f"hg-{HOME_CLOUD}-sg" in home_expected
    home_actual = _actual(rel.conn(HOME_CLOUD))
    site_actual = _actual(rel.conn(SITE_CLOUD))
    assert home_actual == home_expected
    assert site_actual == site_expected
    n_rules = sum(c.total() for c in home_actual.values()) + sum(
        c.total() for c in site_actual.values()
    )
    SUMMARY.other.append(
        f"Least privilege: {n_rules} ingress rules in {len(home_actual) + len(site_actual)} "
        f"groups on {HOME_CLOUD} and {SITE_CLOUD}, exactly the allowed set"
    )


def test_no_rule_opens_more_than_ssh_to_the_world(rel):
    for cloud in (HOME_CLOUD, SITE_CLOUD):
        for group, rules in _actual(rel.conn(cloud)).items():
            for eth, proto, lo, hi, prefix, remote_group in rules:
                assert eth == "IPv4" and remote_group is None, (cloud, group)
                if prefix == "0.0.0.0/0":
                    assert (proto, lo, hi) == ("tcp", 22, 22), (cloud, group, proto, lo, hi)
                if proto == "udp":
                    assert prefix.endswith("/32") and lo == hi == 51820, (cloud, group, prefix)
