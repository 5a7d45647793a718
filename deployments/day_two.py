"""The day-two deployments as catalog entries (mirror of deployments/day_two.yaml), for the
lead to splice into `catalog.DEPLOYMENTS` (`DEPLOYMENTS += DAY_TWO`)."""

from __future__ import annotations

from hybridgrid.deployments.catalog import TAG, DeploymentSpec

DAY_TWO: list[DeploymentSpec] = [
    DeploymentSpec(
        name="check-drift",
        entrypoint="flows/check_drift.py:check_drift",
        description=(
            "Compare every registered site with its desired state, concurrently; publishes a "
            "site × check table and fails on drift. Run with repair=true to converge drifted "
            "sites with the add-site flow."
        ),
        tags=[TAG, "drift"],
        cron="*/15 * * * *",
        parameters={"repair": False},
    ),
    DeploymentSpec(
        name="remove-remote-site",
        entrypoint="flows/remove_remote_site.py:remove_remote_site",
        description=(
            "Remove a remote site: peer off the master live, home-side pairs, rules and "
            "routes, then its tagged resources, key pair, SSH key block and registry entry. "
            "Safe to rerun."
        ),
        tags=[TAG, "site"],
    ),
    DeploymentSpec(
        name="rotate-keys",
        entrypoint="flows/rotate_keys.py:rotate_keys",
        description=(
            "New WireGuard keys for a site's VPN node (hub=true: the master's too), confirmed "
            "by a fresh handshake or rolled back; the old private key is deleted."
        ),
        tags=[TAG, "site"],
    ),
]
