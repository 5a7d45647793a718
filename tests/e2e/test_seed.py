"""The seed end to end on localcloud with real WireGuard: bootstrap_home + add_remote_site.

Asserts what a user would check by hand: fresh handshakes on both ends, worker ⇄ worker ping
both ways, tunnel MTU 1370, UDP 51820 open only from the peer's /32, allowed-address pairs on
the right ports, private keys 0600 root, a complete registry entry; then a rerun that makes
no mutating call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re

import pytest

from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
from hybridgrid.flows.bootstrap_home import bootstrap_home
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite

pytestmark = pytest.mark.dataplane

HOME = HomeSite(
    cloud="bielefeld",
    master=MasterSpec(create=True),
    subnet=ipaddress.IPv4Network("192.168.66.0/24"),
    workers=1,
)
GIESSEN = RemoteSite(name="giessen", subnet=ipaddress.IPv4Network("192.168.77.0/24"), workers=1)


@pytest.fixture(scope="module")
def seed(seed_clouds):
    home = asyncio.run(bootstrap_home(HOME))
    result = asyncio.run(add_remote_site(GIESSEN))
    return seed_clouds, home, result


def _handshake_ages(text: str) -> list[int]:
    """Seconds since the latest handshake of each peer, from `wg show wg0 dump`."""
    import time

    ages = []
    for line in text.strip().splitlines()[1:]:
        fields = line.split("\t")
        ts = int(fields[4])
        ages.append(int(time.time()) - ts if ts else 10**9)
    return ages


def test_link_is_verified(seed):
    _, home, result = seed
    assert result.verified, result.summary.layers
    layers = {x.layer: x.ok for x in result.summary.layers}
    assert layers == {
        "api": True,
        "wireguard": True,
        "handshake": True,
        "overlay ping": True,
        "worker ping": True,
        "mtu": True,
    }
    assert home.master == "hg-bielefeld-master"
    assert result.summary.tunnel_mtu == 1370


def test_handshakes_fresh_on_both_ends(seed):
    clouds, _, _ = seed
    for server, cloud in (("hg-bielefeld-master", "bielefeld"), ("hg-giessen-vpn", "giessen")):
        rc, out = clouds.exec(server, "wg show wg0 dump", cloud)
        assert rc == 0, out
        ages = _handshake_ages(out)
        assert ages and all(a < 180 for a in ages), (server, out)
        rc, out = clouds.exec(server, "ip -o link show wg0", cloud)
        assert "mtu 1370" in out, out


def test_workers_reach_each_other_both_ways(seed):
    clouds, _, _ = seed
    conn_b, conn_g = clouds.conn("bielefeld"), clouds.conn("giessen")
    wb = next(conn_b.compute.servers(name="hg-bielefeld-worker-1"))
    wg_ = next(conn_g.compute.servers(name="hg-giessen-worker-1"))
    ip_b = wb.addresses[next(iter(wb.addresses))][0]["addr"]
    ip_g = wg_.addresses[next(iter(wg_.addresses))][0]["addr"]
    rc, out = clouds.exec("hg-bielefeld-worker-1", f"ping -c 2 -W 2 {ip_g}", "bielefeld")
    assert rc == 0, out
    rc, out = clouds.exec("hg-giessen-worker-1", f"ping -c 2 -W 2 {ip_b}", "giessen")
    assert rc == 0, out


def test_udp_open_only_from_peer(seed):
    clouds, _, _ = seed
    conn_b, conn_g = clouds.conn("bielefeld"), clouds.conn("giessen")
    master_fip = next(
        iter(conn_b.network.ips(tags="hybridgrid-site=bielefeld"))
    ).floating_ip_address
    vpn_fip = next(iter(conn_g.network.ips(tags="hybridgrid-site=giessen"))).floating_ip_address
    for conn, peer in ((conn_b, vpn_fip), (conn_g, master_fip)):
        udp = [
            r
            for sg in conn.network.security_groups(tags="hybridgrid")
            for r in conn.network.security_group_rules(security_group_id=sg.id)
            if r.protocol == "udp"
        ]
        assert [(r.port_range_min, r.remote_ip_prefix) for r in udp] == [(51820, f"{peer}/32")]


def test_allowed_address_pairs(seed):
    clouds, _, _ = seed
    conn_b, conn_g = clouds.conn("bielefeld"), clouds.conn("giessen")
    master = next(conn_b.compute.servers(name="hg-bielefeld-master"))
    vpn = next(conn_g.compute.servers(name="hg-giessen-vpn"))
    m_pairs = {
        p["ip_address"]
        for p in next(conn_b.network.ports(device_id=master.id)).allowed_address_pairs
    }
    v_pairs = {
        p["ip_address"] for p in next(conn_g.network.ports(device_id=vpn.id)).allowed_address_pairs
    }
    # the seed's subnet is inside the site pool: one pair for the pool covers it
    assert {"192.168.64.0/18", "10.0.0.0/24"} <= m_pairs
    assert {"192.168.66.0/24", "10.0.0.0/24"} <= v_pairs


def test_private_keys_stay_on_their_nodes(seed):
    clouds, _, _ = seed
    for server, cloud in (("hg-bielefeld-master", "bielefeld"), ("hg-giessen-vpn", "giessen")):
        rc, out = clouds.exec(
            server, "stat -c '%a %U' /etc/wireguard/privatekey /etc/wireguard/wg0.conf", cloud
        )
        assert rc == 0 and out.split() == ["600", "root", "600", "root"], out


def test_registry_entry_complete(seed):
    data = asyncio.run(load_registry())
    entry = data.sites["giessen"]
    assert str(entry.subnet) == "192.168.77.0/24" and str(entry.wg_address) == "10.0.0.2"
    assert entry.spoke_public_key and entry.hub_public_key == data.home.public_key
    assert set(entry.public_ips) == {"vpn"} and "hg-giessen-vpn" in entry.host_keys
    assert {"net", "subnet", "router", "sg", "vpn", "worker-1"} <= set(entry.resource_ids)
    assert entry.last_verification and entry.last_verification.ok
    assert str(data.home.wg_address) == "10.0.0.1"
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", entry.spoke_public_key)


def test_rerun_makes_no_mutating_call(seed):
    clouds, _, _ = seed
    clouds.reset_stats()
    result = asyncio.run(add_remote_site(GIESSEN, AddSiteOptions()))
    assert result.verified
    stats = clouds.stats()
    assert {c: s["mutating"] for c, s in stats.items()} == {"bielefeld": 0, "giessen": 0}, str(
        stats["giessen"]["by_service"]
    )


def _wg_allowed_ips(clouds, server: str, cloud: str) -> dict[str, set[str]]:
    """`wg show wg0 allowed-ips`: peer public key → its AllowedIPs."""
    rc, out = clouds.exec(server, "wg show wg0 allowed-ips", cloud)
    assert rc == 0, out
    peers = {}
    for line in out.strip().splitlines():
        pub, _, nets = line.partition("\t")
        peers[pub] = set(nets.split())
    return peers


def _routes_via(clouds, server: str, cloud: str) -> dict[str, str | None]:
    from hybridgrid.drift import parse_routes

    rc, out = clouds.exec(server, "ip -4 -o route show", cloud)
    assert rc == 0, out
    return {str(r.destination): (str(r.via) if r.via else None) for r in parse_routes(out)}


def _rule_keys(conn, group_id: str, owner: str | None = None) -> set[tuple]:
    from hybridgrid.drift import RuleObs

    return {
        RuleObs(
            id=r.id,
            direction=r.direction,
            ethertype=r.ether_type,
            protocol=r.protocol,
            port_min=r.port_range_min,
            port_max=r.port_range_max,
            remote_ip_prefix=r.remote_ip_prefix,
        ).key()
        for r in conn.network.security_group_rules(security_group_id=group_id)
        if r.direction == "ingress" and (owner is None or r.description == owner)
    }


def test_plan_agrees_with_the_built_link(seed):
    """`hybridgrid plan examples/seed.yaml --json` (with the registry's allocations) against
    what localcloud and the nodes show: every AllowedIPs on both ends, the pairs on the
    master's and the VPN node's ports, both groups' rules, the worker routes on both sides."""
    import subprocess
    import sys
    from pathlib import Path

    from hybridgrid import desired, naming
    from hybridgrid.desired import WiredPlan

    clouds, _, _ = seed
    exe = Path(sys.executable).parent / "hybridgrid"
    spec = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
    out = subprocess.run(
        [str(exe), "plan", str(spec), "--json", "--registry", "hybridgrid"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clouds.env(),
    )
    assert out.returncode == 0, out.stderr
    planned = WiredPlan.model_validate_json(out.stdout).site("giessen").wiring
    data = asyncio.run(load_registry())
    home, entry = data.home, data.sites["giessen"]
    built = desired.wiring(data, "giessen")  # the same, with the floating IPs now known
    strs = lambda nets: {str(n) for n in nets}  # noqa: E731

    # AllowedIPs, both ends
    hub_peers = _wg_allowed_ips(clouds, home.master, "bielefeld")
    spoke_peers = _wg_allowed_ips(clouds, "hg-giessen-vpn", "giessen")
    assert hub_peers[entry.spoke_public_key] == strs(planned.hub_allowed_ips)
    assert spoke_peers == {home.public_key: strs(planned.spoke_allowed_ips)}
    assert planned.spoke_allowed_ips == [
        ipaddress.IPv4Network(n) for n in ("10.0.0.0/24", "192.168.66.0/24", "192.168.64.0/18")
    ]

    # allowed-address pairs on the master's and the VPN node's ports
    conn_b, conn_g = clouds.conn("bielefeld"), clouds.conn("giessen")
    master = next(conn_b.compute.servers(name=home.master))
    vpn = next(conn_g.compute.servers(name="hg-giessen-vpn"))
    mport = next(conn_b.network.ports(device_id=master.id))
    vport = next(conn_g.network.ports(device_id=vpn.id))
    assert {p["ip_address"] for p in mport.allowed_address_pairs} == strs(planned.master_pairs)
    assert {p["ip_address"] for p in vport.allowed_address_pairs} == strs(planned.vpn_pairs)

    # rules: the site's group whole, the home group's rules owned by the site; the plan has
    # all but the UDP ones (they need the floating IPs), the registry's wiring all
    site_sg = entry.resource_ids["sg"]
    home_sg = next(conn_b.network.security_groups(name=naming.resource_name(home.name, "sg")))
    have_site = _rule_keys(conn_g, site_sg)
    have_home = _rule_keys(conn_b, home_sg.id, naming.site_tag("giessen"))
    assert have_site == {r.key() for r in built.site_rules}
    assert have_home == {r.key() for r in built.home_rules}
    no_udp = lambda rules: [r for r in rules if r.protocol != "udp"]  # noqa: E731
    assert planned.site_rules == no_udp(built.site_rules)
    assert planned.home_rules == no_udp(built.home_rules)

    # worker routes: the site's via the VPN node, the home's via the master
    site_routes = _routes_via(clouds, "hg-giessen-worker-1", "giessen")
    home_routes = _routes_via(clouds, "hg-bielefeld-worker-1", "bielefeld")
    vpn_ip, master_ip = str(entry.fixed_ips["vpn"]), mport.fixed_ips[0]["ip_address"]
    assert {n: site_routes.get(n) for n in strs(planned.site_routes)} == dict.fromkeys(
        strs(planned.site_routes), vpn_ip
    )
    assert {n: home_routes.get(n) for n in strs(planned.home_routes)} == dict.fromkeys(
        strs(planned.home_routes), master_ip
    )
    assert planned.tunnel_mtu == 1370
