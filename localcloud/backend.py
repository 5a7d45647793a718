"""The seam between localcloud's API (part 1) and its data plane (part 2).

The API never knows about namespaces. After every mutating call, and once at start-up, it
hands the backend a full, typed snapshot of one cloud and the backend converges the real
hosts and networks to it (a level-triggered controller, like Neutron's agents): idempotent,
so a restart re-attaches by applying the same snapshot again.

Server life cycle as the backend sees it: a server appears with status BUILD (make its
namespace, ports and host keys; sshd not yet listening), later the same server shows up as
ACTIVE (start sshd, apply key pair and user data) or ERROR (tear it down); a server missing
from the snapshot is deleted. The API owns timing (boot delay, injected boot failures).
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field


class AddressPair(BaseModel):
    ip_address: str  # an address or a CIDR, as Neutron allows
    mac_address: str | None = None


class FixedIP(BaseModel):
    subnet_id: str
    ip_address: str


class Subnet(BaseModel):
    id: str
    network_id: str
    cidr: str
    gateway_ip: str | None


class Network(BaseModel):
    id: str
    name: str
    mtu: int = 1450
    external: bool = False
    subnets: list[Subnet] = Field(default_factory=list)


class Port(BaseModel):
    id: str
    network_id: str
    mac_address: str
    fixed_ips: list[FixedIP] = Field(default_factory=list)
    device_id: str = ""
    # compute:nova, network:router_interface, network:router_gateway, network:floating_ip, ""
    device_owner: str = ""
    port_security_enabled: bool = True
    allowed_address_pairs: list[AddressPair] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)


class Rule(BaseModel):
    id: str
    direction: str  # ingress | egress
    ethertype: str = "IPv4"
    protocol: str | None = None  # tcp | udp | icmp | None (any); numbers as strings
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


class SecurityGroup(BaseModel):
    id: str
    name: str
    rules: list[Rule] = Field(default_factory=list)


class Route(BaseModel):
    destination: str
    nexthop: str


class Router(BaseModel):
    id: str
    name: str
    gateway_port_id: str | None = None  # a port on the external network
    interface_port_ids: list[str] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    enable_snat: bool = True


class FloatingIP(BaseModel):
    id: str
    floating_ip_address: str
    floating_network_id: str
    port_id: str | None = None
    fixed_ip_address: str | None = None
    router_id: str | None = None


class Server(BaseModel):
    id: str
    name: str
    status: str  # BUILD | ACTIVE | ERROR | SHUTOFF
    port_ids: list[str] = Field(default_factory=list)
    authorized_keys: list[str] = Field(default_factory=list)  # the key pair's public key
    user_data: str | None = None  # decoded (not base64) cloud-config or script
    metadata: dict[str, str] = Field(default_factory=dict)


class CloudSnapshot(BaseModel):
    """Everything the data plane needs to know about one cloud, at one moment."""

    cloud: str
    index: int  # 0 for the first cloud, 1 for the second, ... (address ranges, names)
    networks: list[Network] = Field(default_factory=list)
    ports: list[Port] = Field(default_factory=list)
    security_groups: list[SecurityGroup] = Field(default_factory=list)
    routers: list[Router] = Field(default_factory=list)
    floating_ips: list[FloatingIP] = Field(default_factory=list)
    servers: list[Server] = Field(default_factory=list)


class Backend(Protocol):
    def apply(self, snapshot: CloudSnapshot) -> None:
        """Converge the real hosts and networks of `snapshot.cloud` to the snapshot."""

    def console_log(self, cloud: str, server_id: str) -> str:
        """Console text of a server (cloud-init style host key blocks once it has booted)."""

    def close(self) -> None:
        """The API server stops: release handles, keep hosts running (``localcloud stop``)."""

    def destroy(self) -> None:
        """Remove every namespace, bridge, nftables table and process (``localcloud down``)."""


class NullBackend:
    """API objects only: no hosts behind them (part 1 alone, and API-only tests)."""

    def apply(self, snapshot: CloudSnapshot) -> None:
        return None

    def console_log(self, cloud: str, server_id: str) -> str:
        return ""

    def close(self) -> None:
        return None

    def destroy(self) -> None:
        return None
