"""The desired state (docs/architecture.md §8): everything one site's wiring must be, in one
place, read by every consumer — `hybridgrid plan`, add-remote-site, rotate-keys,
remove-remote-site, the verification and check-drift — so the plan and the built link agree
by construction.

Pure: from the registry data and one site, `wiring(data, site)` gives the security-group
rules of both groups, the allowed-address pairs on the master's and the VPN node's ports,
both ends' AllowedIPs, the worker routes on both sides, the tunnel MTU and the MSS clamp;
`hub_config` / `spoke_config` render the two ends' wg0 models from it. No I/O: imports only
pydantic, ipaddress and the core's models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from pydantic import BaseModel, Field

from hybridgrid import naming
from hybridgrid.model import Allocation, Plan, ResolvedSite, Topology, TopologyError, tunnel_mtu
from hybridgrid.model import plan as resolve
from hybridgrid.registry_data import HomeEntry, RegistryData, SiteEntry
from hybridgrid.rules import RuleSpec
from hybridgrid.scheduler import HostEntry, Partition, PartitionOptions
from hybridgrid.wgconfig import WgConfig, WgInterface, WgPeer

# ---------------------------------------------------------------- the model


class SiteFacts(BaseModel):
    """What one site's wiring depends on besides the registry: a registered site's come from
    its entry (`facts_of`), a site being added gives its allocation and what it knows so far."""

    name: str
    subnet: IPv4Network
    wg_address: IPv4Address
    listen_port: int
    ssh_source: list[IPv4Network] = Field(default_factory=list)
    workers: int = 0
    network_mtu: int = 1450
    vpn_fip: str | None = Field(None, description="the VPN node's floating IP, once known")


class SiteWiring(BaseModel):
    """Everything a site's link must be. Lists keep the order the flows apply them in."""

    site: str
    subnet: IPv4Network
    wg_address: IPv4Address
    listen_port: int
    hub_allowed_ips: list[IPv4Network] = Field(description="the site's peer on the hub")
    spoke_allowed_ips: list[IPv4Network] = Field(description="the hub peer on the VPN node")
    master_pairs: list[IPv4Network] = Field(description="allowed-address pairs, master port")
    home_must_cover: list[IPv4Network] = Field(
        description="what this site needs from the home side: each covered by a pair on the "
        "master's port and by a route via the master on every home worker (the applied lists "
        "above cover it; verification and the drift check name a missing one by it)"
    )
    vpn_pairs: list[IPv4Network] = Field(description="allowed-address pairs, VPN node's port")
    site_routes: list[IPv4Network] = Field(description="on the site's workers, via the VPN node")
    home_routes: list[IPv4Network] = Field(description="on the home workers, via the master")
    site_rules: list[RuleSpec] = Field(description="hg-<site>-sg")
    home_rules: list[RuleSpec] = Field(description="the home group, owned by the site")
    tunnel_mtu: int = Field(description="wg0 MTU on the VPN node: the smaller underlay − 80")
    clamp_mss: bool = Field(True, description="both ends clamp TCP MSS to the route MTU")
    hub_endpoint: str | None = Field(None, description="the VPN node as the hub reaches it")
    spoke_endpoint: str | None = Field(None, description="the master as the spoke reaches it")


# ---------------------------------------------------------------- the pieces


def _unique(nets: Iterable[IPv4Network]) -> list[IPv4Network]:
    return list(dict.fromkeys(nets))


def _home(data: RegistryData) -> HomeEntry:
    if data.home is None:
        raise TopologyError(
            "home", "the registry has no home cluster", "run bootstrap-home (hybridgrid home …)"
        )
    return data.home


def hub_allowed_ips(wg_address: IPv4Address, subnet: IPv4Network) -> list[IPv4Network]:
    """The hub's peer entry for a site routes the site's overlay /32 and its subnet."""
    return [IPv4Network(f"{wg_address}/32"), subnet]


def spoke_allowed_ips(data: RegistryData, site: str) -> list[IPv4Network]:
    """The hub is a spoke's only peer: the overlay, home, the site pool (so sites added later
    are reachable without touching this one) and other sites' subnets outside the pool."""
    home = _home(data)
    nets = [data.wireguard.cidr, home.subnet, data.site_pool]
    for name, entry in sorted(data.sites.items()):
        if name != site and not entry.subnet.subnet_of(data.site_pool):
            nets.append(entry.subnet)
    return _unique(nets)


def master_pairs(
    wireguard_cidr: IPv4Network, site_pool: IPv4Network, subnets: Iterable[IPv4Network]
) -> list[IPv4Network]:
    """Allowed-address pairs on the master's port: the overlay and the whole site pool (one
    pair for every site in it, so a hub is not capped at Neutron's 10 pairs), plus any site
    subnet outside the pool."""
    out = [wireguard_cidr, site_pool]
    for n in subnets:
        if not n.subnet_of(site_pool) and n not in out:
            out.append(n)
    return out


def home_side(data: RegistryData, subnet: IPv4Network) -> list[IPv4Network]:
    """What the home side sends to the sites through the master, with a site of `subnet`
    registered: the master's pairs and the home workers' routes. The same list for every site
    in the pool, so concurrent runs write the same and a later site needs no change at home."""
    subnets = [e.subnet for _, e in sorted(data.sites.items())] + [subnet]
    return master_pairs(data.wireguard.cidr, data.site_pool, subnets)


def released_on_removal(
    data: RegistryData, site: str
) -> tuple[list[IPv4Network], list[IPv4Network]]:
    """Removing `site`: (released, kept) of the home side. Released: its subnet (a pair or
    route of its own, also as older versions made them inside the pool) and what no remaining
    site needs — with the last site gone, the pool's and the overlay's too. Kept: the
    remaining sites' home side."""
    entry = data.sites[site]
    wg, pool = data.wireguard.cidr, data.site_pool
    rest = [e.subnet for n, e in sorted(data.sites.items()) if n != site]
    kept = master_pairs(wg, pool, rest) if rest else []
    mine = [entry.subnet, *master_pairs(wg, pool, [entry.subnet])]
    return [n for n in dict.fromkeys(mine) if n not in kept], kept


def dedupe_rules(rules: list[RuleSpec]) -> list[RuleSpec]:
    """The rules in order, each once (by `RuleSpec.key`): two sources may ask for one rule."""
    seen, out = set(), []
    for r in rules:
        if r.key() not in seen:
            seen.add(r.key())
            out.append(r)
    return out


def _udp_from(address: str, port: int) -> RuleSpec:
    return RuleSpec(protocol="udp", port_min=port, port_max=port, remote_ip_prefix=f"{address}/32")


def site_group_rules(data: RegistryData, site: SiteFacts, master_fip: str | None) -> list[RuleSpec]:
    """hg-<site>-sg: SSH from the site's ssh_source, everything from the site, home, overlay
    and pool; UDP to the site's port from the master's /32 once its floating IP is known."""
    home = _home(data)
    rules = [
        RuleSpec(protocol="tcp", port_min=22, port_max=22, remote_ip_prefix=str(p))
        for p in site.ssh_source
    ] + [
        RuleSpec(remote_ip_prefix=str(n))
        for n in (site.subnet, home.subnet, data.wireguard.cidr, data.site_pool)
    ]
    if master_fip:
        rules.append(_udp_from(master_fip, site.listen_port))
    return dedupe_rules(rules)


def home_group_rules(data: RegistryData, site: SiteFacts) -> list[RuleSpec]:
    """The home group's rules owned by the site: everything from its subnet, and UDP to the
    hub's port from the VPN node's /32 once its floating IP is known."""
    rules = [RuleSpec(remote_ip_prefix=str(site.subnet))]
    if site.vpn_fip:
        rules.append(_udp_from(site.vpn_fip, _home(data).listen_port))
    return rules


# ---------------------------------------------------------------- one site


def facts_of(data: RegistryData, name: str) -> SiteFacts:
    """A registered site's facts, from its entry (the spec as last added, when recorded)."""
    entry: SiteEntry = data.sites[name]
    spec = entry.spec
    workers = (
        spec.workers if spec else len([k for k in entry.resource_ids if k.startswith("worker-")])
    )
    return SiteFacts(
        name=name,
        subnet=entry.subnet,
        wg_address=entry.wg_address,
        listen_port=entry.listen_port,
        ssh_source=list(spec.ssh_source) if spec else [],
        workers=workers,
        network_mtu=entry.network_mtu,
        vpn_fip=str(entry.public_ips["vpn"]) if "vpn" in entry.public_ips else None,
    )


def facts_for(
    site: ResolvedSite, *, network_mtu: int = 1450, vpn_fip: str | None = None
) -> SiteFacts:
    """A site being planned or added: its resolved allocation."""
    return SiteFacts(
        name=site.name,
        subnet=site.subnet,
        wg_address=site.wg_address,
        listen_port=site.listen_port,
        ssh_source=list(site.ssh_source),
        workers=site.workers,
        network_mtu=network_mtu,
        vpn_fip=vpn_fip,
    )


def registered_master_fip(data: RegistryData) -> str | None:
    home = _home(data)
    return str(home.public_ips["master"]) if "master" in home.public_ips else None


def wiring(
    data: RegistryData,
    site: str | SiteFacts,
    *,
    master_fip: str | None = None,
    home_network_mtu: int | None = None,
) -> SiteWiring:
    """Everything `site`'s wiring must be, given the registry `data` (the other sites).

    `site`: a registered site's name (its facts and the master's floating IP then default to
    the registry's) or the facts of a site being added. `master_fip`: the master's floating
    IP as seen now (None: not known yet, no UDP rule and no spoke endpoint).
    `home_network_mtu`: the master's network MTU as read now (default: the registry's)."""
    home = _home(data)
    if isinstance(site, str):
        master_fip = master_fip or registered_master_fip(data)
        site = facts_of(data, site)
    spoke = spoke_allowed_ips(data, site.name)
    home_nets = home_side(data, site.subnet)
    return SiteWiring(
        site=site.name,
        subnet=site.subnet,
        wg_address=site.wg_address,
        listen_port=site.listen_port,
        hub_allowed_ips=hub_allowed_ips(site.wg_address, site.subnet),
        spoke_allowed_ips=spoke,
        master_pairs=home_nets,
        home_must_cover=[site.subnet, data.wireguard.cidr],
        vpn_pairs=spoke,
        site_routes=spoke if site.workers else [],
        home_routes=home_nets,
        site_rules=site_group_rules(data, site, master_fip),
        home_rules=home_group_rules(data, site),
        tunnel_mtu=tunnel_mtu(min(home_network_mtu or home.network_mtu, site.network_mtu)),
        hub_endpoint=f"{site.vpn_fip}:{site.listen_port}" if site.vpn_fip else None,
        spoke_endpoint=f"{master_fip}:{home.listen_port}" if master_fip else None,
    )


# ---------------------------------------------------------------- the two ends' wg0


def hub_mtu(data: RegistryData, tunnel_mtu_now: int) -> int:
    """The hub's wg0 MTU: the smallest any registered site's underlay allows."""
    home = _home(data)
    mtus = [tunnel_mtu_now, tunnel_mtu(home.network_mtu)]
    mtus += [tunnel_mtu(e.network_mtu) for e in data.sites.values() if e.spoke_public_key]
    return min(mtus)


def hub_config(data: RegistryData, mtu: int) -> WgConfig:
    """The master's wg0: one peer per registered site that has a spoke key."""
    home, wg = _home(data), data.wireguard
    peers = [
        WgPeer(
            public_key=entry.spoke_public_key,
            endpoint=f"{entry.public_ips['vpn']}:{entry.listen_port}",
            allowed_ips=hub_allowed_ips(entry.wg_address, entry.subnet),
            keepalive=wg.keepalive or None,
            name=naming.resource_name(name, naming.VPN),
        )
        for name, entry in sorted(data.sites.items())
        if entry.spoke_public_key and "vpn" in entry.public_ips
    ]
    return WgConfig(
        interface=WgInterface(
            address=IPv4Interface(f"{home.wg_address}/{wg.cidr.prefixlen}"),
            listen_port=home.listen_port,
            mtu=mtu,
        ),
        peers=peers,
    )


def spoke_config(data: RegistryData, w: SiteWiring, hub_public_key: str) -> WgConfig:
    """A VPN node's wg0: its overlay address, and the hub as its only peer."""
    home, wg = _home(data), data.wireguard
    if w.spoke_endpoint is None:
        raise TopologyError(
            "home.public_ips.master",
            "the master's floating IP is not known, so the spoke has no endpoint",
            "rerun add-remote-site (it allocates the master's floating IP)",
        )
    return WgConfig(
        interface=WgInterface(
            address=IPv4Interface(f"{w.wg_address}/{wg.cidr.prefixlen}"),
            listen_port=w.listen_port,
            mtu=w.tunnel_mtu,
        ),
        peers=[
            WgPeer(
                public_key=hub_public_key,
                endpoint=w.spoke_endpoint,
                allowed_ips=w.spoke_allowed_ips,
                keepalive=wg.keepalive or None,
                name=home.master,
            )
        ],
    )


# ---------------------------------------------------------------- the scheduler


def slurm_partitions(data: RegistryData) -> list[Partition]:
    """The partitions of hybridgrid's managed Slurm file: one per registered site, named after
    it, with the options it was added with."""
    out = []
    for name, entry in sorted(data.sites.items()):
        options = entry.spec.partition if entry.spec else PartitionOptions()
        out.append(Partition(name=name, max_time=options.max_time, default=options.default))
    return out


def site_worker_addresses(data: RegistryData, site: str) -> dict[str, IPv4Address]:
    """The site's workers by server name (from the fixed IPs the registry recorded)."""
    entry = data.sites[site]
    return {
        naming.resource_name(site, naming.WORKER, int(role.split("-")[1])): ip
        for role, ip in sorted(entry.fixed_ips.items())
        if role.startswith(f"{naming.WORKER}-")
    }


def slurm_hosts(data: RegistryData, site: str | None = None) -> list[HostEntry]:
    """Name entries a node needs: on the master (`site` None) the home's nodes and every site's
    workers; on a site's worker the master and that site's workers."""
    home = _home(data)
    entries = [HostEntry(address=ip, name=n) for n, ip in sorted(home.node_addresses.items())]
    if site is not None:
        entries = [e for e in entries if e.name == home.master]
    for name in sorted(data.sites) if site is None else [site]:
        entries += [
            HostEntry(address=ip, name=n) for n, ip in site_worker_addresses(data, name).items()
        ]
    return entries


# ---------------------------------------------------------------- the plan


class PlannedSite(ResolvedSite):
    wiring: SiteWiring


class WiredPlan(Plan):
    """The resolved plan with every site's wiring, as `hybridgrid plan` shows it."""

    sites: list[PlannedSite]  # type: ignore[assignment]

    def site(self, name: str) -> PlannedSite:  # type: ignore[override]
        return next(s for s in self.sites if s.name == name)


def planned_registry(
    topology: Topology, resolved: Plan, existing: Mapping[str, Allocation] | None = None
) -> RegistryData:
    """The registry as it will be once every planned site is built (no keys, no addresses
    the clouds hand out), so the plan's wiring is computed by the same `wiring`."""
    home = topology.home
    sites = {
        name: SiteEntry(cloud="", subnet=a.subnet, wg_address=a.wg_address)
        for name, a in (existing or {}).items()
    }
    for s in resolved.sites:
        sites[s.name] = SiteEntry(
            cloud=s.cloud,
            subnet=s.subnet,
            wg_address=s.wg_address,
            listen_port=s.listen_port,
            network_mtu=resolved.network_mtu,
        )
    return RegistryData(
        wireguard=topology.wireguard,
        site_pool=topology.site_pool,
        home=HomeEntry(
            name=home.name,
            cloud=home.cloud,
            subnet=home.subnet,
            wg_address=resolved.home.wg_address,
            listen_port=resolved.home.listen_port,
            network_mtu=resolved.network_mtu,
            master=home.master.name,
        ),
        sites=sites,
    )


def plan(
    topology: Topology,
    existing: Mapping[str, Allocation] | None = None,
    network_mtu: int = 1450,
) -> WiredPlan:
    """`model.plan` (every address decided) with each site's wiring, as the flows build it."""
    resolved = resolve(topology, existing, network_mtu=network_mtu)
    data = planned_registry(topology, resolved, existing)
    sites = [
        PlannedSite(**s.model_dump(), wiring=wiring(data, facts_for(s, network_mtu=network_mtu)))
        for s in resolved.sites
    ]
    return WiredPlan(**resolved.model_dump(exclude={"sites"}), sites=sites)
