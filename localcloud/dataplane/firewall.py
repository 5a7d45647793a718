"""nftables rulesets for security groups, port security and router NAT (pure rendering).

Security groups and port security live in the cloud's fabric namespace, where the bridges
are. This kernel has no nf_conntrack_bridge, so a bridge-family chain cannot match
``ct state``; instead:
- bridge prerouting (priority -300) checks each protected port's source MAC/IP/ARP against
  its fixed IPs + allowed-address pairs (anti-spoofing) and marks the packet with the
  sending port's number (high 16 bits);
- bridge forward (priority -200, before br_netfilter hands the packet to the IPv4 hooks)
  adds the receiving port's number (low 16 bits);
- the ip-family forward chain sees bridged IPv4 with conntrack (br_netfilter,
  bridge-nf-call-iptables=1): established/related pass, then the sender's egress rules and the
  receiver's ingress rules decide (default deny ingress, as Neutron).
Each apply replaces the tables in one nft transaction, so rule changes reach running servers
at once while existing conntrack entries stay.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pydantic import BaseModel

from localcloud.backend import Port, Rule, SecurityGroup

FABRIC_BRIDGE_TABLE = "lc_ps"
FABRIC_IP_TABLE = "lc_sg"
ROUTER_NAT_TABLE = "lc_nat"
HAIRPIN_MARK = 0x4C43
L4_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "tcp": "tcp", "udp": "udp", "icmp": "icmp"}


class ProtectedPort(BaseModel):
    link: str  # fabric-side veth name
    macs: list[str]
    ips: list[str]  # fixed IPs + allowed-address-pair addresses/CIDRs
    ingress: list[str]  # rendered nft matches ("" = match all)
    egress: list[str]


def collapse(addrs: Iterable[str]) -> list[str]:
    nets = [ipaddress.ip_network(a, strict=False) for a in addrs]
    v4 = [n for n in nets if n.version == 4]
    return [
        str(n.network_address) if n.prefixlen == 32 else str(n)
        for n in ipaddress.collapse_addresses(v4)
    ]


def nft_set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def rule_match(rule: Rule, members: dict[str, list[str]]) -> str | None:
    """nft match expression for one SG rule, or None if it can never match."""
    if rule.ethertype.lower() != "ipv4":
        return None
    addr = "ip saddr" if rule.direction == "ingress" else "ip daddr"
    parts = []
    if rule.remote_ip_prefix:
        net = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
        if net.version != 4:
            return None
        if net.prefixlen:
            parts.append(f"{addr} {net}")
    if rule.remote_group_id:
        ips = collapse(members.get(rule.remote_group_id, []))
        if not ips:
            return None
        parts.append(f"{addr} {nft_set(ips)}")
    proto = (rule.protocol or "").lower()
    if proto in ("", "any", "0"):
        pass
    elif L4_NAMES.get(proto) in ("tcp", "udp"):
        name = L4_NAMES[proto]
        lo, hi = rule.port_range_min, rule.port_range_max
        if lo is None or (lo == 1 and hi == 65535):
            parts.append(f"meta l4proto {name}")
        else:
            hi = lo if hi is None else hi
            parts.append(f"{name} dport {lo}" if lo == hi else f"{name} dport {lo}-{hi}")
    elif L4_NAMES.get(proto) == "icmp":
        if rule.port_range_min is None:
            parts.append("meta l4proto icmp")
        else:
            parts.append(f"icmp type {rule.port_range_min}")
            if rule.port_range_max is not None:
                parts.append(f"icmp code {rule.port_range_max}")
    elif proto.isdigit():
        parts.append(f"meta l4proto {int(proto)}")
    elif proto.isalnum():
        parts.append(f"meta l4proto {proto}")
    else:
        return None
    return " ".join(parts)


def group_members(ports: list[Port]) -> dict[str, list[str]]:
    """Remote-group membership: fixed IPs and allowed-address pairs of the group's ports."""
    members: dict[str, list[str]] = {}
    for port in ports:
        addrs = [f.ip_address for f in port.fixed_ips] + [
            p.ip_address for p in port.allowed_address_pairs
        ]
        for gid in port.security_group_ids:
            members.setdefault(gid, []).extend(addrs)
    return members


def protected_port(
    port: Port, link: str, groups: dict[str, SecurityGroup], members: dict[str, list[str]]
) -> ProtectedPort:
    ingress: list[str] = []
    egress: list[str] = []
    for gid in port.security_group_ids:
        group = groups.get(gid)
        for rule in group.rules if group else []:
            match = rule_match(rule, members)
            if match is not None:
                (ingress if rule.direction == "ingress" else egress).append(match)
    macs = {port.mac_address.lower()} | {
        p.mac_address.lower() for p in port.allowed_address_pairs if p.mac_address
    }
    ips = collapse(
        [f.ip_address for f in port.fixed_ips] + [p.ip_address for p in port.allowed_address_pairs]
    )
    return ProtectedPort(
        link=link, macs=sorted(macs), ips=ips, ingress=_uniq(ingress), egress=_uniq(egress)
    )


def _uniq(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def render_fabric(ports: list[ProtectedPort]) -> str:
    """Both fabric tables, as one atomic nft script (replaces what was there)."""
    bt, it = FABRIC_BRIDGE_TABLE, FABRIC_IP_TABLE
    out = [
        f"table bridge {bt} {{}}",
        f"delete table bridge {bt}",
        f"table ip {it} {{}}",
        f"delete table ip {it}",
        f"table bridge {bt} {{",
        "  chain prerouting { type filter hook prerouting priority -300; policy accept;",
        *(f'    iifname "{p.link}" jump ps_{i}' for i, p in enumerate(ports, 1)),
        "  }",
        "  chain forward { type filter hook forward priority -200; policy accept;",
        *(
            f'    oifname "{p.link}" meta mark set meta mark | {i:#x}'
            for i, p in enumerate(ports, 1)
        ),
        "  }",
    ]
    for i, p in enumerate(ports, 1):
        out += [f"  chain ps_{i} {{", f"    ether saddr != {nft_set(p.macs)} drop"]
        out.append(f"    arp saddr ether != {nft_set(p.macs)} drop")
        if p.ips:
            out.append(f"    arp saddr ip != {nft_set(p.ips)} drop")
            out.append(f"    ether type ip ip saddr != {nft_set(p.ips)} drop")
        else:
            out += ["    ether type arp drop", "    ether type ip drop"]
        out += ["    ether type ip6 drop", f"    meta mark set {i << 16:#x}", "  }"]
    out.append("}")
    out += [
        f"table ip {it} {{",
        "  chain forward { type filter hook forward priority 0; policy accept;",
        "    meta mark 0 accept",
        "    ct state established,related accept",
        "    ct state invalid drop",
    ]
    if ports:
        eg = ", ".join(f"{i << 16:#x} : jump eg_{i}" for i in range(1, len(ports) + 1))
        ing = ", ".join(f"{i:#x} : jump in_{i}" for i in range(1, len(ports) + 1))
        out += [
            f"    meta mark & 0xffff0000 vmap {{ {eg} }}",
            f"    meta mark & 0x0000ffff vmap {{ {ing} }}",
        ]
    out.append("  }")
    for i, p in enumerate(ports, 1):
        out.append(f"  chain eg_{i} {{")
        out += [f"    {m} return" if m else "    return" for m in p.egress]
        out += ["    drop", "  }", f"  chain in_{i} {{"]
        out += [f"    {m} accept" if m else "    accept" for m in p.ingress]
        out += ["    drop", "  }"]
    out.append("}")
    return "\n".join(out) + "\n"


class FloatingNat(BaseModel):
    floating_ip: str
    fixed_ip: str


def render_router_nat(
    gw_link: str | None, gw_ip: str | None, internal_cidrs: list[str], fips: list[FloatingNat],
    snat: bool,
) -> str:  # fmt: skip
    t = ROUTER_NAT_TABLE
    out = [
        f"table ip {t} {{}}",
        f"delete table ip {t}",
        f"table ip {t} {{",
        "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
        # hairpin: an instance reaching a floating IP behind the same router is marked here
        # and masqueraded below, so the reply comes back through the router
        *(
            f'    iifname != "{gw_link}" ip daddr {f.floating_ip} meta mark set {HAIRPIN_MARK:#x} '
            f"dnat to {f.fixed_ip}"
            for f in fips
            if gw_link
        ),
        *(f"    ip daddr {f.floating_ip} dnat to {f.fixed_ip}" for f in fips if gw_link),
        "  }",
        "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;",
    ]
    if gw_link:
        out += [
            f'    oifname "{gw_link}" ip saddr {f.fixed_ip} snat to {f.floating_ip}' for f in fips
        ]
        out.append(f"    meta mark {HAIRPIN_MARK:#x} masquerade")
        cidrs = collapse(internal_cidrs)
        if snat and gw_ip and cidrs:
            out.append(f'    oifname "{gw_link}" ip saddr {nft_set(cidrs)} snat to {gw_ip}')
    out += ["  }", "}"]
    return "\n".join(out) + "\n"
