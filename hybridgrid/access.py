"""How the flows reach a cloud's servers over SSH: a property of the cloud, not of a key.

`CloudAccess` is stored on the cloud's credentials block (`OpenStackCredentials.access`) and
read by every SSH path: the master, VPN nodes, the workers behind them, and the key blocks the
flows make themselves. Three ways in:

- direct: the flows open TCP to the floating IP from where they run;
- ``proxy_command``: an OpenSSH ProxyCommand reaches the first hop (``%h``/``%p`` expanded),
  e.g. localcloud's ``localcloud proxy`` or ``ssh -W %h:%p gateway``;
- ``bastion``: an SSH jump host with a pinned host key (no trust on first use) and its own
  login key (an SSHKey block); the ProxyCommand, when also set, reaches the bastion.

Hubs and spokes are reached at their floating IP through the cloud's way in; workers through
their own site's hub or spoke as a jump host, at their fixed IP. Host keys are always pinned.
"""

from __future__ import annotations

import re
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hybridgrid.ssh_target import SSHTarget

# OpenSSH's -J form: [user@]host[:port], host a name, IPv4 address or [IPv6] literal.
JUMP_FORM = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?"
    r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
_KEY_LINE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+")


class Bastion(BaseModel):
    """An SSH jump host in front of a cloud's floating IPs (e.g. de.NBI's)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="address or DNS name of the bastion")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(description="login user on the bastion", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    host_keys: list[str] = Field(
        min_length=1,
        description="the bastion's pinned host keys, OpenSSH lines 'ssh-ed25519 AAAA…' "
        "(ssh-keyscan, or ask the operator); an unknown or changed key is refused",
    )
    key_block: str = Field(
        description="SSHKey block whose private key logs in to the bastion (its public half "
        "is in the bastion's authorized_keys)"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]", v):
            raise ValueError(f"bastion host {v!r} must be a DNS name or an IP address")
        return v.strip("[]")

    @field_validator("host_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        out = []
        for i, line in enumerate(v):
            parts = line.split()
            # a known_hosts line ("host ssh-ed25519 AAAA…") is accepted: drop the host field
            if len(parts) >= 3 and not _KEY_LINE.match(line):
                parts = parts[1:]
            joined = " ".join(parts[:2])
            if not _KEY_LINE.match(joined):
                raise ValueError(
                    f"bastion host_keys[{i}] is not an OpenSSH public key line (expected "
                    f"'ssh-ed25519 AAAA…', e.g. from ssh-keyscan -t ed25519 HOST)"
                )
            out.append(joined)
        return out

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


Mode = Literal["direct", "proxy_command", "bastion"]


class CloudAccess(BaseModel):
    """How the flows reach public addresses on one cloud (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    proxy_command: str | None = Field(
        None,
        description="OpenSSH ProxyCommand to the first hop (the bastion when one is set, else "
        "the server), %h and %p expanded; e.g. 'ssh -W %h:%p gateway.example'",
    )
    bastion: Bastion | None = Field(
        None, description="jump host with a pinned host key; empty: no bastion"
    )

    @field_validator("proxy_command")
    @classmethod
    def _proxy(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\n" in v or "\r" in v):
            raise ValueError("access.proxy_command must be one non-empty line, e.g. 'nc %h %p'")
        return v or None

    @property
    def mode(self) -> Mode:
        if self.bastion is not None:
            return "bastion"
        return "proxy_command" if self.proxy_command else "direct"

    def describe(self, cloud: str) -> str:
        """Names the setting to fix, for error messages (holds no secret)."""
        where = f"the access setting of cloud {cloud!r} (its credentials block's `access`)"
        if self.bastion is not None:
            via = f", reached through ProxyCommand {self.proxy_command!r}"
            via = via if self.proxy_command else ""
            return f"{where}: bastion {self.bastion.label}{via}"
        if self.proxy_command:
            return f"{where}: ProxyCommand {self.proxy_command!r}"
        return (
            f"{where}: direct (no ProxyCommand, no bastion) — set access.proxy_command or "
            f"access.bastion if the cloud's floating IPs are not reachable from where flows run"
        )


class LoginKey(Protocol):
    """What the targets need of an SSH key block (hybridgrid.blocks.ssh.SSHKey)."""

    user: str
    proxy_command: str | None


def front_door(
    address: str,
    host_keys: list[str],
    key: LoginKey,
    access: CloudAccess | None = None,
    cloud: str = "",
) -> SSHTarget:
    """A node with a public address (master, VPN node), reached the cloud's way.

    A key block's own ``proxy_command`` (older blocks) is used only for a cloud whose access
    is direct."""
    access = access or CloudAccess()
    hint = access.describe(cloud or "?")
    if getattr(key, "jump_host", None):
        raise ValueError(
            f"the SSH key block's jump_host is not used any more: set the bastion on {hint} "
            f"(hybridgrid cloud import {cloud or 'CLOUD'} --bastion USER@HOST --bastion-host-key "
            f"'ssh-ed25519 …' --bastion-key-block BLOCK) and clear jump_host"
        )
    hop = bastion_hop(access, cloud)
    if hop is not None:
        return SSHTarget(host=address, user=key.user, host_keys=host_keys, jump=hop, hint=hint)
    proxy = access.proxy_command or getattr(key, "proxy_command", None)
    if proxy and not access.proxy_command:
        hint = f"the SSH key block's proxy_command {proxy!r} (better: the cloud's access)"
    return SSHTarget(
        host=address, user=key.user, host_keys=host_keys, proxy_command=proxy, hint=hint
    )


def bastion_hop(access: CloudAccess, cloud: str) -> SSHTarget | None:
    """The bastion as an SSH hop (its own key block, reached through the ProxyCommand when
    one is set), or None when the cloud has no bastion."""
    b = access.bastion
    if b is None:
        return None
    return SSHTarget(
        host=b.host,
        port=b.port,
        user=b.user,
        host_keys=b.host_keys,
        proxy_command=access.proxy_command,
        key_block=b.key_block,
        hint=access.describe(cloud or "?"),
    )


def behind(hop: SSHTarget, fixed_ip: str, host_keys: list[str], user: str) -> SSHTarget:
    """A worker reached through its site's hub or spoke."""
    return SSHTarget(host=fixed_ip, user=user, host_keys=host_keys, jump=hop, hint=hop.hint)
