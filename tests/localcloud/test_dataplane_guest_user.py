"""A server as a new user meets it: plain OpenSSH through localcloud's proxy, logged in as
`ubuntu` (not root). Shared system directories are readable as on an Ubuntu cloud image,
private ones (keys, /root, /etc/wireguard) keep their strict modes.

The API process runs under umask 077 (its state files are secrets); the server's directories
must not inherit it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dataplane_fixtures import CloudBuilder, tcp_rule

from localcloud.dataplane import make_backend
from localcloud.dataplane.cli import proxy_command

pytestmark = [
    pytest.mark.dataplane,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ssh"),
        reason="needs root, nftables and OpenSSH",
    ),
]

FIP = "203.0.113.10"


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    base = tmp_path_factory.mktemp("dataplane-guest")
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
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    state_dir = base / "state"
    builder = CloudBuilder("bielefeld", 0, "192.168.66.0/24")
    server = builder.add_server("node", "192.168.66.10", [pub.decode() + " test@guest"])
    builder.add_floating_ip(server, FIP)
    ssh = builder.add_group("ssh", [tcp_rule(22)])
    builder.port_of(server).security_group_ids.append(ssh.id)
    old_umask = os.umask(0o077)  # as the API process (localcloud/api_main.py) runs
    backend = make_backend(state_dir)
    try:
        backend.apply(builder.snapshot())
        known = base / "known_hosts"
        console = backend.console_log("bielefeld", server.id)
        keys = re.search(
            r"-----BEGIN SSH HOST KEY KEYS-----\n(.*?)-----END SSH HOST KEY KEYS-----",
            console,
            re.S,
        )
        assert keys, console
        known.write_text(
            "".join(f"{FIP} {' '.join(k.split()[:2])}\n" for k in keys.group(1).split("\n") if k)
        )
        yield backend, server, state_dir, key_path, known
    finally:
        os.umask(old_umask)
        backend.destroy()


def _ssh(guest, user: str, command: str) -> subprocess.CompletedProcess:
    _, _, state_dir, key_path, known = guest
    return subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-i", str(key_path), "-o", "BatchMode=yes",
            "-o", f"ProxyCommand={proxy_command(state_dir)}",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "ConnectTimeout=10",
            f"{user}@{FIP}", command,
        ],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_ubuntu_resolves_its_name_with_no_error(guest):
    res = _ssh(guest, "ubuntu", "id -un")
    assert res.returncode == 0, res.stderr
    assert (res.stdout, res.stderr) == ("ubuntu\n", "")


def test_ubuntu_reads_shared_files_and_runs_a_login_shell(guest):
    res = _ssh(guest, "ubuntu", "grep -c '^ubuntu:' /etc/passwd && bash -lc 'echo ok'")
    assert (res.returncode, res.stdout, res.stderr) == (0, "1\nok\n", "")
    res = _ssh(guest, "ubuntu", "stat -c '%n %a' /etc /var /opt /srv /usr/local /home /tmp")
    assert res.stdout.split("\n")[:-1] == [
        "/etc 755", "/var 755", "/opt 755", "/srv 755", "/usr/local 755", "/home 755",
        "/tmp 1777",
    ]  # fmt: skip


def test_private_files_keep_strict_modes(guest):
    backend, server, *_ = guest
    paths = [
        "/root", "/etc/wireguard", "/home/ubuntu/.ssh", "/home/ubuntu/.ssh/authorized_keys",
        "/etc/ssh/ssh_host_ed25519_key", "/etc/shadow", "/etc/sudoers.d/90-cloud-init-users",
    ]  # fmt: skip
    res = backend.exec(server.id, ["stat", "-c", "%n %a", *paths])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:-1] == [
        "/root 700", "/etc/wireguard 700", "/home/ubuntu/.ssh 700",
        "/home/ubuntu/.ssh/authorized_keys 600", "/etc/ssh/ssh_host_ed25519_key 600",
        "/etc/shadow 640", "/etc/sudoers.d/90-cloud-init-users 440",
    ]  # fmt: skip
    denied = _ssh(guest, "ubuntu", "cat /etc/shadow /etc/ssh/ssh_host_ed25519_key; ls /root")
    assert denied.returncode != 0 and denied.stdout == ""
