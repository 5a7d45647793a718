"""wg0.conf rendering (golden files for the seed) and the node-side key handling commands."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path

import pytest
from hybridgrid.tasks import wireguard as wg
from hybridgrid.tasks.remote import LocalShell, RemoteCommandError
from pydantic import ValidationError

GOLDEN = Path(__file__).parent / "golden"
MASTER_PUB = "hgMasterPublicKeyPlaceholder000000000000000="
VPN_PUB = "hgVpnNodePublicKeyPlaceholder00000000000000="
MASTER_FIP = "203.0.113.10"
VPN_FIP = "198.51.100.10"


def seed_master() -> wg.WgConfig:
    return wg.WgConfig(
        interface=wg.WgInterface(address="10.0.0.1/24", listen_port=51820, mtu=1370),
        peers=[
            wg.WgPeer(
                public_key=VPN_PUB,
                endpoint=f"{VPN_FIP}:51820",
                allowed_ips=["10.0.0.2/32", "192.168.77.0/24"],
                keepalive=25,
            )
        ],
    )


def seed_vpn() -> wg.WgConfig:
    return wg.WgConfig(
        interface=wg.WgInterface(address="10.0.0.2/24", listen_port=51820, mtu=1370),
        peers=[
            wg.WgPeer(
                public_key=MASTER_PUB,
                endpoint=f"{MASTER_FIP}:51820",
                allowed_ips=["10.0.0.0/24", "192.168.66.0/24"],
                keepalive=25,
            )
        ],
    )


@pytest.mark.parametrize(
    ("config", "golden"), [(seed_master, "wg0-master.conf"), (seed_vpn, "wg0-vpn.conf")]
)
def test_seed_configs_match_golden(config, golden):
    assert wg.render_wg_conf(config()) == (GOLDEN / golden).read_text()


def test_rendered_config_has_no_private_key_line():
    for cfg in (seed_master(), seed_vpn()):
        text = wg.render_wg_conf(cfg)
        assert not any(line.startswith("PrivateKey") for line in text.splitlines())


def _peer(n: int, name: str | None = None) -> wg.WgPeer:
    return wg.WgPeer(
        public_key=base64.b64encode(bytes([n]) * 32).decode(),
        endpoint=f"198.51.100.{n}:51820",
        allowed_ips=[f"10.0.0.{n}/32", f"192.168.{n}.0/24"],
        name=name,
    )


def test_render_is_deterministic_and_sorted_by_tunnel_address():
    peers = [_peer(n) for n in (12, 3, 7)]
    iface = wg.WgInterface(address="10.0.0.1/24", mtu=1370)
    a = wg.render_wg_conf(wg.WgConfig(interface=iface, peers=peers))
    b = wg.render_wg_conf(wg.WgConfig(interface=iface, peers=list(reversed(peers))))
    assert a == b
    order = [line.split(" = ")[1] for line in a.splitlines() if line.startswith("Endpoint")]
    assert order == ["198.51.100.3:51820", "198.51.100.7:51820", "198.51.100.12:51820"]


def test_peer_name_becomes_a_comment_and_optional_fields_are_omitted():
    iface = wg.WgInterface(address="10.0.0.2/24", listen_port=None, mtu=None)
    peer = wg.WgPeer(
        public_key=MASTER_PUB, allowed_ips=["10.0.0.0/24"], keepalive=None, name="hg-home"
    )
    text = wg.render_wg_conf(wg.WgConfig(interface=iface, peers=[peer]))
    assert "# hg-home\n" in text
    for absent in ("ListenPort", "MTU", "Endpoint", "PersistentKeepalive"):
        assert absent not in text


def test_with_peer_replaces_by_key_and_without_peer_removes():
    cfg = seed_master()
    moved = wg.WgPeer(
        public_key=VPN_PUB, endpoint="198.51.100.99:51820", allowed_ips=["10.0.0.2/32"]
    )
    updated = wg.with_peer(cfg, moved)
    assert len(updated.peers) == 1
    assert updated.peers[0].endpoint == "198.51.100.99:51820"
    assert wg.without_peer(updated, VPN_PUB).peers == []


@pytest.mark.parametrize(
    ("field", "kwargs", "needle"),
    [
        ("public_key", {"public_key": "not-a-key"}, "WireGuard public key"),
        ("endpoint", {"endpoint": "203.0.113.10"}, "HOST:PORT"),
        ("endpoint", {"endpoint": "203.0.113.10:70000"}, "outside 1..65535"),
        ("allowed_ips", {"allowed_ips": []}, "allowed_ips"),
        ("allowed_ips", {"allowed_ips": ["10.0.0.1/24"]}, "valid IPv4 network"),
        ("name", {"name": "bad\nname"}, "peer name"),
    ],
)
def test_bad_peer_input_names_the_field(field, kwargs, needle):
    base = {
        "public_key": VPN_PUB,
        "endpoint": "198.51.100.10:51820",
        "allowed_ips": ["10.0.0.2/32"],
    }
    with pytest.raises(ValidationError) as err:
        wg.WgPeer(**{**base, **kwargs})
    text = str(err.value)
    assert field in text and needle in text


def test_overlapping_allowed_ips_between_peers_are_refused():
    a = wg.WgPeer(public_key=VPN_PUB, allowed_ips=["192.168.77.0/24"])
    b = wg.WgPeer(public_key=MASTER_PUB, allowed_ips=["192.168.77.128/25"])
    with pytest.raises(ValidationError, match="overlaps"):
        wg.WgConfig(interface=wg.WgInterface(address="10.0.0.1/24"), peers=[a, b])


def test_mtu_bounds():
    with pytest.raises(ValidationError, match="mtu"):
        wg.WgInterface(address="10.0.0.1/24", mtu=1000)


# ---------------------------------------------------------------- node-side key handling


@pytest.fixture
def paths(tmp_path):
    return wg.WgPaths(directory=str(tmp_path / "wireguard"))


def run(coro):
    return asyncio.run(coro)


def test_genkey_makes_key_once_and_returns_only_the_public_key(paths):
    shell = LocalShell()
    pub1 = run(wg.ensure_wg_key(shell, paths))
    key = Path(paths.private_key).read_text().strip()
    assert pub1 != key and len(pub1) == 44
    assert stat.S_IMODE(os.stat(paths.private_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths.directory).st_mode) == 0o700
    pub2 = run(wg.ensure_wg_key(shell, paths))
    assert pub2 == pub1
    assert Path(paths.private_key).read_text().strip() == key


def test_assemble_joins_the_key_on_the_node_without_it_in_any_argv(paths):
    shell = LocalShell()
    run(wg.ensure_wg_key(shell, paths))
    key = Path(paths.private_key).read_text().strip()
    body = wg.render_wg_conf(seed_master(), paths)
    run(shell.upload(paths.body, body.encode()))
    # `set -x` makes sh print every command it runs with its expanded arguments
    res = run(shell.run("set -x\n" + wg.assemble_command(paths), name="assemble"))
    assert key not in res.stderr and key not in res.stdout
    assert "awk" in res.stderr  # the trace is really there
    for cmd in (wg.genkey_command(paths), wg.assemble_command(paths), wg.bring_up_command(paths)):
        assert key not in cmd
    conf = Path(paths.conf).read_text()
    lines = conf.splitlines()
    assert lines[lines.index("[Interface]") + 1] == f"PrivateKey = {key}"
    assert conf.replace(f"PrivateKey = {key}\n", "") == body
    assert stat.S_IMODE(os.stat(paths.conf).st_mode) == 0o600
    leftovers = [p.name for p in Path(paths.directory).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_assemble_refuses_without_key_and_with_a_key_in_the_body(paths):
    shell = LocalShell()
    run(shell.upload(paths.body, wg.render_wg_conf(seed_vpn(), paths).encode()))
    with pytest.raises(RemoteCommandError, match="missing or empty"):
        run(shell.run(wg.assemble_command(paths), name="assemble"))
    run(wg.ensure_wg_key(shell, paths))
    bad = "[Interface]\nPrivateKey = x\nAddress = 10.0.0.2/24\n"
    run(shell.upload(paths.body, bad.encode()))
    with pytest.raises(RemoteCommandError, match="must not contain a PrivateKey") as err:
        run(shell.run(wg.assemble_command(paths), name="assemble"))
    assert err.value.name == "assemble"
    assert not Path(paths.conf).exists()


def test_remove_peer_live_command_takes_only_public_keys():
    assert VPN_PUB in wg.remove_peer_live_command(VPN_PUB)
    with pytest.raises(ValueError, match="public key"):
        wg.remove_peer_live_command("x")


def test_mss_clamp_command_is_guarded_and_names_the_rule():
    cmd = wg.mss_clamp_command()
    assert "tcp option maxseg size set rt mtu" in cmd
    assert "|| \\\n  nft add rule" in cmd  # only added when missing
    with pytest.raises(ValueError):
        wg.mss_clamp_command("bad table; reboot")
