"""The SSH identity the flows log in with, as a Prefect block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from hybridgrid.access import JUMP_FORM
from hybridgrid.blocks._secret import wrap_secrets
from hybridgrid.sshclient.keys import generate_ssh_keypair, load_private_key, public_key_of

if TYPE_CHECKING:
    import asyncssh

_JUMP = JUMP_FORM


class SSHKey(Block):
    """A private key (OpenSSH or PEM, unencrypted) and the login user.

    How servers are reached is the cloud's setting (``OpenStackCredentials.access``: direct,
    a ProxyCommand or a bastion), not the key's. ``proxy_command`` here is kept for blocks made
    before that: it is used only on a cloud whose access is direct. ``jump_host`` is refused
    at use (a bastion needs a pinned host key: set the cloud's ``access.bastion``).
    """

    _block_type_name = "hybridgrid SSH Key"
    _block_type_slug = "hybridgrid-ssh-key"
    _description = (
        "SSH private key and login user that hybridgrid uses to configure VPN nodes and "
        "workers (how they are reached is the cloud's access setting)."
    )
    # Never echo a rejected value (it may be the key) in a validation error's text.
    model_config = ConfigDict(hide_input_in_errors=True)

    private_key: SecretStr = Field(description="unencrypted OpenSSH or PEM private key")
    public_key: str | None = Field(None, description="derived from the private key when empty")
    user: str = Field("ubuntu", description="login user on the servers")
    jump_host: str | None = Field(
        None, description="not used: set the cloud's access.bastion (pinned host key) instead"
    )
    proxy_command: str | None = Field(
        None,
        description="older blocks only, used on clouds whose access is direct: set the "
        "cloud's access.proxy_command instead",
    )

    @model_validator(mode="before")
    @classmethod
    def _mask(cls, data: Any) -> Any:
        return wrap_secrets(data, ("private_key",))

    @field_validator("private_key")
    @classmethod
    def _is_a_key(cls, v: SecretStr) -> SecretStr:
        load_private_key(v)  # SSHKeyError (a ValueError) with a message that never quotes it
        return v

    @field_validator("jump_host")
    @classmethod
    def _jump(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _JUMP.match(v)
        if not m or (m["port"] and not 1 <= int(m["port"]) <= 65535):
            raise ValueError(f"jump_host {v!r} is not of the form [user@]host[:port]")
        return v

    @field_validator("proxy_command")
    @classmethod
    def _proxy(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\n" in v or "\r" in v):
            raise ValueError("proxy_command must be one non-empty line, e.g. 'nc %h %p'")
        return v

    @model_validator(mode="after")
    def _public_matches(self) -> SSHKey:
        derived = public_key_of(self.private_key)
        if self.public_key is None:
            self.public_key = derived
        elif self.public_key.split()[:2] != derived.split()[:2]:
            raise ValueError(
                "public_key does not belong to private_key; leave public_key empty to derive it"
            )
        return self

    @classmethod
    def generate(cls, user: str = "ubuntu", comment: str = "hybridgrid", **kwargs) -> SSHKey:
        """A fresh ed25519 pair, for sites whose operator brings no key."""
        pair = generate_ssh_keypair(comment)
        return cls(private_key=pair.private_key, public_key=pair.public_key, user=user, **kwargs)

    def asyncssh_key(self) -> asyncssh.SSHKey:
        return load_private_key(self.private_key)

    def jump(self) -> tuple[str, str, int] | None:
        """(user, host, port) of the jump host, or None."""
        if self.jump_host is None:
            return None
        m = _JUMP.match(self.jump_host)
        assert m is not None  # validated
        return (m["user"] or self.user, m["host"].strip("[]"), int(m["port"] or 22))
