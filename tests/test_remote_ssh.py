"""Remote shell against real OpenSSH servers on 127.0.0.1 (random ports, temp keys and configs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from pydantic import SecretStr, ValidationError

from hybridgrid.retry.classify import is_transient
from hybridgrid.shell import RemoteCommandError, RemoteCommandTimeout
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.sshclient.connect import connect, wait_for_ssh
from hybridgrid.sshclient.errors import (
    HostKeyMismatch,
    SSHAuthError,
    SSHConnectError,
    SSHUnreachable,
)
from hybridgrid.sshclient.keys import SSHKeyError, generate_ssh_keypair, load_private_key
from hybridgrid.sshclient.shell import as_root
from hybridgrid.wireguard import node as wg_node
from hybridgrid.wireguard.render import WgPaths

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    not os.path.exists(SSHD) or os.geteuid() != 0, reason="needs root and OpenSSH sshd"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    host_key_line: str  # "ssh-ed25519 AAAA…"
    fingerprint: str
    log: Path
    commands: Path  # every command line the server was asked to run (via ForceCommand)
    proc: subprocess.Popen


def _start_sshd(
    base: Path,
    name: str,
    authorized: str,
    extra: str = "",
    port: int | None = None,
    host=None,
    prefix: list[str] | None = None,
) -> Sshd:
    d = base / name
    d.mkdir()
    host = host or generate_ssh_keypair(f"root@{name}")
    key_path = d / "ssh_host_ed25519_key"
    key_path.write_text(host.private_key.get_secret_value())
    key_path.chmod(0o600)
    (d / "authorized_keys").write_text(authorized + "\n")
    port = port or free_port()
    commands = d / "commands.log"
    commands.touch(mode=0o666)
    commands.chmod(0o666)  # a non-root login appends here too
    record = d / "record.sh"
    record.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$SSH_ORIGINAL_COMMAND\" >> {commands}\n"
        'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    record.chmod(0o755)
    cfg = d / "sshd_config"
    cfg.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {key_path}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
LogLevel DEBUG1
ForceCommand {record}
{extra}
"""
    )
    log = d / "sshd.log"
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(
        [*(prefix or []), SSHD, "-D", "-e", "-f", str(cfg), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd {name} did not start: {log.read_text()}") from None
            time.sleep(0.05)
    pub = " ".join(host.public_key.split()[:2])
    fp = asyncssh.import_public_key(pub).get_fingerprint("sha256")
    return Sshd(port=port, host_key_line=pub, fingerprint=fp, log=log, commands=commands, proc=proc)


@pytest.fixture(scope="module")
def client():
    return generate_ssh_keypair("hybridgrid-test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory, client):
    """Three sshds: a (the host / jump host), b (behind a), mitm (same address, other key)."""
    base = tmp_path_factory.mktemp("sshd")
    started: dict[str, Sshd] = {}
    try:
        for name in ("a", "b", "mitm"):
            started[name] = _start_sshd(base, name, client.public_key)
        yield started
    finally:
        for s in started.values():
            s.proc.terminate()
            try:
                s.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()


def target(s: Sshd, **kw) -> SSHTarget:
    return SSHTarget(host="127.0.0.1", port=s.port, host_keys=[s.host_key_line], **kw)


def run(coro):
    return asyncio.run(coro)


async def _run(t: SSHTarget, key, cmd: str, **kw):
    async with connect(t, key) as host:
        return await host.run(cmd, name="test", **kw)


# ---------------------------------------------------------------- connect and pinning


def test_connect_and_run_with_pinned_key(servers, client):
    res = run(_run(target(servers["a"]), client.private_key, "id -u; echo out; echo err >&2"))
    assert res.exit_status == 0
    assert res.stdout.split() == ["0", "out"]
    assert res.stderr.strip() == "err"


def test_pinned_by_console_fingerprint_only_and_server_key_reported(servers, client):
    a = servers["a"]
    t = SSHTarget(host="127.0.0.1", port=a.port, host_key_fingerprints=[a.fingerprint])

    async def go():
        async with connect(t, client.private_key) as host:
            return host.server_host_key, (await host.run("echo ok", name="echo")).stdout

    key, out = run(go())
    assert key == a.host_key_line and out == "ok\n"


@pytest.mark.parametrize("pin", ["key", "fingerprint"])
def test_swapped_host_key_is_refused(servers, client, pin):
    a, mitm = servers["a"], servers["mitm"]
    # the "same server" (address and pins of a) now answers with another key
    pins = (
        {"host_keys": [a.host_key_line]}
        if pin == "key"
        else {"host_key_fingerprints": [a.fingerprint]}
    )
    t = SSHTarget(host="127.0.0.1", port=mitm.port, **pins)
    with pytest.raises(HostKeyMismatch) as err:
        run(_run(t, client.private_key, "touch /tmp/should-not-run"))
    msg = str(err.value)
    assert f"127.0.0.1:{mitm.port}" in msg and "pin its new host keys" in msg
    if pin == "fingerprint":
        assert mitm.fingerprint in msg
    assert not is_transient(err.value)


def test_target_without_pins_is_rejected_early():
    with pytest.raises(ValidationError, match="host_keys: no pinned host key"):
        SSHTarget(host="127.0.0.1")
    with pytest.raises(ValidationError, match=r"host_keys\[0\]"):
        SSHTarget(host="127.0.0.1", host_keys=["not a key"])


def test_wrong_client_key_is_permanent_and_leaks_nothing(servers):
    other = generate_ssh_keypair("stranger")
    with pytest.raises(SSHAuthError) as err:
        run(_run(target(servers["a"]), other.private_key, "true"))
    assert not is_transient(err.value)
    _assert_no_secret(err.value, other.private_key.get_secret_value())


def test_closed_port_is_transient_unreachable(client):
    t = SSHTarget(host="127.0.0.1", port=free_port(), host_keys=[client.public_key])
    with pytest.raises(SSHUnreachable) as err:
        run(_run(t, client.private_key, "true"))
    assert is_transient(err.value)
    assert "not reachable" in str(err.value)


def test_bad_client_key_string_is_a_clear_error_without_echo():
    bad = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    with pytest.raises(SSHKeyError) as err:
        load_private_key(SecretStr(bad))
    assert "c2VjcmV0" not in str(err.value) and "could not be parsed" in str(err.value)
    with pytest.raises(SSHKeyError, match="public key"):
        load_private_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB")


# ---------------------------------------------------------------- commands and uploads


def test_failing_command_raises_with_name_and_stderr(servers, client):
    async def go():
        async with connect(target(servers["a"]), client.private_key) as host:
            soft = await host.run("exit 7", name="soft", check=False)
            with pytest.raises(RemoteCommandError) as err:
                await host.run("echo 'no such peer' >&2; exit 3", name="wg set peer")
            return soft, err.value

    soft, exc = run(go())
    assert soft.exit_status == 7
    assert exc.name == "wg set peer" and exc.exit_status == 3
    assert "no such peer" in str(exc) and "'wg set peer'" in str(exc)
    assert not is_transient(exc)


def test_command_timeout_is_transient(servers, client):
    with pytest.raises(RemoteCommandTimeout) as err:
        run(_run(target(servers["a"]), client.private_key, "sleep 5", timeout=0.5))
    assert is_transient(err.value) and "0.5 s" in str(err.value)


def test_upload_is_atomic_mode_0600_and_errors_never_carry_content(servers, client, tmp_path):
    dest = tmp_path / "etc" / "wireguard" / "wg0.conf.body"
    dest.parent.mkdir(parents=True)
    dest.write_text("old\n")
    dest.chmod(0o644)
    old_inode = dest.stat().st_ino
    secret = b"PrivateKey = c2VjcmV0LWRvLW5vdC1sZWFrLXRoaXMtYW55d2hlcmUhISE=\n"

    async def go():
        async with connect(target(servers["a"]), client.private_key) as host:
            await host.upload(str(dest), secret)
            with pytest.raises(RemoteCommandError) as err:
                await host.upload("/proc/version/nope", secret, name="upload nope")
            return err.value

    exc = run(go())
    assert dest.read_bytes() == secret
    st = dest.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert st.st_ino != old_inode  # replaced by rename, never rewritten in place
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temp file left
    assert exc.name == "upload nope"
    _assert_no_secret(exc, secret.decode().split(" = ")[1].strip())
    # the content never appears in a command line: the server recorded every one it got
    sent = servers["a"].commands.read_text()
    assert 'cat > "$tmp"' in sent and "c2VjcmV0" not in sent


def test_node_side_wireguard_key_over_ssh(servers, client, tmp_path):
    paths = WgPaths(directory=str(tmp_path / "wg"))

    async def go():
        async with connect(target(servers["a"]), client.private_key) as host:
            return await wg_node.ensure_wg_key(host, paths), await wg_node.ensure_wg_key(
                host, paths
            )

    first, second = run(go())
    assert first == second
    key = Path(paths.private_key).read_text().strip()
    assert stat.S_IMODE(os.stat(paths.private_key).st_mode) == 0o600
    assert os.stat(paths.private_key).st_uid == 0
    sent = servers["a"].commands.read_text()
    assert "wg genkey" in sent and key not in sent


def test_sudo_wrapping_for_non_root_users():
    assert as_root("echo 'x'", "root") == "sh -c 'echo '\"'\"'x'\"'\"''"
    assert as_root("id -u", "ubuntu") == "sudo -n sh -c 'id -u'"


# ---------------------------------------------------------------- jump host and proxy command


def test_jump_host_tunnel(servers, client):
    a, b = servers["a"], servers["b"]
    t = target(b, jump=target(a))
    assert "via root@127.0.0.1" in t.label
    res = run(_run(t, client.private_key, "echo behind-a"))
    assert res.stdout == "behind-a\n"
    # a forwarded the connection: its log records the direct-tcpip channel to b's port
    assert f"direct_tcpip: originator  port 0, target 127.0.0.1 port {b.port}" in a.log.read_text()


PROXY = r"""
import os, socket, sys, threading
host, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
open(marker, "a").write(f"{host}:{port}\n")
s = socket.create_connection((host, port))
def pump():
    while data := s.recv(65536):
        os.write(1, data)
    os._exit(0)
threading.Thread(target=pump, daemon=True).start()
while data := os.read(0, 65536):
    s.sendall(data)
s.shutdown(socket.SHUT_WR)
threading.Event().wait(5)
"""


def test_proxy_command(servers, client, tmp_path):
    script = tmp_path / "proxy.py"
    script.write_text(PROXY)
    marker = tmp_path / "proxy-used"
    b = servers["b"]
    t = target(b, proxy_command=f"{sys.executable} {script} %h %p {marker}")
    res = run(_run(t, client.private_key, "echo via-proxy"))
    assert res.stdout == "via-proxy\n"
    assert marker.read_text() == f"127.0.0.1:{b.port}\n"


def test_broken_proxy_command_is_permanent(servers, client):
    t = target(servers["b"], proxy_command="/nonexistent/hg-proxy %h %p")
    with pytest.raises(SSHConnectError) as err:
        run(_run(t, client.private_key, "true"))
    assert not is_transient(err.value) and "FileNotFoundError" in str(err.value)


def test_proxy_that_cannot_reach_the_server_is_transient(client, tmp_path):
    script = tmp_path / "proxy.py"
    script.write_text(PROXY)
    t = SSHTarget(
        host="127.0.0.1",
        port=free_port(),
        host_keys=[client.public_key],
        proxy_command=f"{sys.executable} {script} %h %p {tmp_path / 'm'}",
    )
    with pytest.raises(SSHUnreachable) as err:
        run(_run(t, client.private_key, "true"))
    assert is_transient(err.value)


def test_sock_factory(servers, client):
    b = servers["b"]
    made = []

    def factory():
        made.append(1)
        return socket.create_connection(("127.0.0.1", b.port))

    res = run(_run(target(b, sock_factory=factory), client.private_key, "echo via-sock"))
    assert res.stdout == "via-sock\n" and made == [1]


# ---------------------------------------------------------------- helpers


def _assert_no_secret(exc: BaseException, secret: str) -> None:
    texts = []
    cur: BaseException | None = exc
    while cur is not None:
        texts += [str(cur), repr(cur), *map(str, cur.args)]
        cur = cur.__cause__ or cur.__context__
    for needle in (secret, *[ln for ln in secret.splitlines() if len(ln) > 20]):
        assert all(needle not in t for t in texts)


def test_wait_for_ssh_until_sshd_comes_up(tmp_path, client):
    """SSH 'not yet up': refused at first, then the server starts; the wait ends with its key."""
    import threading

    port = free_port()
    host = generate_ssh_keypair("root@late")
    fp = asyncssh.import_public_key(host.public_key).get_fingerprint("sha256")
    started: list[Sshd] = []

    def late_start():
        started.append(_start_sshd(tmp_path, "late", client.public_key, port=port, host=host))

    timer = threading.Timer(1.5, late_start)
    timer.start()
    try:
        t = SSHTarget(host="127.0.0.1", port=port, host_key_fingerprints=[fp])
        key = run(wait_for_ssh(t, client.private_key, timeout=30))
        assert key == " ".join(host.public_key.split()[:2])
        assert started, "connected before the server existed?"
    finally:
        timer.join()
        for s in started:
            s.proc.terminate()
            s.proc.wait()


# ---------------------------------------------------------------- ssh keys and logs


def test_generated_key_is_openssh_format_openssh_accepts(tmp_path):
    import shutil

    pair = generate_ssh_keypair("hg-giessen-key")
    text = pair.private_key.get_secret_value()
    assert text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.public_key.startswith("ssh-ed25519 AAAA") and pair.public_key.endswith(
        " hg-giessen-key"
    )
    assert "BEGIN" not in repr(pair) and "BEGIN" not in str(pair.model_dump())
    if shutil.which("ssh-keygen"):
        f = tmp_path / "k"
        f.write_text(text)
        f.chmod(0o600)
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(f)], capture_output=True, text=True, check=True
        ).stdout.split()[:2]
        assert derived == pair.public_key.split()[:2]


def test_encrypted_key_is_refused_clearly(tmp_path):
    import shutil

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pkcs8 = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        .decode()
    )
    keys = [pkcs8]
    if shutil.which("ssh-keygen"):  # the format people paste: OpenSSH with bcrypt KDF
        f = tmp_path / "enc"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(f)], check=True)
        keys.append(f.read_text())
    for text in keys:
        with pytest.raises(SSHKeyError, match="passphrase-protected") as err:
            load_private_key(text)
        assert text.splitlines()[1] not in str(err.value)


def test_no_secret_in_logs(servers, client, tmp_path, caplog):
    """Connect, upload a secret and make a WireGuard key with every logger at DEBUG."""
    import logging

    secret = "c2VjcmV0LWZvci10aGUtbG9nLXRlc3QtMTIzNDU2Nzg5MA=="
    paths = WgPaths(directory=str(tmp_path / "wg"))

    async def go():
        async with connect(target(servers["a"]), client.private_key) as host:
            await host.upload(str(tmp_path / "s"), f"PrivateKey = {secret}\n".encode())
            await wg_node.ensure_wg_key(host, paths)
            with contextlib.suppress(RemoteCommandError):
                await host.upload("/proc/version/x", secret.encode())

    with caplog.at_level(logging.DEBUG):
        run(go())
    wg_key = Path(paths.private_key).read_text().strip()
    client_body = client.private_key.get_secret_value().splitlines()[1]
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for needle in (secret, wg_key, client_body):
        assert needle not in caplog.text


# ---------------------------------------------------------------- a non-root login with sudo


@pytest.fixture(scope="module")
def sudo_server(client):
    """sshd in a private mount namespace whose /etc/passwd, group, shadow and sudoers are
    copies with one extra user `hguser` (uid 1500, passwordless sudo), as on cloud images."""
    import shutil
    import tempfile

    if shutil.which("sudo") is None or shutil.which("unshare") is None:
        pytest.skip("needs sudo and unshare")
    base = Path(tempfile.mkdtemp(prefix="hg-sudo-"))
    try:
        base.chmod(0o755)  # the user must read its authorized_keys
        etc = base / "etc"
        etc.mkdir()
        files = {
            "passwd": Path("/etc/passwd").read_text() + f"hguser:x:1500:1500::{base}:/bin/sh\n",
            "group": Path("/etc/group").read_text() + "hguser:x:1500:\n",
            # only our user: no copy of the machine's password hashes
            "shadow": "hguser:*:20000:0:99999:7:::\n",
            "sudoers": "root ALL=(ALL:ALL) ALL\nhguser ALL=(ALL) NOPASSWD: ALL\n",
        }
        binds = []
        for name, text in files.items():
            f = etc / name
            f.write_text(text)
            f.chmod({"shadow": 0o640, "sudoers": 0o440}.get(name, 0o644))
            binds.append(f"mount --bind {f} /etc/{name}")
        wrap = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            " && ".join(binds) + ' && exec "$@"',
            "sshd-wrap",
        ]
        server = _start_sshd(base, "sudo", client.public_key, prefix=wrap)
        (base / "sudo").chmod(0o755)
        (base / "sudo" / "authorized_keys").chmod(0o644)
        try:
            yield server
        finally:
            server.proc.terminate()
            server.proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_non_root_user_runs_as_root_through_sudo(sudo_server, client, tmp_path):
    t = target(sudo_server, user="hguser")
    dest = tmp_path / "secret.conf"

    async def go():
        async with connect(t, client.private_key) as host:
            who = await host.run("id -u", name="id")
            await host.upload(str(dest), b"k = v\n")
            return who

    who = run(go())
    assert who.stdout.strip() == "0"
    st = dest.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    sent = sudo_server.commands.read_text()
    assert "sudo -n sh -c 'id -u'" in sent


def test_errors_survive_pickling(servers, client):
    """Prefect may persist a failed task's exception: our errors must round-trip."""
    import pickle

    async def go():
        async with connect(target(servers["a"]), client.private_key) as host:
            with pytest.raises(RemoteCommandError) as failed:
                await host.run("echo broken >&2; exit 2", name="probe")
        return failed.value

    errors = [
        run(go()),
        HostKeyMismatch("root@127.0.0.1:22", "SHA256:" + "A" * 43),
        SSHUnreachable("root@127.0.0.1:22", ConnectionRefusedError(111, "Connection refused")),
        RemoteCommandTimeout("wg show", "root@127.0.0.1:22", 5),
    ]
    for exc in errors:
        back = pickle.loads(pickle.dumps(exc))  # noqa: S301 -- our own bytes
        assert type(back) is type(exc) and str(back) == str(exc)
        assert is_transient(back) == is_transient(exc)
    again = pickle.loads(pickle.dumps(errors[0]))  # noqa: S301 -- our own bytes
    assert errors[0].name == again.name == "probe" and again.stderr == "broken\n"


def test_console_pins_make_a_target(servers, client):
    """Console log → pins → a connection that the real server accepts."""
    from hybridgrid.sshclient.hostkeys import parse_console_host_keys

    a = servers["a"]
    console = (
        "<14>Nov 27 09:02:11 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        f"<14>Nov 27 09:02:11 cloud-init: 256 {a.fingerprint} root@a (ED25519)\n"
        "<14>Nov 27 09:02:11 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----\n"
        "-----BEGIN SSH HOST KEY KEYS-----\n"
        f"{a.host_key_line} root@a\n"
        "-----END SSH HOST KEY KEYS-----\n"
    )
    keys = parse_console_host_keys(console, "a")
    assert keys.verified
    t = SSHTarget(host="127.0.0.1", port=a.port, **keys.pins())
    assert run(_run(t, client.private_key, "echo pinned")).stdout == "pinned\n"
