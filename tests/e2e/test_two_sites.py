"""Two sites added by two CONCURRENT flow runs: giessen (fixed subnet) and heidelberg (subnet
and WireGuard address allocated from the pool), each in its own local cloud.

Both must end up verified and as peers on the one master (the hub is edited under a lock and
rendered from the registry, so neither run drops the other's peer), with distinct subnets and
overlay addresses, and a giessen worker must reach a heidelberg worker through the hub.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite

pytestmark = pytest.mark.dataplane

LOCALCLOUD_CLOUDS = ["bielefeld", "giessen", "heidelberg"]
REGISTRY = "two-sites"
HOME = HomeSite(
    cloud="bielefeld",
    master=MasterSpec(create=True),
    subnet=ipaddress.IPv4Network("192.168.66.0/24"),
    workers=1,
)
GIESSEN = RemoteSite(name="giessen", subnet=ipaddress.IPv4Network("192.168.77.0/24"), workers=1)
HEIDELBERG = RemoteSite(name="heidelberg", workers=1)  # subnet + address from the pool


@pytest.fixture(scope="module")
def two(seed_clouds):
    asyncio.run(bootstrap_home(HOME, options=HomeOptions(registry=REGISTRY)))
    options = AddSiteOptions(registry=REGISTRY)

    async def both():
        return await asyncio.gather(
            add_remote_site(GIESSEN, options), add_remote_site(HEIDELBERG, options)
        )

    giessen, heidelberg = asyncio.run(both())
    return seed_clouds, giessen, heidelberg


def _fixed_ip(conn, name: str) -> str:
    server = next(conn.compute.servers(name=name))
    return server.addresses[next(iter(server.addresses))][0]["addr"]


def test_both_sites_verified(two):
    _, giessen, heidelberg = two
    assert giessen.verified, giessen.summary.layers
    assert heidelberg.verified, heidelberg.summary.layers


def test_distinct_allocations_in_registry(two):
    data = asyncio.run(load_registry(REGISTRY))
    g, h = data.sites["giessen"], data.sites["heidelberg"]
    assert str(g.subnet) == "192.168.77.0/24"
    assert h.subnet.subnet_of(data.site_pool) and not h.subnet.overlaps(g.subnet)
    assert not h.subnet.overlaps(data.home.subnet)
    assert len({g.wg_address, h.wg_address, data.home.wg_address}) == 3
    assert g.spoke_public_key != h.spoke_public_key
    assert g.last_verification.ok and h.last_verification.ok


def test_master_has_both_peers(two):
    clouds, _, _ = two
    data = asyncio.run(load_registry(REGISTRY))
    rc, out = clouds.exec("hg-bielefeld-master", "wg show wg0 dump", "bielefeld")
    assert rc == 0, out
    peers = {line.split("\t")[0]: line.split("\t") for line in out.strip().splitlines()[1:]}
    for name in ("giessen", "heidelberg"):
        entry = data.sites[name]
        assert entry.spoke_public_key in peers, (name, out)
        allowed = set(peers[entry.spoke_public_key][3].split(","))
        assert allowed == {f"{entry.wg_address}/32", str(entry.subnet)}, (name, out)
        assert int(peers[entry.spoke_public_key][4]) > 0, f"{name}: no handshake\n{out}"
    # persisted, not only live: the file lists both peers too
    rc, conf = clouds.exec("hg-bielefeld-master", "cat /etc/wireguard/wg0.conf", "bielefeld")
    assert rc == 0 and all(data.sites[n].spoke_public_key in conf for n in data.sites)


def test_site_to_site_through_the_hub(two):
    clouds, _, _ = two
    ip_g = _fixed_ip(clouds.conn("giessen"), "hg-giessen-worker-1")
    ip_h = _fixed_ip(clouds.conn("heidelberg"), "hg-heidelberg-worker-1")
    rc, out = clouds.exec("hg-giessen-worker-1", f"ping -c 2 -W 2 {ip_h}", "giessen")
    assert rc == 0, out
    rc, out = clouds.exec("hg-heidelberg-worker-1", f"ping -c 2 -W 2 {ip_g}", "heidelberg")
    assert rc == 0, out
    # and the path really is the hub: the giessen worker's route to heidelberg leads to its VPN
    rc, out = clouds.exec("hg-giessen-worker-1", f"ip -o route get {ip_h}", "giessen")
    vpn_ip = _fixed_ip(clouds.conn("giessen"), "hg-giessen-vpn")
    assert f"via {vpn_ip}" in out, out


def test_adopting_the_existing_master(two):
    """The seed's way in (master: {name: …}): adopt the hub by name into another registry —
    it finds the same master, its worker and its WireGuard key, and creates no server."""
    clouds, _, _ = two
    servers_before = sorted(s.name for s in clouds.conn("bielefeld").compute.servers())
    adopt = HOME.model_copy(update={"master": MasterSpec(name="hg-bielefeld-master"), "workers": 0})
    result = asyncio.run(bootstrap_home(adopt, options=HomeOptions(registry="two-sites-adopted")))
    data = asyncio.run(load_registry("two-sites-adopted"))
    assert data.home.adopted and data.home.master == "hg-bielefeld-master"
    assert data.home.workers == ["hg-bielefeld-worker-1"]
    assert result.master_public_key == asyncio.run(load_registry(REGISTRY)).home.public_key
    assert sorted(s.name for s in clouds.conn("bielefeld").compute.servers()) == servers_before
