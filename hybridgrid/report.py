"""What a run tells people: a markdown site summary and a resource table (pure rendering), keyed
per site so the latest is easy to find; `hybridgrid.flows.artifacts` publishes them as Prefect
artifacts."""

from __future__ import annotations

from pydantic import BaseModel, Field

from hybridgrid.layers import LayerResult
from hybridgrid.records import Record


class NodeLine(BaseModel):
    role: str  # master, vpn, worker-1, …
    cloud: str
    name: str
    fixed_ip: str
    floating_ip: str | None = None
    wg_address: str | None = None
    public_key: str | None = None


class SiteSummary(BaseModel):
    site: str
    home: str
    wireguard_cidr: str
    listen_port: int
    tunnel_mtu: int
    home_subnet: str
    site_subnet: str
    hub_allowed_ips: list[str]
    spoke_allowed_ips: list[str]
    nodes: list[NodeLine] = Field(default_factory=list)
    layers: list[LayerResult] = Field(default_factory=list)
    resources: list[tuple[str, Record]] = Field(default_factory=list)  # (cloud, record)
    mutating_calls: dict[str, int] = Field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return bool(self.layers) and all(layer.ok is not False for layer in self.layers)


def artifact_key(site: str, what: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"hybridgrid-{site}-{what}"


def render_markdown(s: SiteSummary) -> str:
    status = "verified" if s.verified else "NOT verified"
    lines = [
        f"# Site `{s.site}` ⇄ home `{s.home}`: {status}",
        "",
        f"WireGuard {s.wireguard_cidr}, port {s.listen_port}, tunnel MTU {s.tunnel_mtu}. "
        f"Home subnet {s.home_subnet}, site subnet {s.site_subnet}.",
        "",
        f"- hub AllowedIPs for this site: {', '.join(s.hub_allowed_ips)}",
        f"- spoke AllowedIPs (via the hub): {', '.join(s.spoke_allowed_ips)}",
        "",
        "## Nodes",
        "",
        "| role | cloud | server | fixed IP | floating IP | wg0 | public key |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in s.nodes:
        lines.append(
            f"| {n.role} | {n.cloud} | {n.name} | {n.fixed_ip} | {n.floating_ip or ''} | "
            f"{n.wg_address or ''} | {('`' + n.public_key + '`') if n.public_key else ''} |"
        )
    lines += ["", "## Verification", "", "| layer | result | detail |", "|---|---|---|"]
    for layer in s.layers:
        detail = "; ".join(layer.problems) if layer.problems else layer.detail
        lines.append(f"| {layer.layer} | {layer.mark} | {detail} |")
    if s.mutating_calls:
        calls = ", ".join(f"{c}: {n}" for c, n in sorted(s.mutating_calls.items()))
        lines += ["", f"Mutating API calls in this run: {calls}."]
    return "\n".join(lines) + "\n"


def resource_rows(s: SiteSummary) -> list[dict[str, str]]:
    return [
        {"cloud": cloud, "kind": r.kind, "name": r.name, "id": r.id or "", "action": r.action}
        for cloud, r in s.resources
    ]
