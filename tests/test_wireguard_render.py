"""wg0.conf rendering (golden files for the seed) and the node-side key handling commands."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import stat
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hybridgrid.shell import RemoteCommandError
from hybridgrid.sshclient.shell import LocalShell
from hybridgrid.wgconfig import WgConfig, WgInterface, WgPeer
from hybridgrid.wireguard import commands as wg_commands
from hybridgrid.wireguard import node as wg_node
from hybridgrid.wireguard import render as wg_render
from hybridgrid.wireguard.render import WgPaths

GOLDEN = Path(__file__).parent / "golden"
MASTER_PUB = "hgMasterPublicKeyPlaceholder000000000000000="
VPN_PUB = "hgVpnNodePublicKeyPlaceholder00000000000000="
MASTER_FIP = "203.0.113.10"
VPN_FIP = "198.51.100.10"


def seed_master() -> WgConfig:
    return WgConfig(
        interface=WgInterface(address="10.0.0.1/24", listen_port=51820, mtu=1370),
        peers=[
            WgPeer(
                public_key=VPN_PUB,
                endpoint=f"{VPN_FIP}:51820",
                allowed_ips=["10.0.0.2/32", "192.168.77.0/24"],
                keepalive=25,
            )
        ],
    )


def seed_vpn() -> WgConfig:
    return WgConfig(
        interface=WgInterface(address="10.0.0.2/24", listen_port=51820, mtu=1370),
        peers=[
            WgPeer(
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
    assert wg_render.render_wg_conf(config()) == (GOLDEN / golden).read_text()


def test_rendered_config_has_no_private_key_line():
    for cfg in (seed_master(), seed_vpn()):
        text = wg_render.render_wg_conf(cfg)
        assert not any(line.startswith("PrivateKey") for line in text.splitlines())


def _peer(n: int, name: str | None = None) -> WgPeer:
    return WgPeer(
        public_key=base64.b64encode(bytes([n]) * 32).decode(),
        endpoint=f"198.51.100.{n}:51820",
        allowed_ips=[f"10.0.0.{n}/32", f"192.168.{n}.0/24"],
        name=name,
    )


def test_render_is_deterministic_and_sorted_by_tunnel_address():
    peers = [_peer(n) for n in (12, 3, 7)]
    iface = WgInterface(address="10.0.0.1/24", mtu=1370)
    a = wg_render.render_wg_conf(WgConfig(interface=iface, peers=peers))
    b = wg_render.render_wg_conf(WgConfig(interface=iface, peers=list(reversed(peers))))
    assert a == b
    order = [line.split(" = ")[1] for line in a.splitlines() if line.startswith("Endpoint")]
    assert order == ["198.51.100.3:51820", "198.51.100.7:51820", "198.51.100.12:51820"]


def test_peer_name_becomes_a_comment_and_optional_fields_are_omitted():
    iface = WgInterface(address="10.0.0.2/24", listen_port=None, mtu=None)
    peer = WgPeer(
        public_key=MASTER_PUB, allowed_ips=["10.0.0.0/24"], keepalive=None, name="hg-home"
    )
    text = wg_render.render_wg_conf(WgConfig(interface=iface, peers=[peer]))
    assert "# hg-home\n" in text
    for absent in ("ListenPort", "MTU", "Endpoint", "PersistentKeepalive"):
        assert absent not in text


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
        WgPeer(**{**base, **kwargs})
    text = str(err.value)
    assert field in text and needle in text


def test_overlapping_allowed_ips_between_peers_are_refused():
    a = WgPeer(public_key=VPN_PUB, allowed_ips=["192.168.77.0/24"])
    b = WgPeer(public_key=MASTER_PUB, allowed_ips=["192.168.77.128/25"])
    with pytest.raises(ValidationError, match="overlaps"):
        WgConfig(interface=WgInterface(address="10.0.0.1/24"), peers=[a, b])


def test_mtu_bounds():
    with pytest.raises(ValidationError, match="mtu"):
        WgInterface(address="10.0.0.1/24", mtu=500)


# ---------------------------------------------------------------- node-side key handling


@pytest.fixture
def paths(tmp_path):
    return WgPaths(directory=str(tmp_path / "wireguard"))


def run(coro):
    return asyncio.run(coro)


def test_genkey_makes_key_once_and_returns_only_the_public_key(paths):
    shell = LocalShell()
    pub1 = run(wg_node.ensure_wg_key(shell, paths))
    key = Path(paths.private_key).read_text().strip()
    assert pub1 != key and len(pub1) == 44
    assert stat.S_IMODE(os.stat(paths.private_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths.directory).st_mode) == 0o700
    pub2 = run(wg_node.ensure_wg_key(shell, paths))
    assert pub2 == pub1
    assert Path(paths.private_key).read_text().strip() == key


def test_assemble_joins_the_key_on_the_node_without_it_in_any_argv(paths):
    shell = LocalShell()
    run(wg_node.ensure_wg_key(shell, paths))
    key = Path(paths.private_key).read_text().strip()
    body = wg_render.render_wg_conf(seed_master(), paths)
    run(shell.upload(paths.body, body.encode()))
    # `set -x` makes sh print every command it runs with its expanded arguments
    res = run(shell.run("set -x\n" + wg_commands.assemble_command(paths), name="assemble"))
    assert key not in res.stderr and key not in res.stdout
    assert "awk" in res.stderr  # the trace is really there
    for cmd in (
        wg_commands.genkey_command(paths),
        wg_commands.assemble_command(paths),
        wg_commands.bring_up_command(paths),
    ):
        assert key not in cmd
    conf = Path(paths.conf).read_text()
    lines = conf.splitlines()
    assert lines[lines.index("[Interface]") + 1] == f"PrivateKey = {key}"
    assert conf.replace(f"PrivateKey = {key}\n", "") == body
    assert stat.S_IMODE(os.stat(paths.conf).st_mode) == 0o600
    leftovers = [p.name for p in Path(paths.directory).iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert res.stdout.strip() == "changed"
    again = run(shell.run(wg_commands.assemble_command(paths), name="assemble"))
    assert again.stdout.strip() == "unchanged"
    assert Path(paths.conf).read_text() == conf


def test_assemble_refuses_without_key_and_with_a_key_in_the_body(paths):
    shell = LocalShell()
    run(shell.upload(paths.body, wg_render.render_wg_conf(seed_vpn(), paths).encode()))
    with pytest.raises(RemoteCommandError, match="missing or empty"):
        run(shell.run(wg_commands.assemble_command(paths), name="assemble"))
    run(wg_node.ensure_wg_key(shell, paths))
    bad = "[Interface]\nPrivateKey = x\nAddress = 10.0.0.2/24\n"
    run(shell.upload(paths.body, bad.encode()))
    with pytest.raises(RemoteCommandError, match="must not contain a PrivateKey") as err:
        run(shell.run(wg_commands.assemble_command(paths), name="assemble"))
    assert err.value.name == "assemble"
    assert not Path(paths.conf).exists()


def test_mss_clamp_command_is_guarded_and_names_the_rule():
    cmd = wg_commands.mss_clamp_command()
    assert "tcp option maxseg size set rt mtu" in cmd
    assert "|| \\\n  nft add rule" in cmd  # only added when missing
    with pytest.raises(ValueError):
        wg_commands.mss_clamp_command("bad table; reboot")


# ---------------------------------------------------------------- on a real interface
# Two WireGuard interfaces (wireguard-go) in a private, throw-away network + mount namespace
# made by `unshare`: they peer over that namespace's loopback only. Nothing touches the root
# namespace; everything started inside is ended by PID.


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


@pytest.fixture
def sandbox():
    import signal
    import subprocess

    for tool in ("unshare", "nsenter", "wireguard-go", "wg-quick", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace")
    holder = subprocess.Popen(
        [
            "unshare",
            "--kill-child",
            "--net",
            "--mount",
            "--fork",
            "sh",
            "-c",
            "mount -t tmpfs -o mode=755 tmpfs /run && ip link set lo up "
            "&& echo $$ && exec sleep 900",
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        line = holder.stdout.readline().decode().strip()
        if not line.isdigit():
            pytest.skip("could not create a private network namespace")
        pid = int(line)
        prefix = ["nsenter", "-t", str(pid), "-n", "-m"]
        yield LocalShell(prefix=prefix, label="sandbox")
    finally:
        try:
            ns = _netns_inode(pid)
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) != pid:
                    try:
                        if _netns_inode(int(entry)) == ns:
                            os.kill(int(entry), signal.SIGTERM)  # wireguard-go of this sandbox
                    except OSError:
                        pass
            os.kill(pid, signal.SIGKILL)  # the namespace holder itself
        except (OSError, UnboundLocalError):
            pass
        holder.kill()
        holder.wait()


async def _wait_handshake(shell, iface: str, peer: str, timeout: float = 20):
    from hybridgrid.wireguard.state import read_wg_state

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        state = await read_wg_state(shell, iface)
        p = state.peer(peer)
        if p is not None and p.latest_handshake:
            return state
        if loop.time() > end:
            raise AssertionError(f"no handshake on {iface} within {timeout} s")
        await asyncio.sleep(0.5)


@pytest.mark.dataplane
def test_bring_up_syncconf_keeps_key_and_sessions(sandbox, tmp_path):
    from hybridgrid.wireguard.state import read_wg_state, wg_dump_command

    sh = sandbox
    p1 = WgPaths(directory=str(tmp_path / "n1"), iface="wg0")
    p2 = WgPaths(directory=str(tmp_path / "n2"), iface="wg1")

    async def go():
        pub1 = await wg_node.ensure_wg_key(sh, p1)
        pub2 = await wg_node.ensure_wg_key(sh, p2)
        c1 = WgConfig(
            interface=WgInterface(address="10.0.0.1/24", listen_port=51820, mtu=1370),
            peers=[
                WgPeer(
                    public_key=pub2,
                    endpoint="127.0.0.1:51821",
                    allowed_ips=["10.9.0.2/32", "192.168.77.0/24"],
                )
            ],
        )
        c2 = WgConfig(
            interface=WgInterface(address="10.9.0.2/24", listen_port=51821, mtu=1370),
            peers=[
                WgPeer(
                    public_key=pub1,
                    endpoint="127.0.0.1:51820",
                    allowed_ips=["10.0.0.1/32", "192.168.66.0/24"],
                )
            ],
        )
        r1 = await wg_node.apply_wg_config(sh, c1, p1)
        r2 = await wg_node.apply_wg_config(sh, c2, p2)
        assert (r1.action, r2.action) == ("started", "started")
        assert r1.changed and r2.changed
        before = await _wait_handshake(sh, "wg0", pub2)
        link = await sh.run("ip -o link show dev wg0", name="link")
        assert " mtu 1370 " in link.stdout

        # the dump crosses the wire with the private key masked
        raw = await sh.run(wg_dump_command("wg0"), name="dump")
        key1 = Path(p1.private_key).read_text().strip()
        assert key1 not in raw.stdout and raw.stdout.startswith("(hidden)\t" + pub1)

        # live add of a third peer: syncconf, the running session and the key stay
        third = WgPeer(
            public_key=base64.b64encode(b"\x07" * 32).decode(),
            endpoint="127.0.0.1:51999",
            allowed_ips=["10.0.0.3/32"],
            keepalive=None,
        )
        same = await wg_node.apply_wg_config(sh, c1, p1)  # a rerun: nothing changes
        assert (same.action, same.changed) == ("synced", False)
        r3 = await wg_node.apply_wg_config(
            sh, WgConfig(interface=c1.interface, peers=[*c1.peers, third]), p1
        )
        assert r3.action == "synced"
        assert r3.changed
        after = await read_wg_state(sh, "wg0")
        assert after.interface.has_private_key and after.interface.public_key == pub1
        assert {p.public_key for p in after.peers} == {pub2, third.public_key}
        old, new = before.peer(pub2), after.peer(pub2)
        assert new.latest_handshake >= old.latest_handshake > 0
        assert new.rx_bytes >= old.rx_bytes  # counters not reset: same peer object

        # live removal
        r4 = await wg_node.apply_wg_config(sh, c1, p1)  # the config without the third peer
        assert r4.action == "synced"
        assert [p.public_key for p in (await read_wg_state(sh, "wg0")).peers] == [pub2]

        # a wg0.conf without PrivateKey is refused before syncconf could wipe the key
        Path(p1.conf).write_text(wg_render.render_wg_conf(c1, p1))
        with pytest.raises(RemoteCommandError, match="refusing a syncconf"):
            await sh.run(wg_commands.bring_up_command(p1), name="bring up wg0")
        still = await read_wg_state(sh, "wg0")
        assert still.interface.has_private_key and still.peer(pub2) is not None

        # forwarding and MSS clamping, twice: one rule
        persist = tmp_path / "sysctl.d" / "90-hybridgrid.conf"
        persist.parent.mkdir()
        for _ in range(2):
            await sh.run(wg_commands.ip_forward_command(str(persist)), name="ip_forward")
            await sh.run(wg_commands.mss_clamp_command(), name="mss")
        fwd = await sh.run("sysctl -n net.ipv4.ip_forward", name="sysctl")
        assert fwd.stdout.strip() == "1"
        assert persist.read_text().splitlines() == [
            "net.ipv4.ip_forward = 1",
            "net.ipv4.conf.all.send_redirects = 0",
            "net.ipv4.conf.default.send_redirects = 0",
        ]
        redirects = await sh.run(
            "cat /proc/sys/net/ipv4/conf/*/send_redirects | sort -u", name="redirects"
        )
        assert redirects.stdout.split() == ["0"]
        rules = await sh.run("nft list chain inet hybridgrid forward", name="nft list")
        assert rules.stdout.count("maxseg size set rt mtu") == 1

        # tools present: nothing installed
        assert await wg_node.ensure_wireguard_tools(sh) == "present"

        for p in (p1, p2):
            await sh.run(f"wg-quick down {p.conf} >&2", name="down")
        assert await read_wg_state(sh, "wg0", missing_ok=True) is None

        # worker routes, after wg0 (which routed 192.168.77.0/24 here) is gone:
        # idempotent `ip route replace`, persistence skipped on a host without a way
        if shutil.which("netplan") is None:
            await sh.run(
                "ip link add d0 type veth peer name d1 && ip address add 192.168.77.13/24 "
                "dev d0 && ip link set d1 up && ip link set d0 up",
                name="dummy uplink",
            )
            nets = [IPv4Network("192.168.66.0/24"), IPv4Network("10.0.0.0/24")]
            for _ in range(2):
                how = await wg_node.ensure_routes(sh, nets, IPv4Address("192.168.77.10"))
                assert how == "persist:skipped"
            table = (await sh.run("ip route show", name="routes")).stdout
            assert "192.168.66.0/24 via 192.168.77.10 dev d0" in table
            assert table.count("192.168.66.0/24") == 1

    asyncio.run(go())


def _pair(pub1: str, pub2: str) -> tuple[WgConfig, WgConfig]:
    c1 = WgConfig(
        interface=WgInterface(address="10.0.0.1/24", listen_port=51820, mtu=1370),
        peers=[WgPeer(public_key=pub2, endpoint="127.0.0.1:51821", allowed_ips=["10.9.0.2/32"])],
    )
    c2 = WgConfig(
        interface=WgInterface(address="10.9.0.2/24", listen_port=51821, mtu=1370),
        peers=[WgPeer(public_key=pub1, endpoint="127.0.0.1:51820", allowed_ips=["10.0.0.1/32"])],
    )
    return c1, c2


@pytest.mark.dataplane
def test_key_rotation_on_the_node_with_rollback(sandbox, tmp_path):
    from hybridgrid.wireguard.state import read_wg_state

    sh = sandbox
    p1 = WgPaths(directory=str(tmp_path / "n1"), iface="wg0")
    p2 = WgPaths(directory=str(tmp_path / "n2"), iface="wg1")

    async def go():
        pub1, pub2 = await wg_node.ensure_wg_key(sh, p1), await wg_node.ensure_wg_key(sh, p2)
        c1, c2 = _pair(pub1, pub2)
        await wg_node.apply_wg_config(sh, c1, p1)
        await wg_node.apply_wg_config(sh, c2, p2)
        await _wait_handshake(sh, "wg1", pub1)

        new1 = await wg_node.stage_key(sh, p1)
        assert new1 != pub1 and await wg_node.stage_key(sh, p1) == new1  # staged once
        assert (await read_wg_state(sh, "wg0")).interface.public_key == pub1  # still running
        # the peer learns the new key first, then node 1 switches (live, syncconf)
        _, c2_new = _pair(new1, pub2)
        await wg_node.apply_wg_config(sh, c2_new, p2)
        active, res = await wg_node.activate_key(sh, c1, p1)
        assert active == new1 and res.action == "synced"
        assert (await read_wg_state(sh, "wg0")).interface.public_key == new1
        await _wait_handshake(sh, "wg1", new1)  # a fresh handshake with the new key
        assert Path(p1.previous_key).read_text().strip() != Path(p1.private_key).read_text()

        # a second rotation that is rolled back restores the key in use before it
        newer = await wg_node.stage_key(sh, p1)
        await wg_node.activate_key(sh, c1, p1)
        assert (await read_wg_state(sh, "wg0")).interface.public_key == newer
        back, _ = await wg_node.rollback_key(sh, c1, p1)
        assert back == new1
        assert (await read_wg_state(sh, "wg0")).interface.public_key == new1
        await sh.run(wg_commands.forget_previous_key_command(p1), name="forget")
        assert not Path(p1.previous_key).exists()
        assert stat.S_IMODE(os.stat(p1.private_key).st_mode) == 0o600
        for p in (p1, p2):
            await sh.run(f"wg-quick down {p.conf} >&2", name="down")

    asyncio.run(go())


def test_paths_refuse_shell_metacharacters():
    for bad in ("etc/wireguard", '/etc/wg"; reboot; "', "/etc/$(id)"):
        with pytest.raises(ValidationError, match="directory"):
            WgPaths(directory=bad)
    with pytest.raises(ValidationError, match="iface"):
        WgPaths(iface="wg0; reboot")


def _section_peers(text: str) -> list[dict[str, str]]:
    peers: list[dict[str, str]] = []
    for line in text.splitlines():
        if line == "[Peer]":
            peers.append({})
        elif peers and " = " in line:
            k, v = line.split(" = ", 1)
            peers[-1][k] = v
    return peers


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=2, max_value=250), min_size=0, max_size=12, unique=True))
def test_render_any_peer_set_is_order_independent_and_complete(ns):
    peers = [_peer(n) for n in ns]
    iface = WgInterface(address="10.0.0.1/24", mtu=1370)
    text = wg_render.render_wg_conf(WgConfig(interface=iface, peers=peers))
    assert text == wg_render.render_wg_conf(WgConfig(interface=iface, peers=peers[::-1]))
    parsed = _section_peers(text)
    assert [p["Endpoint"] for p in parsed] == [f"198.51.100.{n}:51820" for n in sorted(ns)]
    assert all(p["PersistentKeepalive"] == "25" for p in parsed)
    assert not any(line.startswith("PrivateKey") for line in text.splitlines())
