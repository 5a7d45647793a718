"""Drift: what a site should look like (registry + model) against what the clouds and nodes
show, as a per-site list of checks. Pure: observations come in as typed models (read by
`tasks/drift_tasks.py`), verdicts go out; nothing here does I/O.

One cell per (site, check): ``ok``, ``n/a`` or ``drift: <what differs>``. A check that could
not be observed (a node unreachable) is drift too: the check cannot vouch for the link.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from pydantic import BaseModel, Field

from hybridgrid import desired, naming
from hybridgrid.registry_data import RegistryData
from hybridgrid.rules import RuleSpec
from hybridgrid.wgstate import HANDSHAKE_MAX_AGE, WgState

Check = Literal[
    "network",
    "subnet",
    "router",
    "servers",
    "floating ip",
    "rules",
    "pairs",
    "wg0",
    "peers",
    "endpoint",
    "handshake",
    "routes",
    "reachability",
]
CHECKS: tuple[Check, ...] = (
    "network",
    "subnet",
    "router",
    "servers",
    "floating ip",
    "rules",
    "pairs",
    "wg0",
    "peers",
    "endpoint",
    "handshake",
    "routes",
    "reachability",
)


# ---------------------------------------------------------------- observations (typed input)


class RuleObs(BaseModel):
    """A security-group rule as the cloud shows it."""

    id: str
    direction: str = "ingress"
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None
    description: str | None = None

    def key(self) -> tuple:
        """Same identity as `cloudops.security_groups.rule_key` (and `RuleSpec.key`)."""
        prefix = _norm(self.remote_ip_prefix) if self.remote_ip_prefix else None
        if prefix == "0.0.0.0/0":
            prefix = None
        return (
            self.direction,
            self.ethertype or "IPv4",
            self.protocol,
            self.port_min,
            self.port_max,
            prefix,
            self.remote_group_id,
        )

    def as_spec(self) -> RuleSpec | None:
        if self.direction not in ("ingress", "egress") or self.protocol not in (
            None,
            "tcp",
            "udp",
            "icmp",
        ):
            return None
        return RuleSpec(
            direction=self.direction,  # type: ignore[arg-type]
            protocol=self.protocol,  # type: ignore[arg-type]
            port_min=self.port_min,
            port_max=self.port_max,
            remote_ip_prefix=self.remote_ip_prefix,
        )

    def describe(self) -> str:
        spec = self.as_spec()
        return spec.describe() if spec else f"rule {self.id}"


class ServerObs(BaseModel):
    name: str
    id: str
    status: str


class RouteObs(BaseModel):
    destination: IPv4Network
    via: IPv4Address | None = None


class WorkerObs(BaseModel):
    """A worker seen over SSH: its routing table and the pings it was asked to send."""

    name: str
    fixed_ip: str
    error: str | None = None  # set when the worker could not be reached
    routes: list[RouteObs] = Field(default_factory=list)
    pings: dict[str, bool] = Field(default_factory=dict)  # destination IP → answered


class NodeObs(BaseModel):
    """A WireGuard node seen over SSH (None state: wg0 does not exist)."""

    name: str
    address: str = ""  # where it was reached
    error: str | None = None
    wg: WgState | None = None
    observed_at: float = 0.0  # epoch seconds when wg was read


class HomeObs(BaseModel):
    """The hub side, read once per check and shared by every site's verdict."""

    error: str | None = None
    master_port_id: str | None = None
    master_fixed_ip: str | None = None
    master_fip: str | None = None
    master_pairs: list[str] = Field(default_factory=list)
    master_port_security: bool = True
    home_sg_id: str | None = None
    home_rules: list[RuleObs] = Field(default_factory=list)
    hub: NodeObs
    workers: list[WorkerObs] = Field(default_factory=list)


class SiteApiObs(BaseModel):
    """A site's objects as its cloud shows them (None: not found by name + tags)."""

    error: str | None = None
    network_id: str | None = None
    subnet_id: str | None = None
    subnet_cidr: str | None = None
    router_id: str | None = None
    router_gateway: bool = False
    router_on_subnet: bool = False
    servers: dict[str, ServerObs] = Field(default_factory=dict)  # by name
    vpn_port_id: str | None = None
    vpn_fixed_ip: str | None = None
    vpn_fips: list[str] = Field(default_factory=list)  # floating IPs on the VPN node's port
    vpn_pairs: list[str] = Field(default_factory=list)
    vpn_port_security: bool = True
    site_sg_id: str | None = None
    site_rules: list[RuleObs] = Field(default_factory=list)


class SiteNodesObs(BaseModel):
    spoke: NodeObs
    workers: list[WorkerObs] = Field(default_factory=list)


# ---------------------------------------------------------------- desired state


class PingWant(BaseModel):
    src: str  # worker name
    dst_name: str
    dst: str  # fixed IP


class DesiredSite(BaseModel):
    """What the registry and the model say the site must look like right now."""

    site: str
    net_name: str
    subnet_name: str
    router_name: str
    sg_name: str
    vpn_name: str
    net_id: str | None = None
    subnet: IPv4Network
    servers: dict[str, str | None]  # name → registered id (None: not recorded)
    registered_vpn_fip: str | None
    current_vpn_fip: str | None  # on the port now; what peers and rules must follow
    master_fip: str | None
    site_rules: list[RuleSpec]
    home_rules: list[RuleSpec]
    master_pairs: list[str]
    vpn_pairs: list[str]
    hub_name: str
    hub_key: str | None
    spoke_key: str | None
    hub_peer_allowed: list[IPv4Network]
    spoke_peer_allowed: list[IPv4Network]
    hub_endpoint: str | None  # the spoke as the hub should see it
    spoke_endpoint: str | None  # the hub as the spoke should see it
    site_routes: list[IPv4Network]
    site_via: IPv4Address | None
    home_routes: list[IPv4Network]
    home_via: IPv4Address | None
    site_pings: list[PingWant] = Field(default_factory=list)  # from site workers
    home_pings: list[PingWant] = Field(default_factory=list)  # from home workers


def stale_rules(rules: list[RuleObs], owner: str, desired: list[RuleSpec]) -> list[RuleObs]:
    """Rules the site added (by description) that the desired set no longer has."""
    want = {r.key() for r in desired}
    mark = naming.site_tag(owner)
    return [r for r in rules if r.description == mark and r.key() not in want]


# ---------------------------------------------------------------- verdicts


class CheckResult(BaseModel):
    check: Check
    ok: bool | None  # None: not applicable
    differs: list[str] = Field(default_factory=list)

    @property
    def cell(self) -> str:
        if self.ok is None:
            return "n/a"
        return "ok" if self.ok else "drift: " + "; ".join(self.differs)


class SiteDrift(BaseModel):
    site: str
    results: list[CheckResult] = Field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return any(r.ok is False for r in self.results)

    @property
    def drifted_checks(self) -> list[str]:
        return [r.check for r in self.results if r.ok is False]

    def result(self, check: Check) -> CheckResult:
        return next(r for r in self.results if r.check == check)

    def line(self) -> str:
        if not self.drifted:
            return f"{self.site}: ok"
        parts = [f"{r.check} ({'; '.join(r.differs)})" for r in self.results if r.ok is False]
        return f"{self.site}: drift in " + ", ".join(parts)


class DriftReport(BaseModel):
    registry: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    sites: list[SiteDrift] = Field(default_factory=list)
    repair: bool = False
    repaired: dict[str, str] = Field(default_factory=dict)  # site → outcome of the repair
    before: list[str] = Field(default_factory=list)  # drift lines before the repair

    @property
    def drifted(self) -> bool:
        return any(s.drifted for s in self.sites)

    def site(self, name: str) -> SiteDrift:
        return next(s for s in self.sites if s.site == name)

    def rows(self) -> list[dict[str, str]]:
        """The table artifact: one row per site, one column per check."""
        return [
            {"site": s.site, **{r.check: r.cell for r in s.results}}
            | {"status": "drift" if s.drifted else "ok"}
            for s in self.sites
        ]

    def lines(self) -> list[str]:
        return [s.line() for s in self.sites if s.drifted]

    def markdown(self) -> str:
        n = sum(s.drifted for s in self.sites)
        head = "clean ✅" if not n else f"{n} of {len(self.sites)} site(s) drifted ❌"
        out = [
            f"# Drift check of registry `{self.registry}`: {head}",
            "",
            f"Checked {len(self.sites)} site(s) at {self.at:%Y-%m-%d %H:%M:%S} UTC"
            + (", with repair." if self.repair else ", without repair."),
            "",
        ]
        if self.before:
            out += ["## Before the repair", "", *(f"- {x}" for x in self.before), ""]
        if self.repaired:
            out += ["## Repair", ""]
            out += [f"- {site}: {what}" for site, what in sorted(self.repaired.items())]
            out.append("")
        out += ["## Sites", "", "| site | status | drifted checks |", "|---|---|---|"]
        for s in self.sites:
            what = "; ".join(
                f"**{r.check}**: {'; '.join(r.differs)}" for r in s.results if r.ok is False
            )
            out.append(f"| {s.site} | {'drift' if s.drifted else 'ok'} | {what} |")
        return "\n".join(out) + "\n"


def _res(check: Check, differs: list[str], applicable: bool = True) -> CheckResult:
    if not applicable:
        return CheckResult(check=check, ok=None)
    return CheckResult(check=check, ok=not differs, differs=differs)


def _covered(want: str, have: list[str]) -> bool:
    net = ipaddress.ip_network(want, strict=False)
    return any(net.subnet_of(ipaddress.ip_network(h, strict=False)) for h in have)


def _wg_problems(node: NodeObs, role: str) -> list[str]:
    if node.error:
        return [f"{role} {node.name} not reachable ({node.error})"]
    if node.wg is None:
        return [f"wg0 is down on {role} {node.name}"]
    if not node.wg.interface.has_private_key:
        return [f"wg0 on {role} {node.name} has no private key"]
    return []


def compare(want: DesiredSite, home: HomeObs, api: SiteApiObs, nodes: SiteNodesObs) -> SiteDrift:
    """Every check for one site. Pure."""
    results: list[CheckResult] = []
    unread = f"cannot read the site's cloud ({api.error})" if api.error else None

    # -------- cloud objects
    def api_check(check: Check, fn) -> None:
        results.append(_res(check, [unread] if unread else fn()))

    def network() -> list[str]:
        if api.network_id is None:
            return [f"{want.net_name} missing"]
        if want.net_id and api.network_id != want.net_id:
            return [f"{want.net_name} is {api.network_id}, the registry has {want.net_id}"]
        return []

    def subnet() -> list[str]:
        if api.subnet_cidr is None:
            return [f"{want.subnet_name} missing"]
        if IPv4Network(api.subnet_cidr) != want.subnet:
            return [f"{want.subnet_name} has {api.subnet_cidr}, expected {want.subnet}"]
        return []

    def router() -> list[str]:
        if api.router_id is None:
            return [f"{want.router_name} missing"]
        out = []
        if not api.router_gateway:
            out.append(f"{want.router_name} has no external gateway")
        if not api.router_on_subnet:
            out.append(f"{want.router_name} has no interface on {want.subnet_name}")
        return out

    def servers() -> list[str]:
        out = []
        for name, reg_id in want.servers.items():
            s = api.servers.get(name)
            if s is None:
                out.append(f"{name} missing")
            elif s.status != "ACTIVE":
                out.append(f"{name} is {s.status}")
            elif reg_id and s.id != reg_id:
                out.append(f"{name} was replaced ({s.id}, registry {reg_id})")
        return out

    def fip() -> list[str]:
        out = []
        if want.registered_vpn_fip and want.registered_vpn_fip not in api.vpn_fips:
            now = ", ".join(api.vpn_fips) or "none"
            out.append(
                f"{want.vpn_name}'s floating IP is {now}, the registry has "
                f"{want.registered_vpn_fip}"
            )
        elif not api.vpn_fips:
            out.append(f"{want.vpn_name} has no floating IP")
        if home.master_fip is None and not home.error:
            out.append("the master has no floating IP")
        return out

    def rules() -> list[str]:
        out = []
        if api.site_sg_id is None:
            out.append(f"{want.sg_name} missing")
        else:
            have = {r.key() for r in api.site_rules}
            out += [
                f"{want.sg_name} lacks {r.describe()}"
                for r in want.site_rules
                if r.key() not in have
            ]
            out += [
                f"stale {r.describe()} in {want.sg_name}"
                for r in stale_rules(api.site_rules, want.site, want.site_rules)
            ]
        if home.error:
            out.append(f"home group not read ({home.error})")
        elif home.home_sg_id is not None:
            have = {r.key() for r in home.home_rules}
            out += [
                f"home group lacks {r.describe()}" for r in want.home_rules if r.key() not in have
            ]
            out += [
                f"stale {r.describe()} in the home group"
                for r in stale_rules(home.home_rules, want.site, want.home_rules)
            ]
        return out

    def pairs() -> list[str]:
        out = []
        if home.error:
            out.append(f"master port not read ({home.error})")
        elif home.master_port_security:
            out += [
                f"master port lacks pair {p}"
                for p in want.master_pairs
                if not _covered(p, home.master_pairs)
            ]
        if api.vpn_port_id is None:
            out.append(f"{want.vpn_name} has no port")
        elif api.vpn_port_security:
            out += [
                f"{want.vpn_name} port lacks pair {p}"
                for p in want.vpn_pairs
                if not _covered(p, api.vpn_pairs)
            ]
        return out

    for check, fn in (
        ("network", network),
        ("subnet", subnet),
        ("router", router),
        ("servers", servers),
        ("floating ip", fip),
        ("rules", rules),
    ):
        api_check(check, fn)  # type: ignore[arg-type]
    results.append(_res("pairs", [unread] if unread else pairs()))

    # -------- WireGuard
    hub_bad = _wg_problems(home.hub, "master")
    spoke_bad = _wg_problems(nodes.spoke, "VPN node")
    results.append(_res("wg0", hub_bad + spoke_bad + _key_problems(want, home.hub, nodes.spoke)))

    peers: list[str] = []
    endpoint: list[str] = []
    handshake: list[str] = []
    hub_peer = spoke_peer = None
    if not hub_bad:
        assert home.hub.wg is not None
        hub_peer = home.hub.wg.peer(want.spoke_key) if want.spoke_key else None
        if hub_peer is None:
            peers.append(f"the master has no peer with {want.site}'s key {want.spoke_key}")
        else:
            missing = sorted(
                set(map(str, want.hub_peer_allowed)) - set(map(str, hub_peer.allowed_ips))
            )
            if missing:
                peers.append(
                    f"the master's peer for {want.site} lacks AllowedIPs {', '.join(missing)}"
                )
        for p in home.hub.wg.peers:
            if p.public_key != want.spoke_key and any(
                a.version == 4 and any(a.overlaps(w) for w in want.hub_peer_allowed)
                for a in p.allowed_ips
            ):
                peers.append(
                    f"the master has a foreign peer {p.public_key} on {want.site}'s addresses"
                )
    if not spoke_bad:
        assert nodes.spoke.wg is not None
        spoke_peer = nodes.spoke.wg.peer(want.hub_key) if want.hub_key else None
        if spoke_peer is None:
            peers.append(f"{want.vpn_name} has no peer with the hub's key {want.hub_key}")
        else:
            missing = sorted(
                set(map(str, want.spoke_peer_allowed)) - set(map(str, spoke_peer.allowed_ips))
            )
            if missing:
                peers.append(f"{want.vpn_name}'s hub peer lacks AllowedIPs {', '.join(missing)}")
        extra = [p.public_key for p in nodes.spoke.wg.peers if p.public_key != want.hub_key]
        if extra:
            peers.append(f"{want.vpn_name} has unexpected peer(s) {', '.join(extra)}")
    results.append(_res("peers", peers))

    if hub_peer is not None and want.hub_endpoint and hub_peer.endpoint != want.hub_endpoint:
        endpoint.append(
            f"the master sends {want.site} to {hub_peer.endpoint or 'no endpoint'}, its floating "
            f"IP is {want.hub_endpoint}"
        )
    if (
        spoke_peer is not None
        and want.spoke_endpoint
        and spoke_peer.endpoint != want.spoke_endpoint
    ):
        endpoint.append(
            f"{want.vpn_name} sends to {spoke_peer.endpoint or 'no endpoint'}, the master is at "
            f"{want.spoke_endpoint}"
        )
    results.append(
        _res("endpoint", endpoint, applicable=hub_peer is not None or spoke_peer is not None)
    )

    for peer, node, who in (
        (hub_peer, home.hub, f"master ⇄ {want.site}"),
        (spoke_peer, nodes.spoke, f"{want.vpn_name} ⇄ master"),
    ):
        if peer is None:
            continue
        age = peer.handshake_age(node.observed_at or None)
        if age is None:
            handshake.append(f"{who}: no handshake yet")
        elif age >= HANDSHAKE_MAX_AGE:
            handshake.append(f"{who}: last handshake {int(age)} s ago")
    if hub_bad or spoke_bad or (hub_peer is None and spoke_peer is None):
        handshake.append("not observable on both ends (see wg0 / peers)")
    results.append(_res("handshake", handshake))

    # -------- routes and reachability on workers
    routes: list[str] = []
    reach: list[str] = []
    site_workers = [w for w in nodes.workers]
    if nodes.spoke.error:
        routes.append(f"site workers not reached ({want.vpn_name} unreachable)")
    for w in site_workers:
        routes += _route_problems(w, want.site_routes, want.site_via)
    for w in home.workers:
        routes += _route_problems(w, want.home_routes, want.home_via)
    for p, ws in ((want.site_pings, site_workers), (want.home_pings, home.workers)):
        for ping in p:
            w = next((x for x in ws if x.name == ping.src), None)
            if w is None or w.error:
                reach.append(f"{ping.src} → {ping.dst_name} not tried ({ping.src} unreachable)")
            elif not w.pings.get(ping.dst, False):
                reach.append(f"{ping.src} → {ping.dst_name} ({ping.dst}) fails")
    results.append(_res("routes", routes, applicable=bool(want.site_routes or home.workers)))
    results.append(_res("reachability", reach, applicable=bool(want.site_pings or want.home_pings)))
    return SiteDrift(site=want.site, results=results)


def _key_problems(want: DesiredSite, hub: NodeObs, spoke: NodeObs) -> list[str]:
    out = []
    for node, key, role in ((hub, want.hub_key, "master"), (spoke, want.spoke_key, "VPN node")):
        if node.wg is not None and key and node.wg.interface.public_key != key:
            out.append(
                f"wg0 on {role} {node.name} runs with key {node.wg.interface.public_key}, the "
                f"registry has {key}"
            )
    return out


def _route_problems(w: WorkerObs, nets: list[IPv4Network], via: IPv4Address | None) -> list[str]:
    """Each wanted network must leave via the hub/spoke: the most specific route covering
    it (the kernel's choice; a pool route covers a site subnet) has that gateway."""
    if w.error:
        return [f"{w.name} not reachable ({w.error})"]
    out = []
    for n in nets:
        covering = [
            r for r in w.routes if r.destination.prefixlen > 0 and n.subnet_of(r.destination)
        ]
        if not covering:
            out.append(f"{w.name} has no route to {n}")
            continue
        best = max(covering, key=lambda r: r.destination.prefixlen)
        if via is not None and best.via != via:
            gw = f"via {best.via}" if best.via else "on-link"
            out.append(f"{w.name} routes {n} {gw} ({best.destination}), expected via {via}")
    return out


# ---------------------------------------------------------------- parsers (node output)

_ROUTE = re.compile(r"^(?:unicast\s+)?(\S+)(?:\s+via\s+(\S+))?")


def parse_routes(text: str) -> list[RouteObs]:
    """`ip -4 -o route show` → destination and gateway; default and odd lines skipped."""
    out = []
    for line in text.splitlines():
        m = _ROUTE.match(line.strip())
        if not m or m.group(1) == "default":
            continue
        try:
            dst = IPv4Network(m.group(1), strict=False)
            via = IPv4Address(m.group(2)) if m.group(2) else None
        except ValueError:
            continue
        out.append(RouteObs(destination=dst, via=via))
    return out


def ping_command(address: str, *, count: int = 2, size: int | None = None) -> str:
    """The one ping probe (iputils; verification and drift): exit status 0 when replies came.

    `size` sends that ICMP payload with DF set (a full-size packet at the tunnel MTU)."""
    addr = IPv4Address(address)  # only an address reaches the shell
    size_args = f" -M do -s {int(size)}" if size is not None else ""
    return f"ping -n -q -c {int(count)} -i 0.2 -W 2{size_args} {addr}"


def ping_many_command(addresses: list[str], count: int = 2) -> str:
    """Ping each address concurrently; print `ok ADDR` or `fail ADDR` per address."""
    lines = [
        f"({ping_command(a, count=count)} >/dev/null 2>&1 && echo 'ok {a}' || echo 'fail {a}') &"
        for a in addresses
    ]
    return "\n".join([*lines, "wait"]) + "\n"


def parse_pings(text: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("ok", "fail"):
            out[parts[1]] = parts[0] == "ok"
    return out


def _norm(ip: str) -> str:
    return str(ipaddress.ip_network(ip, strict=False))


def desired_site(data: RegistryData, name: str, *, home: HomeObs, api: SiteApiObs) -> DesiredSite:
    """The site's desired state: its wiring (`hybridgrid.desired`), following the floating
    IPs the clouds show now (rules, endpoints), plus the objects and pings to look for."""
    h = data.home
    entry = data.sites[name]
    assert h is not None
    registered = str(entry.public_ips["vpn"]) if "vpn" in entry.public_ips else None
    current = registered if (registered in api.vpn_fips or not api.vpn_fips) else api.vpn_fips[0]
    master_fip = home.master_fip or desired.registered_master_fip(data)
    facts = desired.facts_of(data, name).model_copy(update={"vpn_fip": current})
    w = desired.wiring(data, facts, master_fip=master_fip)
    vpn = naming.resource_name(name, naming.VPN)
    servers = {vpn: entry.resource_ids.get("vpn")}
    for i in range(1, facts.workers + 1):
        servers[naming.resource_name(name, naming.WORKER, i)] = entry.resource_ids.get(
            f"worker-{i}"
        )
    site_pings, home_pings = _pings(data, name, home)
    vpn_fixed = entry.fixed_ips.get("vpn")
    return DesiredSite(
        site=name,
        net_name=naming.resource_name(name, naming.NET),
        subnet_name=naming.resource_name(name, naming.SUBNET),
        router_name=naming.resource_name(name, naming.ROUTER),
        sg_name=naming.resource_name(name, naming.SG),
        vpn_name=vpn,
        net_id=entry.resource_ids.get("net"),
        subnet=entry.subnet,
        servers=servers,
        registered_vpn_fip=registered,
        current_vpn_fip=current,
        master_fip=master_fip,
        site_rules=w.site_rules,
        home_rules=w.home_rules,
        master_pairs=[str(n) for n in w.home_must_cover],
        vpn_pairs=[str(n) for n in w.vpn_pairs],
        hub_name=h.master or "master",
        hub_key=h.public_key,
        spoke_key=entry.spoke_public_key,
        hub_peer_allowed=w.hub_allowed_ips,
        spoke_peer_allowed=w.spoke_allowed_ips,
        hub_endpoint=w.hub_endpoint,
        spoke_endpoint=w.spoke_endpoint,
        site_routes=w.site_routes,
        site_via=vpn_fixed,
        home_routes=w.home_must_cover,
        home_via=IPv4Address(home.master_fixed_ip) if home.master_fixed_ip else None,
        site_pings=site_pings,
        home_pings=home_pings,
    )


def _pings(data: RegistryData, name: str, home: HomeObs) -> tuple[list[PingWant], list[PingWant]]:
    """Worker 1 of the site and the first home worker ping each other (when both exist)."""
    entry = data.sites[name]
    home_w1 = home.workers[0] if home.workers else None
    site_w1 = naming.resource_name(name, naming.WORKER, 1)
    site_w1_ip = str(entry.fixed_ips["worker-1"]) if "worker-1" in entry.fixed_ips else None
    if not (home_w1 and site_w1_ip):
        return [], []
    return (
        [PingWant(src=site_w1, dst_name=home_w1.name, dst=home_w1.fixed_ip)],
        [PingWant(src=home_w1.name, dst_name=site_w1, dst=site_w1_ip)],
    )
