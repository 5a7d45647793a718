"""Hand-built CloudSnapshots for data-plane tests (no API needed): the seed topology.

bielefeld: 192.168.66.0/24, master (.10, floating IP 203.0.113.10) + worker (.11)
giessen:   192.168.77.0/24, vpn (.10, floating IP 198.51.100.10) + worker (.11)
"""

from __future__ import annotations

import ipaddress
import itertools
import uuid

from localcloud.backend import (
    AddressPair,
    CloudSnapshot,
    FixedIP,
    FloatingIP,
    Network,
    Port,
    Route,
    Router,
    Rule,
    SecurityGroup,
    Server,
    Subnet,
)

EXTERNAL = ["203.0.113.0/24", "198.51.100.0/24"]
_mac = itertools.count(1)


def new_id() -> str:
    return str(uuid.uuid4())


def new_mac() -> str:
    n = next(_mac)
    return f"fa:16:3e:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"


class CloudBuilder:
    """Mutable builder; ``snapshot()`` returns a fresh CloudSnapshot each time."""

    def __init__(self, name: str, index: int, tenant_cidr: str) -> None:
        self.name, self.index = name, index
        ext = ipaddress.ip_network(EXTERNAL[index])
        self.ext_gateway = str(ext.network_address + 1)
        self.ext_net = Network(id=new_id(), name="public", external=True, mtu=1450)
        self.ext_subnet = Subnet(
            id=new_id(), network_id=self.ext_net.id, cidr=str(ext), gateway_ip=self.ext_gateway
        )
        self.ext_net.subnets = [self.ext_subnet]
        net = ipaddress.ip_network(tenant_cidr)
        self.net = Network(id=new_id(), name=f"{name}-net", mtu=1450)
        self.subnet = Subnet(
            id=new_id(),
            network_id=self.net.id,
            cidr=tenant_cidr,
            gateway_ip=str(net.network_address + 1),
        )
        self.net.subnets = [self.subnet]
        self.default_sg = SecurityGroup(id=new_id(), name="default")
        self.default_sg.rules = [
            Rule(id=new_id(), direction="ingress", remote_group_id=self.default_sg.id),
            Rule(id=new_id(), direction="egress"),
        ]
        self.security_groups = [self.default_sg]
        self.ports: list[Port] = []
        self.servers: list[Server] = []
        self.floating_ips: list[FloatingIP] = []
        self.router = Router(id=new_id(), name=f"{name}-router")
        gw = self._port(
            self.ext_net,
            self.ext_subnet,
            str(ext.network_address + 2),
            "network:router_gateway",
            self.router.id,
        )
        itf = self._port(
            self.net,
            self.subnet,
            self.subnet.gateway_ip,
            "network:router_interface",
            self.router.id,
        )
        self.router.gateway_port_id, self.router.interface_port_ids = gw.id, [itf.id]

    def _port(
        self, net: Network, sub: Subnet, address: str, owner: str, device: str, sgs=None
    ) -> Port:
        port = Port(
            id=new_id(), network_id=net.id, mac_address=new_mac(),
            fixed_ips=[FixedIP(subnet_id=sub.id, ip_address=address)],
            device_owner=owner, device_id=device,
            security_group_ids=list(sgs or []),
        )  # fmt: skip
        self.ports.append(port)
        return port

    def add_server(
        self, name: str, address: str, keys: list[str], status: str = "ACTIVE", user_data=None
    ) -> Server:
        server = Server(
            id=new_id(), name=name, status=status, authorized_keys=keys, user_data=user_data
        )
        port = self._port(
            self.net, self.subnet, address, "compute:nova", server.id, [self.default_sg.id]
        )
        server.port_ids = [port.id]
        self.servers.append(server)
        return server

    def port_of(self, server: Server) -> Port:
        return next(p for p in self.ports if p.id == server.port_ids[0])

    def ip_of(self, server: Server) -> str:
        return self.port_of(server).fixed_ips[0].ip_address

    def add_floating_ip(self, server: Server, address: str) -> FloatingIP:
        port = self.port_of(server)
        fport = Port(id=new_id(), network_id=self.ext_net.id, mac_address=new_mac(),
                     fixed_ips=[FixedIP(subnet_id=self.ext_subnet.id, ip_address=address)],
                     device_owner="network:floating_ip")  # fmt: skip
        self.ports.append(fport)
        fip = FloatingIP(
            id=new_id(), floating_ip_address=address, floating_network_id=self.ext_net.id,
            port_id=port.id, fixed_ip_address=port.fixed_ips[0].ip_address,
            router_id=self.router.id,
        )  # fmt: skip
        self.floating_ips.append(fip)
        return fip

    def add_group(self, name: str, rules: list[Rule]) -> SecurityGroup:
        sg = SecurityGroup(id=new_id(), name=name, rules=rules)
        self.security_groups.append(sg)
        return sg

    def set_pairs(self, server: Server, cidrs: list[str]) -> None:
        self.port_of(server).allowed_address_pairs = [AddressPair(ip_address=c) for c in cidrs]

    def set_routes(self, routes: list[tuple[str, str]]) -> None:
        self.router.routes = [Route(destination=d, nexthop=n) for d, n in routes]

    def snapshot(self) -> CloudSnapshot:
        return CloudSnapshot(
            cloud=self.name, index=self.index,
            networks=[self.ext_net, self.net], ports=self.ports,
            security_groups=self.security_groups, routers=[self.router],
            floating_ips=self.floating_ips, servers=self.servers,
        ).model_copy(deep=True)  # fmt: skip


def udp_rule(port: int, prefix: str | None) -> Rule:
    return Rule(id=new_id(), direction="ingress", protocol="udp", port_range_min=port,
                port_range_max=port, remote_ip_prefix=prefix)  # fmt: skip


def tcp_rule(port: int, prefix: str = "0.0.0.0/0") -> Rule:
    return Rule(id=new_id(), direction="ingress", protocol="tcp", port_range_min=port,
                port_range_max=port, remote_ip_prefix=prefix)  # fmt: skip


def icmp_rule(prefix: str = "0.0.0.0/0") -> Rule:
    return Rule(id=new_id(), direction="ingress", protocol="icmp", remote_ip_prefix=prefix)
