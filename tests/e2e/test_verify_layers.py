"""Each verification layer, pointed at a deliberately broken link, fails and names the cause.

A verified seed link is broken one way at a time (missing UDP rule, missing allowed-address
pair, wg0 down, wrong peer key on the hub), the layer that must notice is run, its verdict
checked, and the link restored before the next case.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from hybridgrid.access import behind
from hybridgrid.blocks import loading
from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
from hybridgrid.flows.ssh_access import door
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite
from hybridgrid.tasks import verify as vf
from hybridgrid.wireguard.state import ExpectedPeer

pytestmark = pytest.mark.dataplane
REGISTRY = "verify-layers"


@pytest.fixture(scope="module")
def link(seed_clouds):
    loading.forget()
    loading.forget_all_ssh_keys()
    home = HomeSite(
        cloud="bielefeld",
        master=MasterSpec(create=True),
        subnet=ipaddress.IPv4Network("192.168.66.0/24"),
        workers=1,
    )
    site = RemoteSite(name="giessen", subnet=ipaddress.IPv4Network("192.168.77.0/24"), workers=1)
    asyncio.run(bootstrap_home(home, options=HomeOptions(registry=REGISTRY)))
    result = asyncio.run(add_remote_site(site, AddSiteOptions(registry=REGISTRY)))
    assert result.verified
    return seed_clouds, asyncio.run(_expectations())


async def _expectations() -> dict:
    """The verification inputs, rebuilt from the registry as a later check would."""
    data = await load_registry(REGISTRY)
    home, site = data.home, data.sites["giessen"]
    home_key = await loading.ssh_key(home.ssh_key_block)
    site_key = await loading.ssh_key(site.ssh_key_block)
    master = door(home.cloud, str(home.public_ips["master"]), home.host_keys[home.master], home_key)
    vpn = door(site.cloud, str(site.public_ips["vpn"]), site.host_keys["hg-giessen-vpn"], site_key)
    worker = behind(
        vpn, str(site.fixed_ips["worker-1"]), site.host_keys["hg-giessen-worker-1"], "ubuntu"
    )
    spoke_allowed = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/24", "192.168.66.0/24")]
    return {
        "api": [
            (
                "giessen",
                vf.ApiExpectation(
                    node="VPN node hg-giessen-vpn",
                    port_id=site.resource_ids["vpn-port"],
                    wg_source=str(home.public_ips["master"]),
                    pairs=[str(n) for n in spoke_allowed],
                ),
            )
        ],
        "wg": [
            vf.WgExpectation(
                node="master",
                target=master,
                key_block=home.ssh_key_block,
                public_key=home.public_key,
                peers=[
                    ExpectedPeer(
                        public_key=site.spoke_public_key,
                        name="hg-giessen-vpn",
                        endpoint=f"{site.public_ips['vpn']}:51820",
                    )
                ],
                only_listed=False,
            ),
            vf.WgExpectation(
                node="VPN node",
                target=vpn,
                key_block=site.ssh_key_block,
                public_key=site.spoke_public_key,
                peers=[ExpectedPeer(public_key=home.public_key, name="master")],
            ),
        ],
        "worker": worker,
        "site": site,
        "home": home,
    }


def _home_worker_ip(seed) -> str:
    conn = seed.conn("bielefeld")
    w = next(conn.compute.servers(name="hg-bielefeld-worker-1"))
    return next(iter(w.addresses.values()))[0]["addr"]


def _pings(seed, exp) -> list[vf.PingCheck]:
    return [
        vf.PingCheck(
            src_name="hg-giessen-worker-1",
            src=exp["worker"],
            key_block=exp["site"].ssh_key_block,
            dst_name="hg-bielefeld-worker-1",
            dst=_home_worker_ip(seed),
            cause="routed traffic is dropped (pair, route or security group)",
        )
    ]


def test_all_layers_pass_on_the_verified_link(link):
    seed, exp = link
    assert asyncio.run(vf.verify_api(exp["api"])).ok
    wg, hs = asyncio.run(vf.verify_wireguard(exp["wg"], wait_handshake=5))
    assert wg.ok and hs.ok, (wg.problems, hs.problems)
    assert asyncio.run(vf.verify_pings("worker ping", _pings(seed, exp))).ok


def test_missing_udp_rule_is_named(link):
    seed, exp = link
    conn = seed.conn("giessen")
    master_ip = str(exp["home"].public_ips["master"])
    sg = next(conn.network.security_groups(name="hg-giessen-sg"))
    rule = next(
        r for r in conn.network.security_group_rules(security_group_id=sg.id) if r.protocol == "udp"
    )
    conn.network.delete_security_group_rule(rule)
    try:
        res = asyncio.run(vf.verify_api(exp["api"]))
        assert res.ok is False
        assert any(f"UDP 51820 from {master_ip}/32" in p for p in res.problems), res.problems
    finally:
        conn.network.create_security_group_rule(
            security_group_id=sg.id,
            direction="ingress",
            protocol="udp",
            port_range_min=51820,
            port_range_max=51820,
            remote_ip_prefix=f"{master_ip}/32",
            ethertype="IPv4",
        )
    assert asyncio.run(vf.verify_api(exp["api"])).ok


def test_missing_pair_is_named_and_breaks_worker_traffic(link):
    seed, exp = link
    conn = seed.conn("giessen")
    port = conn.network.get_port(exp["site"].resource_ids["vpn-port"])
    pairs = list(port.allowed_address_pairs)
    home = ipaddress.IPv4Network("192.168.66.0/24")
    # drop every pair that lets the home subnet's packets leave (the pool's /18 covers it too)
    keep = [p for p in pairs if not home.subnet_of(ipaddress.ip_network(p["ip_address"]))]
    conn.network.update_port(port, allowed_address_pairs=keep)
    try:
        res = asyncio.run(vf.verify_api(exp["api"]))
        assert res.ok is False
        assert any("allowed-address pair 192.168.66.0/24 missing" in p for p in res.problems)
        ping = asyncio.run(vf.verify_pings("worker ping", _pings(seed, exp)))
        assert ping.ok is False and "routed traffic is dropped" in ping.problems[0]
    finally:
        conn.network.update_port(port, allowed_address_pairs=pairs)
    assert asyncio.run(vf.verify_pings("worker ping", _pings(seed, exp))).ok


def test_wg0_down_is_named(link):
    seed, exp = link
    rc, out = seed.exec("hg-giessen-vpn", "wg-quick down wg0", "giessen")
    assert rc == 0, out
    try:
        wg, hs = asyncio.run(vf.verify_wireguard(exp["wg"], wait_handshake=0))
        assert wg.ok is False and hs.ok is False
        assert any("wg0 is down on VPN node" in p for p in wg.problems), wg.problems
    finally:
        rc, out = seed.exec("hg-giessen-vpn", "wg-quick up wg0", "giessen")
        assert rc == 0, out
    wg, hs = asyncio.run(vf.verify_wireguard(exp["wg"], wait_handshake=20))
    assert wg.ok and hs.ok, (wg.problems, hs.problems)


def test_wrong_peer_key_on_hub_is_named(link):
    seed, exp = link
    spoke = exp["site"].spoke_public_key
    bogus = "A" * 42 + "E="
    rc, out = seed.exec(
        "hg-bielefeld-master",
        f"wg set wg0 peer {spoke} remove && wg set wg0 peer {bogus} allowed-ips 10.0.0.2/32",
        "bielefeld",
    )
    assert rc == 0, out
    try:
        wg, _ = asyncio.run(vf.verify_wireguard(exp["wg"], wait_handshake=0))
        assert wg.ok is False
        assert any("peer hg-giessen-vpn is missing on master" in p for p in wg.problems), (
            wg.problems
        )
    finally:
        rc, out = seed.exec(
            "hg-bielefeld-master",
            "umask 077; wg-quick strip wg0 > /etc/wireguard/.s && "
            "wg syncconf wg0 /etc/wireguard/.s; rc=$?; rm -f /etc/wireguard/.s; exit $rc",
            "bielefeld",
        )
        assert rc == 0, out
    wg, hs = asyncio.run(vf.verify_wireguard(exp["wg"], wait_handshake=20))
    assert wg.ok and hs.ok, (wg.problems, hs.problems)
