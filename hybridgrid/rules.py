"""Security-group rules as hybridgrid wants them (pure data). `hybridgrid.cloudops.security_groups`
applies them."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel


def normalized_cidr(ip: str) -> str:
    """A CIDR or address in one spelling (host bits dropped), to compare two of them."""
    return str(ipaddress.ip_network(ip, strict=False))


class RuleSpec(BaseModel):
    """One security-group rule as hybridgrid wants it."""

    direction: Literal["ingress", "egress"] = "ingress"
    protocol: Literal["tcp", "udp", "icmp"] | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None

    def key(self) -> tuple[Any, ...]:
        prefix = normalized_cidr(self.remote_ip_prefix) if self.remote_ip_prefix else None
        port_max = self.port_max if self.port_max is not None else self.port_min
        if prefix == "0.0.0.0/0":
            prefix = None
        return (self.direction, "IPv4", self.protocol, self.port_min, port_max, prefix, None)

    def describe(self) -> str:
        port_max = self.port_max if self.port_max is not None else self.port_min
        ports = "" if self.port_min is None else f" {self.port_min}-{port_max}"
        source = self.remote_ip_prefix or "any"
        return f"{self.direction} {self.protocol or 'any'}{ports} from {source}"
