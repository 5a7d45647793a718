"""check_drift — scheduled (docs/architecture.md §5): every registered site, concurrently,
desired against actual; one table artifact (site × check) and a markdown summary; Failed on
drift.

With `repair=True` a drifted site is converged by the add-site flow itself (run as a subflow
with the site's recorded spec: no second code path), plus the one thing add-site never does:
deleting rules the site added that no longer belong to it (UDP from a floating IP the peer
lost). Then everything is checked again and reported.
"""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger

from hybridgrid import desired, naming
from hybridgrid.blocks.loading import connection
from hybridgrid.blocks.registry import DEFAULT_REGISTRY, load_registry
from hybridgrid.changes import compare
from hybridgrid.cloudops import security_groups as ops
from hybridgrid.drift import DriftReport, SiteDrift, desired_site
from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
from hybridgrid.flows.home import ReadyHome, require_home, topology_for
from hybridgrid.model import ResolvedSite, TopologyError, plan
from hybridgrid.registry_data import RegistryData
from hybridgrid.tasks import drift_tasks as dt


class DriftFound(RuntimeError):
    """The check found drift (and repair was off or did not converge). One line per site."""

    def __init__(self, report: DriftReport):
        self.report = report
        lines = report.lines()
        super().__init__(
            f"drift in {len(lines)} site(s) of registry {report.registry}:\n" + "\n".join(lines)
        )

    def __reduce__(self):  # picklable with its report (Prefect may persist the exception)
        return (DriftFound, (self.report,))


def artifact_key(registry: str) -> str:
    """`hybridgrid-drift` for the default registry, `hybridgrid-drift-<registry>` otherwise."""
    return "hybridgrid-drift" if registry == DEFAULT_REGISTRY else f"hybridgrid-drift-{registry}"


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    what = ",".join(p.get("sites") or []) or "all sites"
    return f"drift {what}" + (" (repair)" if p.get("repair") else "")


@flow(
    name="check-drift",
    flow_run_name=_run_name,
    description="Compare every registered site with its desired state; repair=True converges "
    "drifted sites with the add-site flow.",
)
async def check_drift(
    repair: bool = False, sites: list[str] | None = None, registry: str = DEFAULT_REGISTRY
) -> DriftReport:
    log = get_run_logger()
    data = await load_registry(registry)
    home = require_home(data, registry)
    names = _select(data, sites, registry)
    report = await check_sites(data, home, names, registry)
    report.repair = repair
    for line in report.lines():
        log.warning("%s", line)
    if report.drifted and repair:
        drifted = [s.site for s in report.sites if s.drifted]
        log.info("Repairing %s with the add-site flow", ", ".join(drifted))
        outcomes = await asyncio.gather(*(_repair(data, home, s, registry) for s in drifted))
        before = report.lines()
        data = await load_registry(registry)
        report = await check_sites(data, require_home(data, registry), names, registry)
        report.repair, report.before = True, before
        report.repaired = dict(zip(drifted, outcomes, strict=True))
    await publish(report)
    if report.drifted:
        raise DriftFound(report)
    log.info("No drift in %d site(s)", len(report.sites))
    return report


def _select(data: RegistryData, sites: list[str] | None, registry: str) -> list[str]:
    if not sites:
        return sorted(data.sites)
    unknown = sorted(set(sites) - set(data.sites))
    if unknown:
        raise TopologyError(
            "sites",
            f"{', '.join(unknown)} not registered in registry {registry!r}",
            f"choose from {', '.join(sorted(data.sites)) or '(none registered)'}",
        )
    return sorted(set(sites))


# ---------------------------------------------------------------- the check


async def check_sites(
    data: RegistryData, home: ReadyHome, names: list[str], registry: str
) -> DriftReport:
    """Observe the hub side and every site at once, then judge each site (pure)."""
    p = await dt.probes(data, names)
    home_obs, site_obs = await dt.observe(p.home, p.host_keys, p.sites, len(p.sites))
    sites: list[SiteDrift] = []
    for name, (api, nodes) in zip(names, site_obs, strict=True):
        entry = data.sites[name]
        if _resolved(data, home, name) is None or not entry.spoke_public_key:
            sites.append(_incomplete(name))
            continue
        want = desired_site(data, name, home=home_obs, api=api)
        sites.append(compare(want, home_obs, api, nodes))
    return DriftReport(registry=registry, sites=sites)


def _resolved(data: RegistryData, home: ReadyHome, name: str) -> ResolvedSite | None:
    entry = data.sites[name]
    if entry.spec is None:
        return None
    topo = topology_for(data, home, [entry.spec])
    return plan(topo, data.allocations()).site(name)


def _incomplete(name: str) -> SiteDrift:
    from hybridgrid.drift import CHECKS, CheckResult

    why = "the site was never completely added (no spec or spoke key in the registry)"
    return SiteDrift(
        site=name,
        results=[CheckResult(check=c, ok=False, differs=[why]) for c in CHECKS],
    )


# ---------------------------------------------------------------- repair


async def _repair(data: RegistryData, home: ReadyHome, site: str, registry: str) -> str:
    """Converge one site with the add-site flow, then drop the site's stale rules."""
    entry = data.sites[site]
    if entry.spec is None:
        return "not repaired: the registry has no spec for this site (rerun add-site)"
    await _forget_redirects(data, home, site)
    state = await add_remote_site(
        entry.spec,
        AddSiteOptions(registry=registry, ssh_key_block=entry.ssh_key_block),
        return_state=True,
    )
    outcome = "add-site run completed" if state.is_completed() else f"add-site {state.name}"
    if not state.is_completed():
        outcome += f": {state.message or ''}"[:300]
    removed = await _remove_stale_rules(site, registry)
    if removed:
        outcome += f"; removed {removed} stale rule(s)"
    return outcome


async def _forget_redirects(data: RegistryData, home: ReadyHome, site: str) -> None:
    """Workers on both sides may hold ICMP-redirect routes learnt while the link was down
    (the hub/spoke sent them to the cloud router); add-site's routes do not clear those."""
    entry = data.sites[site]

    def lookup() -> tuple[dict[str, str], list[str], list[str]]:
        hconn, sconn = connection(home.cloud), connection(entry.cloud)
        ips = dt._worker_ips(hconn, home.workers)
        return (
            ips,
            dt._fips(hconn, home.resource_ids.get("master-port")),
            dt._fips(sconn, entry.resource_ids.get("vpn-port")),
        )

    try:
        ips, master_fips, vpn_fips = await asyncio.to_thread(lookup)
    except Exception:  # best effort: add-site reports what is still broken
        return
    probe = dt.site_probe(data, site, None).node
    hprobe = dt.home_probe(data, [site]).node
    probe.addresses = vpn_fips + probe.addresses
    hprobe.addresses = master_fips + hprobe.addresses
    hprobe.workers = [
        dt.WorkerProbe(name=n, fixed_ip=ip, host_keys=home.host_keys.get(n, []))
        for n, ip in ips.items()
    ]
    jobs = [dt.flush_route_cache(p) for p in (probe, hprobe) if p.addresses and p.workers]
    await asyncio.gather(*jobs, return_exceptions=True)


async def _remove_stale_rules(site: str, registry: str) -> int:
    """Rules described with the site in its own group and the home group that the desired
    set (computed from the floating IPs the ports have NOW) does not contain."""
    data = await load_registry(registry)
    home, entry = data.home, data.sites.get(site)
    if home is None or entry is None or entry.spec is None:
        return 0

    def facts() -> tuple[str | None, str | None, str | None, str | None]:
        hconn, sconn = connection(home.cloud), connection(entry.cloud)
        mport = home.resource_ids.get("master-port")
        master_fip = (dt._fips(hconn, mport) or [None])[0]
        vpn_fip = (dt._fips(sconn, entry.resource_ids.get("vpn-port")) or [None])[0]
        hsg = ops.find_security_group(hconn, home.name, naming.resource_name(home.name, "sg"))
        ssg = ops.find_security_group(sconn, site, naming.resource_name(site, "sg"))
        return master_fip, vpn_fip, hsg.id if hsg else None, ssg.id if ssg else None

    master_fip, vpn_fip, home_sg, site_sg = await asyncio.to_thread(facts)
    # the wiring as it must be with the floating IPs the ports have now
    now = desired.wiring(
        data,
        desired.facts_of(data, site).model_copy(update={"vpn_fip": vpn_fip}),
        master_fip=master_fip,
    )
    jobs = []
    if site_sg and master_fip:
        jobs.append(dt.remove_stale_rules(entry.cloud, site_sg, site, now.site_rules))
    if home_sg and vpn_fip:
        jobs.append(dt.remove_stale_rules(home.cloud, home_sg, site, now.home_rules))
    done = await asyncio.gather(*jobs)
    return sum(len(x) for x in done)


# ---------------------------------------------------------------- report


async def publish(report: DriftReport) -> None:
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

    key = artifact_key(report.registry)
    await acreate_table_artifact(
        key=key,
        table=report.rows(),
        description=f"hybridgrid drift, registry {report.registry}: site × check",
    )
    await acreate_markdown_artifact(
        key=f"{key}-summary",
        markdown=report.markdown(),
        description=f"hybridgrid drift summary, registry {report.registry}",
    )


__all__ = ["DriftFound", "artifact_key", "check_drift", "check_sites"]
