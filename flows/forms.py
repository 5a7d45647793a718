"""The flows' parameters as the Prefect UI's run forms ask for them: the site and the home
with their cloud picked from the saved credentials blocks, and each flow's options."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridgrid.blocks.pickers import CloudBlock, SSHKeyBlock, no_default
from hybridgrid.blocks.registry import DEFAULT_REGISTRY
from hybridgrid.model import HomeSite, RemoteSite


class _FormOfModel(BaseModel):
    """A form over a core model (`SiteForm` over `RemoteSite`, …): an instance of that model —
    the registry's spec, a spec file's, a test's constant — is a valid form value."""

    @model_validator(mode="before")
    @classmethod
    def _from_core_model(cls, data: Any) -> Any:
        if isinstance(data, BaseModel) and not isinstance(data, cls):
            return data.model_dump()
        return data


class SiteForm(RemoteSite, _FormOfModel):
    """The site as the UI's form asks for it: the cloud is picked from the saved credentials
    blocks (the registry keeps its name)."""

    model_config = ConfigDict(title="RemoteSite")

    cloud: CloudBlock = Field(
        "",
        description="the cloud's credentials block (how it is reached is its access setting); "
        "empty: the block named like the site",
        json_schema_extra=no_default,
    )


class HomeForm(HomeSite, _FormOfModel):
    """The home as the UI's form asks for it: the cloud is picked from the saved credentials
    blocks (the registry keeps its name)."""

    cloud: CloudBlock = Field(description="the home cloud's credentials block")


class AddSiteOptions(BaseModel):
    registry: str = Field(DEFAULT_REGISTRY, description="SiteRegistry block name")
    ssh_key_block: SSHKeyBlock | None = Field(
        None,
        description="SSHKey block for the site's servers; empty: hg-NAME-ssh, made when missing",
    )
    boot_timeout: float = Field(600, gt=0, description="seconds to wait for servers to be ACTIVE")
    verify: bool = Field(True, description="run the layered verification at the end")


class HomeOptions(BaseModel):
    registry: str = Field(DEFAULT_REGISTRY, description="SiteRegistry block name")
    ssh_key_block: SSHKeyBlock | None = Field(
        None, description="SSHKey block that logs into the master; empty: hg-HOME-ssh, made"
    )
    site_pool: IPv4Network = Field(
        IPv4Network("192.168.64.0/18"), description="pool for sites' auto-allocated subnets"
    )
    ssh_source: list[IPv4Network] = Field(
        default_factory=lambda: [IPv4Network("0.0.0.0/0")],
        description="who may reach a created master's SSH port",
    )
    master_host_keys: list[str] = Field(
        default_factory=list,
        description="adopting a master whose console no longer shows its host keys: its "
        "OpenSSH host public key lines (from /etc/ssh/ssh_host_*_key.pub)",
    )
    boot_timeout: float = Field(600, gt=0, description="seconds to wait for servers")
