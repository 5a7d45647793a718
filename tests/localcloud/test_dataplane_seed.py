"""The seed topology on two clouds, with real namespaces, sshd, WireGuard and nftables.

bielefeld (192.168.66.0/24): master (FIP 203.0.113.10) + worker
giessen   (192.168.77.0/24): vpn (FIP 198.51.100.10) + worker
WireGuard is brought up by hand with the seed's wg0.conf values: master 10.0.0.1/24 initiates,
the VPN node 10.0.0.2/24 is passive (no Endpoint), ListenPort 51820, MTU 1370. Security groups
are stateful: if BOTH peers had an Endpoint, each side's outgoing packet would open conntrack
state and the tunnel would come up without any UDP rule (hole punching), so the rule test
uses a single initiator and flushes conntrack between cases.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dataplane_fixtures import CloudBuilder, icmp_rule, tcp_rule, udp_rule

from localcloud.dataplane import make_backend, open_connection_socket
from localcloud.dataplane.cli import proxy_command
from localcloud.dataplane.hostkeys import fingerprint

pytestmark = [
    pytest.mark.dataplane,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("wireguard-go") or not shutil.which("nft"),
        reason="needs root, wireguard-go and nftables",
    ),
]

MASTER_FIP, VPN_FIP = "203.0.113.10", "198.51.100.10"


class Seed:
    def __init__(self, state_dir, key_path, pubkey):
        self.state_dir, self.key_path = state_dir, key_path
        self.backend = make_backend(state_dir)
        self.b = CloudBuilder("bielefeld", 0, "192.168.66.0/24")
        self.g = CloudBuilder("giessen", 1, "192.168.77.0/24")
        self.master = self.b.add_server("master", "192.168.66.10", [pubkey])
        self.worker_b = self.b.add_server("worker", "192.168.66.11", [pubkey])
        self.vpn = self.g.add_server("vpn", "192.168.77.10", [pubkey])
        self.worker_g = self.g.add_server("worker", "192.168.77.11", [pubkey])
        self.b.add_floating_ip(self.master, MASTER_FIP)
        self.g.add_floating_ip(self.vpn, VPN_FIP)
        # ping from anywhere on all servers, so only port security decides worker pings
        for builder in (self.b, self.g):
            icmp = builder.add_group("icmp", [icmp_rule()])
            for s in builder.servers:
                builder.port_of(s).security_group_ids.append(icmp.id)
        ssh = self.b.add_group("ssh", [tcp_rule(22)])
        self.b.port_of(self.master).security_group_ids.append(ssh.id)
        self.wg = self.g.add_group("wireguard", [])
        self.g.port_of(self.vpn).security_group_ids.append(self.wg.id)

    def apply(self):
        self.backend.apply(self.b.snapshot())
        self.backend.apply(self.g.snapshot())

    def sh(self, server, script, check=True):
        res = self.backend.exec(server.id, ["sh", "-c", script])
        if check:
            assert res.returncode == 0, f"{server.name}: {script}: {res.stdout}{res.stderr}"
        return res

    def ping(self, server, address, tries=1):
        for _ in range(tries):
            if self.sh(server, f"ping -c 1 -W 1 {address}", check=False).returncode == 0:
                return True
        return False


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    base = tmp_path_factory.mktemp("dataplane-seed")
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = base / "id_ed25519"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    s = Seed(base / "state", key_path, pub + " test@localcloud")
    try:
        t0 = time.monotonic()
        s.apply()
        print(f"\nseed topology (2 clouds, 4 servers) up in {time.monotonic() - t0:.2f} s")
        yield s
    finally:
        s.backend.destroy()


def _safety_check():
    """Before any traffic: the root namespace has no addresses, NAT or routes of ours."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    for line in routes.splitlines():
        if re.search(r"203\.0\.113|198\.51\.100|192\.168\.(66|77)|10\.0\.0", line):
            assert line.startswith("unreachable "), f"root namespace route: {line}"
    addrs = subprocess.run(["ip", "-4", "addr", "show"], capture_output=True, text=True).stdout
    assert not re.search(r"inet (203\.0\.113|198\.51\.100|192\.168\.(66|77))", addrs)
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    assert "lc_nat" not in rules and "lc_sg" not in rules


def _wg_setup(seed: Seed) -> None:
    """Keys made INSIDE the servers; private keys never leave them."""
    pubs = {}
    for srv in (seed.master, seed.vpn):
        out = seed.sh(
            srv,
            "umask 077; wg genkey > /etc/wireguard/private.key;"
            " wg pubkey < /etc/wireguard/private.key",
        )
        pubs[srv.name] = out.stdout.strip()
    seed.sh(
        seed.master,
        "umask 077; { printf '[Interface]\\nAddress = 10.0.0.1/24\\nListenPort = 51820\\n"
        "MTU = 1370\\nPrivateKey = '; cat /etc/wireguard/private.key; printf '\\n[Peer]\\n"
        f"PublicKey = {pubs['vpn']}\\nEndpoint = {VPN_FIP}:51820\\n"
        "AllowedIPs = 10.0.0.2/32, 192.168.77.0/24\\nPersistentKeepalive = 25\\n'; }"
        " > /etc/wireguard/wg0.conf",
    )
    seed.sh(
        seed.vpn,
        "umask 077; { printf '[Interface]\\nAddress = 10.0.0.2/24\\nListenPort = 51820\\n"
        "MTU = 1370\\nPrivateKey = '; cat /etc/wireguard/private.key; printf '\\n[Peer]\\n"
        f"PublicKey = {pubs['master']}\\nAllowedIPs = 10.0.0.1/32, 192.168.66.0/24\\n'; }}"
        " > /etc/wireguard/wg0.conf",
    )
    for srv in (seed.master, seed.vpn):
        seed.sh(srv, "sysctl -qw net.ipv4.ip_forward=1")


def _wg_up(seed: Seed, server) -> None:
    if seed.sh(server, "ip link show wg0", check=False).returncode != 0:
        seed.sh(server, "wg-quick up wg0 2>&1")


def _wg_down(seed: Seed, server) -> None:
    seed.sh(server, "ip link show wg0 >/dev/null 2>&1 && wg-quick down wg0 2>&1 || true")


def _handshakes(seed: Seed, server) -> int:
    out = seed.sh(server, "wg show wg0 latest-handshakes").stdout.split()
    return int(out[1]) if len(out) > 1 else 0


def _set_wg_rule(seed: Seed, prefix: str | None) -> None:
    seed.wg.rules = [] if prefix is None else [udp_rule(51820, prefix)]
    seed.backend.apply(seed.g.snapshot())
    seed.backend.flush_conntrack()


@pytest.fixture(scope="module")
def tunnel(seed):
    _safety_check()
    _wg_setup(seed)
    _wg_up(seed, seed.vpn)
    return seed


def _ensure_tunnel(seed: Seed) -> None:
    _set_wg_rule(seed, f"{MASTER_FIP}/32")
    _wg_up(seed, seed.master)
    assert seed.ping(seed.master, "10.0.0.2", tries=5)


def test_wireguard_handshake_needs_udp_rule_from_initiator_fip(tunnel):
    seed = tunnel
    cases = [(None, False), ("203.0.113.99/32", False), (f"{MASTER_FIP}/32", True)]
    for prefix, works in cases:
        _wg_down(seed, seed.master)
        _set_wg_rule(seed, prefix)
        _wg_up(seed, seed.master)
        if works:
            assert seed.ping(seed.master, "10.0.0.2", tries=5), "tunnel should work with the rule"
            assert _handshakes(seed, seed.vpn) > 0
            assert seed.ping(seed.vpn, "10.0.0.1")
        else:
            res = seed.sh(seed.master, "ping -c 3 -i 0.3 -W 1 10.0.0.2", check=False)
            assert res.returncode != 0, f"tunnel must not work with rule {prefix}"
            assert _handshakes(seed, seed.vpn) == 0


def test_workers_ping_across_sites_only_with_pairs_and_routes(tunnel):
    seed = tunnel
    _ensure_tunnel(seed)
    b, g = seed.b, seed.g
    full_pairs = {"master": ["192.168.77.0/24"], "vpn": ["192.168.66.0/24"]}
    full_routes = {
        "b": [("192.168.77.0/24", "192.168.66.10")],
        "g": [("192.168.66.0/24", "192.168.77.10")],
    }

    def configure(pairs, routes):
        b.set_pairs(seed.master, pairs["master"])
        g.set_pairs(seed.vpn, pairs["vpn"])
        b.set_routes(routes["b"])
        g.set_routes(routes["g"])
        seed.apply()
        seed.backend.flush_conntrack()

    try:
        configure(full_pairs, full_routes)
        assert seed.ping(seed.worker_b, "192.168.77.11", tries=3), "full seed config must work"
        assert seed.ping(seed.worker_g, "192.168.66.11", tries=3)
        broken = [
            ("master pair", {**full_pairs, "master": []}, full_routes),
            ("vpn pair", {**full_pairs, "vpn": []}, full_routes),
            ("bielefeld route", full_pairs, {**full_routes, "b": []}),
            ("giessen route", full_pairs, {**full_routes, "g": []}),
        ]
        for what, pairs, routes in broken:
            configure(pairs, routes)
            assert not seed.ping(seed.worker_b, "192.168.77.11"), f"works without {what}"
        configure(full_pairs, full_routes)
        assert seed.ping(seed.worker_b, "192.168.77.11", tries=3), "restored config must work"
    finally:
        configure({"master": [], "vpn": []}, {"b": [], "g": []})


def _known_hosts_from_console(seed: Seed, server, address: str, path) -> list[str]:
    console = seed.backend.console_log("bielefeld", server.id)
    fps = re.search(
        r"-----BEGIN SSH HOST KEY FINGERPRINTS-----\n(.*?)-----END SSH HOST KEY FINGERPRINTS-----",
        console,
        re.S,
    )
    keys = re.search(
        r"-----BEGIN SSH HOST KEY KEYS-----\n(.*?)-----END SSH HOST KEY KEYS-----", console, re.S
    )
    assert fps and keys, console
    key_lines = keys.group(1).strip().splitlines()
    fp_lines = fps.group(1).strip().splitlines()
    # the fingerprints printed are those of the keys printed (as cloud-init does)
    assert sorted(line.split()[1] for line in fp_lines) == sorted(fingerprint(k) for k in key_lines)
    assert all(line.endswith(f"root@{server.name}") for line in key_lines)
    path.write_text("".join(f"{address} {' '.join(k.split()[:2])}\n" for k in key_lines))
    return fp_lines


def test_ssh_through_proxy_command_with_console_host_key(seed, tmp_path):
    _safety_check()
    known = tmp_path / "known_hosts"
    fp_lines = _known_hosts_from_console(seed, seed.master, MASTER_FIP, known)
    proxy = proxy_command(seed.state_dir)
    base = [
        "ssh", "-F", "/dev/null", "-i", str(seed.key_path), "-o", "BatchMode=yes",
        "-o", f"ProxyCommand={proxy}", "-o", "StrictHostKeyChecking=yes",
        "-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "ConnectTimeout=10",
    ]  # fmt: skip
    res = subprocess.run(
        [
            *base,
            "-o",
            f"UserKnownHostsFile={known}",
            f"ubuntu@{MASTER_FIP}",
            "hostname; sudo -n id -u",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["master", "0"]
    # the key ssh saw is the one whose fingerprint the console printed
    ed_fp = next(line.split()[1] for line in fp_lines if line.endswith("(ED25519)"))
    scan = subprocess.run(["ssh-keygen", "-lf", str(known)], capture_output=True, text=True).stdout
    assert ed_fp in scan
    # a wrong host key is refused
    wrong = tmp_path / "wrong_known_hosts"
    _known_hosts_from_console(seed, seed.worker_b, MASTER_FIP, wrong)
    res = subprocess.run(
        [*base, "-o", f"UserKnownHostsFile={wrong}", f"ubuntu@{MASTER_FIP}", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode != 0 and "Host key verification failed" in res.stderr


def test_asyncssh_with_namespace_socket(seed, tmp_path):
    asyncssh = pytest.importorskip("asyncssh")
    known = tmp_path / "known_hosts"
    _known_hosts_from_console(seed, seed.master, MASTER_FIP, known)

    async def run():
        sock = open_connection_socket(MASTER_FIP, 22, state_dir=seed.state_dir)
        async with asyncssh.connect(
            MASTER_FIP, sock=sock, username="root", client_keys=[str(seed.key_path)],
            known_hosts=str(known),
        ) as conn:  # fmt: skip
            return (await conn.run("cat /etc/hostname", check=True)).stdout

    assert asyncio.run(run()).strip() == "master"


def test_servers_are_isolated(tunnel):
    seed = tunnel
    _wg_up(seed, seed.master)
    assert seed.sh(seed.master, "ls /run/wireguard").stdout.split() == ["wg0.sock"]
    assert seed.sh(seed.worker_b, "ls /run/wireguard").stdout.split() == []
    assert seed.sh(seed.worker_b, "hostname").stdout.strip() == "worker"
    assert seed.sh(seed.worker_b, "ip -o link show wg0", check=False).returncode != 0
    procs = seed.sh(seed.worker_b, "ps -e -o comm=").stdout.split()
    assert "wireguard-go" not in procs and len(procs) < 10
    # user data written on one server does not appear on the real machine or the others
    seed.sh(seed.worker_b, "echo private > /etc/lc-test-marker")
    assert not os.path.exists("/etc/lc-test-marker")
    assert seed.sh(seed.master, "test -e /etc/lc-test-marker", check=False).returncode != 0
    # tools a flow relies on work inside
    for tool in ("nft list tables", "ip -br addr", "wg --version", "ping -c1 -W1 192.168.66.1"):
        seed.sh(seed.worker_b, tool)
