"""The node-side shell (pure: each function returns a POSIX sh script): the key made on the
node, wg0.conf assembled there, wg0 brought up or synced, key rotation, forwarding, MSS
clamping, the tools, routes via the hub/spoke.

Each script runs as root (the SSH client wraps it in `sudo -n sh -c`). None ever carries key
material: keys are read from files by the tools themselves, so a key never appears in a
process argument.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from ipaddress import IPv4Network

from hybridgrid.wireguard.render import WgPaths


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
