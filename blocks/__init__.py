"""hybridgrid's Prefect blocks; `prefect block register -m hybridgrid.blocks` registers them.

`OpenStackCredentials` (a cloud's credentials and its way in, `access`: docs/architecture.md
§6), `SSHKey` (an SSH identity) and `SiteRegistry` (docs/architecture.md §7). Tasks and flows
take block *names*, so no secret is a task parameter, result or log line. `registry.py` also
holds the locked update; the registry's data models (`RegistryData`, `HomeEntry`,
`SiteEntry`, `Verification`) live in the core (`hybridgrid.registry_data`) and are
re-exported here.

May import: the core (`hybridgrid.model`, `hybridgrid.access`), Prefect, openstacksdk
(`openstack.py` builds the connection), asyncssh; never `hybridgrid.flows`. Today
`blocks/ssh.py` also imports `hybridgrid.tasks.sshkeys` (a blocks → tasks edge the target
removes).
"""

from hybridgrid.blocks.openstack import OpenStackCredentials
from hybridgrid.blocks.registry import SiteRegistry
from hybridgrid.blocks.ssh import SSHKey

__all__ = ["OpenStackCredentials", "SSHKey", "SiteRegistry"]
