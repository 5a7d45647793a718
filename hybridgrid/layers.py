"""The verification layers of a site's link and their verdicts (plain data): api objects →
wg0 → handshake → overlay ping → worker ping → MTU → job (a Slurm job at the site, when the
home runs Slurm). `hybridgrid.tasks.verify` and `.slurm_tasks` compute them; the run summary
(`hybridgrid.report`) shows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Layer = Literal["api", "wireguard", "handshake", "overlay ping", "worker ping", "mtu", "job"]


class LayerResult(BaseModel):
    layer: Layer
    ok: bool | None  # None: not applicable (e.g. no workers)
    detail: str = ""
    problems: list[str] = Field(default_factory=list)

    @property
    def mark(self) -> str:
        return {True: "ok", False: "FAILED", None: "n/a"}[self.ok]
