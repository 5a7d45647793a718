"""The deployments hybridgrid offers, in one list that `prefect.yaml` mirrors and `serve` uses.

`prefect.yaml` (for `prefect deploy --all` + a process worker) and `serve.py` (one process, no
worker) must offer the same deployments (`all_deployments()`); tests/e2e/test_deployments.py
checks that they agree. The day-two entries live in deployments/day_two.py.
"""

from __future__ import annotations

import importlib

from pydantic import BaseModel, Field

POOL = "hybridgrid"  # the process work pool of prefect.yaml
TAG = "hybridgrid"


class DeploymentSpec(BaseModel):
    name: str = Field(description="deployment name (the flow's name, too)")
    entrypoint: str = Field(description="path:function from the project root, as in prefect.yaml")
    description: str
    tags: list[str] = Field(default_factory=lambda: [TAG])
    cron: str | None = Field(None, description="schedule, if any (UTC)")
    parameters: dict = Field(default_factory=dict, description="defaults for scheduled runs")

    @property
    def module(self) -> str:
        """`flows/add_remote_site.py:…` → `hybridgrid.flows.add_remote_site` (installed name)."""
        path = self.entrypoint.split(":", 1)[0].removesuffix(".py")
        return "hybridgrid." + path.replace("/", ".")

    def load_flow(self):
        fn = self.entrypoint.split(":", 1)[1]
        return getattr(importlib.import_module(self.module), fn)


DEPLOYMENTS: list[DeploymentSpec] = [
    DeploymentSpec(
        name="add-remote-site",
        entrypoint="flows/add_remote_site.py:add_remote_site",
        description=(
            "Join a remote OpenStack site to the home cluster over WireGuard: network, VPN "
            "node and workers, keys, peers, pairs, routes, layered verification. Rerun to "
            "converge; a finished site makes no change."
        ),
        tags=[TAG, "site"],
    ),
    DeploymentSpec(
        name="bootstrap-home",
        entrypoint="flows/bootstrap_home.py:bootstrap_home",
        description=(
            "Create the home cluster (network, master, workers) or adopt an existing master "
            "by name; pin its host key, make its WireGuard key, record it in the registry."
        ),
        tags=[TAG, "home"],
    ),
]


def all_deployments() -> list[DeploymentSpec]:
    """The main job's deployments and the day-two ones (deployments/day_two.py: check-drift
    every 15 minutes, remove-remote-site, rotate-keys), as prefect.yaml lists them."""
    from hybridgrid.deployments.day_two import DAY_TWO

    names = {d.name for d in DEPLOYMENTS}
    return [*DEPLOYMENTS, *(d for d in DAY_TWO if d.name not in names)]


def by_name(name: str) -> DeploymentSpec:
    for d in all_deployments():
        if d.name == name:
            return d
    raise KeyError(name)
