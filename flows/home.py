"""The registry's view of the home: `ReadyHome` (a home the flows can work with — its master,
the master's SSH key block and pinned host key are known), the topology it implies, and the
master's facts on the home cloud."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from hybridgrid.blocks import loading as clouds
from hybridgrid.cloudops.finder import read
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite, Topology, TopologyError
from hybridgrid.registry_data import HomeEntry, RegistryData
from hybridgrid.tasks import site_tasks as st


class ReadyHome(HomeEntry):
    """A registered home whose master, SSH key block and master host key are recorded (what
    `require_home` checked), so the flows need not check them again."""

    master: str = Field(description="the hub server's name (adopted or created)")
    ssh_key_block: str = Field(description="SSHKey block that logs into the master")

    @property
    def master_host_keys(self) -> list[str]:
        return self.host_keys[self.master]


def require_home(data: RegistryData, registry: str) -> ReadyHome:
    """The registry's home, or a `TopologyError` saying which flow to run first."""
    home = data.home
    if home is None or home.master is None or home.ssh_key_block is None:
        raise TopologyError(
            "home",
            f"registry {registry!r} has no home cluster",
            "run the bootstrap-home flow first (hybridgrid home bootstrap SPEC)",
        )
    if home.master not in home.host_keys:
        raise TopologyError(
            "home.master",
            f"no pinned host key for the master {home.master}",
            "rerun bootstrap-home so the master's host key is pinned",
        )
    return ReadyHome.model_validate(home.model_dump())


def topology_for(data: RegistryData, home: ReadyHome, sites: list[RemoteSite]) -> Topology:
    """The topology the registry implies for `sites` (what `model.plan` resolves them in)."""
    return Topology(
        wireguard=data.wireguard,
        home=HomeSite(
            name=home.name,
            cloud=home.cloud,
            master=MasterSpec(name=home.master),
            subnet=home.subnet,
            wg_address=home.wg_address,
            listen_port=home.listen_port,
            external_network=home.external_network,
        ),
        site_pool=data.site_pool,
        sites=sites,
    )


async def master_with_floating_ip(
    home: ReadyHome, master: st.NodeFacts | None = None
) -> st.NodeFacts:
    """The master's port, fixed and floating IP and network MTU (a floating IP is allocated,
    tagged as the home's, when the adopted master has none). `master`: facts already read."""
    master = master or await st.lookup_node(home.cloud, home.master)
    if master.floating_ip is None:
        fip = await st.ensure_floating_ip(
            home.cloud, home.name, master.port_id, home.external_network
        )
        master = master.model_copy(update={"floating_ip": fip.address})
    return master


async def home_workers(cloud: str, master: st.NodeFacts) -> list[str]:
    """An adopted cluster's workers: the other servers on the master's network."""

    def find(conn: Any) -> list[str]:
        ids = {
            p.device_id
            for p in read(conn.network.ports, network_id=master.network_id)
            if (p.device_owner or "").startswith("compute:") and p.device_id != master.server_id
        }
        return sorted(read(conn.compute.get_server, i).name for i in ids)

    return await asyncio.to_thread(find, clouds.connection(cloud))
