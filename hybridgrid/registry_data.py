"""The registry's data (docs/architecture.md §7): what hybridgrid allocated and built, per site.

Plain pydantic models, no I/O: the Block that stores them and the locked update live in
`hybridgrid.blocks.registry`, which re-exports these names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridgrid.model import Allocation, RemoteSite, WireGuardSettings
from hybridgrid.scheduler import Scheduler


class Verification(BaseModel):
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    ok: bool
    summary: str = ""


class _Entry(BaseModel):
    cloud: str
    subnet: IPv4Network
    wg_address: IPv4Address
    public_ips: dict[str, IPv4Address] = Field(
        default_factory=dict, description="floating IPs by server role, e.g. {'vpn': …}"
    )
    host_keys: dict[str, list[str]] = Field(
        default_factory=dict, description="pinned SSH host keys (OpenSSH lines) by server name"
    )
    resource_ids: dict[str, str] = Field(
        default_factory=dict, description="OpenStack IDs by role, e.g. net, sg, vpn, worker-1"
    )
    last_verification: Verification | None = None


class HomeEntry(_Entry):
    name: str
    public_key: str | None = Field(None, description="the master's WireGuard public key")
    master: str | None = Field(None, description="the hub server's name (adopted or created)")
    adopted: bool = Field(True, description="the master existed before hybridgrid")
    workers: list[str] = Field(
        default_factory=list, description="home worker server names (routes, SG)"
    )
    ssh_key_block: str | None = Field(None, description="SSHKey block that logs into the master")
    external_network: str = "public"
    listen_port: int = 51820
    network_mtu: int = Field(1450, description="MTU of the master's network")
    scheduler: Scheduler = Field("none", description="slurm: the master runs slurmctld")
    node_addresses: dict[str, IPv4Address] = Field(
        default_factory=dict,
        description="fixed IPs of the master and the home workers by server name",
    )


class SiteEntry(_Entry):
    spoke_public_key: str | None = Field(None, description="the VPN node's WireGuard key")
    hub_public_key: str | None = Field(None, description="hub key the spoke is configured with")
    spec: RemoteSite | None = Field(None, description="the site as last added (desired state)")
    listen_port: int = 51820
    network_mtu: int = Field(1450, description="MTU of the site's tenant network")
    ssh_key_block: str | None = Field(None, description="SSHKey block for the site's servers")
    fixed_ips: dict[str, IPv4Address] = Field(
        default_factory=dict, description="fixed IPs by server role, e.g. {'vpn': …}"
    )

    def allocation(self) -> Allocation:
        return Allocation(subnet=self.subnet, wg_address=self.wg_address)


class SiteUpdate(BaseModel):
    """What a run records about a site (add-site: what it built; rotate-keys: the new spoke
    key): the fields it sets replace the entry's, every other field is kept."""

    model_config = ConfigDict(extra="forbid")

    spoke_public_key: str | None = None
    hub_public_key: str | None = None
    spec: RemoteSite | None = None
    listen_port: int | None = None
    network_mtu: int | None = None
    ssh_key_block: str | None = None
    public_ips: dict[str, IPv4Address] | None = None
    fixed_ips: dict[str, IPv4Address] | None = None
    host_keys: dict[str, list[str]] | None = None
    resource_ids: dict[str, str] | None = None

    def applied_to(self, entry: SiteEntry) -> SiteEntry:
        """`entry` with the fields this update sets (a field set to None is set to None)."""
        return SiteEntry.model_validate(
            {**entry.model_dump(), **self.model_dump(exclude_unset=True)}
        )


class RegistryData(BaseModel):
    wireguard: WireGuardSettings = Field(default_factory=WireGuardSettings)
    site_pool: IPv4Network = IPv4Network("192.168.64.0/18")
    home: HomeEntry | None = None
    sites: dict[str, SiteEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_double_allocation(self) -> RegistryData:
        # A last guard: whatever a mutation did, two entries never share a subnet or address.
        entries = [(n, e) for n, e in self.sites.items()]
        if self.home is not None:
            entries.insert(0, (f"home {self.home.name}", self.home))
        for i, (name, entry) in enumerate(entries):
            for other, o in entries[i + 1 :]:
                if entry.subnet.overlaps(o.subnet):
                    raise ValueError(f"registry: subnets of {name} and {other} overlap")
                if entry.wg_address == o.wg_address:
                    raise ValueError(f"registry: {name} and {other} share {entry.wg_address}")
        return self

    def allocations(self) -> dict[str, Allocation]:
        return {name: entry.allocation() for name, entry in self.sites.items()}
