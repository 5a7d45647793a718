"""`hybridgrid plan SPEC --live` as data: per site of the spec, what a run would create,
update or delete — the `Change`s of `hybridgrid.changes.findings`, the comparison the drift
check makes — and what it could not turn into a change (`!` notes: a node not reached, a
stale handshake, a failed ping). Terraform-like lines and totals. Pure: the observations come
in (`tasks/drift_tasks.observe_sites`), nothing is read or written here.

The desired state is the spec's: a registered site is judged with the spec's settings (its
worker count and SSH sources, what a run of that spec applies); a site not registered yet is
held against nothing built, so every object of it is an add.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field

from hybridgrid import naming
from hybridgrid.changes import Change, Finding, findings
from hybridgrid.drift import HomeObs, NodeObs, SiteApiObs, SiteNodesObs, desired_site
from hybridgrid.model import Plan, Topology
from hybridgrid.registry_data import RegistryData, SiteEntry


class SitePlan(BaseModel):
    site: str
    registered: bool = True
    changes: list[Change] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="not observed, or no change")


class LivePlan(BaseModel):
    registry: str
    sites: list[SitePlan] = Field(default_factory=list)
    not_in_spec: list[str] = Field(default_factory=list, description="registered, left alone")

    def _count(self, action: str) -> int:
        return sum(c.action == action for s in self.sites for c in s.changes)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def to_add(self) -> int:
        return self._count("add")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def to_change(self) -> int:
        return self._count("change")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def to_destroy(self) -> int:
        return self._count("destroy")

    @property
    def pending(self) -> bool:
        return any(s.changes for s in self.sites)

    @property
    def noted(self) -> bool:
        return any(s.notes for s in self.sites)

    def summary(self) -> str:
        return (
            f"Plan: {self.to_add} to add, {self.to_change} to change, {self.to_destroy} to destroy."
        )

    def lines(self) -> list[str]:
        """One `# site` heading per site, one line per change, `!` per note, the totals."""
        out: list[str] = []
        for s in self.sites:
            head = s.site if s.registered else f"{s.site} (not registered: a run builds it)"
            out.append(f"# {head}" + ("" if s.changes or s.notes else ": no changes"))
            out += [c.line() for c in s.changes] + [f"! {n}" for n in s.notes]
        if self.not_in_spec:
            out.append(f"# registered, not in the spec (left alone): {', '.join(self.not_in_spec)}")
        if self.noted:
            out.append("! lines: not observed, or not something a run creates, updates or deletes")
        return [*out, "", self.summary()]


def registry_as_planned(data: RegistryData, topology: Topology, resolved: Plan) -> RegistryData:
    """The registry once the spec's sites are built: a registered site with the spec's
    settings, a new one with its planned allocation (so every site's wiring counts it)."""
    sites = dict(data.sites)
    for site, s in zip(topology.sites, resolved.sites, strict=True):
        entry = sites.get(site.name)
        sites[site.name] = (
            entry.model_copy(update={"spec": site})
            if entry is not None
            else SiteEntry(
                cloud=s.cloud,
                subnet=s.subnet,
                wg_address=s.wg_address,
                listen_port=s.listen_port,
                network_mtu=resolved.network_mtu,
                spec=site,
            )
        )
    return data.model_copy(update={"sites": sites})


def unbuilt(site: str) -> tuple[SiteApiObs, SiteNodesObs]:
    """What a site not built yet shows: no objects, and no wg0 on its VPN node-to-be."""
    vpn = naming.resource_name(site, naming.VPN)
    return SiteApiObs(), SiteNodesObs(spoke=NodeObs(name=vpn))


def site_plan(site: str, found: list[Finding], listed: set[str], registered: bool) -> SitePlan:
    """A site's changes, leaving out those an earlier site listed already (the home side is
    shared: a pair or route missing at home is one change, not one per site)."""
    changes = []
    for change in (f.change for f in found if f.change is not None):
        if change.line() not in listed:
            listed.add(change.line())
            changes.append(change)
    notes = [f.message for f in found if f.change is None] if registered else []
    return SitePlan(site=site, registered=registered, changes=changes, notes=notes)


def judge(
    registry: str,
    planned: RegistryData,
    topology: Topology,
    home: HomeObs,
    observed: dict[str, tuple[SiteApiObs, SiteNodesObs]],
) -> LivePlan:
    """The plan of every spec site: `observed` holds the registered ones, the rest are new
    (`planned` is `registry_as_planned`)."""
    listed: set[str] = set()
    sites = []
    for site in topology.sites:
        api, nodes = observed.get(site.name) or unbuilt(site.name)
        want = desired_site(planned, site.name, home=home, api=api)
        found = findings(want, home, api, nodes)
        sites.append(site_plan(site.name, found, listed, registered=site.name in observed))
    spec_names = {s.name for s in topology.sites}
    others = sorted(n for n in planned.sites if n not in spec_names)
    if not observed and (unread := hub_notes(home)):  # no registered site says it
        sites.insert(0, SitePlan(site="home", notes=unread))
    return LivePlan(registry=registry, sites=sites, not_in_spec=others)


def hub_notes(home: HomeObs) -> list[str]:
    """What of the hub side could not be read (a new site's plan leans on it)."""
    out = [f"the home cloud could not be read ({home.error})"] if home.error else []
    if home.hub.error:
        out.append(f"master {home.hub.name} not reachable ({home.hub.error})")
    return out
