"""Day two on localcloud with real WireGuard: check_drift (detect + repair), rotate_keys,
remove_remote_site.

This module runs its OWN localcloud (clouds `detmold` = home, `kassel` = both sites), its own
registry (`daytwo`) and its own names (home `detmold`, sites `tuebingen` and `marburg`), so
nothing collides with the seed tests in the same Prefect harness and process caches.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite
from localcloud import control as server

pytestmark = pytest.mark.dataplane

REGISTRY = "daytwo"
HOME_CLOUD, SITE_CLOUD = "detmold", "kassel"
HOME = HomeSite(
    name="detmold",
    cloud=HOME_CLOUD,
    master=MasterSpec(create=True),
    subnet=ipaddress.IPv4Network("192.168.66.0/24"),
    workers=1,
)
TUEBINGEN = RemoteSite(name="tuebingen", cloud=SITE_CLOUD, workers=1)
MARBURG = RemoteSite(name="marburg", cloud=SITE_CLOUD, workers=1)
MASTER = "hg-detmold-master"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clouds:
    """The running localcloud and the operator's console into its servers."""

    def __init__(self, handle: server.Handle):
        self.handle = handle
        self.state_dir = handle.state_dir

    def conn(self, cloud: str) -> Any:
        from localcloud.clientconf import connect

        return connect(self.state_dir, cloud)

    def argv(self, server_name: str, cmd: str, cloud: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "localcloud.dataplane.cli",
            "exec",
            "--state-dir",
            str(self.state_dir),
            "--cloud",
            cloud,
            server_name,
            "--",
            "sh",
            "-c",
            cmd,
        ]

    def exec(self, server_name: str, cmd: str, cloud: str) -> tuple[int, str]:
        proc = subprocess.run(
            self.argv(server_name, cmd, cloud),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def ok(self, server_name: str, cmd: str, cloud: str) -> str:
        rc, out = self.exec(server_name, cmd, cloud)
        assert rc == 0, f"{server_name}: {cmd}: {out}"
        return out


@pytest.fixture(scope="module")
def day2(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[Clouds]:
    """Own localcloud, home bootstrapped, tuebingen and marburg added (concurrently)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    from hybridgrid.access import CloudAccess
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from localcloud.dataplane.cli import proxy_command

    state_dir: Path = tmp_path_factory.mktemp("day-two-clouds")
    handle = server.start(
        state_dir, clouds=[HOME_CLOUD, SITE_CLOUD], port=_free_port(), dataplane=True
    )
    try:

        async def setup() -> None:
            access = CloudAccess(proxy_command=proxy_command(state_dir))
            for cloud in (HOME_CLOUD, SITE_CLOUD):
                creds = OpenStackCredentials.from_clouds_yaml(
                    cloud, state_dir / "clouds.yaml", access
                )
                await creds.asave(cloud, overwrite=True)
            await bootstrap_home(HOME, options=HomeOptions(registry=REGISTRY))
            # a look-alike that is not ours: add must ignore it, removal must leave it
            clouds.conn(SITE_CLOUD).network.create_network(name="hg-tuebingen-net")
            await add_remote_site(TUEBINGEN, AddSiteOptions(registry=REGISTRY))
            await add_remote_site(MARBURG, AddSiteOptions(registry=REGISTRY))

        clouds = Clouds(handle)
        asyncio.run(setup())
        yield clouds
    finally:
        server.down(state_dir)


# ---------------------------------------------------------------- helpers


def registry():
    return asyncio.run(load_registry(REGISTRY))


def drift_table() -> dict[str, dict[str, str]]:
    """The latest drift table artifact, by site."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from hybridgrid.flows.check_drift import artifact_key

    async def read() -> Any:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[artifact_key(REGISTRY)])
                ),
                limit=50,
            )
            return max(arts, key=lambda a: a.created).data

    import json

    data = asyncio.run(read())
    rows = json.loads(data) if isinstance(data, str) else data
    return {r["site"]: r for r in rows}


def run_check(**kw: Any) -> Any:
    from hybridgrid.flows.check_drift import check_drift

    return asyncio.run(check_drift(registry=REGISTRY, return_state=True, **kw))


def result_of(state: Any) -> Any:
    import inspect

    res = state.result()
    return asyncio.run(res) if inspect.isawaitable(res) else res


def wg_dump(clouds: Clouds, server_name: str, cloud: str) -> list[list[str]]:
    return [
        line.split("\t") for line in clouds.ok(server_name, "wg show wg0 dump", cloud).splitlines()
    ]


def fresh_handshake(clouds: Clouds, server_name: str, cloud: str, peer: str) -> bool:
    for f in wg_dump(clouds, server_name, cloud)[1:]:
        if f[0] == peer:
            return int(f[4]) > 0 and time.time() - int(f[4]) < 180
    return False


# ---------------------------------------------------------------- drift


def test_clean_check_completes(day2):
    state = run_check()
    assert state.is_completed(), state.message
    table = drift_table()
    assert set(table) == {"tuebingen", "marburg"}
    for site, row in table.items():
        assert row["status"] == "ok", (site, row)
        assert row["wg0"] == "ok" and row["reachability"] == "ok", row


def _site_sg(conn: Any, site: str) -> Any:
    return next(iter(conn.network.security_groups(name=f"hg-{site}-sg", tags="hybridgrid")))


def _port_of(conn: Any, server_name: str) -> Any:
    srv = next(s for s in conn.compute.servers() if s.name == server_name)
    return next(iter(conn.network.ports(device_id=srv.id)))


def _covers(pair: str, subnet) -> bool:
    return ipaddress.ip_network(subnet).subnet_of(ipaddress.ip_network(pair))


def test_injected_drifts_are_named_then_repaired(day2):
    """Six drifts at once (independent checks), one failing check naming each, one repair,
    then a clean check."""
    reg = registry()
    t, m = reg.sites["tuebingen"], reg.sites["marburg"]
    home_conn, site_conn = day2.conn(HOME_CLOUD), day2.conn(SITE_CLOUD)
    master_fip = str(reg.home.public_ips["master"])

    # tuebingen: UDP rule deleted, pair removed from the master port, worker route deleted,
    # wrong peer key on the master
    udp = [
        r
        for r in site_conn.network.security_group_rules(
            security_group_id=_site_sg(site_conn, "tuebingen").id
        )
        if r.protocol == "udp"
    ]
    assert [r.remote_ip_prefix for r in udp] == [f"{master_fip}/32"]
    site_conn.network.delete_security_group_rule(udp[0])
    mport = _port_of(home_conn, MASTER)
    # the pair that covers tuebingen is the site pool's (marburg's too: both report it)
    pairs = [p for p in mport.allowed_address_pairs if not _covers(p["ip_address"], t.subnet)]
    assert len(pairs) == len(mport.allowed_address_pairs) - 1
    home_conn.network.update_port(mport, allowed_address_pairs=pairs)
    day2.ok("hg-tuebingen-worker-1", "ip route del 10.0.0.0/24", SITE_CLOUD)
    bogus = day2.ok(MASTER, "wg genkey | wg pubkey", HOME_CLOUD).strip()
    day2.ok(
        MASTER,
        f"wg set wg0 peer {t.spoke_public_key} remove && "
        f"wg set wg0 peer {bogus} allowed-ips {t.wg_address}/32,{t.subnet}",
        HOME_CLOUD,
    )
    # marburg: wg0 down on the VPN node, its floating IP replaced
    day2.ok("hg-marburg-vpn", "wg-quick down wg0", SITE_CLOUD)
    old_fip = next(iter(site_conn.network.ips(port_id=m.resource_ids["vpn-port"])))
    assert old_fip.floating_ip_address == str(m.public_ips["vpn"])
    ext = old_fip.floating_network_id
    site_conn.network.update_ip(old_fip, port_id=None)
    site_conn.network.delete_ip(old_fip)
    new_fip = site_conn.network.create_ip(
        floating_network_id=ext, port_id=m.resource_ids["vpn-port"]
    ).floating_ip_address
    assert new_fip != old_fip.floating_ip_address

    state = run_check()
    assert state.is_failed()
    assert "tuebingen: drift" in state.message and "marburg: drift" in state.message
    table = drift_table()
    tt, mm = table["tuebingen"], table["marburg"]
    assert tt["status"] == "drift" and mm["status"] == "drift"
    assert f"lacks ingress udp 51820-51820 from {master_fip}/32" in tt["rules"], tt["rules"]
    assert f"master port lacks pair {t.subnet}" in tt["pairs"], tt["pairs"]
    assert "hg-tuebingen-worker-1 has no route to 10.0.0.0/24" in tt["routes"], tt["routes"]
    assert f"no peer with tuebingen's key {t.spoke_public_key}" in tt["peers"], tt["peers"]
    assert f"foreign peer {bogus}" in tt["peers"], tt["peers"]
    assert "wg0 is down on VPN node hg-marburg-vpn" in mm["wg0"], mm["wg0"]
    assert (
        f"floating IP is {new_fip}, the registry has {old_fip.floating_ip_address}"
        in mm["floating ip"]
    ), mm["floating ip"]
    assert f"stale ingress udp 51820-51820 from {old_fip.floating_ip_address}/32" in mm["rules"]
    for check in ("network", "subnet", "router", "servers"):
        assert tt[check] == "ok" and mm[check] == "ok", (check, tt[check], mm[check])

    state = run_check(repair=True)
    assert state.is_completed(), state.message
    report = result_of(state)
    assert report.before and report.repaired.keys() == {"tuebingen", "marburg"}
    for site, outcome in report.repaired.items():
        assert outcome.startswith("add-site run completed"), (site, outcome)
    assert "removed 1 stale rule(s)" in report.repaired["marburg"]
    table = drift_table()
    assert all(row["status"] == "ok" for row in table.values()), table

    # the repair followed the new floating IP everywhere and dropped the stale rule
    reg = registry()
    assert str(reg.sites["marburg"].public_ips["vpn"]) == new_fip
    home_udp = [
        r.remote_ip_prefix
        for r in home_conn.network.security_group_rules(
            security_group_id=_site_sg(home_conn, "detmold").id
        )
        if r.protocol == "udp"
    ]
    assert f"{new_fip}/32" in home_udp and f"{old_fip.floating_ip_address}/32" not in home_udp
    peers = {f[0]: f for f in wg_dump(day2, MASTER, HOME_CLOUD)[1:]}
    assert bogus not in peers and t.spoke_public_key in peers
    assert peers[reg.sites["marburg"].spoke_public_key][2] == f"{new_fip}:51820"

    state = run_check()
    assert state.is_completed(), state.message


# ---------------------------------------------------------------- key rotation


def _ping_in_background(clouds: Clouds, server_name: str, address: str, cloud: str):
    """A bounded ping (15 s at most) over a tunnel while something else happens."""
    return subprocess.Popen(
        clouds.argv(server_name, f"ping -n -q -c 120 -i 0.1 -W 1 {address}", cloud),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_rotation_without_handshake_rolls_back(day2):
    """The VPN node's WireGuard traffic is dropped on the node: no fresh handshake with the
    new key, so both ends go back to the old one; once the traffic flows, so does the link."""
    from hybridgrid.flows.rotate_keys import rotate_keys

    before = registry()
    old = before.sites["tuebingen"].spoke_public_key
    block = (
        "nft add table inet hgtest && nft add chain inet hgtest out "
        "'{ type filter hook output priority 0; policy accept; }' && "
        "nft add rule inet hgtest out udp dport 51820 drop"
    )
    day2.ok("hg-tuebingen-vpn", block, SITE_CLOUD)
    try:
        state = asyncio.run(
            rotate_keys("tuebingen", registry=REGISTRY, handshake_timeout=5, return_state=True)
        )
    finally:
        day2.ok("hg-tuebingen-vpn", "nft delete table inet hgtest", SITE_CLOUD)
    assert state.is_failed() and "back on the previous key" in state.message, state.message
    assert day2.ok("hg-tuebingen-vpn", "wg show wg0 public-key", SITE_CLOUD).strip() == old
    assert old in {f[0] for f in wg_dump(day2, MASTER, HOME_CLOUD)[1:]}
    assert registry().sites["tuebingen"].spoke_public_key == old
    day2.ok(
        "hg-tuebingen-vpn",
        "test ! -e /etc/wireguard/privatekey.prev && test ! -e /etc/wireguard/privatekey.next",
        SITE_CLOUD,
    )
    for _ in range(30):  # bounded: the link comes back on the old key
        day2.exec("hg-tuebingen-vpn", "ping -c 1 -W 1 10.0.0.1", SITE_CLOUD)
        if fresh_handshake(day2, MASTER, HOME_CLOUD, old):
            break
    assert fresh_handshake(day2, MASTER, HOME_CLOUD, old)


def test_rotate_spoke_keys_keeps_other_sessions(day2):
    from hybridgrid.flows.rotate_keys import rotate_keys

    before = registry()
    old = before.sites["tuebingen"].spoke_public_key
    m_key = before.sites["marburg"].spoke_public_key
    pinger = _ping_in_background(day2, "hg-marburg-vpn", "10.0.0.1", SITE_CLOUD)
    try:
        result = asyncio.run(rotate_keys("tuebingen", registry=REGISTRY))
    finally:
        out, _ = pinger.communicate(timeout=60)
    new = result.spoke_public_key
    assert new != old
    # the new public key on both ends, a fresh handshake, nothing of the old key left
    assert day2.ok("hg-tuebingen-vpn", "wg show wg0 public-key", SITE_CLOUD).strip() == new
    peers = {f[0] for f in wg_dump(day2, MASTER, HOME_CLOUD)[1:]}
    assert new in peers and old not in peers and m_key in peers
    assert fresh_handshake(day2, MASTER, HOME_CLOUD, new)
    assert fresh_handshake(day2, "hg-tuebingen-vpn", SITE_CLOUD, before.home.public_key)
    day2.ok(
        "hg-tuebingen-vpn",
        "test ! -e /etc/wireguard/privatekey.prev && test ! -e /etc/wireguard/privatekey.next",
        SITE_CLOUD,
    )
    after = registry()
    assert after.sites["tuebingen"].spoke_public_key == new
    assert old not in after.model_dump_json()
    # marburg's session never dropped: every ping over its tunnel came back
    assert " 0% packet loss" in out, out


def test_rotate_hub_key_rekeys_every_site(day2):
    from hybridgrid.flows.rotate_keys import rotate_keys

    old_hub = registry().home.public_key
    result = asyncio.run(rotate_keys("marburg", hub=True, registry=REGISTRY))
    assert result.hub_rotated and result.hub_public_key != old_hub
    new_hub = result.hub_public_key
    assert day2.ok(MASTER, "wg show wg0 public-key", HOME_CLOUD).strip() == new_hub
    reg = registry()
    assert reg.home.public_key == new_hub
    for site in ("tuebingen", "marburg"):
        assert reg.sites[site].hub_public_key == new_hub
        assert fresh_handshake(day2, f"hg-{site}-vpn", SITE_CLOUD, new_hub), site
    day2.ok(MASTER, "test ! -e /etc/wireguard/privatekey.prev", HOME_CLOUD)
    assert old_hub not in reg.model_dump_json()
    state = run_check()  # registry and nodes agree again everywhere
    assert state.is_completed(), state.message


# ---------------------------------------------------------------- CLI


def cli(*args: str) -> Any:
    import typer
    from typer.testing import CliRunner

    from hybridgrid.cli_day_two import register

    app, site_app = typer.Typer(), typer.Typer()
    register(app, site_app)
    app.add_typer(site_app, name="site")
    return CliRunner().invoke(app, [*args, "--registry", REGISTRY])


def test_cli_drift_exit_codes(day2):
    day2.ok("hg-marburg-worker-1", "ip route del 10.0.0.0/24", SITE_CLOUD)
    res = cli("drift")
    assert res.exit_code == 1, res.output
    assert "marburg: drift in routes (hg-marburg-worker-1 has no route to 10.0.0.0/24)" in (
        res.output
    )
    assert "DRIFT" in res.output and "tuebingen" in res.output
    res = cli("drift", "--repair", "--site", "marburg")
    assert res.exit_code == 0, res.output
    assert "repaired marburg: add-site run completed" in res.output
    assert "no drift in 1 site(s)" in res.output
    res = cli("drift", "--site", "nowhere")
    assert res.exit_code == 2 and "nowhere not registered" in res.output


# ---------------------------------------------------------------- removal


def test_remove_site_leaves_others_and_untagged(day2):
    from hybridgrid.blocks.ssh import SSHKey
    from hybridgrid.flows.remove_remote_site import remove_remote_site

    site_conn, home_conn = day2.conn(SITE_CLOUD), day2.conn(HOME_CLOUD)
    (look_alike,) = [
        n for n in site_conn.network.networks(name="hg-tuebingen-net") if not n.tags
    ]  # made before the site was added, without tags
    reg = registry()
    t, m = reg.sites["tuebingen"], reg.sites["marburg"]

    result = asyncio.run(remove_remote_site("tuebingen", registry=REGISTRY))
    assert result.registered and result.deleted

    tag = "hybridgrid-site=tuebingen"
    assert not [s for s in site_conn.compute.servers() if "tuebingen" in s.name]
    for kind in ("networks", "subnets", "routers", "security_groups", "ips"):
        assert not list(getattr(site_conn.network, kind)(tags=tag)), kind
    assert site_conn.compute.find_keypair("hg-tuebingen-key", ignore_missing=True) is None
    assert site_conn.network.get_network(look_alike.id).name == "hg-tuebingen-net"
    dump = wg_dump(day2, MASTER, HOME_CLOUD)
    assert [f[0] for f in dump[1:]] == [m.spoke_public_key]
    assert str(t.subnet) not in " ".join(f[3] for f in dump[1:])
    home_sg = _site_sg(home_conn, "detmold")
    assert not [
        r
        for r in home_conn.network.security_group_rules(security_group_id=home_sg.id)
        if r.description == tag
    ]
    # the site pool's pair stays: it covers marburg (and the sites to come)
    pairs = {p["ip_address"] for p in _port_of(home_conn, MASTER).allowed_address_pairs}
    assert str(t.subnet) not in pairs and [p for p in pairs if _covers(p, m.subnet)]
    assert "tuebingen" not in registry().sites
    with pytest.raises(ValueError):
        asyncio.run(SSHKey.aload("hg-tuebingen-ssh"))

    # the other site still handshakes and its workers still reach home
    assert fresh_handshake(day2, MASTER, HOME_CLOUD, m.spoke_public_key)
    hw = next(s for s in home_conn.compute.servers() if s.name == "hg-detmold-worker-1")
    hw_ip = next(iter(home_conn.network.ports(device_id=hw.id))).fixed_ips[0]["ip_address"]
    day2.ok("hg-marburg-worker-1", f"ping -c 2 -W 2 {hw_ip}", SITE_CLOUD)

    again = asyncio.run(remove_remote_site("tuebingen", registry=REGISTRY))
    assert not again.registered and again.deleted == []
    res = cli("site", "remove", "tuebingen")
    assert res.exit_code == 0 and "nothing to remove" in res.output, res.output
    assert site_conn.network.get_network(look_alike.id) is not None


def test_removing_the_last_site_leaves_the_home_as_bootstrapped(day2):
    """With no site left, the master's port carries no pair hybridgrid added, home workers
    no route via the master, and wg0 no peer."""
    from hybridgrid.flows.remove_remote_site import remove_remote_site

    home_conn = day2.conn(HOME_CLOUD)
    before = {p["ip_address"] for p in _port_of(home_conn, MASTER).allowed_address_pairs}
    assert {"10.0.0.0/24", "192.168.64.0/18"} <= before
    result = asyncio.run(remove_remote_site("marburg", registry=REGISTRY))
    assert result.registered and not registry().sites
    after = {p["ip_address"] for p in _port_of(home_conn, MASTER).allowed_address_pairs}
    assert after == before - {"10.0.0.0/24", "192.168.64.0/18"}
    routes = day2.ok("hg-detmold-worker-1", "ip -4 route show", HOME_CLOUD)
    assert "10.0.0.0/24" not in routes and "192.168.64.0/18" not in routes, routes
    assert wg_dump(day2, MASTER, HOME_CLOUD)[1:] == []
