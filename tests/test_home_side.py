"""What the home side carries for the sites (pairs on the master's port, routes on home
workers) and what removing a site frees — pure planning, no clouds."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hybridgrid.desired import home_side, released_on_removal
from hybridgrid.registry_data import HomeEntry, RegistryData, SiteEntry
from hybridgrid.tasks.removal_tasks import route_del_command

WG, POOL = IPv4Network("10.0.0.0/24"), IPv4Network("192.168.64.0/18")


def net(s: str) -> IPv4Network:
    return IPv4Network(s)


def registry(*subnets: str) -> RegistryData:
    return RegistryData(
        home=HomeEntry(
            name="bielefeld",
            cloud="bielefeld",
            subnet=net("192.168.66.0/24"),
            wg_address=IPv4Address("10.0.0.1"),
        ),
        sites={
            f"s{i}": SiteEntry(
                cloud="giessen", subnet=net(s), wg_address=IPv4Address(f"10.0.0.{i + 2}")
            )
            for i, s in enumerate(subnets)
        },
    )


def test_twelve_sites_in_the_pool_need_two_pairs():
    data = registry(*[f"192.168.{70 + i}.0/24" for i in range(12)])
    assert home_side(data, net("192.168.90.0/24")) == [WG, POOL]


def test_a_subnet_outside_the_pool_brings_its_own_pair_and_route():
    data = registry("192.168.70.0/24", "172.16.5.0/24")
    assert home_side(data, net("172.16.9.0/24")) == [
        WG,
        POOL,
        net("172.16.5.0/24"),
        net("172.16.9.0/24"),
    ]


def test_removing_one_of_several_sites_frees_only_its_own():
    data = registry("192.168.70.0/24", "192.168.71.0/24", "172.16.5.0/24")
    released, kept = released_on_removal(data, "s0")
    assert released == [net("192.168.70.0/24")]  # a legacy pair of its own, if any
    assert kept == [WG, POOL, net("172.16.5.0/24")]
    released, kept = released_on_removal(data, "s2")
    assert released == [net("172.16.5.0/24")] and kept == [WG, POOL]


def test_removing_the_last_site_frees_the_pool_and_the_overlay():
    released, kept = released_on_removal(registry("192.168.70.0/24"), "s0")
    assert released == [net("192.168.70.0/24"), WG, POOL] and kept == []


def test_route_removal_rewrites_or_drops_the_persisted_routes():
    via = IPv4Address("192.168.66.10")
    some = route_del_command([net("192.168.70.0/24")], via, [WG, POOL])
    assert "ip route del 192.168.70.0/24 via 192.168.66.10" in some
    assert "- to: 192.168.64.0/18" in some and "- to: 192.168.70.0/24" not in some
    assert some.rstrip().endswith('echo "$n"')
    last = route_del_command([WG, POOL], via, [])
    assert "rm -f /etc/netplan/90-hybridgrid.yaml" in last and "ip route replace" not in last
