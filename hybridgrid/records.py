"""What an OpenStack operation did, per resource (plain data): created, reused, updated,
deleted or absent, with the ids and addresses the flows carry on. `hybridgrid.cloudops`
returns them; the run summary (`hybridgrid.report`) lists them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Action = Literal["created", "reused", "updated", "deleted", "absent"]


class Record(BaseModel):
    kind: str
    name: str
    id: str | None = None
    action: Action


class NetworkRecord(Record):
    kind: str = "network"
    mtu: int = 1450


class SubnetRecord(Record):
    kind: str = "subnet"
    cidr: str
    gateway_ip: str | None = None
    network_id: str


class RouterRecord(Record):
    kind: str = "router"
    external_ip: str | None = None


class SecurityGroupRecord(Record):
    kind: str = "security_group"


class RuleRecord(Record):
    kind: str = "security_group_rule"


class KeypairRecord(Record):
    kind: str = "keypair"


class ServerRecord(Record):
    kind: str = "server"
    status: str
    port_id: str | None = None
    fixed_ip: str | None = None
    replaced: int = 0


class FloatingIPRecord(Record):
    kind: str = "floating_ip"
    address: str
    port_id: str | None = None


class PortRecord(Record):
    kind: str = "port"
    fixed_ip: str
    network_id: str
    allowed_address_pairs: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    port_security_enabled: bool = True
