"""add_remote_site — the main job (docs/architecture.md §4): one flow run per remote site.

validate → pre-flight both clouds → allocate (registry, locked) → site network, security
group, key pair and home-side lookups, all at once → VPN node and workers launched together
→ floating IP → UDP 51820 from each peer's /32 → host keys from the console → SSH → the
spoke's key → wg0 on the VPN node, the peer on the master (live, under the hub lock),
allowed-address pairs and routes on workers, at once → with a Slurm home, the site's
partition and its workers as nodes → layered verification (a job at the site last) → registry +
artifacts. The steps are `flows.add_site_steps`; what they know, `flows.site_run`.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from hybridgrid.flows import add_site_steps as step
from hybridgrid.flows import runs
from hybridgrid.flows.checkpoints import checkpoint
from hybridgrid.flows.forms import AddSiteOptions, SiteForm
from hybridgrid.report import SiteSummary
from hybridgrid.sshclient.pool import sharing_connections


class AddSiteResult(BaseModel):
    site: str
    verified: bool
    summary: SiteSummary
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="seconds: total (the flow body), boot_wait (launch until the servers are "
        "ACTIVE and the VPN node has its floating IP)",
    )


def _run_name() -> str:
    return runs.run_name_from("site")


@flow(
    name="add-remote-site",
    flow_run_name=_run_name,
    description="Join a remote OpenStack site to the home cluster over WireGuard (verified).",
    log_prints=False,
)
@sharing_connections  # one SSH connection per node for the whole run, not one per task
async def add_remote_site(site: SiteForm, options: AddSiteOptions | None = None) -> AddSiteResult:
    """Add (or converge) one remote site; the run is named after it.

    Args:
        site: the remote site: name, cloud block, subnet (omit to allocate), flavors, workers
        options: registry, SSH key block, boot timeout, whether to verify
    """
    started = time.monotonic()
    await runs.tag_run("site", site.name)
    calls_before = runs.call_counts()

    request = await step.validate(site, options or AddSiteOptions())
    run = await step.allocate(request, preflight := await step.preflight(request))
    net = await step.network(run, preflight.master)
    servers = await step.launch(run, net)
    host_keys = await step.open_udp(run, net, servers)
    logins = await step.log_in(run, net, servers, host_keys)
    spoke_pub = await step.spoke_key(run, logins)
    link = await step.link(run, net, servers, host_keys, logins, spoke_pub)
    await step.scheduler(run, net, servers, logins)
    summary = await step.verify(run, net, servers, logins, link)
    summary.mutating_calls = runs.calls_since(calls_before)
    checkpoint("verified")
    await step.record(run, summary)

    timings = _timings(started, servers.boot_wait)
    return AddSiteResult(
        site=site.name, verified=summary.verified, summary=summary, timings=timings
    )


def _timings(started: float, boot_wait: float) -> dict[str, float]:
    timings = {"total": round(time.monotonic() - started, 2), "boot_wait": round(boot_wait, 2)}
    get_run_logger().info(
        "Done in %.1f s (servers booting: %.1f s, everything else: %.1f s)",
        timings["total"],
        timings["boot_wait"],
        timings["total"] - timings["boot_wait"],
    )
    return timings


__all__ = ["AddSiteOptions", "AddSiteResult", "SiteForm", "add_remote_site"]
