"""WireGuard: render wg0.conf (pure) and the node-side shell that handles the private key.

The private key is made on its node and never leaves it. The rendered config therefore has no
`PrivateKey` line; the node joins it in from its key file (see `assemble_command`), so the key
crosses no wire and never appears in a process argument. We deliberately do not load the key
with `PostUp`: `wg syncconf` of a stripped config without `PrivateKey` wipes the key and drops
every peer.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from functools import cache
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from hybridgrid.tasks.remote import RemoteShell

# The config models moved to the core (hybridgrid/wgconfig.py); re-exported here.
from hybridgrid.wgconfig import DEFAULT_PORT as DEFAULT_PORT
from hybridgrid.wgconfig import KEEPALIVE as KEEPALIVE
from hybridgrid.wgconfig import WgConfig as WgConfig
from hybridgrid.wgconfig import WgInterface as WgInterface
from hybridgrid.wgconfig import WgPeer as WgPeer
from hybridgrid.wgconfig import WgPublicKey as WgPublicKey
from hybridgrid.wgconfig import _check_wg_public_key


def sorted_peers(peers: list[WgPeer]) -> list[WgPeer]:
    """Stable order: by first AllowedIPs network (the peer's tunnel address), then key."""
    return sorted(peers, key=lambda p: (min(p.allowed_ips), p.public_key))


def with_peer(config: WgConfig, peer: WgPeer) -> WgConfig:
    """Add `peer` or replace the one with the same public key or name."""
    keep = [
        p
        for p in config.peers
        if p.public_key != peer.public_key and (peer.name is None or p.name != peer.name)
    ]
    return WgConfig(interface=config.interface, peers=[*keep, peer])


def without_peer(config: WgConfig, public_key: str) -> WgConfig:
    return WgConfig(
        interface=config.interface, peers=[p for p in config.peers if p.public_key != public_key]
    )


# ---------------------------------------------------------------- rendering (pure)


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hybridgrid.tasks", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 -- a WireGuard config, not HTML
    )


class WgPaths(BaseModel):
    """Where the node keeps its WireGuard files (a temp dir in tests)."""

    model_config = ConfigDict(frozen=True)

    directory: str = "/etc/wireguard"
    iface: str = Field(default="wg0", pattern=r"^[A-Za-z0-9_=+.-]{1,15}$")

    @field_validator("directory")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", v):
            raise ValueError("directory must be an absolute path of letters, digits, . _ - /")
        return v.rstrip("/") or "/"

    @property
    def conf(self) -> str:
        return f"{self.directory}/{self.iface}.conf"

    @property
    def body(self) -> str:
        """The uploaded config without the PrivateKey line."""
        return f"{self.directory}/{self.iface}.conf.body"

    @property
    def private_key(self) -> str:
        return f"{self.directory}/privatekey"

    @property
    def staged_key(self) -> str:
        """A new key made for rotation, not yet in use."""
        return f"{self.directory}/privatekey.next"

    @property
    def previous_key(self) -> str:
        """The key replaced by the last rotation, kept for rollback."""
        return f"{self.directory}/privatekey.prev"


def render_wg_conf(config: WgConfig, paths: WgPaths | None = None) -> str:
    """The wg0.conf body: everything but PrivateKey. Pure and deterministic."""
    paths = paths or WgPaths()
    return (
        _env()
        .get_template("wg0.conf.j2")
        .render(
            interface=config.interface,
            peers=sorted_peers(config.peers),
            private_key_path=paths.private_key,
        )
    )


# ---------------------------------------------------------------- node-side commands (pure)
# Each returns a POSIX sh script. It is run as root (RemoteHost wraps it in `sudo -n sh -c`).
# None of them ever carries key material: keys are read from files by the tools themselves.


def genkey_command(paths: WgPaths | None = None) -> str:
    """Make the private key once (umask 077, atomic), print only the public key."""
    p = paths or WgPaths()
    d, key = shlex.quote(p.directory), shlex.quote(p.private_key)
    return f"""umask 077
set -e
mkdir -p {d}
chmod 700 {d}
if ! test -s {key}; then
  tmp=$(mktemp {d}/.privatekey.XXXXXX)
  wg genkey > "$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" {key}
fi
chmod 600 {key}
wg pubkey < {key}
"""


def assemble_command(paths: WgPaths | None = None) -> str:
    """Join `PrivateKey = <key file>` into the uploaded body, write wg0.conf atomically (0600).

    awk reads the key from the file itself, so the key is never in any argv.
    """
    p = paths or WgPaths()
    d, body, key, conf = (shlex.quote(x) for x in (p.directory, p.body, p.private_key, p.conf))
    return f"""umask 077
set -e
die() {{ echo "hybridgrid: $*" >&2; exit 3; }}
test -s {key} || die "{p.private_key} is missing or empty; generate the key first"
test -f {body} || die "{p.body} is missing; upload the rendered config first"
if grep -q '^[[:space:]]*PrivateKey' {body}; then
  die "{p.body} must not contain a PrivateKey line"
fi
tmp=$(mktemp {d}/.{p.iface}.conf.XXXXXX)
trap 'rm -f "$tmp"' EXIT
awk -v keyfile={key} '
  {{ print }}
  /^\\[Interface\\][[:space:]]*$/ && !done {{
    if ((getline k < keyfile) <= 0) {{
      print "hybridgrid: cannot read the key file" > "/dev/stderr"; exit 4
    }}
    print "PrivateKey = " k
    done = 1
  }}
  END {{
    if (!done) {{ print "hybridgrid: no [Interface] section in the body" > "/dev/stderr"; exit 5 }}
  }}
' {body} > "$tmp"
if [ -f {conf} ] && cmp -s "$tmp" {conf}; then
  chmod 600 {conf}
  echo unchanged
else
  chmod 600 "$tmp"
  mv -f "$tmp" {conf}
  echo changed
fi
"""


def bring_up_command(paths: WgPaths | None = None, mtu: int | None = None) -> str:
    """wg0 down → `wg-quick up`; wg0 up → `wg syncconf` so existing peers keep their sessions.

    The stripped config goes through a 0600 temp file, not a pipe, so that a failing
    `wg-quick strip` can never feed `wg syncconf` an empty config (which would wipe the key and
    every peer). Prints `started` or `synced`.
    """
    p = paths or WgPaths()
    d, conf, iface = shlex.quote(p.directory), shlex.quote(p.conf), shlex.quote(p.iface)
    set_mtu = f"\n  ip link set dev {iface} mtu {int(mtu)}" if mtu else ""
    return f"""umask 077
set -e
if ip link show dev {iface} >/dev/null 2>&1; then
  s=$(mktemp {d}/.{p.iface}.strip.XXXXXX)
  trap 'rm -f "$s"' EXIT
  wg-quick strip {conf} > "$s"
  if ! grep -q '^PrivateKey' "$s"; then
    echo "hybridgrid: stripped {p.conf} has no PrivateKey;" \
      "refusing a syncconf that would wipe the key" >&2
    exit 3
  fi
  wg syncconf {iface} "$s"{set_mtu}
  # syncconf adds no routes: route new peers' AllowedIPs as wg-quick up would
  for r in $(wg show {iface} allowed-ips | cut -f2 | tr ' ' '\n' | grep -E '^[0-9./]+$' \
      | sort -t / -k 2 -n -r || true); do
    [ -n "$(ip -4 route show dev {iface} match "$r")" ] || ip -4 route add "$r" dev {iface}
  done
  echo synced
else
  wg-quick up {conf} >&2
  echo started
fi
"""


def stage_key_command(paths: WgPaths | None = None) -> str:
    """Rotation step 1: make the next key beside the current one (once; a rerun reuses it)
    and print its public key. wg0 keeps running on the current key."""
    p = paths or WgPaths()
    d, nxt = shlex.quote(p.directory), shlex.quote(p.staged_key)
    return f"""umask 077
set -e
if ! test -s {nxt}; then
  tmp=$(mktemp {d}/.privatekey.next.XXXXXX)
  wg genkey > "$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" {nxt}
fi
wg pubkey < {nxt}
"""


def activate_key_command(paths: WgPaths | None = None) -> str:
    """Rotation step 2: the staged key becomes the key, the old one is kept as .prev.
    Afterwards re-assemble wg0.conf and syncconf. Prints the active public key."""
    p = paths or WgPaths()
    key, nxt, prev = (shlex.quote(x) for x in (p.private_key, p.staged_key, p.previous_key))
    return f"""umask 077
set -e
if test -s {nxt}; then
  cp -p {key} {prev}
  mv -f {nxt} {key}
fi
wg pubkey < {key}
"""


def rollback_key_command(paths: WgPaths | None = None) -> str:
    """Rotation failed (no fresh handshake): put the previous key back. Prints its public key."""
    p = paths or WgPaths()
    key, prev = shlex.quote(p.private_key), shlex.quote(p.previous_key)
    return f"""umask 077
set -e
test -s {prev} || {{ echo "hybridgrid: no previous key to roll back to" >&2; exit 3; }}
mv -f {prev} {key}
wg pubkey < {key}
"""


def forget_previous_key_command(paths: WgPaths | None = None) -> str:
    """Rotation confirmed: delete the previous key."""
    p = paths or WgPaths()
    return f"rm -f {shlex.quote(p.previous_key)} {shlex.quote(p.staged_key)}\n"


def down_command(paths: WgPaths | None = None) -> str:
    p = paths or WgPaths()
    iface, conf = shlex.quote(p.iface), shlex.quote(p.conf)
    return f"if ip link show dev {iface} >/dev/null 2>&1; then wg-quick down {conf} >&2; fi\n"


def remove_peer_live_command(public_key: str, iface: str = "wg0") -> str:
    """Drop one peer from the running interface (public key only; no restart)."""
    _check_wg_public_key(public_key)
    return f"wg set {shlex.quote(iface)} peer {shlex.quote(public_key)} remove\n"


def ip_forward_command(persist_file: str = "/etc/sysctl.d/90-hybridgrid.conf") -> str:
    """Enable IPv4 forwarding now and, where the host has /etc/sysctl.d, after reboot.

    ICMP redirects are switched off: while wg0 is down a forwarding hub would tell its workers
    to use the cloud router instead, and they keep that cached route for minutes after the
    tunnel is back."""
    f = shlex.quote(persist_file)
    return f"""set -e
sysctl -qw net.ipv4.ip_forward=1
# a redirect goes out when "all" OR the interface asks for it: clear every one
for r in /proc/sys/net/ipv4/conf/*/send_redirects; do echo 0 > "$r"; done
if [ -d "$(dirname {f})" ]; then
  want='net.ipv4.ip_forward = 1
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.default.send_redirects = 0'
  [ "$(cat {f} 2>/dev/null)" = "$want" ] || printf '%s\\n' "$want" > {f}
fi
"""


MSS_TABLE = "hybridgrid"


def mss_clamp_command(table: str = MSS_TABLE) -> str:
    """Clamp TCP MSS to the route MTU on forwarded SYNs (hubs forward into a smaller tunnel).

    `add table`/`add chain` are no-ops when present; the rule is added only when missing.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", table):
        raise ValueError("table: letters, digits, _ and - only")
    return f"""set -e
nft add table inet {table}
nft 'add chain inet {table} forward {{ type filter hook forward priority mangle; policy accept; }}'
nft list chain inet {table} forward | grep -q 'maxseg size set rt mtu' || \\
  nft add rule inet {table} forward tcp flags syn tcp option maxseg size set rt mtu
"""


# ---------------------------------------------------------------- async edges


class WgApplyResult(BaseModel):
    iface: str
    action: Literal["started", "synced"]
    changed: bool  # wg0.conf content changed (False: a rerun with the same config)
    peers: int


def _last_line(text: str, allowed: tuple[str, ...], what: str) -> str:
    lines = text.strip().splitlines()
    if not lines or lines[-1] not in allowed:
        raise ValueError(f"{what}: unexpected output, expected one of {', '.join(allowed)}")
    return lines[-1]


async def ensure_wg_key(host: RemoteShell, paths: WgPaths | None = None) -> str:
    """Private key on the node (made once, reused); returns only the public key."""
    res = await host.run(genkey_command(paths), name="wg-genkey", timeout=30)
    return _check_wg_public_key(res.stdout.strip())


async def apply_wg_config(
    host: RemoteShell, config: WgConfig, paths: WgPaths | None = None
) -> WgApplyResult:
    """Upload the rendered body, join the key in on the node, then up or syncconf."""
    p = paths or WgPaths()
    body = render_wg_conf(config, p).encode()
    await host.upload(p.body, body, mode=0o600, name=f"upload {p.iface}.conf.body")
    asm = await host.run(assemble_command(p), name=f"assemble {p.iface}.conf", timeout=30)
    changed = _last_line(asm.stdout, ("changed", "unchanged"), "assemble") == "changed"
    res = await host.run(
        bring_up_command(p, config.interface.mtu), name=f"bring up {p.iface}", timeout=60
    )
    action = _last_line(res.stdout, ("started", "synced"), f"bring up {p.iface}")
    return WgApplyResult(
        iface=p.iface,
        action=action,  # type: ignore[arg-type]
        changed=changed,
        peers=len(config.peers),
    )


async def enable_forwarding(host: RemoteShell, *, clamp_mss: bool) -> None:
    await host.run(ip_forward_command(), name="enable ip_forward", timeout=30)
    if clamp_mss:
        await host.run(mss_clamp_command(), name="nft mss clamp", timeout=30)


# ---------------------------------------------------------------- host preparation and routes


def install_tools_command() -> str:
    """Install wireguard-tools only when `wg`/`wg-quick` are missing (apt hosts). Prints
    `present` or `installed`."""
    return """set -e
if command -v wg >/dev/null 2>&1 && command -v wg-quick >/dev/null 2>&1; then
  echo present
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -q -o DPkg::Lock::Timeout=300 update >&2
  apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends wireguard-tools >&2
  echo installed
else
  echo "hybridgrid: wg/wg-quick are missing and this host has no apt-get;" \\
    "install wireguard-tools in the image" >&2
  exit 3
fi
"""


def routes_command(
    routes: list[IPv4Network], via: ipaddress.IPv4Address, *, name: str = "hybridgrid"
) -> str:
    """`ip route replace` each route via the local hub/spoke (idempotent), then persist them
    where the host has a way: a netplan drop-in, else a systemd-networkd drop-in for the
    interface's .network file, else nothing. Prints `persisted:netplan`, `persisted:networkd`
    or `persist:skipped`."""
    if not re.fullmatch(r"[a-z0-9-]{1,40}", name):
        raise ValueError("name: lowercase letters, digits and - only")
    if not routes:
        raise ValueError("routes: at least one network")
    gw = str(ipaddress.IPv4Address(via))
    nets = [str(IPv4Network(r)) for r in routes]
    replace = "\n".join(f"ip route replace {n} via {gw}" for n in nets)
    netplan_routes = "".join(f"        - to: {n}\\n          via: {gw}\\n" for n in nets)
    networkd_routes = "".join(f"[Route]\\nDestination={n}\\nGateway={gw}\\n\\n" for n in nets)
    return f"""set -e
{replace}
ip route flush cache
dev=$(ip -o route get {gw} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p')
if command -v netplan >/dev/null 2>&1 && [ -d /etc/netplan ]; then
  f=/etc/netplan/90-{name}.yaml
  tmp=$(mktemp /etc/netplan/.90-{name}.XXXXXX)
  printf 'network:\\n  version: 2\\n  ethernets:\\n    %s:\\n      routes:\\n' "$dev" > "$tmp"
  printf '{netplan_routes}' >> "$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$f"
  echo persisted:netplan
elif command -v networkctl >/dev/null 2>&1 \\
    && nf=$(networkctl status "$dev" 2>/dev/null | sed -n 's/^ *Network File: //p') \\
    && [ -n "$nf" ] && [ "$nf" != "n/a" ]; then
  dd=/etc/systemd/network/$(basename "$nf").d
  mkdir -p "$dd"
  tmp=$(mktemp "$dd/.90-{name}.XXXXXX")
  printf '{networkd_routes}' > "$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$dd/90-{name}.conf"
  echo persisted:networkd
else
  echo persist:skipped
fi
"""


async def ensure_wireguard_tools(host: RemoteShell) -> str:
    """`present` or `installed`."""
    res = await host.run(install_tools_command(), name="install wireguard-tools", timeout=600)
    return res.stdout.strip().splitlines()[-1]


async def ensure_routes(
    host: RemoteShell,
    routes: list[IPv4Network],
    via: ipaddress.IPv4Address,
    *,
    name: str = "hybridgrid",
) -> str:
    """Routes via the local hub/spoke; returns how they were persisted."""
    res = await host.run(routes_command(routes, via, name=name), name="ip route replace")
    return res.stdout.strip().splitlines()[-1]


async def stage_key(host: RemoteShell, paths: WgPaths | None = None) -> str:
    res = await host.run(stage_key_command(paths), name="wg stage key", timeout=30)
    return _check_wg_public_key(res.stdout.strip())


async def activate_key(
    host: RemoteShell, config: WgConfig, paths: WgPaths | None = None
) -> tuple[str, WgApplyResult]:
    """Switch to the staged key and apply `config` (syncconf): returns the new public key."""
    res = await host.run(activate_key_command(paths), name="wg activate key", timeout=30)
    return _check_wg_public_key(res.stdout.strip()), await apply_wg_config(host, config, paths)


async def rollback_key(
    host: RemoteShell, config: WgConfig, paths: WgPaths | None = None
) -> tuple[str, WgApplyResult]:
    res = await host.run(rollback_key_command(paths), name="wg rollback key", timeout=30)
    return _check_wg_public_key(res.stdout.strip()), await apply_wg_config(host, config, paths)
