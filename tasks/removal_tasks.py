"""Tasks the removal of a site needs beyond `site_tasks`: routes off the home workers, the
site's key pair (only when it holds our key) and the SSHKey block hybridgrid made for it.
Each is idempotent: a rerun after a failure finds nothing left to do and succeeds."""

from __future__ import annotations

import asyncio
import ipaddress
from ipaddress import IPv4Address, IPv4Network

from prefect import task
from prefect.exceptions import ObjectNotFound

from hybridgrid.blocks.loading import connection, forget_ssh_key
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.cloudops import keypairs
from hybridgrid.records import KeypairRecord
from hybridgrid.retry.policy import TRANSIENT
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks.node_tasks import session
from hybridgrid.wireguard.commands import routes_command


def route_del_command(
    routes: list[IPv4Network],
    via: IPv4Address,
    keep: list[IPv4Network] | None = None,
    *,
    name: str = "hybridgrid",
) -> str:
    """Delete exactly these routes via `via` (absent ones are fine) and make the persisted
    routes match: rewritten with `keep` (what other sites still need), or the drop-ins
    `routes_command` wrote removed when nothing is left. Prints how many routes went."""
    gw = str(ipaddress.IPv4Address(via))
    lines = [
        f"if ip route del {IPv4Network(r)} via {gw} 2>/dev/null; then n=$((n+1)); fi"
        for r in routes
    ]
    if keep:
        persist = f"( {routes_command(keep, via, name=name)} ) >/dev/null"
    else:
        persist = f"rm -f /etc/netplan/90-{name}.yaml /etc/systemd/network/*.d/90-{name}.conf"
    return "n=0\n" + "\n".join(lines) + f"\n{persist}\n" + 'echo "$n"\n'


@task(task_run_name="remove routes on {target.label}", **TRANSIENT)
async def remove_routes(
    target: SSHTarget,
    key_block: str,
    routes: list[IPv4Network],
    via: IPv4Address,
    keep: list[IPv4Network] | None = None,
) -> int:
    async with session(target, key_block) as host:
        res = await host.run(route_del_command(routes, via, keep), name="ip route del")
        return int(res.stdout.strip().splitlines()[-1])


@task(task_run_name="key pair {name} on {cloud}", **TRANSIENT)
async def remove_keypair(cloud: str, name: str, key_block: str) -> KeypairRecord:
    """Delete the key pair when it holds the public key of `key_block`; a key pair someone
    else uploaded under the name stays. Without the block there is no proof: it stays."""
    try:
        key = await SSHKey.aload(key_block)
    except (ValueError, ObjectNotFound):
        return KeypairRecord(name=name, action="absent")
    return await asyncio.to_thread(keypairs.remove_keypair, connection(cloud), name, key.public_key)


@task(task_run_name="delete SSHKey block {name}", **TRANSIENT)
async def delete_ssh_key_block(name: str) -> bool:
    """True when the block existed and is gone now."""
    forget_ssh_key(name)
    try:
        await SSHKey.adelete(name)
    except (ValueError, ObjectNotFound):
        return False
    return True
