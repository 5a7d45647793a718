"""localcloud's own configuration: which clouds a state directory serves, and their options.

Written by ``localcloud up`` to ``<state-dir>/localcloud.yaml`` and read by the API process.
A cloud keeps its index for life, because its address plan is derived from it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator

DEFAULT_PORT = 8780
DEFAULT_CLOUDS = ("bielefeld", "giessen")
DEFAULT_STATE_DIR = Path(".localcloud")
CONFIG_FILE = "localcloud.yaml"

# Every extension localcloud implements; a cloud may switch some of them off.
EXTENSIONS = (
    "router",
    "external-net",
    "extraroute",
    "security-group",
    "port-security",
    "allowed-address-pairs",
    "standard-attr-tag",
    "quotas",
    "quota_details",
    "standard-attr-description",
    "standard-attr-timestamp",
    "standard-attr-revisions",
    "ext-gw-mode",
    "project-id",
)
OPTIONAL_EXTENSIONS = ("allowed-address-pairs", "port-security")

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def external_cidr(index: int) -> ipaddress.IPv4Network:
    """The external ("public") network of the cloud with this index.

    0 and 1 use the documentation ranges the safety rules allow; further clouds use the
    RFC 2544 benchmarking range 198.18.0.0/15, which is never routed on the internet.
    """
    if index == 0:
        return ipaddress.IPv4Network("203.0.113.0/24")
    if index == 1:
        return ipaddress.IPv4Network("198.51.100.0/24")
    if 2 <= index < 2 + 512:
        n = index - 2
        return ipaddress.IPv4Network(f"198.{18 + n // 256}.{n % 256}.0/24")
    raise ValueError(f"cloud index {index} is out of range (0..513)")


class Quotas(BaseModel):
    """Per-project limits (Nova and Neutron names, their defaults); -1 means unlimited."""

    instances: int = 10
    cores: int = 20
    ram: int = 51200
    key_pairs: int = 100
    network: int = 100
    subnet: int = 100
    port: int = 500
    router: int = 10
    floatingip: int = 50
    security_group: int = 10
    security_group_rule: int = 100


class CloudConfig(BaseModel):
    name: str
    index: int
    region: str = "RegionOne"
    extensions_disabled: list[str] = Field(default_factory=list)
    quotas: Quotas = Field(default_factory=Quotas)
    token_ttl: int = 3600  # seconds
    # When the seeded application credential stops working (epoch seconds; None = never), to
    # test what clients say about an expired credential. Password auth is unaffected.
    appcred_expires_at: float | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                f"cloud name {v!r} is invalid: use a lowercase letter, then letters, "
                "digits or '-' (at most 31 characters)"
            )
        return v

    @field_validator("extensions_disabled")
    @classmethod
    def _ext(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in OPTIONAL_EXTENSIONS]
        if bad:
            raise ValueError(
                f"extensions_disabled: {bad} cannot be switched off; "
                f"choose from {list(OPTIONAL_EXTENSIONS)}"
            )
        return v

    def has_extension(self, alias: str) -> bool:
        return alias in EXTENSIONS and alias not in self.extensions_disabled

    @property
    def external_cidr(self) -> ipaddress.IPv4Network:
        return external_cidr(self.index)


class LocalcloudConfig(BaseModel):
    port: int = DEFAULT_PORT
    clouds: list[CloudConfig] = Field(default_factory=list)

    def cloud(self, name: str) -> CloudConfig:
        for c in self.clouds:
            if c.name == name:
                return c
        raise KeyError(name)

    def merged(self, names: list[str], options: dict[str, dict] | None = None) -> LocalcloudConfig:
        """Add the named clouds (new ones get the next free index); existing ones stay."""
        clouds = [c.model_copy() for c in self.clouds]
        options = options or {}
        for name in names:
            if any(c.name == name for c in clouds):
                continue
            used = {c.index for c in clouds}
            index = next(i for i in range(1000) if i not in used)
            clouds.append(CloudConfig(name=name, index=index, **options.get(name, {})))
        return LocalcloudConfig(port=self.port, clouds=clouds)


def load_config(state_dir: Path) -> LocalcloudConfig | None:
    path = Path(state_dir) / CONFIG_FILE
    if not path.exists():
        return None
    return LocalcloudConfig.model_validate(yaml.safe_load(path.read_text()) or {})


def save_config(state_dir: Path, config: LocalcloudConfig) -> None:
    path = Path(state_dir) / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    os.replace(tmp, path)
