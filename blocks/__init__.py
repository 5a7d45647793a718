"""hybridgrid's Prefect blocks; `prefect block register -m hybridgrid.blocks` registers them."""

from hybridgrid.blocks.openstack import OpenStackCredentials
from hybridgrid.blocks.registry import SiteRegistry
from hybridgrid.blocks.ssh import SSHKey

__all__ = ["OpenStackCredentials", "SSHKey", "SiteRegistry"]
