"""hybridgrid's Prefect blocks; `prefect block register -m hybridgrid.blocks` registers them.

`OpenStackCredentials` (a cloud's credentials and its way in, `access`: docs/architecture.md
§6), `SSHKey` (an SSH identity) and `SiteRegistry` (docs/architecture.md §7). Tasks and flows
take block *names*, so no secret is a task parameter, result or log line. `registry.py` also
holds, today, the registry's data models (`RegistryData`, `HomeEntry`, `SiteEntry`) and its
locked update; the target (issue 16) moves the data models into the core.

May import: the core (`hybridgrid.model`, `hybridgrid.access`), Prefect, openstacksdk
(`openstack.py` builds the connection), asyncssh; never `hybridgrid.flows`. Today
`blocks/ssh.py` also imports `hybridgrid.tasks.sshkeys` (a blocks → tasks edge the target
removes).
"""

from hybridgrid.blocks.openstack import OpenStackCredentials
from hybridgrid.blocks.registry import SiteRegistry
from hybridgrid.blocks.ssh import SSHKey

__all__ = ["OpenStackCredentials", "SSHKey", "SiteRegistry"]
