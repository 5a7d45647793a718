"""hybridgrid's Prefect blocks; `prefect block register -m hybridgrid.blocks` registers them.

`OpenStackCredentials` (a cloud's credentials and its way in, `access`: docs/architecture.md
§6), `SSHKey` (an SSH identity) and `SiteRegistry` (docs/architecture.md §7) with its locked
update; `loading` finds blocks by name and caches them per process (connections, keys). Tasks
and flows take block *names*, so no secret is a task parameter, result or log line. The
registry's data models (`RegistryData`, `HomeEntry`, `SiteEntry`) are the core's
(`hybridgrid.registry_data`).

May import: the libraries (`hybridgrid.cloudops`, `.sshclient`, `.retry`), the core, Prefect,
openstacksdk (`openstack.py` builds the connection), asyncssh; never the tasks, flows,
deployments or the CLI (tests/test_import_contract.py checks it).
"""

from hybridgrid.blocks.openstack import OpenStackCredentials
from hybridgrid.blocks.registry import SiteRegistry
from hybridgrid.blocks.ssh import SSHKey

__all__ = ["OpenStackCredentials", "SSHKey", "SiteRegistry"]
