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
