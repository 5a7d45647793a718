"""hybridgrid: join OpenStack sites to a home cluster over WireGuard, as Prefect flows."""
