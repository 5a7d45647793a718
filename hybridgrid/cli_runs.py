"""The flow runs the CLI makes: one function per flow builds its parameters, run name and tags.

These are the only places that turn CLI input into a flow's parameters (as JSON; the
in-process path passes the same dict to the flow, which validates it into its pydantic
models). Blocks are named here (`cloud: giessen`); for a deployment run,
`prefect_client.form_parameters` turns the names into the block references the deployment's
form takes (hybridgrid.deployments.forms), as the UI's picker sends them.
"""

from __future__ import annotations

from typing import Any

from hybridgrid.prefect_client import FlowCall


def _model(value: Any) -> Any:
    """A pydantic model as the JSON a run carries: only the fields the spec set (the UI's
    form sends the same: what the user typed, the rest defaults in the flow)."""
    return value.model_dump(mode="json", exclude_unset=True)


def add_site_call(site: Any, options: Any) -> FlowCall:
    """add-remote-site for `site` (a RemoteSite) with AddSiteOptions."""
    return FlowCall(
        deployment="add-remote-site",
        parameters={"site": _model(site), "options": options.model_dump(mode="json")},
        run_name=site.name,
        tags=["hybridgrid", f"site:{site.name}"],
    )


def home_call(home: Any, wireguard: Any, options: Any) -> FlowCall:
    """bootstrap-home for `home` (a HomeSite), its WireGuard settings and HomeOptions."""
    return FlowCall(
        deployment="bootstrap-home",
        parameters={
            "home": _model(home),
            "wireguard": wireguard.model_dump(mode="json"),
            "options": options.model_dump(mode="json"),
        },
        run_name=home.name,
        tags=["hybridgrid", f"home:{home.name}"],
    )


def drift_call(repair: bool, sites: list[str] | None, registry: str) -> FlowCall:
    return FlowCall(
        deployment="check-drift",
        parameters={"repair": repair, "sites": sites, "registry": registry},
        run_name="drift",
        tags=["hybridgrid", "drift"],
    )


def remove_call(
    site: str, registry: str, force: bool = False, drain_timeout: float = 600
) -> FlowCall:
    return FlowCall(
        deployment="remove-remote-site",
        parameters={
            "site": site,
            "registry": registry,
            "force": force,
            "drain_timeout": drain_timeout,
        },
        run_name=site,
        tags=["hybridgrid", f"site:{site}"],
    )


def rotate_call(site: str, hub: bool, registry: str, handshake_timeout: float) -> FlowCall:
    return FlowCall(
        deployment="rotate-keys",
        parameters={
            "site": site,
            "hub": hub,
            "registry": registry,
            "handshake_timeout": handshake_timeout,
        },
        run_name=site,
        tags=["hybridgrid", f"site:{site}"],
    )
