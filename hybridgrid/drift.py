"""Drift: the data of the drift check. Observations come in as typed models (read by
`tasks/drift_tasks.py`), the desired state of a site (`desired_site`, from
`hybridgrid.desired`) is what they are held against, verdicts go out; the comparison itself
is `hybridgrid.changes` (shared with `hybridgrid plan --live`). Pure: nothing here does I/O.

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
from hybridgrid.registry_data import RegistryData, SiteEntry
from hybridgrid.rules import RuleSpec
from hybridgrid.wgstate import WgState

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
    """What the site must look like right now: its wiring (`hybridgrid.desired`) with the
    floating IPs the clouds show now, and the objects, keys and pings to look for."""

    site: str
    net_name: str
    subnet_name: str
    router_name: str
    sg_name: str
    vpn_name: str
    home_sg_name: str
    net_id: str | None = None
    subnet: IPv4Network
    servers: dict[str, str | None]  # name → registered id (None: not recorded)
    registered_vpn_fip: str | None
    current_vpn_fip: str | None  # on the port now; what peers and rules must follow
    master_fip: str | None
    site_rules: list[RuleSpec]
    home_rules: list[RuleSpec]
    master_pairs: list[str]  # what the master's pairs must cover (`home_must_cover`)
    vpn_pairs: list[str]
    home_side: list[IPv4Network]  # the pairs and home routes a run applies (cover the above)
    hub_name: str
    hub_key: str | None
    spoke_key: str | None
    hub_peer_allowed: list[IPv4Network]
    spoke_peer_allowed: list[IPv4Network]
    hub_endpoint: str | None  # the spoke as the hub should see it
    spoke_endpoint: str | None  # the hub as the spoke should see it
    site_routes: list[IPv4Network]
    site_via: IPv4Address | None
    home_routes: list[IPv4Network]  # what the home workers' routes must cover
    home_via: IPv4Address | None
    site_pings: list[PingWant] = Field(default_factory=list)  # from site workers
    home_pings: list[PingWant] = Field(default_factory=list)  # from home workers


def desired_site(data: RegistryData, name: str, *, home: HomeObs, api: SiteApiObs) -> DesiredSite:
    """The site's desired state: its wiring (`hybridgrid.desired`), following the floating
    IPs the clouds show now (rules, endpoints), plus the objects and pings to look for."""
    h, entry = data.home, data.sites[name]
    assert h is not None  # check_drift and plan --live require a home first
    registered = str(entry.public_ips["vpn"]) if "vpn" in entry.public_ips else None
    current = registered if (registered in api.vpn_fips or not api.vpn_fips) else api.vpn_fips[0]
    master_fip = home.master_fip or desired.registered_master_fip(data)
    facts = desired.facts_of(data, name).model_copy(update={"vpn_fip": current})
    w = desired.wiring(data, facts, master_fip=master_fip)
    site_pings, home_pings = _pings(data, name, home)
    return DesiredSite(
        **_names(name, h.name),
        net_id=entry.resource_ids.get("net"),
        subnet=entry.subnet,
        servers=_servers(entry, name, facts.workers),
        registered_vpn_fip=registered,
        current_vpn_fip=current,
        master_fip=master_fip,
        site_rules=w.site_rules,
        home_rules=w.home_rules,
        master_pairs=[str(n) for n in w.home_must_cover],
        vpn_pairs=[str(n) for n in w.vpn_pairs],
        home_side=w.master_pairs,
        hub_name=h.master or "master",
        hub_key=h.public_key,
        spoke_key=entry.spoke_public_key,
        hub_peer_allowed=w.hub_allowed_ips,
        spoke_peer_allowed=w.spoke_allowed_ips,
        hub_endpoint=w.hub_endpoint,
        spoke_endpoint=w.spoke_endpoint,
        site_routes=w.site_routes,
        site_via=entry.fixed_ips.get("vpn"),
        home_routes=w.home_must_cover,
        home_via=IPv4Address(home.master_fixed_ip) if home.master_fixed_ip else None,
        site_pings=site_pings,
        home_pings=home_pings,
    )


def _names(site: str, home: str) -> dict[str, str]:
    return {
        "site": site,
        "net_name": naming.resource_name(site, naming.NET),
        "subnet_name": naming.resource_name(site, naming.SUBNET),
        "router_name": naming.resource_name(site, naming.ROUTER),
        "sg_name": naming.resource_name(site, naming.SG),
        "vpn_name": naming.resource_name(site, naming.VPN),
        "home_sg_name": naming.resource_name(home, naming.SG),
    }


def _servers(entry: SiteEntry, site: str, workers: int) -> dict[str, str | None]:
    """The site's servers by name (VPN node first) with the IDs the registry recorded."""
    servers = {naming.resource_name(site, naming.VPN): entry.resource_ids.get("vpn")}
    for i in range(1, workers + 1):
        servers[naming.resource_name(site, naming.WORKER, i)] = entry.resource_ids.get(
            f"worker-{i}"
        )
    return servers


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
