"""The one desired state (hybridgrid/desired.py): a site's wiring from the registry, the two
ends' wg0, and the plan — which shows the same wiring the flows build, on 1 and 3 sites."""

from __future__ import annotations

import base64
from ipaddress import IPv4Address, IPv4Network

import pytest

from hybridgrid import desired
from hybridgrid.model import MAX_ADDRESS_PAIRS, Topology, TopologyError
from hybridgrid.registry_data import HomeEntry, RegistryData, SiteEntry
from hybridgrid.wireguard.render import render_wg_conf

WG, POOL, HOME_NET = (
    IPv4Network("10.0.0.0/24"),
    IPv4Network("192.168.64.0/18"),
    IPv4Network("192.168.66.0/24"),
)
MASTER_FIP, VPN_FIP = "203.0.113.10", "198.51.100.20"


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


HOME = {"cloud": "bielefeld", "subnet": "192.168.66.0/24", "master": {"name": "master-1"}}
THREE = {
    "home": HOME,
    "sites": [
        {"name": "giessen", "subnet": "192.168.77.0/24", "workers": 1},
        {"name": "heidelberg", "workers": 2},
        {"name": "mainz", "subnet": "172.16.5.0/24", "workers": 0},
    ],
}


def built(topology: Topology) -> RegistryData:
    """The registry after add-site ran for every site of `topology` (keys, public IPs)."""
    p = desired.plan(topology)
    return RegistryData(
        wireguard=topology.wireguard,
        site_pool=topology.site_pool,
        home=HomeEntry(
            name="bielefeld",
            cloud="bielefeld",
            subnet=HOME_NET,
            wg_address=p.home.wg_address,
            public_key=key(1),
            master="master-1",
            public_ips={"master": IPv4Address(MASTER_FIP)},
        ),
        sites={
            s.name: SiteEntry(
                cloud=s.cloud,
                subnet=s.subnet,
                wg_address=s.wg_address,
                spoke_public_key=key(10 + i),
                spec=topology.sites[i],
                public_ips={"vpn": IPv4Address(f"198.51.100.{20 + i}")},
            )
            for i, s in enumerate(p.sites)
        },
    )


def test_seed_wiring_is_what_the_flow_builds():
    data = built(Topology.model_validate({**THREE, "sites": THREE["sites"][:1]}))
    w = desired.wiring(data, "giessen")
    net = IPv4Network
    assert w.hub_allowed_ips == [net("10.0.0.2/32"), net("192.168.77.0/24")]
    assert w.spoke_allowed_ips == [WG, HOME_NET, POOL] == w.vpn_pairs == w.site_routes
    assert w.master_pairs == [WG, POOL] == w.home_routes
    assert w.home_must_cover == [net("192.168.77.0/24"), WG]
    assert [r.describe() for r in w.site_rules] == [
        "ingress tcp 22-22 from 0.0.0.0/0",
        "ingress any from 192.168.77.0/24",
        "ingress any from 192.168.66.0/24",
        "ingress any from 10.0.0.0/24",
        "ingress any from 192.168.64.0/18",
        f"ingress udp 51820-51820 from {MASTER_FIP}/32",
    ]
    assert [r.describe() for r in w.home_rules] == [
        "ingress any from 192.168.77.0/24",
        f"ingress udp 51820-51820 from {VPN_FIP}/32",
    ]
    assert (w.tunnel_mtu, w.clamp_mss) == (1370, True)
    assert (w.hub_endpoint, w.spoke_endpoint) == (f"{VPN_FIP}:51820", f"{MASTER_FIP}:51820")


def test_before_the_floating_ips_are_known_there_is_no_udp_rule_and_no_endpoint():
    data = built(Topology.model_validate(THREE))
    facts = desired.facts_of(data, "giessen").model_copy(update={"vpn_fip": None})
    w = desired.wiring(data, facts)
    assert all(r.protocol != "udp" for r in w.site_rules + w.home_rules)
    assert w.spoke_endpoint is None
    with pytest.raises(TopologyError, match="floating IP"):
        desired.spoke_config(data, w, key(1))


def test_spoke_and_hub_wg0_render_from_the_wiring():
    data = built(Topology.model_validate(THREE))
    w = desired.wiring(data, "giessen")
    spoke = render_wg_conf(desired.spoke_config(data, w, key(1)))
    assert f"Endpoint = {MASTER_FIP}:51820" in spoke
    assert "AllowedIPs = 10.0.0.0/24, 192.168.66.0/24, 192.168.64.0/18, 172.16.5.0/24" in spoke
    assert "MTU = 1370" in spoke and "Address = 10.0.0.2/24" in spoke
    hub = desired.hub_config(data, desired.hub_mtu(data, 1370))
    assert [p.allowed_ips for p in hub.peers] == [
        desired.wiring(data, n).hub_allowed_ips for n in sorted(data.sites)
    ]


def test_three_sites_plan_shows_the_wiring_the_built_registry_gives():
    """`hybridgrid plan` on a 3-site spec and the wiring of the registry once all three are
    built agree on every AllowedIPs, pair and route (rules: all but the UDP ones, which need
    the floating IPs the clouds hand out)."""
    topology = Topology.model_validate(THREE)
    p = desired.plan(topology)
    data = built(topology)
    for s in p.sites:
        want, planned = desired.wiring(data, s.name), s.wiring
        for field in (
            "hub_allowed_ips",
            "spoke_allowed_ips",
            "master_pairs",
            "home_must_cover",
            "vpn_pairs",
            "site_routes",
            "home_routes",
            "tunnel_mtu",
        ):
            assert getattr(planned, field) == getattr(want, field), (s.name, field)
        assert planned.site_rules == [r for r in want.site_rules if r.protocol != "udp"]
        assert planned.home_rules == [r for r in want.home_rules if r.protocol != "udp"]
    # mainz is outside the pool: every other spoke and the master route it explicitly
    assert p.site("giessen").wiring.spoke_allowed_ips[-1] == IPv4Network("172.16.5.0/24")
    assert IPv4Network("172.16.5.0/24") not in p.site("mainz").wiring.spoke_allowed_ips
    assert p.site("giessen").wiring.master_pairs == [WG, POOL, IPv4Network("172.16.5.0/24")]
    assert p.site("mainz").wiring.site_routes == []  # no workers, no routes


def test_master_pairs_stay_few_however_many_sites():
    """One pair covers every site in the pool: 30 sites in it still make 2 pairs, each subnet
    outside the pool adds one (Neutron's default limit is 10 per port)."""
    inside = [IPv4Network(f"192.168.{64 + i}.0/24") for i in range(30)]
    assert desired.master_pairs(WG, POOL, inside) == [WG, POOL]
    outside = [IPv4Network("172.16.5.0/24"), IPv4Network("172.16.5.0/24")]
    assert [str(n) for n in desired.master_pairs(WG, POOL, inside + outside)] == [
        "10.0.0.0/24",
        "192.168.64.0/18",
        "172.16.5.0/24",
    ]
    assert len(desired.master_pairs(WG, POOL, inside)) < MAX_ADDRESS_PAIRS


def test_hub_allowed_ips():
    assert desired.hub_allowed_ips(IPv4Address("10.0.0.5"), IPv4Network("192.168.70.0/24")) == [
        IPv4Network("10.0.0.5/32"),
        IPv4Network("192.168.70.0/24"),
    ]


def test_desired_is_pure():
    """The desired state imports neither Prefect nor openstacksdk (nor tasks/ or blocks/)."""
    import subprocess
    import sys

    code = (
        "import sys, hybridgrid.desired; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'openstack') "
        "or m.startswith(('hybridgrid.tasks', 'hybridgrid.blocks', 'hybridgrid.flows'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tunnel_mtu_is_the_smaller_underlay_less_80_and_too_small_is_an_error():
    data = built(Topology.model_validate(THREE))
    facts = desired.facts_of(data, "giessen")
    assert desired.wiring(data, facts, home_network_mtu=1500).tunnel_mtu == 1370
    small = facts.model_copy(update={"network_mtu": 1300})
    with pytest.raises(TopologyError, match="below 1280"):
        desired.wiring(data, small)
