"""The comparison of a site's desired state with what its clouds and nodes show: the one
definition the drift check and `hybridgrid plan --live` both read.

`findings(want, home, api, nodes)` runs every check (one function each) and returns what
differs, each a `Finding`: the drift report's wording and, when a run would make it right,
the `Change` — add, change or destroy one named resource — that the plan prints. A finding
without a change is one a run does not fix as such or that could not be observed: a node not
reached, a stale handshake, a failed ping. `compare` (the drift verdict of one site) groups
the findings by check. Pure: no I/O.

A missing object's contents come with it: a missing security group is one `+
security-group`, not one change per rule in it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from pydantic import BaseModel

from hybridgrid import naming
from hybridgrid.drift import (
    CHECKS,
    Check,
    CheckResult,
    DesiredSite,
    HomeObs,
    NodeObs,
    RuleObs,
    SiteApiObs,
    SiteDrift,
    SiteNodesObs,
    WorkerObs,
)
from hybridgrid.rules import RuleSpec
from hybridgrid.wgstate import HANDSHAKE_MAX_AGE, WgPeerState

Action = Literal["add", "change", "destroy"]
SYMBOLS: dict[str, str] = {"add": "+", "change": "~", "destroy": "-"}

# The checks that read the site's cloud: an unreadable cloud leaves each of them unobserved.
API_CHECKS: tuple[Check, ...] = (
    "network",
    "subnet",
    "router",
    "servers",
    "floating ip",
    "rules",
    "pairs",
)


class Change(BaseModel):
    """One resource a run would create, update or delete."""

    action: Action
    kind: str  # network, subnet, router, server, floating-ip, security-group, rule, port, …
    name: str  # the resource, or the one it lives on (a rule's group, a route's worker)
    detail: str = ""

    def line(self) -> str:
        """`+ rule hg-giessen-sg ingress udp 51820-51820 from 203.0.113.10/32`."""
        head = f"{SYMBOLS[self.action]} {self.kind} {self.name}"
        return f"{head} {self.detail}" if self.detail else head


class Finding(BaseModel):
    """One difference: the drift report's wording, and the change a run would make (None:
    not observed, or nothing a run creates, updates or deletes)."""

    check: Check
    message: str
    change: Change | None = None


class Seen(BaseModel):
    """Everything observed for one site: the hub side, the site's cloud and its nodes."""

    home: HomeObs
    api: SiteApiObs
    nodes: SiteNodesObs


def _found(
    check: Check,
    message: str,
    action: Action | None = None,
    kind: str = "",
    name: str = "",
    detail: str = "",
) -> Finding:
    change = Change(action=action, kind=kind, name=name, detail=detail) if action else None
    return Finding(check=check, message=message, change=change)


def _covered(want: str, have: list[str]) -> bool:
    net = ipaddress.ip_network(want, strict=False)
    return any(net.subnet_of(ipaddress.ip_network(h, strict=False)) for h in have)


def _applied(want: IPv4Network, applied: list[IPv4Network]) -> IPv4Network:
    """What a run applies to cover `want`: the first applied network holding it (the pool
    covers a site subnet in it), else `want` itself."""
    return next((a for a in applied if want.subnet_of(a)), want)


def stale_rules(rules: list[RuleObs], owner: str, desired: list[RuleSpec]) -> list[RuleObs]:
    """Rules the site added (by description) that the desired set no longer has."""
    want = {r.key() for r in desired}
    mark = naming.site_tag(owner)
    return [r for r in rules if r.description == mark and r.key() not in want]


# ---------------------------------------------------------------- cloud objects


def _network(want: DesiredSite, seen: Seen) -> list[Finding]:
    api, name = seen.api, want.net_name
    if api.network_id is None:
        return [_found("network", f"{name} missing", "add", "network", name)]
    if want.net_id and api.network_id != want.net_id:
        message = f"{name} is {api.network_id}, the registry has {want.net_id}"
        detail = f"recorded id: {want.net_id} → {api.network_id}"
        return [_found("network", message, "change", "network", name, detail)]
    return []


def _subnet(want: DesiredSite, seen: Seen) -> list[Finding]:
    cidr, name = seen.api.subnet_cidr, want.subnet_name
    if cidr is None:
        return [_found("subnet", f"{name} missing", "add", "subnet", name, str(want.subnet))]
    if IPv4Network(cidr) != want.subnet:
        message = f"{name} has {cidr}, expected {want.subnet}"
        return [
            _found("subnet", message, "change", "subnet", name, f"cidr: {cidr} → {want.subnet}")
        ]
    return []


def _router(want: DesiredSite, seen: Seen) -> list[Finding]:
    api, name = seen.api, want.router_name
    if api.router_id is None:
        return [_found("router", f"{name} missing", "add", "router", name)]
    out = []
    if not api.router_gateway:
        message = f"{name} has no external gateway"
        out.append(_found("router", message, "change", "router", name, "+ external gateway"))
    if not api.router_on_subnet:
        message = f"{name} has no interface on {want.subnet_name}"
        detail = f"+ interface on {want.subnet_name}"
        out.append(_found("router", message, "change", "router", name, detail))
    return out


def _servers(want: DesiredSite, seen: Seen) -> list[Finding]:
    out = []
    for name, registered_id in want.servers.items():
        s = seen.api.servers.get(name)
        if s is None:
            out.append(_found("servers", f"{name} missing", "add", "server", name))
        elif s.status in ("ERROR", "SHUTOFF"):  # a run replaces / starts it
            fix = "replaced" if s.status == "ERROR" else "started"
            detail = f"status: {s.status} → ACTIVE ({fix})"
            out.append(_found("servers", f"{name} is {s.status}", "change", "server", name, detail))
        elif s.status != "ACTIVE":  # a run stops at it and says why
            out.append(_found("servers", f"{name} is {s.status}"))
        elif registered_id and s.id != registered_id:
            message = f"{name} was replaced ({s.id}, registry {registered_id})"
            detail = f"recorded id: {registered_id} → {s.id}"
            out.append(_found("servers", message, "change", "server", name, detail))
    return out


def _floating_ips(want: DesiredSite, seen: Seen) -> list[Finding]:
    fips, vpn, out = seen.api.vpn_fips, want.vpn_name, []
    if want.registered_vpn_fip and want.registered_vpn_fip not in fips:
        message = (
            f"{vpn}'s floating IP is {', '.join(fips) or 'none'}, the registry has "
            f"{want.registered_vpn_fip}"
        )
        if fips:  # the wiring follows the one on the port now; a run records it
            detail = f"recorded: {want.registered_vpn_fip} → {fips[0]}"
            out.append(_found("floating ip", message, "change", "floating-ip", vpn, detail))
        else:
            out.append(_found("floating ip", message, "add", "floating-ip", vpn))
    elif not fips:
        out.append(_found("floating ip", f"{vpn} has no floating IP", "add", "floating-ip", vpn))
    if seen.home.master_fip is None and not seen.home.error:
        message = "the master has no floating IP"
        out.append(_found("floating ip", message, "add", "floating-ip", want.hub_name))
    return out


def _group_rules(
    group: str, label: str, rules: list[RuleObs], want: list[RuleSpec], owner: str
) -> list[Finding]:
    """The rules `want` lacks in a group and the owner's rules it no longer has."""
    have = {r.key() for r in rules}
    lacking = [
        _found("rules", f"{label} lacks {r.describe()}", "add", "rule", group, r.describe())
        for r in want
        if r.key() not in have
    ]
    stale = [
        _found("rules", f"stale {r.describe()} in {label}", "destroy", "rule", group, r.describe())
        for r in stale_rules(rules, owner, want)
    ]
    return lacking + stale


def _rules(want: DesiredSite, seen: Seen) -> list[Finding]:
    api, home, out = seen.api, seen.home, []
    if api.site_sg_id is None:
        detail = f"with its {len(want.site_rules)} rules"
        sg = want.sg_name
        out.append(_found("rules", f"{sg} missing", "add", "security-group", sg, detail))
    else:
        out += _group_rules(want.sg_name, want.sg_name, api.site_rules, want.site_rules, want.site)
    if home.error:
        out.append(_found("rules", f"home group not read ({home.error})"))
    elif home.home_sg_id is not None:
        group, label = want.home_sg_name, "the home group"
        out += _group_rules(group, label, home.home_rules, want.home_rules, want.site)
    return out


def _port_pairs(
    port: str, label: str, have: list[str], wanted: list[str], applied: list[IPv4Network]
) -> list[Finding]:
    """A pair for each wanted network not covered yet: the applied one that covers it."""
    return [
        _found(
            "pairs",
            f"{label} lacks pair {p}",
            "change",
            "port",
            port,
            f"allowed-address pairs: + {_applied(IPv4Network(p), applied)}",
        )
        for p in wanted
        if not _covered(p, have)
    ]


def _pairs(want: DesiredSite, seen: Seen) -> list[Finding]:
    home, api, out = seen.home, seen.api, []
    if home.error:
        out.append(_found("pairs", f"master port not read ({home.error})"))
    elif home.master_port_security:
        out += _port_pairs(
            want.hub_name, "master port", home.master_pairs, want.master_pairs, want.home_side
        )
    if api.vpn_port_id is None:  # the port comes with the server
        out.append(_found("pairs", f"{want.vpn_name} has no port"))
    elif api.vpn_port_security:
        vpn_applied = [IPv4Network(p) for p in want.vpn_pairs]
        out += _port_pairs(
            want.vpn_name, f"{want.vpn_name} port", api.vpn_pairs, want.vpn_pairs, vpn_applied
        )
    return out


# ---------------------------------------------------------------- WireGuard


def _wg_usable(node: NodeObs) -> bool:
    """wg0 was read, exists and holds a private key: its peers can be judged."""
    return not node.error and node.wg is not None and node.wg.interface.has_private_key


def _wg0_state(node: NodeObs, role: str) -> list[Finding]:
    if node.error:
        return [_found("wg0", f"{role} {node.name} not reachable ({node.error})")]
    if node.wg is None:
        return [_found("wg0", f"wg0 is down on {role} {node.name}", "add", "wg0", node.name)]
    if not node.wg.interface.has_private_key:
        message = f"wg0 on {role} {node.name} has no private key"
        return [_found("wg0", message, "change", "wg0", node.name, "+ private key")]
    return []


def _wg0_key(node: NodeObs, role: str, key: str | None) -> list[Finding]:
    running = node.wg.interface.public_key if node.wg is not None else None
    if running is None or not key or running == key:
        return []
    message = f"wg0 on {role} {node.name} runs with key {running}, the registry has {key}"
    detail = f"public key: {running} → {key}"
    return [_found("wg0", message, "change", "wg0", node.name, detail)]


def _wg0(want: DesiredSite, seen: Seen) -> list[Finding]:
    ends = (
        (seen.home.hub, "master", want.hub_key),
        (seen.nodes.spoke, "VPN node", want.spoke_key),
    )
    states = [f for node, role, _ in ends for f in _wg0_state(node, role)]
    return states + [f for node, role, key in ends for f in _wg0_key(node, role, key)]


def _peers_seen(want: DesiredSite, seen: Seen) -> tuple[WgPeerState | None, WgPeerState | None]:
    """(the site's peer on the hub, the hub's peer on the VPN node), where readable."""
    hub, spoke = seen.home.hub, seen.nodes.spoke
    hub_peer = spoke_peer = None
    if _wg_usable(hub) and want.spoke_key:
        hub_peer = hub.wg.peer(want.spoke_key)  # type: ignore[union-attr]
    if _wg_usable(spoke) and want.hub_key:
        spoke_peer = spoke.wg.peer(want.hub_key)  # type: ignore[union-attr]
    return hub_peer, spoke_peer


def _lacking_allowed(peer: WgPeerState, wanted: list[IPv4Network]) -> list[str]:
    return sorted(set(map(str, wanted)) - set(map(str, peer.allowed_ips)))


def _hub_peers(want: DesiredSite, hub: NodeObs, peer: WgPeerState | None) -> list[Finding]:
    site, node, out = want.site, hub.name, []
    if peer is None:
        message = f"the master has no peer with {site}'s key {want.spoke_key}"
        detail = f"{site} ({want.spoke_key})" if want.spoke_key else site  # no key: a new site
        out.append(_found("peers", message, "add", "peer", node, detail))
    elif missing := _lacking_allowed(peer, want.hub_peer_allowed):
        message = f"the master's peer for {site} lacks AllowedIPs {', '.join(missing)}"
        detail = f"{site} AllowedIPs: + {', '.join(missing)}"
        out.append(_found("peers", message, "change", "peer", node, detail))
    for p in hub.wg.peers if hub.wg else []:
        if p.public_key != want.spoke_key and any(
            a.version == 4 and any(a.overlaps(w) for w in want.hub_peer_allowed)
            for a in p.allowed_ips
        ):
            message = f"the master has a foreign peer {p.public_key} on {site}'s addresses"
            out.append(_found("peers", message, "destroy", "peer", node, p.public_key))
    return out


def _spoke_peers(want: DesiredSite, spoke: NodeObs, peer: WgPeerState | None) -> list[Finding]:
    vpn, out = want.vpn_name, []
    if peer is None:
        message = f"{vpn} has no peer with the hub's key {want.hub_key}"
        out.append(_found("peers", message, "add", "peer", vpn, f"the hub ({want.hub_key})"))
    elif missing := _lacking_allowed(peer, want.spoke_peer_allowed):
        message = f"{vpn}'s hub peer lacks AllowedIPs {', '.join(missing)}"
        detail = f"the hub AllowedIPs: + {', '.join(missing)}"
        out.append(_found("peers", message, "change", "peer", vpn, detail))
    for p in spoke.wg.peers if spoke.wg else []:
        if p.public_key != want.hub_key:
            message = f"{vpn} has unexpected peer(s) {p.public_key}"
            out.append(_found("peers", message, "destroy", "peer", vpn, p.public_key))
    return out


def _peers(want: DesiredSite, seen: Seen) -> list[Finding]:
    hub_peer, spoke_peer = _peers_seen(want, seen)
    out = []
    if _wg_usable(seen.home.hub):
        out += _hub_peers(want, seen.home.hub, hub_peer)
    if _wg_usable(seen.nodes.spoke):
        out += _spoke_peers(want, seen.nodes.spoke, spoke_peer)
    return out


def _endpoint(want: DesiredSite, seen: Seen) -> list[Finding]:
    hub_peer, spoke_peer = _peers_seen(want, seen)
    out = []
    if hub_peer is not None and want.hub_endpoint and hub_peer.endpoint != want.hub_endpoint:
        now = hub_peer.endpoint or "no endpoint"
        message = f"the master sends {want.site} to {now}, its floating IP is {want.hub_endpoint}"
        detail = f"{want.site} endpoint: {now} → {want.hub_endpoint}"
        out.append(_found("endpoint", message, "change", "peer", want.hub_name, detail))
    if (
        spoke_peer is not None
        and want.spoke_endpoint
        and spoke_peer.endpoint != want.spoke_endpoint
    ):
        now = spoke_peer.endpoint or "no endpoint"
        message = f"{want.vpn_name} sends to {now}, the master is at {want.spoke_endpoint}"
        detail = f"the hub endpoint: {now} → {want.spoke_endpoint}"
        out.append(_found("endpoint", message, "change", "peer", want.vpn_name, detail))
    return out


def _handshake(want: DesiredSite, seen: Seen) -> list[Finding]:
    """Notes only: a stale handshake follows from something else (see the other checks)."""
    hub_peer, spoke_peer = _peers_seen(want, seen)
    out = []
    for peer, node, who in (
        (hub_peer, seen.home.hub, f"master ⇄ {want.site}"),
        (spoke_peer, seen.nodes.spoke, f"{want.vpn_name} ⇄ master"),
    ):
        if peer is None:
            continue
        age = peer.handshake_age(node.observed_at or None)
        if age is None:
            out.append(_found("handshake", f"{who}: no handshake yet"))
        elif age >= HANDSHAKE_MAX_AGE:
            out.append(_found("handshake", f"{who}: last handshake {int(age)} s ago"))
    usable = _wg_usable(seen.home.hub) and _wg_usable(seen.nodes.spoke)
    if not usable or (hub_peer is None and spoke_peer is None):
        out.append(_found("handshake", "not observable on both ends (see wg0 / peers)"))
    return out


# ---------------------------------------------------------------- workers


def _worker_routes(
    w: WorkerObs, nets: list[IPv4Network], applied: list[IPv4Network], via: IPv4Address | None
) -> list[Finding]:
    """Each wanted network must leave via the hub/spoke: the most specific route covering
    it (the kernel's choice; a pool route covers a site subnet) has that gateway."""
    if w.error:
        return [_found("routes", f"{w.name} not reachable ({w.error})")]
    out = []
    for n in nets:
        covering = [
            r for r in w.routes if r.destination.prefixlen > 0 and n.subnet_of(r.destination)
        ]
        if not covering:
            detail = str(_applied(n, applied)) + (f" via {via}" if via else "")
            out.append(
                _found("routes", f"{w.name} has no route to {n}", "add", "route", w.name, detail)
            )
            continue
        best = max(covering, key=lambda r: r.destination.prefixlen)
        if via is not None and best.via != via:
            gw = f"via {best.via}" if best.via else "on-link"
            message = f"{w.name} routes {n} {gw} ({best.destination}), expected via {via}"
            detail = f"{best.destination}: {gw} → via {via}"
            out.append(_found("routes", message, "change", "route", w.name, detail))
    return out


def _routes(want: DesiredSite, seen: Seen) -> list[Finding]:
    out = []
    if seen.nodes.spoke.error:
        out.append(_found("routes", f"site workers not reached ({want.vpn_name} unreachable)"))
    for w in seen.nodes.workers:
        out += _worker_routes(w, want.site_routes, want.site_routes, want.site_via)
    for w in seen.home.workers:
        out += _worker_routes(w, want.home_routes, want.home_side, want.home_via)
    return out


def _reachability(want: DesiredSite, seen: Seen) -> list[Finding]:
    """Notes only: a failed ping follows from something else (see the other checks)."""
    out = []
    for pings, workers in (
        (want.site_pings, seen.nodes.workers),
        (want.home_pings, seen.home.workers),
    ):
        for ping in pings:
            w = next((x for x in workers if x.name == ping.src), None)
            if w is None or w.error:
                message = f"{ping.src} → {ping.dst_name} not tried ({ping.src} unreachable)"
                out.append(_found("reachability", message))
            elif not w.pings.get(ping.dst, False):
                message = f"{ping.src} → {ping.dst_name} ({ping.dst}) fails"
                out.append(_found("reachability", message))
    return out


# ---------------------------------------------------------------- every check

CHECK_FUNCTIONS: dict[Check, Callable[[DesiredSite, Seen], list[Finding]]] = {
    "network": _network,
    "subnet": _subnet,
    "router": _router,
    "servers": _servers,
    "floating ip": _floating_ips,
    "rules": _rules,
    "pairs": _pairs,
    "wg0": _wg0,
    "peers": _peers,
    "endpoint": _endpoint,
    "handshake": _handshake,
    "routes": _routes,
    "reachability": _reachability,
}


def applicable(check: Check, want: DesiredSite, seen: Seen) -> bool:
    """False where a check has nothing to look at (the drift table shows n/a)."""
    if check == "endpoint":
        return any(p is not None for p in _peers_seen(want, seen))
    if check == "routes":
        return bool(want.site_routes or seen.home.workers)
    if check == "reachability":
        return bool(want.site_pings or want.home_pings)
    return True


def _check(check: Check, want: DesiredSite, seen: Seen) -> list[Finding]:
    if check in API_CHECKS and seen.api.error:
        return [_found(check, f"cannot read the site's cloud ({seen.api.error})")]
    return CHECK_FUNCTIONS[check](want, seen)


def findings(
    want: DesiredSite, home: HomeObs, api: SiteApiObs, nodes: SiteNodesObs
) -> list[Finding]:
    """Everything that differs for one site, check by check (in `CHECKS` order)."""
    seen = Seen(home=home, api=api, nodes=nodes)
    return [
        f for check in CHECKS if applicable(check, want, seen) for f in _check(check, want, seen)
    ]


def _result(check: Check, want: DesiredSite, seen: Seen, found: list[Finding]) -> CheckResult:
    if not applicable(check, want, seen):
        return CheckResult(check=check, ok=None)
    differs = [f.message for f in found if f.check == check]
    return CheckResult(check=check, ok=not differs, differs=differs)


def compare(want: DesiredSite, home: HomeObs, api: SiteApiObs, nodes: SiteNodesObs) -> SiteDrift:
    """The drift verdict of one site: its findings as one result per check."""
    seen = Seen(home=home, api=api, nodes=nodes)
    found = findings(want, home, api, nodes)
    return SiteDrift(site=want.site, results=[_result(c, want, seen, found) for c in CHECKS])
