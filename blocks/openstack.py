"""OpenStack credentials as a Prefect block, and the connection built from them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from hybridgrid.access import CloudAccess
from hybridgrid.blocks._secret import wrap_secrets

if TYPE_CHECKING:
    import openstack.connection


_SECRETS = ("password", "application_credential_secret")


class OpenStackCredentials(Block):
    """Keystone v3 credentials of one cloud: a password or an application credential.

    ``connect()`` builds an ``openstack.connection.Connection`` from these fields only (no
    clouds.yaml or ``OS_*`` variables leak in) and makes no API call until it is used.
    """

    _block_type_name = "OpenStack Credentials"
    _block_type_slug = "hybridgrid-openstack-credentials"
    _description = (
        "Keystone v3 credentials (password or application credential) of one OpenStack cloud, "
        "used by hybridgrid to build an openstacksdk connection."
    )
    # No _logo_url: the UI would load it from the internet wherever the block is shown.
    # Never echo a rejected value (it may be the secret) in a validation error's text.
    model_config = ConfigDict(hide_input_in_errors=True)

    auth_url: str = Field(description="Keystone endpoint, e.g. https://keystone.example:5000/v3")
    region_name: str | None = Field(None, description="region, e.g. RegionOne")
    interface: Literal["public", "internal", "admin"] = "public"
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    username: str | None = Field(None, description="with password")
    password: SecretStr | None = Field(None, description="with username")
    application_credential_id: str | None = Field(None, description="with its secret")
    application_credential_secret: SecretStr | None = Field(None, description="with its id")
    cacert: str | None = Field(None, description="path of a CA bundle for the API's TLS")
    verify: bool = Field(True, description="verify the API's TLS certificate")
    access: CloudAccess = Field(
        default_factory=CloudAccess,
        description="how hybridgrid reaches this cloud's servers over SSH: direct, an OpenSSH "
        "ProxyCommand, or a bastion with a pinned host key",
    )

    @model_validator(mode="before")
    @classmethod
    def _mask(cls, data: Any) -> Any:
        return wrap_secrets(data, _SECRETS)

    @model_validator(mode="after")
    def _one_auth_method(self) -> OpenStackCredentials:
        has_password = self.username is not None or self.password is not None
        has_appcred = (
            self.application_credential_id is not None
            or self.application_credential_secret is not None
        )
        fix = "set username + password, or application_credential_id + _secret, not both"
        if has_password and has_appcred:
            raise ValueError(f"both a password and an application credential are set: {fix}")
        if not (has_password or has_appcred):
            raise ValueError(f"no credentials are set: {fix}")
        if has_password and (self.username is None or self.password is None):
            missing = "password" if self.password is None else "username"
            raise ValueError(f"{missing} is missing: a password login needs username and password")
        if has_appcred and (
            self.application_credential_id is None or self.application_credential_secret is None
        ):
            missing = (
                "application_credential_secret"
                if self.application_credential_secret is None
                else "application_credential_id"
            )
            raise ValueError(f"{missing} is missing: an application credential needs id and secret")
        return self

    @property
    def auth_type(self) -> str:
        return "password" if self.password is not None else "v3applicationcredential"

    def _auth(self) -> dict[str, str]:
        auth: dict[str, Any] = {"auth_url": self.auth_url}
        if self.password is not None:
            auth |= {
                "username": self.username,
                "password": self.password.get_secret_value(),
                "project_name": self.project_name,
                "project_id": self.project_id,
                "project_domain_name": self.project_domain_name,
                "project_domain_id": self.project_domain_id,
                "user_domain_name": self.user_domain_name,
                "user_domain_id": self.user_domain_id,
            }
        else:
            assert self.application_credential_secret is not None
            auth |= {
                "application_credential_id": self.application_credential_id,
                "application_credential_secret": (
                    self.application_credential_secret.get_secret_value()
                ),
            }
        return {k: v for k, v in auth.items() if v is not None}

    def connect(self) -> openstack.connection.Connection:
        """An openstacksdk connection; authenticates lazily on its first request."""
        import openstack.config
        import openstack.connection

        options: dict[str, Any] = {
            "auth_type": self.auth_type,
            "auth": self._auth(),
            "interface": self.interface,
            "identity_api_version": "3",
            "verify": self.verify,
        }
        if self.region_name:
            options["region_name"] = self.region_name
        if self.cacert:
            options["cacert"] = self.cacert
        region = openstack.config.get_cloud_region(
            load_yaml_config=False, load_envvars=False, app_name="hybridgrid", **options
        )
        return openstack.connection.Connection(config=region)

    # ---- constructors from the usual places --------------------------------------------------

    @classmethod
    def _from_cloud_config(cls, config: dict[str, Any], where: str) -> OpenStackCredentials:
        auth = dict(config.get("auth") or {})
        auth_type = config.get("auth_type") or "password"
        if auth_type not in ("password", "v3password", "v3applicationcredential"):
            raise ValueError(
                f"{where}: auth_type {auth_type!r} is not supported; use password or "
                "v3applicationcredential"
            )
        if not auth.get("auth_url"):
            raise ValueError(f"{where}: auth_url is missing; add auth.auth_url")
        verify = config.get("verify", True)
        fields = {
            "auth_url": auth.get("auth_url"),
            "region_name": config.get("region_name") or None,
            "interface": config.get("interface") or "public",
            "project_name": auth.get("project_name"),
            "project_id": auth.get("project_id"),
            "project_domain_name": auth.get("project_domain_name"),
            "project_domain_id": auth.get("project_domain_id"),
            "user_domain_name": auth.get("user_domain_name"),
            "user_domain_id": auth.get("user_domain_id"),
            "username": auth.get("username"),
            "password": auth.get("password"),
            "application_credential_id": auth.get("application_credential_id"),
            "application_credential_secret": auth.get("application_credential_secret"),
            "cacert": config.get("cacert") or None,
            "verify": verify if isinstance(verify, bool) else str(verify).lower() != "false",
        }
        if config.get("insecure") in (True, "true", "True", "1"):
            fields["verify"] = False
        # Pre-wrapped secrets stay masked even in a rejected entry's error details.
        return cls(**wrap_secrets({k: v for k, v in fields.items() if v is not None}, _SECRETS))

    @classmethod
    def from_clouds_yaml(
        cls,
        name: str,
        path: str | os.PathLike | None = None,
        access: CloudAccess | None = None,
    ):
        """An entry of clouds.yaml (and secure.yaml), found as openstacksdk finds it, with
        `access` (how its servers are reached; default direct).

        Without ``path`` the usual locations apply, including ``OS_CLIENT_CONFIG_FILE``.
        """
        from openstack import exceptions
        from openstack.config import loader

        # load_envvars=False keeps stray OS_* variables out of the entry, but also turns off
        # openstacksdk's own OS_CLIENT_CONFIG_FILE / OS_CLIENT_SECURE_FILE lookup: do it here.
        files, secure = list(loader.CONFIG_FILES), list(loader.SECURE_FILES)
        if os.environ.get("OS_CLIENT_CONFIG_FILE"):
            files.insert(0, os.environ["OS_CLIENT_CONFIG_FILE"])
        if os.environ.get("OS_CLIENT_SECURE_FILE"):
            secure.insert(0, os.environ["OS_CLIENT_SECURE_FILE"])
        if path is not None:
            files = [str(path)]
        config = loader.OpenStackConfig(config_files=files, secure_files=secure, load_envvars=False)
        known = sorted(config.get_cloud_names())
        if name not in known:
            files = config.config_filename or "no clouds.yaml found"
            raise ValueError(
                f"clouds.yaml has no cloud named {name!r} (known: {', '.join(known) or 'none'}; "
                f"file: {files}); fix the name or point OS_CLIENT_CONFIG_FILE at the right file"
            )
        try:
            region = config.get_one(cloud=name, validate=False)
        except exceptions.ConfigException as exc:
            raise ValueError(f"clouds.yaml entry {name!r} is invalid: {exc}") from None
        creds = cls._from_cloud_config(region.config, f"clouds.yaml entry {name!r}")
        if access is not None:
            creds.access = access
        return creds

    @classmethod
    def from_env(cls):
        """The standard ``OS_*`` variables (an openrc file), as openstacksdk reads them."""
        from openstack.config.loader import OpenStackConfig

        if not os.environ.get("OS_AUTH_URL"):
            raise ValueError("OS_AUTH_URL is not set; source your openrc file first")
        config = OpenStackConfig(load_yaml_config=False, load_envvars=True)
        region = config.get_one(cloud=config.envvar_key)
        return cls._from_cloud_config(region.config, "OS_* environment")
