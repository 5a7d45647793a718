"""A bastion host in localcloud's internet: real namespaces, real sshd, real SSH clients.

Two clouds (hand-built snapshots, no API): bielefeld's master (FIP 203.0.113.10) and giessen's
vpn (FIP 198.51.100.10), both with SSH open to the world. The bastion (198.19.255.2) is
reached from the root namespace only through localcloud's proxy, with its host key pinned;
servers are reached through it (direct-tcpip), as hybridgrid does for a bastion-only cloud.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dataplane_fixtures import CloudBuilder, tcp_rule

from localcloud import control
from localcloud.config import external_cidr
from localcloud.dataplane import bastion, make_backend, names
from localcloud.dataplane.netns import (
    DataplaneError,
    ip_json,
    is_alive,
    list_namespaces,
    ns_exists,
    nsexec,
    open_connection_socket,
)

pytestmark = [
    pytest.mark.dataplane,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("nft") or not os.path.exists("/usr/sbin/sshd"),
        reason="needs root, nftables and sshd",
    ),
]

MASTER_FIP, VPN_FIP = "203.0.113.10", "198.51.100.10"
CONNECT_TIMEOUT = 20


def _keypair(directory: Path, name: str) -> tuple[Path, str]:
    """An ed25519 key written 0600 (path) and its public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    (directory / f"{name}.pub").write_text(f"{public} {name}@test\n")
    return path, f"{public} {name}@test"


class World:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.state_dir = base / "state"
        self.key_path, self.pubkey = _keypair(base, "id_user")
        self.backend = make_backend(self.state_dir)
        self.b = CloudBuilder("bielefeld", 0, "192.168.66.0/24")
        self.g = CloudBuilder("giessen", 1, "192.168.77.0/24")
        self.master = self.b.add_server("master", "192.168.66.10", [self.pubkey])
        self.vpn = self.g.add_server("vpn", "192.168.77.10", [self.pubkey])
        self.b.add_floating_ip(self.master, MASTER_FIP)
        self.g.add_floating_ip(self.vpn, VPN_FIP)
        for builder, srv in ((self.b, self.master), (self.g, self.vpn)):
            ssh = builder.add_group("ssh", [tcp_rule(22)])
            builder.port_of(srv).security_group_ids.append(ssh.id)
        self.bastion: bastion.BastionInfo | None = None

    def apply(self) -> None:
        self.backend.apply(self.b.snapshot())
        self.backend.apply(self.g.snapshot())

    def server_known_hosts(self, srv, address: str) -> str:
        rec = self.backend.state.servers[srv.id]
        return "".join(f"{address} {k.public}\n" for k in rec.host_keys)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("dataplane-bastion"))
    try:
        w.apply()
        w.bastion = bastion.up(w.state_dir, w.pubkey)
        yield w
    finally:
        w.backend.destroy()


async def _jump(w: World, known_hosts: str, **kw) -> asyncssh.SSHClientConnection:
    """An SSH connection to the bastion from the root namespace, through localcloud's proxy."""
    b = w.bastion
    assert b is not None
    return await asyncssh.connect(
        b.address,
        port=b.port,
        username=kw.pop("username", b.user),
        client_keys=[str(kw.pop("key", w.key_path))],
        known_hosts=asyncssh.import_known_hosts(known_hosts),
        proxy_command=b.proxy_command.replace("%h", b.address).replace("%p", str(b.port)),
        connect_timeout=CONNECT_TIMEOUT,
        **kw,
    )


async def _through(w: World, jump, srv, address: str, command: str) -> str:
    async with asyncssh.connect(
        address,
        username="ubuntu",
        client_keys=[str(w.key_path)],
        known_hosts=asyncssh.import_known_hosts(w.server_known_hosts(srv, address)),
        tunnel=jump,
        connect_timeout=CONNECT_TIMEOUT,
    ) as conn:
        res = await conn.run(command, check=True, timeout=CONNECT_TIMEOUT)
        return str(res.stdout)


def test_bastion_address_plan_and_safety_route(world):
    b = world.bastion
    addr = ipaddress.ip_address(b.address)
    assert addr in ipaddress.ip_network("198.18.0.0/15")
    # no cloud localcloud can make (indexes 0..512) takes the bastion's network
    for index in range(513):
        assert addr not in external_cidr(index), index
    routes = subprocess.run(
        ["ip", "-j", "route", "show", "type", "unreachable"], capture_output=True, text=True
    ).stdout
    assert "198.19.255.0/24" in {r["dst"] for r in json.loads(routes or "[]")}
    root_addrs = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    assert "198.19.255." not in root_addrs
    assert b.host_key.startswith("ssh-ed25519 ") and b.user == "jump" and b.port == 22
    assert b.known_hosts_line == f"{b.address} {b.host_key}"
    assert b.namespace == names.bastion_ns(names.instance_tag(world.state_dir))
    # the bastion's only route out leads into localcloud's internet
    tag = names.instance_tag(world.state_dir)
    assert [r["dst"] for r in ip_json(b.namespace, "route", "show")] == [
        "default",
        "198.19.255.0/24",
    ]
    assert names.BASTION_INET_LINK in {
        link["ifname"] for link in ip_json(names.inet_ns(tag), "link", "show")
    }


def test_asyncssh_through_pinned_bastion_reaches_both_clouds(world):
    async def main():
        async with await _jump(world, world.bastion.known_hosts_line + "\n") as jump:
            who = await jump.run("id -un; hostname", check=True, timeout=CONNECT_TIMEOUT)
            master = await _through(
                world, jump, world.master, MASTER_FIP, "hostname; echo $SSH_CLIENT"
            )
            vpn = await _through(world, jump, world.vpn, VPN_FIP, "hostname")
        return str(who.stdout).split(), master.split(), vpn.split()

    who, master, vpn = asyncio.run(main())
    assert who == ["jump", "bastion"]
    assert master[0] == "master" and vpn == ["vpn"]
    assert master[1] == world.bastion.address  # the server sees the bastion as its client


def test_openssh_proxyjump_with_pinned_bastion(world, tmp_path):
    b = world.bastion
    known = tmp_path / "known_hosts"
    known.write_text(b.known_hosts_line + "\n" + world.server_known_hosts(world.master, MASTER_FIP))
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host lc-bastion\n  HostName {b.address}\n  Port {b.port}\n  User {b.user}\n"
        f"  ProxyCommand {b.proxy_command}\n"
        f"Host {MASTER_FIP}\n  User ubuntu\n  ProxyJump lc-bastion\n"
        f"Host *\n  IdentityFile {world.key_path}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 20\n"
    )
    proc = subprocess.run(
        ["ssh", "-F", str(config), MASTER_FIP, "hostname"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "master"


def test_wrong_bastion_host_key_is_refused(world, tmp_path):
    wrong = _public_line(ed25519.Ed25519PrivateKey.generate())

    async def main():
        async with await _jump(world, f"{world.bastion.address} {wrong}\n"):
            pass

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(main())
    # OpenSSH, strict checking, the same wrong pin
    b = world.bastion
    known = tmp_path / "known_hosts"
    known.write_text(f"{b.address} {wrong}\n")
    proc = subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-o", f"ProxyCommand={b.proxy_command}",
            "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=20", "-i", str(world.key_path),
            f"{b.user}@{b.address}", "true",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_only_jump_with_its_key_may_log_in(world, tmp_path):
    _, stranger_pub = _keypair(tmp_path, "id_stranger")

    async def attempt(**kw) -> None:
        async with await _jump(world, world.bastion.known_hosts_line + "\n", **kw):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(attempt(username="root"))
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(attempt(key=tmp_path / "id_stranger"))
    assert stranger_pub  # the stranger's key was made but never authorized


def test_second_up_is_the_same_host_and_sets_the_keys(world, tmp_path):
    first = world.bastion
    again = bastion.up(world.state_dir, world.pubkey)
    assert (again.host_key, again.pid, again.address) == (first.host_key, first.pid, first.address)
    new_path, new_pub = _keypair(tmp_path, "id_new")
    try:
        swapped = world.backend.bastion([new_pub])  # the backend's entry point
        assert swapped.host_key == first.host_key

        async def attempt(key) -> str:
            async with await _jump(world, first.known_hosts_line + "\n", key=key) as conn:
                return str((await conn.run("id -un", check=True)).stdout).strip()

        assert asyncio.run(attempt(new_path)) == "jump"
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(attempt(world.key_path))
        both = bastion.up(world.state_dir, world.pubkey, add=True)  # a second site's key
        assert both.authorized_keys == [new_pub, world.pubkey]
        assert [asyncio.run(attempt(k)) for k in (new_path, world.key_path)] == ["jump"] * 2
    finally:
        bastion.up(world.state_dir, world.pubkey)


def _direct(address: str, state_dir: Path) -> str:
    """What localcloud's proxy path (a socket from the internet namespace) gets."""
    try:
        open_connection_socket(address, 22, state_dir=state_dir, timeout=5).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return "connected"


def test_a_bastion_only_cloud_is_reached_through_the_bastion_alone(world):
    sd = world.state_dir
    closed = bastion.up(sd, world.pubkey, bastion_only=["giessen"])
    try:
        assert closed.bastion_only == {"giessen": "198.51.100.0/24"}
        assert closed.host_key == world.bastion.host_key
        assert _direct(VPN_FIP, sd) == "No route to host"  # refused at once, no timeout
        assert _direct(MASTER_FIP, sd) == "connected"  # other clouds stay direct

        async def via_bastion() -> str:
            async with await _jump(world, closed.known_hosts_line + "\n") as jump:
                return await _through(world, jump, world.vpn, VPN_FIP, "hostname")

        assert asyncio.run(via_bastion()).strip() == "vpn"
        assert bastion.info(sd).bastion_only == {"giessen": "198.51.100.0/24"}
        with pytest.raises(bastion.BastionError, match="bastion_only: no cloud 'nowhere'"):
            bastion.up(sd, world.pubkey, bastion_only=["nowhere"])
    finally:
        opened = bastion.up(sd, world.pubkey)
    assert opened.bastion_only == {}
    assert _direct(VPN_FIP, sd) == "connected"


def test_up_refuses_bad_keys_and_a_missing_data_plane(world, tmp_path):
    with pytest.raises(bastion.BastionError, match=r"line 1.*not a valid OpenSSH public key"):
        bastion.up(world.state_dir, "ssh-ed25519 notbase64 x")
    with pytest.raises(DataplaneError, match=r"no localcloud data plane.*localcloud up"):
        bastion.up(tmp_path / "nowhere", world.pubkey)
    assert not ns_exists(names.bastion_ns(names.instance_tag(tmp_path / "nowhere")))


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "localcloud.cli", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, f"localcloud {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def _closed_direct_paths(tag: str) -> list[str]:
    """The internet namespace's routes for its own packets to bastion-only clouds."""
    inet = names.inet_ns(tag)
    table = str(bastion.DIRECT_PATHS_TABLE)
    rules = [r for r in ip_json(inet, "rule", "show") if r.get("table") == table]
    routes = nsexec(inet, ["ip", "route", "show", "table", table]).stdout.split("\n")
    found = [r.strip() for r in routes if r.strip()]
    assert bool(rules) == bool(found), (rules, found)  # the rule lives with its routes
    return found


def _running(pid: int) -> bool:
    """Still running (a zombie waiting for init to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_bastion_up_status_and_localcloud_down_remove_it(tmp_path):
    """`localcloud up` (API + data plane), `bastion up --json`, `status --json`, `down`."""
    state_dir = tmp_path / "lc"
    _, pub = _keypair(tmp_path, "id_cli")
    handle = control.start(state_dir, clouds=["bielefeld"], port=_free_port(), dataplane=True)
    tag = names.instance_tag(state_dir)
    try:
        out = json.loads(
            _cli("bastion", "up", "--authorized-key", str(tmp_path / "id_cli.pub"),
                 "--state-dir", str(state_dir), "--json").stdout
        )  # fmt: skip
        assert out["address"] == "198.19.255.2" and out["user"] == "jump"
        assert out["host_key"].startswith("ssh-ed25519 ") and out["running"]
        again = json.loads(
            _cli("bastion", "up", "--authorized-key", pub, "--state-dir", str(state_dir),
                 "--bastion-only", "bielefeld", "--json").stdout
        )  # fmt: skip
        assert again["host_key"] == out["host_key"] and again["pid"] == out["pid"]
        assert again["bastion_only"] == {"bielefeld": "203.0.113.0/24"}
        via_handle = handle.bastion(pub, ["bielefeld"], add=True)  # the Python entry point
        assert via_handle.host_key == out["host_key"] and via_handle.authorized_keys == [pub]
        status = json.loads(_cli("status", "--state-dir", str(state_dir), "--json").stdout)
        assert status["bastion"]["host_key"] == out["host_key"]
        # (no server here: the world test shows the effect; this one the CLI's wiring)
        assert _closed_direct_paths(tag) == ["unreachable 203.0.113.0/24"]
        unknown = _cli("bastion", "up", "--authorized-key", pub, "--bastion-only", "nowhere",
                       "--state-dir", str(state_dir), check=False)  # fmt: skip
        assert unknown.returncode == 2
        assert "--bastion-only: no cloud 'nowhere'" in unknown.stderr
        bad = _cli("bastion", "up", "--authorized-key", str(tmp_path / "missing.pub"),
                   "--state-dir", str(state_dir), check=False)  # fmt: skip
        assert bad.returncode == 2 and "--authorized-key" in bad.stderr
        assert is_alive(out["pid"], out["namespace"])
        # a login with the pinned key through the printed ProxyCommand (made under the
        # CLI's umask 077: the user must still resolve, /etc stays readable)
        known = tmp_path / "known_hosts"
        known.write_text(out["known_hosts_line"] + "\n")
        login = subprocess.run(
            [
                "ssh", "-F", "/dev/null", "-o", f"ProxyCommand={out['proxy_command']}",
                "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                "-i", str(tmp_path / "id_cli"), f"jump@{out['address']}", "id -un; hostname",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert login.returncode == 0, login.stderr
        assert login.stdout.split() == ["jump", "bastion"]
        sshd = nsexec(out["namespace"], ["ss", "-Hltnp", "sport = :22"]).stdout
        assert "sshd" in sshd
        # `bastion down` alone: the bastion goes, the clouds stay, the proxy path opens again
        assert _cli("bastion", "down", "--state-dir", str(state_dir)).stdout.strip() == (
            "bastion removed"
        )
        assert not ns_exists(out["namespace"]) and not _running(out["pid"])
        assert ns_exists(names.inet_ns(tag))
        assert _cli("bastion", "show", "--state-dir", str(state_dir), check=False).returncode == 1
        assert _closed_direct_paths(tag) == []
        # a new bastion (new host key), left for `localcloud down` to remove
        last = json.loads(
            _cli("bastion", "up", "--authorized-key", pub, "--state-dir", str(state_dir),
                 "--json").stdout
        )  # fmt: skip
        assert last["host_key"] != out["host_key"] and last["running"]
    finally:
        _cli("down", "--state-dir", str(state_dir))
    assert not [ns for ns in list_namespaces() if ns.startswith(names.prefix(tag))]
    assert not _running(out["pid"]) and not _running(last["pid"])
    assert not state_dir.exists()


def test_hybridgrids_ssh_path_jumps_through_the_bastion(world):
    """hybridgrid.sshclient (the product's SSH path): a target whose `jump` is the bastion, reached
    through localcloud's proxy, both host keys pinned; a changed bastion key is refused."""
    from hybridgrid.ssh_target import SSHTarget
    from hybridgrid.sshclient.connect import connect
    from hybridgrid.sshclient.errors import HostKeyMismatch

    b = world.bastion
    master_keys = [k.public for k in world.backend.state.servers[world.master.id].host_keys]
    key = world.key_path.read_text()

    def target(bastion_key: str) -> SSHTarget:
        hop = SSHTarget(
            host=b.address, port=b.port, user=b.user, host_keys=[bastion_key],
            proxy_command=b.proxy_command,
        )  # fmt: skip
        return SSHTarget(host=MASTER_FIP, user="ubuntu", host_keys=master_keys, jump=hop)

    async def hostname(t: SSHTarget) -> str:
        async with connect(t, key) as host:
            return (await host.run("hostname", name="hostname", timeout=20)).stdout.strip()

    assert asyncio.run(hostname(target(b.host_key))) == "master"
    wrong = _public_line(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(HostKeyMismatch, match=b.address):
        asyncio.run(hostname(target(wrong)))


def _public_line(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
