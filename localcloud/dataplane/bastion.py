"""A bastion (jump) host in localcloud's internet, as many research clouds have in front.

``up(state_dir, authorized_keys)`` makes (or finds) one per localcloud instance:
- network namespace ``lc<tag>-bastion``, linked by a veth (``eth0`` ⇄ ``vbastion``) to the
  internet namespace ``lc<tag>-inet``; address ``198.19.255.2/24``, gateway ``198.19.255.1``
  (the internet namespace's end), so the floating IPs of every cloud are reachable from it
  and it is reachable from the internet namespace (``localcloud proxy``);
- a holder process as servers have (vm.start_holder: private /etc, /run, /home, PID 1
  of its own PID namespace) with one fresh ED25519 host key;
- sshd as in servers (PidFile /run/sshd.pid, its own config) allowing only user ``jump``
  (uid 1001), public keys only, ``AllowTcpForwarding yes`` (``ssh -J`` and asyncssh tunnels
  open direct-tcpip channels).
Its record (public parts only) lives in ``<state>/dataplane/bastion.json`` apart from the
data plane's ``state.json``, because the API process rewrites that file from memory while
``localcloud bastion up`` runs in another process. ``NamespaceBackend.destroy`` (``localcloud
down``) calls ``down`` and so removes the bastion with everything else.

``bastion_only=[cloud, …]`` makes those clouds reachable only through the bastion: in the
internet namespace, a rule ``iif lo lookup 1000`` sends the namespace's own packets (those of
``localcloud proxy``) to a table of ``unreachable`` routes for their external networks
("No route to host"); forwarded traffic (the bastion's, servers') is routed as before.

A second ``up`` returns the same host and host key (its authorized keys are set to the given
ones). If the holder died (e.g. after a reboot), ``up`` makes a new bastion with a new host
key: the private key is never stored outside the bastion's own tmpfs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel

from localcloud.config import load_config
from localcloud.dataplane import names, vm
from localcloud.dataplane.cli import proxy_command
from localcloud.dataplane.hostkeys import fingerprint, generate_host_keys
from localcloud.dataplane.namespace_backend import (
    BASTION_NETWORK,
    NO_IPV6,
    ensure_unreachable_routes,
    root_unreachable,
)
from localcloud.dataplane.netns import (
    DataplaneError,
    add_namespace,
    delete_namespace,
    ip,
    ip_batch,
    ip_json,
    is_alive,
    kill_pids,
    list_namespaces,
    ns_exists,
    run,
    sysctl,
)
from localcloud.dataplane.state import load_state

log = logging.getLogger("localcloud.dataplane.bastion")

BASTION_GATEWAY = str(BASTION_NETWORK.network_address + 1)  # the internet namespace's end
BASTION_ADDRESS = str(BASTION_NETWORK.network_address + 2)
BASTION_PORT = 22
BASTION_USER = "jump"
BASTION_UID = 1001
BASTION_MTU = 1450  # as the clouds' external networks
BASTION_HOSTNAME = "bastion"
RECORD_FILE = "bastion.json"
DIRECT_PATHS_TABLE = 1000  # routing table (and rule priority) of the bastion-only clouds
OVERLAY_ROOTS = ("/etc", "/var", "/opt", "/usr/local")  # as vm.HOLDER_SCRIPT

GUEST_SOURCE = Path(__file__).with_name("bastion_guest.py").read_text()

SSHD_CONFIG = f"""\
# localcloud: the bastion's sshd (a jump host: logins of {BASTION_USER} with a key, forwarding)
Port {BASTION_PORT}
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
AllowUsers {BASTION_USER}
PermitRootLogin no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
UseDNS no
AllowTcpForwarding yes
AllowAgentForwarding no
AllowStreamLocalForwarding no
GatewayPorts no
PermitTunnel no
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
"""


class BastionError(ValueError):
    """Bad input for the bastion: `field` is the parameter ("authorized_keys" or
    "bastion_only"), the message says what is wrong and the fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class BastionRecord(BaseModel):
    """What ``<state>/dataplane/bastion.json`` keeps (public parts only)."""

    ns: str
    pid: int
    address: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA…" (no comment)
    authorized_keys: list[str]
    bastion_only: dict[str, str] = {}  # cloud -> external CIDR the proxy may not reach


class BastionInfo(BaseModel):
    """How to reach the bastion: from the root namespace through ``proxy_command``."""

    address: str
    port: int
    user: str
    host_key: str  # OpenSSH public key line "ssh-ed25519 AAAA…", to pin
    fingerprint: str  # "SHA256:…" of host_key
    known_hosts_line: str  # "198.19.255.2 ssh-ed25519 AAAA…" for a known_hosts file
    proxy_command: str  # ProxyCommand that reaches `address` from the root namespace (%h %p)
    namespace: str
    pid: int
    running: bool
    # clouds whose public addresses only the bastion reaches (localcloud's proxy is refused)
    bastion_only: dict[str, str] = {}
    authorized_keys: list[str] = []  # public key lines that may log in as `user`


# ---------------------------------------------------------------- authorized keys
KEYS_FIELD = "authorized_keys"
_SK_TYPES = ("sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


def parse_authorized_keys(keys: str | Iterable[str]) -> list[str]:
    """OpenSSH public key lines ("type base64 [comment]"), checked; '#' and blank lines skipped.

    Raises BastionError naming the bad line's number (never echoing a private key).
    """
    given = [keys] if isinstance(keys, str) else list(keys)
    lines = [line for text in given for line in text.splitlines()]
    out = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        out.append(_check_key_line(line, n))
    if not out:
        raise BastionError(
            KEYS_FIELD,
            "none given; pass a public key line or a .pub file "
            "(e.g. --authorized-key ~/.ssh/id_ed25519.pub)",
        )
    return out


def _check_key_line(line: str, n: int) -> str:
    where = f"line {n}"
    if "PRIVATE KEY" in line:
        raise BastionError(
            KEYS_FIELD, f"{where} is part of a private key: give the public key (.pub file)"
        )
    parts = line.split()
    if len(parts) < 2:
        raise BastionError(
            KEYS_FIELD, f"{where} is not an OpenSSH public key line ('ssh-ed25519 AAAA… comment')"
        )
    kind, blob = parts[0], parts[1]
    try:
        if kind in _SK_TYPES:  # security keys: cryptography cannot load them; check the blob
            decoded = base64.b64decode(blob, validate=True)
            if decoded[4 : 4 + len(kind)] != kind.encode():
                raise ValueError("key type and key data differ")
        else:
            serialization.load_ssh_public_key(f"{kind} {blob}".encode())
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise BastionError(
            KEYS_FIELD,
            f"{where} ({kind[:40]!r}) is not a valid OpenSSH public key: {exc}; key options "
            "(from=…, command=…) are not supported",
        ) from None
    comment = " ".join(parts[2:])
    if any(not c.isprintable() for c in comment):
        raise BastionError(KEYS_FIELD, f"{where}: the comment has control characters")
    return f"{kind} {blob}" + (f" {comment}" if comment else "")


# ---------------------------------------------------------------- public API
def up(
    state_dir: Path,
    authorized_keys: str | Iterable[str],
    bastion_only: Iterable[str] = (),
    *,
    add: bool = False,
) -> BastionInfo:
    """Make the bastion (or find it) and set its authorized keys; returns how to reach it.

    `bastion_only`: clouds whose public addresses are then reachable only through the
    bastion: ``localcloud proxy`` (anything started in the internet namespace) gets
    "No route to host" for them; servers and the bastion still reach them. Each call sets
    the list (an empty one opens every cloud again). `add=True` keeps the keys authorized
    before (a key per site, added as sites come) instead of replacing them.
    """
    state_dir = Path(state_dir).resolve()
    keys = parse_authorized_keys(authorized_keys)
    tag = names.instance_tag(state_dir)
    _check_instance(state_dir, tag)
    closed = _cloud_cidrs(state_dir, tag, bastion_only)
    with _locked(state_dir):
        rec = _load(state_dir)
        if rec is not None and not _healthy(rec, tag):
            log.warning("bastion: holder or link gone, making a new one (new host key)")
            _teardown(state_dir, rec.ns, rec.pid, tag)
            rec = None
        if rec is None:
            rec = _create(state_dir, tag, keys)
        elif add:
            keys = [*rec.authorized_keys, *(k for k in keys if k not in rec.authorized_keys)]
        _configure(rec, keys)
        _close_direct_paths(names.inet_ns(tag), closed)
        rec.authorized_keys, rec.bastion_only = keys, closed
        _save(state_dir, rec)
    return _info(state_dir, rec)


def info(state_dir: Path) -> BastionInfo | None:
    """The bastion of this instance, or None (``running`` says whether its holder lives)."""
    state_dir = Path(state_dir).resolve()
    rec = _load(state_dir)
    return _info(state_dir, rec) if rec is not None else None


def down(state_dir: Path) -> bool:
    """Stop the bastion and remove its namespace and record; False if there was none."""
    state_dir = Path(state_dir).resolve()
    tag = names.instance_tag(state_dir)
    ns = names.bastion_ns(tag)
    if not (state_dir / "dataplane").exists():
        existed = ns_exists(ns)
        delete_namespace(ns)
        return existed
    with _locked(state_dir):
        rec = _load(state_dir)
        existed = rec is not None or ns_exists(ns)
        _teardown(state_dir, ns, rec.pid if rec else None, tag)
    if existed:
        log.info("bastion removed (%s)", ns)
    return existed


# ---------------------------------------------------------------- steps
def _check_instance(state_dir: Path, tag: str) -> None:
    inet = names.inet_ns(tag)
    if not ns_exists(inet):
        raise DataplaneError(
            f"no localcloud data plane for {state_dir} (namespace {inet} is missing): start it "
            f"first with `localcloud up --state-dir {state_dir}` (as root, data plane on)"
        )
    for name, cidrs in _external_cidrs(state_dir, tag).items():
        for cidr in cidrs:
            if ipaddress.ip_network(cidr).overlaps(BASTION_NETWORK):
                raise DataplaneError(
                    f"cloud {name}'s external network {cidr} overlaps the bastion's "
                    f"{BASTION_NETWORK}: remove that cloud or run the bastion in another "
                    "localcloud"
                )


def _external_cidrs(state_dir: Path, tag: str) -> dict[str, list[str]]:
    """Every cloud's external CIDRs: configured (localcloud.yaml) and applied (state.json)."""
    config = load_config(state_dir)
    clouds = {c.name: [str(c.external_cidr)] for c in config.clouds} if config else {}
    for rec in load_state(state_dir, tag).clouds.values():
        cidrs = clouds.setdefault(rec.name, [])
        cidrs.extend(c for c in rec.external_cidrs if c not in cidrs)
    return clouds


def _cloud_cidrs(state_dir: Path, tag: str, clouds: Iterable[str]) -> dict[str, str]:
    known = _external_cidrs(state_dir, tag)
    out = {}
    for name in clouds:
        if name not in known or not known[name]:
            raise BastionError(
                "bastion_only",
                f"no cloud {name!r} in {state_dir} (clouds: {', '.join(sorted(known)) or 'none'})",
            )
        out[name] = known[name][0]
    return out


def _close_direct_paths(inet: str, closed: dict[str, str]) -> None:
    """Policy routing in the internet namespace: its own packets (``iif lo``: localcloud
    proxy) to a bastion-only cloud find an ``unreachable`` route ("No route to host", as in
    the root namespace); forwarded ones (the bastion's, servers') use the main table."""
    table, pref = str(DIRECT_PATHS_TABLE), str(DIRECT_PATHS_TABLE)
    rule = any(r.get("table") == table for r in ip_json(inet, "rule", "show"))
    ip(inet, "route", "flush", "table", table, check=False)  # fails only when already empty
    cmds = [f"route add unreachable {cidr} table {table}" for cidr in sorted(set(closed.values()))]
    if closed and not rule:
        cmds.append(f"rule add pref {pref} iif lo lookup {table}")
    elif rule and not closed:
        cmds.append(f"rule del pref {pref}")
    ip_batch(inet, cmds)


def _healthy(rec: BastionRecord, tag: str) -> bool:
    if not is_alive(rec.pid, rec.ns):
        return False
    inet_links = {link["ifname"] for link in ip_json(names.inet_ns(tag), "link", "show")}
    return names.BASTION_INET_LINK in inet_links


def _create(state_dir: Path, tag: str, keys: list[str]) -> BastionRecord:
    t0 = time.monotonic()
    ns, inet = names.bastion_ns(tag), names.inet_ns(tag)
    ensure_unreachable_routes([str(BASTION_NETWORK)])  # before any address of it exists
    delete_namespace(ns)  # leftovers of a crash
    add_namespace(ns)
    sysctl(ns, NO_IPV6)
    _link(ns, inet)
    host_key = next(k for k in generate_host_keys() if k.kind == "ed25519")
    logs = state_dir / "dataplane" / "logs"
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid = vm.start_holder(ns, BASTION_HOSTNAME, [host_key], logs / "bastion.log")
    log.info("bastion: %s up in %.0f ms", ns, (time.monotonic() - t0) * 1e3)
    return BastionRecord(
        ns=ns, pid=pid, address=BASTION_ADDRESS, port=BASTION_PORT, user=BASTION_USER,
        host_key=host_key.public, authorized_keys=keys,
    )  # fmt: skip


def _link(ns: str, inet: str) -> None:
    """The veth to the internet namespace, both ends addressed, default route via it."""
    prefixlen = BASTION_NETWORK.prefixlen
    ip(inet, "link", "del", names.BASTION_INET_LINK, check=False)
    ip(
        ns, "link", "add", names.BASTION_LINK, "mtu", str(BASTION_MTU), "type", "veth",
        "peer", "name", names.BASTION_INET_LINK, "netns", inet,
    )  # fmt: skip
    ip_batch(
        inet,
        [
            f"link set {names.BASTION_INET_LINK} mtu {BASTION_MTU} up",
            f"addr add {BASTION_GATEWAY}/{prefixlen} dev {names.BASTION_INET_LINK}",
        ],
    )
    ip_batch(
        ns,
        [
            "link set lo up",
            f"link set {names.BASTION_LINK} up",
            f"addr add {BASTION_ADDRESS}/{prefixlen} dev {names.BASTION_LINK}",
            f"route add default via {BASTION_GATEWAY}",
        ],
    )


def _configure(rec: BastionRecord, keys: list[str]) -> None:
    """User, authorized keys, sshd config; sshd started unless it runs (idempotent)."""
    payload = {
        "guest_source": vm.GUEST_SOURCE,
        "user": BASTION_USER,
        "uid": BASTION_UID,
        "authorized_keys": keys,
        "sshd_config": SSHD_CONFIG,
        # The holder's overlay roots take the creating process's umask (0700 under the CLI's
        # 077): give them the host's modes, so that `jump` can read /etc/passwd.
        "dir_modes": {d: stat.S_IMODE(os.stat(d).st_mode) for d in OVERLAY_ROOTS},
    }
    proc = vm.exec_in(
        rec.pid,
        [vm.GUEST_PYTHON, "-I", "-S", "-c", GUEST_SOURCE],
        input=json.dumps(payload),
        timeout=30,
    )
    if proc.returncode != 0:
        raise DataplaneError(f"bastion: setting up sshd failed: {proc.stderr.strip()[-800:]}")
    vm.wait_listening(rec.ns, rec.port)


def _teardown(state_dir: Path, ns: str, pid: int | None, tag: str) -> None:
    if pid and is_alive(pid, ns):
        kill_pids([pid])  # PID 1 of its PID namespace: sshd and every session end with it
    delete_namespace(ns)  # the veth's inet end goes with its peer
    if ns_exists(names.inet_ns(tag)):
        ip(names.inet_ns(tag), "link", "del", names.BASTION_INET_LINK, check=False)
        _close_direct_paths(names.inet_ns(tag), {})  # no bastion: every cloud open again
    _record_path(state_dir).unlink(missing_ok=True)
    vm.reap()
    _drop_safety_route_after_last_bastion()


def _drop_safety_route_after_last_bastion() -> None:
    """The root namespace's unreachable route for the bastion's range goes with the last
    bastion of any instance (another instance's bastion still needs it)."""
    others = [n for n in list_namespaces() if names.BASTION_NS_RE.match(n)]
    if not others and str(BASTION_NETWORK) in root_unreachable():
        run(["ip", "route", "del", "unreachable", str(BASTION_NETWORK)], check=False)


def _info(state_dir: Path, rec: BastionRecord) -> BastionInfo:
    return BastionInfo(
        address=rec.address,
        port=rec.port,
        user=rec.user,
        host_key=rec.host_key,
        fingerprint=fingerprint(rec.host_key),
        known_hosts_line=_known_hosts_line(rec),
        proxy_command=proxy_command(state_dir),
        namespace=rec.ns,
        pid=rec.pid,
        running=is_alive(rec.pid, rec.ns),
        bastion_only=rec.bastion_only,
        authorized_keys=rec.authorized_keys,
    )


def _known_hosts_line(rec: BastionRecord) -> str:
    host = rec.address if rec.port == 22 else f"[{rec.address}]:{rec.port}"
    return f"{host} {rec.host_key}"


# ---------------------------------------------------------------- record file
def _record_path(state_dir: Path) -> Path:
    return Path(state_dir) / "dataplane" / RECORD_FILE


def _load(state_dir: Path) -> BastionRecord | None:
    path = _record_path(state_dir)
    return BastionRecord.model_validate_json(path.read_text()) if path.exists() else None


def _save(state_dir: Path, rec: BastionRecord) -> None:
    path = _record_path(state_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(rec.model_dump_json(indent=1))
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One bastion change at a time per instance (two `bastion up` at once, or up and down)."""
    d = Path(state_dir) / "dataplane"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(d / "bastion.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DataplaneError(
                        f"bastion: {d / 'bastion.lock'} stayed locked for 60 s "
                        "(another `localcloud bastion` still running?)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
