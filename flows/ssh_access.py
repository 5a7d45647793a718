"""How the flows log into servers: the SSHKey blocks (found, or made once), the pinned host
keys of a site's servers, and a node's front door (its cloud's way in)."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.exceptions import ObjectNotFound

from hybridgrid.access import front_door
from hybridgrid.blocks import loading as clouds
from hybridgrid.blocks.loading import ssh_key, use_ssh_key
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.registry_data import RegistryData
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks import node_tasks as nodes


async def find_ssh_key(block: str) -> SSHKey | None:
    """The SSHKey block `block`, or None when no such block exists. A block that exists but
    holds no usable key raises `SSHKeyBlockError` (cause and fix): read-only, so a run can
    check its key blocks before it reserves or creates anything."""
    try:
        return await ssh_key(block)
    except ObjectNotFound:
        return None
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            return None
        raise


async def make_ssh_key(block: str, user: str) -> SSHKey:
    """A new ed25519 pair saved as SSHKey block `block` (never overwrites one)."""
    key = SSHKey.generate(user=user, comment=block)
    await key.asave(block, overwrite=False)
    use_ssh_key(block, key)
    get_run_logger().info("Made SSH key pair %s (ed25519) and saved it as a block", block)
    return key


async def ensure_ssh_key(block: str, user: str) -> SSHKey:
    """The SSHKey block `block`; made (ed25519) and saved when it does not exist yet."""
    return await find_ssh_key(block) or await make_ssh_key(block, user)


def door(cloud: str, address: str, host_keys: list[str], key: SSHKey) -> SSHTarget:
    """A master or VPN node at its public address, reached the way its cloud says
    (credentials block `cloud`'s `access`: direct, ProxyCommand or bastion)."""
    return front_door(address, host_keys, key, clouds.access(cloud), cloud)


async def host_keys(
    data: RegistryData, site: str, cloud: str, server_id: str, name: str, role: str
) -> list[str]:
    """Pinned host keys: the registry's, while the server is the one they were pinned for
    (never re-pinned silently); read from the console for a new or replaced server."""
    entry = data.sites.get(site)
    if entry and entry.resource_ids.get(role) == server_id and entry.host_keys.get(name):
        return entry.host_keys[name]
    return await nodes.pin_host_keys(cloud, server_id, name)
