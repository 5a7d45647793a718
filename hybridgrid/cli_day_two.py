"""Day-two commands: `hybridgrid drift`, `hybridgrid site remove`, `hybridgrid site rotate-keys`.

Like `site add`, each makes a followed run of its deployment when the server has it, else
runs the flow here (hybridgrid/prefect_client.py); with no reachable server they exit 2.
`register(app, site_app)` attaches them to the main CLI's Typer apps (from `hybridgrid/cli.py`).

Exit codes: 0 clean / done, 1 drift found or the run failed, 2 bad input.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

EXIT_FAILED = 1
EXIT_INVALID = 2

RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry", envvar="HYBRIDGRID_REGISTRY", help="SiteRegistry block the flows record in"
    ),
]


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _run(flow: Any, call: Any) -> tuple[Any, str | None]:
    """Run a flow: a followed run of its deployment when the server has it (then the command
    ends here with the run's exit code), else in this process: (its result or the exception
    it ended with, UI link)."""
    from hybridgrid.prefect_client import print_artifacts, report_end, run_flow

    outcome = run_flow(flow, call)
    if outcome.result is None:  # a deployment run: its logs were streamed
        print_artifacts(outcome)
        raise typer.Exit(report_end(outcome, call.deployment + " " + call.run_name))
    return outcome.result, outcome.link


def _bad_input(result: BaseException) -> None:
    from hybridgrid.model import TopologyError

    if isinstance(result, TopologyError):
        typer.echo(f"error: {result}", err=True)
        raise typer.Exit(EXIT_INVALID)


def drift_table(report: Any) -> Any:
    """Site × check: ok / DRIFT / n/a (details follow the table, one line per site)."""
    from rich.table import Table

    from hybridgrid.drift import CHECKS

    table = Table(title=f"drift, registry {report.registry}")
    table.add_column("site")
    for c in CHECKS:
        table.add_column(c)
    for s in report.sites:
        marks = {r.check: {True: "ok", False: "DRIFT", None: "n/a"}[r.ok] for r in s.results}
        table.add_row(s.site, *(marks.get(c, "") for c in CHECKS))
    return table


def drift(
    repair: Annotated[
        bool, typer.Option("--repair", help="converge drifted sites with the add-site flow")
    ] = False,
    site: Annotated[
        list[str] | None,
        typer.Option("--site", help="check only this site (repeatable); default: all"),
    ] = None,
    registry: RegistryOption = "hybridgrid",
) -> None:
    """Compare every registered site with its desired state (exit 0 clean, 1 drift)."""
    from hybridgrid.cli_runs import drift_call
    from hybridgrid.flows.check_drift import DriftFound, check_drift

    result, link = _run(check_drift, drift_call(repair, site or None, registry))
    report = result.report if isinstance(result, DriftFound) else result
    if isinstance(result, BaseException) and not isinstance(result, DriftFound):
        _bad_input(result)
        typer.echo(f"error: check-drift failed: {result}", err=True)
        if link:
            typer.echo(f"flow run: {link}", err=True)
        raise typer.Exit(EXIT_FAILED)
    _console().print(drift_table(report))
    for line in report.before:
        typer.echo(f"before repair: {line}")
    for name, outcome in sorted(report.repaired.items()):
        typer.echo(f"repaired {name}: {outcome}")
    for line in report.lines():
        typer.echo(line)
    if link:
        typer.echo(f"flow run: {link}")
    if report.drifted:
        raise typer.Exit(EXIT_FAILED)
    typer.echo(f"no drift in {len(report.sites)} site(s)")


def site_remove(
    name: Annotated[str, typer.Argument(help="the registered site to remove")],
    registry: RegistryOption = "hybridgrid",
    force: Annotated[
        bool, typer.Option(help="Slurm: cancel the site's running jobs instead of waiting")
    ] = False,
    drain_timeout: Annotated[
        float, typer.Option(help="Slurm: seconds to wait for the site's running jobs")
    ] = 600,
) -> None:
    """Remove a site: with Slurm, drain its partition first; then its peer off the hub live,
    its resources, key pair, key block, entry."""
    from hybridgrid.cli_runs import remove_call
    from hybridgrid.flows.remove_remote_site import remove_remote_site

    result, link = _run(remove_remote_site, remove_call(name, registry, force, drain_timeout))
    if isinstance(result, BaseException):
        _bad_input(result)
        typer.echo(f"error: remove-remote-site {name} failed: {result}", err=True)
        typer.echo("It is safe to run the removal again.", err=True)
        if link:
            typer.echo(f"flow run: {link}", err=True)
        raise typer.Exit(EXIT_FAILED)
    if not result.registered:
        typer.echo(f"{name} is not registered in {registry!r}: nothing to remove")
        return
    for cloud, rec in result.deleted:
        typer.echo(f"{rec.action:8} {cloud:12} {rec.kind:20} {rec.name}")
    if result.ssh_key_block_deleted:
        typer.echo(f"deleted  prefect      block                hg-{name}-ssh")
    typer.echo(f"{name} removed" + (f" (flow run: {link})" if link else ""))


def site_rotate_keys(
    name: Annotated[str, typer.Argument(help="the registered site whose keys to rotate")],
    hub: Annotated[
        bool, typer.Option("--hub", help="rotate the master's key too (re-keys every site)")
    ] = False,
    registry: RegistryOption = "hybridgrid",
    handshake_timeout: Annotated[
        float, typer.Option(help="seconds to wait for a fresh handshake before rolling back")
    ] = 60,
) -> None:
    """New WireGuard keys for a site's VPN node (and the hub with --hub), or a rollback."""
    from hybridgrid.cli_runs import rotate_call
    from hybridgrid.flows.rotate_keys import rotate_keys

    result, link = _run(rotate_keys, rotate_call(name, hub, registry, handshake_timeout))
    if isinstance(result, BaseException):
        _bad_input(result)
        typer.echo(f"error: rotate-keys {name} failed: {result}", err=True)
        if link:
            typer.echo(f"flow run: {link}", err=True)
        raise typer.Exit(EXIT_FAILED)
    typer.echo(f"{name}: VPN node key {result.spoke_public_key}")
    typer.echo(f"hub key {result.hub_public_key}" + (" (rotated)" if result.hub_rotated else ""))
    typer.echo("old private keys deleted on: " + (", ".join(result.old_keys_removed) or "-"))
    if link:
        typer.echo(f"flow run: {link}")


def register(app: typer.Typer, site_app: typer.Typer) -> None:
    """Attach the day-two commands to the main CLI's apps."""
    app.command("drift")(drift)
    site_app.command("remove")(site_remove)
    site_app.command("rotate-keys")(site_rotate_keys)
