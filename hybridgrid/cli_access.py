"""`hybridgrid cloud import`'s access options: how the flows reach a cloud's servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hybridgrid.access import JUMP_FORM, Bastion, CloudAccess
from hybridgrid.model import BLOCK_NAME_RE, TopologyError


class AccessOptions(BaseModel):
    """`cloud import`'s access options as given."""

    direct: bool = False
    proxy_command: str | None = None
    bastion: str | None = None
    host_keys: list[str] = []
    key_block: str
    key_file: Path | None = None


def load_credentials(
    name: str, clouds_yaml: Path | None, block: str, options: AccessOptions
) -> tuple[Any, CloudAccess | None]:
    """The clouds.yaml entry as credentials, and the access the options ask for (None: keep
    the block's). Bad input raises TopologyError (or ValueError from the clouds.yaml)."""
    from hybridgrid.blocks.openstack import OpenStackCredentials

    if not BLOCK_NAME_RE.match(block) or len(block) > 63:
        raise TopologyError(
            "--block",
            f"{block!r} is not a valid block name",
            "use lowercase letters, digits and '-' (e.g. giessen)",
        )
    if clouds_yaml is not None and not clouds_yaml.is_file():
        raise TopologyError("--clouds-yaml", f"{clouds_yaml} does not exist", "give the file")
    access = access_from_options(
        direct=options.direct,
        proxy_command=options.proxy_command,
        bastion=options.bastion,
        host_keys=options.host_keys,
        key_block=options.key_block,
    )
    if options.key_file is not None:
        check_key_file(options.key_file)
    return OpenStackCredentials.from_clouds_yaml(name, clouds_yaml), access


async def save_credentials(
    creds: Any, access: CloudAccess | None, block: str, key_file: Path | None, key_block: str
) -> bool:
    """Save the block (with `access`, else an existing block's); True when it replaced one."""
    from hybridgrid.blocks.openstack import OpenStackCredentials

    try:
        old = await OpenStackCredentials.aload(block)
    except Exception:  # not found (or not loadable): it is made
        old = None
    if access is not None:
        creds.access = access
    elif old is not None:
        creds.access = old.access
    if key_file is not None:
        await save_bastion_key(key_file, key_block)
    await creds.asave(block, overwrite=True)
    return old is not None


def access_from_options(
    *,
    direct: bool,
    proxy_command: str | None,
    bastion: str | None,
    host_keys: list[str],
    key_block: str,
) -> CloudAccess | None:
    """The access setting the options ask for; None when they ask for none (keep the old)."""
    if direct and (proxy_command or bastion):
        raise TopologyError(
            "--direct", "--direct with --proxy-command or --bastion", "choose one way in"
        )
    if bastion is None and host_keys:
        raise TopologyError(
            "--bastion-host-key", "a pinned host key without --bastion", "add --bastion USER@HOST"
        )
    if direct:
        return CloudAccess()
    if proxy_command is None and bastion is None:
        return None
    try:
        return CloudAccess(
            proxy_command=proxy_command,
            bastion=_bastion(bastion, host_keys, key_block) if bastion else None,
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        raise TopologyError(
            "--" + "-".join(str(p).replace("_", "-") for p in err["loc"][-1:]),
            err["msg"].removeprefix("Value error, "),
            "fix the option's value",
        ) from None


def _bastion(spec: str, host_keys: list[str], key_block: str) -> Bastion:
    m = JUMP_FORM.match(spec)
    if not m or not m["user"]:
        raise TopologyError(
            "--bastion", f"{spec!r} is not USER@HOST[:PORT]", "e.g. jump@bastion.example"
        )
    if not host_keys:
        raise TopologyError(
            "--bastion-host-key",
            f"no host key pinned for the bastion {m['host']}",
            "pass its key line, e.g. from `ssh-keyscan -t ed25519 HOST` checked with the operator",
        )
    return Bastion(
        host=m["host"],
        port=int(m["port"] or 22),
        user=m["user"],
        host_keys=host_keys,
        key_block=key_block,
    )


def check_key_file(path: Path) -> None:
    """A private key file the bastion login key can be read from: there, and 0600."""
    if not path.is_file():
        raise TopologyError("--bastion-key-file", f"{path} does not exist", "give the key file")
    if path.stat().st_mode & 0o077:
        raise TopologyError(
            "--bastion-key-file", f"{path} is readable by others", f"chmod 600 {path}"
        )


async def save_bastion_key(path: Path, block: str) -> None:
    """The bastion login key from `path` as SSHKey block `block` (its text never reaches an
    error message: the block validates it with hide_input_in_errors)."""
    from hybridgrid.blocks.ssh import SSHKey

    await SSHKey(private_key=path.read_text()).asave(block, overwrite=True)


def saved_line(creds: Any, block: str, existed: bool) -> str:
    """What was saved, without a secret: the endpoint, project, who logs in, the access."""
    who = (
        f"user {creds.username}"
        if creds.username
        else f"application credential {creds.application_credential_id}"
    )
    return (
        f"{'replaced' if existed else 'saved'} block {block!r} (OpenStack Credentials): "
        f"{creds.auth_url}, region {creds.region_name or '-'}, "
        f"project {creds.project_name or creds.project_id or '-'}, {who}; "
        f"SSH access: {creds.access.mode}"
    )
