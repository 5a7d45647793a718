"""The topology model (docs/architecture.md §8): home hub, spokes, WireGuard, resolved plan.

Pure: no I/O, no clouds. Everything a flow needs to know before it touches an API is checked
here, and every error names the field and says how to fix it (``TopologyError``).
IPv4 only, like the seed and the clouds it targets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hybridgrid.scheduler import PartitionOptions, Scheduler

SITE_NAME_MAX = 20  # keeps hg-<site>-worker-50 and per-site lock/flow-run names short
SITE_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
BLOCK_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # Prefect block document names
MAX_WORKERS = 50
SITE_PREFIX = 24  # auto-allocated site subnets are /24s
WIREGUARD_OVERHEAD = 80  # IPv6 outer header worst case: 40 + 8 UDP + 32 WireGuard
MIN_TUNNEL_MTU = 1280  # the IPv6 minimum link MTU: below it the tunnel cannot carry IPv6


class TopologyError(ValueError):
    """One invalid input: which field, what is wrong, and how to fix it."""

    def __init__(self, field: str, message: str, fix: str) -> None:
        self.field = field
        self.message = message
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{where}{self.message}. Fix: {self.fix}"

    def at(self, prefix: str) -> TopologyError:
        """The same error with its field path placed under ``prefix``."""
        field = f"{prefix}.{self.field}" if prefix and self.field else (prefix or self.field)
        return TopologyError(field, self.message, self.fix)


class _Model(BaseModel):
    # Unknown keys are typos in a spec: reject them instead of silently ignoring them.
    model_config = ConfigDict(extra="forbid")


def _check_site_name(value: str, what: str = "site name") -> str:
    if not (SITE_NAME_RE.match(value) and len(value) <= SITE_NAME_MAX):
        raise TopologyError(
            "",
            f"{value!r} is not a valid {what}",
            f"use 1–{SITE_NAME_MAX} lowercase letters, digits or '-', starting with a letter "
            "and not ending with '-' (e.g. 'giessen')",
        )
    return value


def _check_block_name(value: str) -> str:
    if not (BLOCK_NAME_RE.match(value) and len(value) <= 63):
        raise TopologyError(
            "",
            f"{value!r} is not a valid credentials block name",
            "use lowercase letters, digits and '-' (the name of an OpenStackCredentials block, "
            "e.g. 'giessen')",
        )
    return value


class WireGuardSettings(_Model):
    """The overlay: one WireGuard network shared by the hub and all spokes."""

    cidr: IPv4Network = Field(IPv4Network("10.0.0.0/24"), description="WireGuard overlay CIDR")
    port: int = Field(51820, ge=1, le=65535, description="default ListenPort of every node")
    keepalive: int = Field(
        25, ge=0, le=65535, description="PersistentKeepalive in seconds (0 = off)"
    )

    @field_validator("cidr")
    @classmethod
    def _room_for_peers(cls, v: IPv4Network) -> IPv4Network:
        if v.prefixlen > 30:
            raise TopologyError(
                "",
                f"{v} has no room for a hub and a spoke",
                "use a /30 or larger, e.g. 10.0.0.0/24",
            )
        return v


class MasterSpec(_Model):
    """The home hub: adopt an existing server by name, or create hg-HOME-master."""

    name: str | None = Field(None, description="existing server to adopt as the hub")
    create: bool = Field(False, description="create hg-HOME-master instead of adopting")
    flavor: str = Field("de.NBI small", description="flavor when the master is created")
    image: str = Field("ubuntu-22.04", description="image when the master is created")

    @model_validator(mode="after")
    def _adopt_or_create(self) -> MasterSpec:
        if (self.name is None) == (not self.create):
            raise TopologyError(
                "",
                "give either a server name to adopt or create: true, not both and not neither",
                "write master: {name: <existing server>} or master: {create: true}",
            )
        return self


class HomeSite(_Model):
    """The home cloud whose master is the WireGuard hub."""

    # Not required in the UI form: a plain string with an empty default renders as a text box
    # (`str | None` would render as a string/None toggle). The validator below fills it, so a
    # validated HomeSite always has a name.
    name: str = Field("", description="DNS label; empty = the cloud block name")
    cloud: str = Field(description="name of the OpenStackCredentials block of the home cloud")
    master: MasterSpec
    subnet: IPv4Network = Field(description="the home cluster's subnet, e.g. 192.168.66.0/24")
    wg_address: IPv4Address | None = Field(
        None, description="hub address; default: first host of the WireGuard CIDR"
    )
    listen_port: int | None = Field(None, ge=1, le=65535, description="default: wireguard.port")
    external_network: str = Field("public", description="network for the master's floating IP")
    ssh_user: str = Field("ubuntu", description="login user on the master")
    workers: int = Field(0, ge=0, le=MAX_WORKERS, description="workers when bootstrapping home")
    worker_flavor: str = "de.NBI small"
    image: str = "ubuntu-22.04"
    scheduler: Scheduler = Field(
        "none",
        description="slurm: the master runs slurmctld (made or adopted) and every site's "
        "workers join it as a partition named after the site",
    )

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_cloud(cls, data: Any) -> Any:
        # None (YAML `name:`) and "" (the form left empty) both mean "the default"
        if isinstance(data, dict) and data.get("name") in (None, ""):
            data = {k: v for k, v in data.items() if k != "name"}
            if data.get("cloud") is not None:
                data["name"] = data["cloud"]
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_site_name(v, "home name")

    @field_validator("cloud")
    @classmethod
    def _cloud(cls, v: str) -> str:
        return _check_block_name(v)


class RemoteSite(_Model):
    """One remote site: a VPN node (the spoke) and workers in another cloud."""

    # No "<…>" in descriptions: the UI renders them as HTML, where <name> vanishes.
    name: str = Field(
        description="DNS label, 1–20 chars (a-z, 0-9, '-'); resources are named hg-NAME-ROLE",
        json_schema_extra={"pattern": SITE_NAME_RE.pattern, "maxLength": SITE_NAME_MAX},
    )
    # Not required in the UI form, as HomeSite.name: the validator below fills it.
    cloud: str = Field("", description="OpenStackCredentials block name; empty = the site name")
    subnet: IPv4Network | None = Field(None, description="default: a free /24 from site_pool")
    image: str = "ubuntu-22.04"
    vpn_flavor: str = Field("de.NBI tiny", description="the VPN node only relays: minimal flavor")
    worker_flavor: str = "de.NBI small"
    workers: int = Field(1, ge=0, le=MAX_WORKERS, description="worker count, 0–50")
    external_network: str = Field("public", description="network for the VPN node's floating IP")
    wg_address: IPv4Address | None = Field(None, description="default: next free overlay address")
    listen_port: int | None = Field(None, ge=1, le=65535, description="default: wireguard.port")
    ssh_user: str = "ubuntu"
    partition: PartitionOptions = Field(
        default_factory=PartitionOptions,
        description="the site's Slurm partition, when the home runs Slurm",
    )
    ssh_source: list[IPv4Network] = Field(
        default_factory=lambda: [IPv4Network("0.0.0.0/0")],
        description=(
            "who may reach the VPN node's SSH port. The address the flows connect from is not "
            "knowable when planning (workers may run anywhere, behind NAT), so the default is "
            "open; login is key-only with pinned host keys. Narrow it to your runners' prefixes."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _cloud_defaults_to_name(cls, data: Any) -> Any:
        # None (YAML `cloud:`) and "" (the form left empty) both mean "the default"
        if isinstance(data, dict) and data.get("cloud") in (None, ""):
            data = {k: v for k, v in data.items() if k != "cloud"}
            if data.get("name") is not None:
                data["cloud"] = data["name"]
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_site_name(v)

    @field_validator("cloud")
    @classmethod
    def _cloud(cls, v: str) -> str:
        return _check_block_name(v)

    @field_validator("ssh_source")
    @classmethod
    def _ssh_source(cls, v: list[IPv4Network]) -> list[IPv4Network]:
        if not v:
            raise TopologyError(
                "",
                "an empty list would lock the flows out of the VPN node",
                "list at least one prefix, e.g. [203.0.113.7/32]",
            )
        return v

    @model_validator(mode="after")
    def _subnet_fits(self) -> RemoteSite:
        if self.subnet is not None:
            # gateway, DHCP port and the VPN node besides the workers
            needed = self.workers + 3
            if self.subnet.num_addresses - 2 < needed:
                raise TopologyError(
                    "subnet",
                    f"{self.subnet} has {self.subnet.num_addresses - 2} host addresses but "
                    f"{needed} are needed (router, DHCP, VPN node, {self.workers} workers)",
                    "use a larger subnet (e.g. a /24) or fewer workers",
                )
        return self


class Allocation(_Model):
    """What the registry already holds for a site; re-planning never moves it."""

    subnet: IPv4Network
    wg_address: IPv4Address


def _overlap_error(field: str, net: IPv4Network, other: IPv4Network, whose: str) -> TopologyError:
    return TopologyError(
        field,
        f"{net} overlaps {whose} {other}",
        "choose a subnet that overlaps no other subnet and not the WireGuard CIDR, "
        "or omit it to allocate a free one",
    )


def _check_wg_address(field: str, addr: IPv4Address, cidr: IPv4Network) -> None:
    if addr not in cidr:
        raise TopologyError(
            field,
            f"{addr} is outside the WireGuard CIDR {cidr}",
            f"pick an address inside {cidr}, or omit it to allocate the next free one",
        )
    if addr in (cidr.network_address, cidr.broadcast_address):
        raise TopologyError(
            field,
            f"{addr} is the network or broadcast address of {cidr}",
            f"pick a host address of {cidr}, or omit it to allocate the next free one",
        )


class Topology(_Model):
    """Hub and spokes: the home master is the hub, each site's VPN node a spoke."""

    wireguard: WireGuardSettings = Field(default_factory=WireGuardSettings)
    home: HomeSite
    site_pool: IPv4Network = Field(
        IPv4Network("192.168.64.0/18"), description="where omitted site subnets are allocated"
    )
    sites: list[RemoteSite] = Field(default_factory=list)

    def __init__(self, **data: Any) -> None:
        # Built in code (the flows, from the registry and a site): one TopologyError naming
        # the field and the fix, not pydantic's wrapper around it. model_validate (specs,
        # the CLI) keeps raising ValidationError for topology_error() to translate.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise topology_error(exc) from None

    @field_validator("site_pool")
    @classmethod
    def _pool(cls, v: IPv4Network) -> IPv4Network:
        if v.prefixlen > SITE_PREFIX:
            raise TopologyError(
                "", f"{v} cannot hold a /{SITE_PREFIX}", "use a /24 or larger, e.g. 192.168.64.0/18"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        cidr = self.wireguard.cidr
        home = self.home
        if home.subnet.overlaps(cidr):
            raise _overlap_error("home.subnet", home.subnet, cidr, "the WireGuard CIDR")
        if home.wg_address is not None:
            _check_wg_address("home.wg_address", home.wg_address, cidr)

        names = {home.name: "home.name"}
        subnets: list[tuple[IPv4Network, str]] = [(home.subnet, "the home subnet")]
        addresses = {self.hub_address(): "the hub (home.wg_address)"}
        for i, site in enumerate(self.sites):
            where = f"sites[{i}]"
            if site.name in names:
                raise TopologyError(
                    f"{where}.name",
                    f"{site.name!r} is already used by {names[site.name]}",
                    "give every site (and the home) a different name",
                )
            names[site.name] = f"{where}.name"
            if site.subnet is not None:
                if site.subnet.overlaps(cidr):
                    raise _overlap_error(f"{where}.subnet", site.subnet, cidr, "the WireGuard CIDR")
                for other, whose in subnets:
                    if site.subnet.overlaps(other):
                        raise _overlap_error(f"{where}.subnet", site.subnet, other, whose)
                subnets.append((site.subnet, f"the subnet of site {site.name!r}"))
            if site.wg_address is not None:
                _check_wg_address(f"{where}.wg_address", site.wg_address, cidr)
                if site.wg_address in addresses:
                    raise TopologyError(
                        f"{where}.wg_address",
                        f"{site.wg_address} is already used by {addresses[site.wg_address]}",
                        "give every node a different WireGuard address, or omit it to allocate",
                    )
                addresses[site.wg_address] = f"site {site.name!r}"
        return self

    def hub_address(self) -> IPv4Address:
        return self.home.wg_address or next(self.wireguard.cidr.hosts())


# ---- the resolved plan ---------------------------------------------------------------------


class ResolvedHome(HomeSite):
    wg_address: IPv4Address
    listen_port: int


class ResolvedSite(RemoteSite):
    subnet: IPv4Network
    wg_address: IPv4Address
    listen_port: int
    subnet_from: Literal["spec", "registry", "pool"] = "spec"
    wg_address_from: Literal["spec", "registry", "pool"] = "spec"


class Plan(_Model):
    """A topology with every address decided. What each site's wiring must be follows from
    it in `hybridgrid.desired` (`desired.plan` adds it per site)."""

    wireguard: WireGuardSettings
    site_pool: IPv4Network
    home: ResolvedHome
    sites: list[ResolvedSite]
    network_mtu: int
    tunnel_mtu: int

    def site(self, name: str) -> ResolvedSite:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)


# Neutron's default `max_allowed_address_pair`; the API does not expose the configured value.
MAX_ADDRESS_PAIRS = 10


def tunnel_mtu(network_mtu: int) -> int:
    """WireGuard MTU for an underlay MTU (1450 → 1370, as in the seed)."""
    mtu = network_mtu - WIREGUARD_OVERHEAD
    if mtu < MIN_TUNNEL_MTU:
        raise TopologyError(
            "network_mtu",
            f"underlay MTU {network_mtu} leaves a tunnel MTU of {mtu}, below {MIN_TUNNEL_MTU}",
            f"use a network with MTU ≥ {MIN_TUNNEL_MTU + WIREGUARD_OVERHEAD}",
        )
    return mtu


def _free_subnets(pool: IPv4Network, taken: list[IPv4Network]) -> Iterable[IPv4Network]:
    for candidate in pool.subnets(new_prefix=SITE_PREFIX):
        if not any(candidate.overlaps(t) for t in taken):
            yield candidate


def _free_addresses(cidr: IPv4Network, hub: IPv4Address) -> Iterable[IPv4Address]:
    # Counting up from the hub gives the seed's 10.0.0.1 → 10.0.0.2; wrap around below it.
    first, last, h = int(cidr.network_address) + 1, int(cidr.broadcast_address) - 1, int(hub)
    for i in (*range(h + 1, last + 1), *range(first, h)):
        yield IPv4Address(i)


Decided = dict[str, tuple[Any, Literal["spec", "registry", "pool"]]]  # site → (value, source)


@dataclass
class _Taken:
    """Every subnet and overlay address decided so far, with who owns it, so that a conflict
    names both sides."""

    nets: list[tuple[IPv4Network, str]]
    addrs: dict[IPv4Address, str]

    def check_net(self, field: str, net: IPv4Network) -> None:
        for other, whose in self.nets:
            if net.overlaps(other):
                raise _overlap_error(field, net, other, whose)

    def check_addr(self, field: str, addr: IPv4Address, fix: str) -> None:
        if addr in self.addrs:
            raise TopologyError(field, f"{addr} is already used by {self.addrs[addr]}", fix)


def _check_registered(topology: Topology, existing: Mapping[str, Allocation]) -> None:
    for name, alloc in sorted(existing.items()):
        if name == topology.home.name:
            raise TopologyError(
                "home.name",
                f"the registry holds a remote site named {name!r}, the home's name",
                "rename the home, or remove that site first",
            )
        _check_wg_address(f"registry[{name}].wg_address", alloc.wg_address, topology.wireguard.cidr)


def _taken_by_registry(topology: Topology, existing: Mapping[str, Allocation]) -> _Taken:
    """The overlay, the home subnet, the hub and every registered site's allocation."""
    taken = _Taken(
        nets=[
            (topology.wireguard.cidr, "the WireGuard CIDR"),
            (topology.home.subnet, "the home subnet"),
        ],
        addrs={topology.hub_address(): "the hub"},
    )
    for name, alloc in sorted(existing.items()):
        whose = f"registered site {name!r}"
        taken.check_net(f"registry[{name}].subnet", alloc.subnet)
        taken.check_addr(
            f"registry[{name}].wg_address",
            alloc.wg_address,
            "repair the registry entry (or remove and re-add the site)",
        )
        taken.nets.append((alloc.subnet, f"the subnet of {whose}"))
        taken.addrs[alloc.wg_address] = whose
    return taken


def _keep_registered(where: str, site: RemoteSite, reg: Allocation) -> None:
    """A registered site keeps its allocation: the spec may repeat it, not move it."""
    if site.subnet is not None and site.subnet != reg.subnet:
        raise TopologyError(
            f"{where}.subnet",
            f"site {site.name!r} is registered with {reg.subnet}, not {site.subnet}",
            f"set subnet to {reg.subnet} or omit it; a live site's subnet cannot move",
        )
    if site.wg_address is not None and site.wg_address != reg.wg_address:
        raise TopologyError(
            f"{where}.wg_address",
            f"site {site.name!r} is registered with {reg.wg_address}, not {site.wg_address}",
            f"set wg_address to {reg.wg_address} or omit it",
        )


def _decided(
    topology: Topology, existing: Mapping[str, Allocation], taken: _Taken
) -> tuple[Decided, Decided]:
    """(subnets, addresses) the registry or the spec fix. Spec-fixed values are claimed
    before any allocation so that allocation never takes them."""
    subnets: Decided = {}
    addrs: Decided = {}
    for i, site in enumerate(topology.sites):
        reg = existing.get(site.name)
        if reg is not None:
            _keep_registered(f"sites[{i}]", site, reg)
            subnets[site.name], addrs[site.name] = (
                (reg.subnet, "registry"),
                (reg.wg_address, "registry"),
            )
            continue
        if site.subnet is not None:
            taken.check_net(f"sites[{i}].subnet", site.subnet)
            subnets[site.name] = (site.subnet, "spec")
        if site.wg_address is not None:
            taken.check_addr(
                f"sites[{i}].wg_address",
                site.wg_address,
                "give every node a different WireGuard address, or omit it to allocate",
            )
            addrs[site.name] = (site.wg_address, "spec")
    for name, (net, source) in subnets.items():
        if source == "spec":
            taken.nets.append((net, f"the subnet of site {name!r}"))
    for name, (addr, source) in addrs.items():
        if source == "spec":
            taken.addrs[addr] = f"site {name!r}"
    return subnets, addrs


def _allocate(topology: Topology, taken: _Taken, subnets: Decided, addrs: Decided) -> None:
    """In spec order: the lowest free /24 of the pool and the next free overlay address."""
    cidr, hub = topology.wireguard.cidr, topology.hub_address()
    for i, site in enumerate(topology.sites):
        if site.name not in subnets:
            net = next(_free_subnets(topology.site_pool, [n for n, _ in taken.nets]), None)
            if net is None:
                raise TopologyError(
                    f"sites[{i}].subnet",
                    f"no free /{SITE_PREFIX} left in site_pool {topology.site_pool}",
                    "enlarge site_pool or give this site an explicit subnet",
                )
            subnets[site.name] = (net, "pool")
            taken.nets.append((net, f"the subnet of site {site.name!r}"))
        if site.name not in addrs:
            addr = next((a for a in _free_addresses(cidr, hub) if a not in taken.addrs), None)
            if addr is None:
                raise TopologyError(
                    f"sites[{i}].wg_address",
                    f"no free address left in the WireGuard CIDR {cidr}",
                    "use a larger wireguard.cidr",
                )
            addrs[site.name] = (addr, "pool")
            taken.addrs[addr] = f"site {site.name!r}"


def _resolved_site(
    topology: Topology, site: RemoteSite, subnets: Decided, addrs: Decided
) -> ResolvedSite:
    (net, net_from), (addr, addr_from) = subnets[site.name], addrs[site.name]
    return ResolvedSite(
        **site.model_dump(exclude={"subnet", "wg_address", "listen_port"}),
        subnet=net,
        wg_address=addr,
        listen_port=site.listen_port or topology.wireguard.port,
        subnet_from=net_from,
        wg_address_from=addr_from,
    )


def plan(
    topology: Topology,
    existing: Mapping[str, Allocation] | None = None,
    network_mtu: int = 1450,
) -> Plan:
    """Resolve every site's subnet and WireGuard address, deterministically.

    ``existing`` holds the registry's allocations (including sites this spec does not list):
    they are kept for their sites and avoided for all others. Sites without a subnet or
    address get, in spec order, the lowest free /24 in the pool and the next free overlay
    address after the hub's.
    """
    existing = dict(existing or {})
    mtu = tunnel_mtu(network_mtu)
    _check_registered(topology, existing)
    taken = _taken_by_registry(topology, existing)
    subnets, addrs = _decided(topology, existing, taken)
    _allocate(topology, taken, subnets, addrs)
    home = ResolvedHome(
        **topology.home.model_dump(exclude={"wg_address", "listen_port"}),
        wg_address=topology.hub_address(),
        listen_port=topology.home.listen_port or topology.wireguard.port,
    )
    return Plan(
        wireguard=topology.wireguard,
        site_pool=topology.site_pool,
        home=home,
        sites=[_resolved_site(topology, s, subnets, addrs) for s in topology.sites],
        network_mtu=network_mtu,
        tunnel_mtu=mtu,
    )


# ---- turning pydantic's errors into one TopologyError ---------------------------------------

_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove it or correct its spelling",
    "greater_than_equal": "use a value of at least {ge}",
    "less_than_equal": "use a value of at most {le}",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "ip_v4_network": "write a network address with prefix, host bits zero, e.g. 192.168.77.0/24",
    "ip_v4_address": "write an IPv4 address, e.g. 10.0.0.2",
    "string_type": "write a text value",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "list_type": "write a list, e.g. [a, b]",
    "model_type": "write a mapping of keys to values",
    "dict_type": "write a mapping of keys to values",
}


def _path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def topology_error(exc: ValidationError) -> TopologyError:
    """The first error of a failed validation, with field path, message and fix."""
    err = exc.errors(include_url=False, include_input=False)[0]
    prefix = _path(err["loc"])
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, TopologyError):
        return cause.at(prefix)
    fix = _FIXES.get(err["type"], "correct this value").format(**ctx)
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    return TopologyError(prefix, message, fix)
