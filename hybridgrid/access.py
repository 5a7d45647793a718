"""How the flows reach a node over SSH: address, login, pinned host keys, and the way in.

Hubs and spokes are reached at their floating IP (through the SSH key block's ProxyCommand
when one is set: a bastion, or localcloud's `localcloud proxy`); workers through their own
site's hub or spoke as a jump host, at their fixed IP. Host keys are always pinned.
"""

from __future__ import annotations

from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.tasks.remote import SSHTarget


def front_door(address: str, host_keys: list[str], key: SSHKey) -> SSHTarget:
    """A node with a public address (master, VPN node)."""
    jump = None
    if key.jump_host:
        juser, jhost, jport = key.jump()  # type: ignore[misc]
        # The bastion's own key must be pinned elsewhere; without pins we refuse (no AutoAdd).
        raise NotImplementedError(
            f"jump_host {jhost}: pin the bastion's host key first — not supported yet; use "
            f"proxy_command 'ssh -W %h:%p {juser}@{jhost} -p {jport}' instead"
        )
    return SSHTarget(
        host=address,
        user=key.user,
        host_keys=host_keys,
        proxy_command=key.proxy_command,
        jump=jump,
    )


def behind(hop: SSHTarget, fixed_ip: str, host_keys: list[str], user: str) -> SSHTarget:
    """A worker reached through its site's hub or spoke."""
    return SSHTarget(host=fixed_ip, user=user, host_keys=host_keys, jump=hop)
