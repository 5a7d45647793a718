"""wg0.conf rendered from the config models (pure and deterministic), and where the node keeps
its WireGuard files (`WgPaths`). The rendered body has no `PrivateKey` line: the node joins it
in from its key file (`hybridgrid.wireguard.commands.assemble_command`)."""

from __future__ import annotations

import re
from functools import cache

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hybridgrid.wgconfig import WgConfig, WgPeer


def sorted_peers(peers: list[WgPeer]) -> list[WgPeer]:
    """Stable order: by first AllowedIPs network (the peer's tunnel address), then key."""
    return sorted(peers, key=lambda p: (min(p.allowed_ips), p.public_key))


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hybridgrid.wireguard", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 -- a WireGuard config, not HTML
    )


class WgPaths(BaseModel):
    """Where the node keeps its WireGuard files (a temp dir in tests)."""

    model_config = ConfigDict(frozen=True)

    directory: str = "/etc/wireguard"
    iface: str = Field(default="wg0", pattern=r"^[A-Za-z0-9_=+.-]{1,15}$")

    @field_validator("directory")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", v):
            raise ValueError("directory must be an absolute path of letters, digits, . _ - /")
        return v.rstrip("/") or "/"

    @property
    def conf(self) -> str:
        return f"{self.directory}/{self.iface}.conf"

    @property
    def body(self) -> str:
        """The uploaded config without the PrivateKey line."""
        return f"{self.directory}/{self.iface}.conf.body"

    @property
    def private_key(self) -> str:
        return f"{self.directory}/privatekey"

    @property
    def staged_key(self) -> str:
        """A new key made for rotation, not yet in use."""
        return f"{self.directory}/privatekey.next"

    @property
    def previous_key(self) -> str:
        """The key replaced by the last rotation, kept for rollback."""
        return f"{self.directory}/privatekey.prev"


def render_wg_conf(config: WgConfig, paths: WgPaths | None = None) -> str:
    """The wg0.conf body: everything but PrivateKey. Pure and deterministic."""
    paths = paths or WgPaths()
    return (
        _env()
        .get_template("wg0.conf.j2")
        .render(
            interface=config.interface,
            peers=sorted_peers(config.peers),
            private_key_path=paths.private_key,
        )
    )
