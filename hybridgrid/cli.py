"""The ``hybridgrid`` command line.

Commands import Prefect, openstacksdk and friends inside their bodies so that ``plan`` (and
``--help``) start fast. Later commands go next to ``plan``; command groups go on the sub-apps
below (``site``, ``home``, ``cloud``), which appear in ``--help`` once they hold a command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from hybridgrid.model import Plan, TopologyError

app = typer.Typer(
    name="hybridgrid",
    help="Join OpenStack sites to a home cluster over WireGuard, as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
site_app = typer.Typer(help="Add, remove and re-key remote sites.", no_args_is_help=True)
home_app = typer.Typer(help="Bootstrap or adopt the home cluster.", no_args_is_help=True)
cloud_app = typer.Typer(help="Clouds and their credentials blocks.", no_args_is_help=True)

EXIT_INVALID = 2  # bad input, like a usage error


@app.callback()
def _root() -> None:
    """Join OpenStack sites to a home cluster over WireGuard, as Prefect flows."""
    # A callback keeps `hybridgrid plan …` a sub-command while it is the only one.


def fail(err: TopologyError) -> NoReturn:
    """Print one clear error and exit 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(EXIT_INVALID)


def _lines(items) -> str:
    return "\n".join(str(i) for i in items)


def plan_table(p: Plan):
    """The plan as a rich table: the hub first, then one row per spoke."""
    from rich.table import Table

    auto = {"spec": "", "registry": " (registered)", "pool": " (allocated)"}
    table = Table(
        title=(
            f"WireGuard {p.wireguard.cidr}, keepalive {p.wireguard.keepalive} s, "
            f"tunnel MTU {p.tunnel_mtu} (network {p.network_mtu} − 80)"
        ),
        show_lines=True,
    )
    for col in ("site", "role", "cloud", "subnet", "WireGuard", "port", "hub AllowedIPs"):
        table.add_column(col)
    table.add_column("spoke AllowedIPs")
    table.add_column("MTU", justify="right")
    h = p.home
    master = h.master.name if h.master.name else "create hg-" + h.name + "-master"
    table.add_row(
        h.name,
        f"hub: {master}",
        h.cloud,
        str(h.subnet),
        str(h.wg_address),
        str(h.listen_port),
        "",
        "",
        str(p.tunnel_mtu),
    )
    for s in p.sites:
        table.add_row(
            s.name,
            f"spoke: vpn + {s.workers} worker{'s' if s.workers != 1 else ''}",
            s.cloud,
            f"{s.subnet}{auto[s.subnet_from]}",
            f"{s.wg_address}{auto[s.wg_address_from]}",
            str(s.listen_port),
            _lines(s.hub_allowed_ips),
            _lines(s.spoke_allowed_ips),
            str(p.tunnel_mtu),
        )
    return table


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/seed.yaml")],
    json_output: Annotated[
        bool, typer.Option("--json", help="print the resolved plan as JSON")
    ] = False,
    network_mtu: Annotated[
        int, typer.Option(help="underlay network MTU; the tunnel MTU is 80 less")
    ] = 1450,
    registry: Annotated[
        str | None,
        typer.Option(
            help="keep the allocations recorded in this SiteRegistry block (reads the Prefect "
            "API, never a cloud)"
        ),
    ] = None,
) -> None:
    """Show the resolved plan of a topology spec without touching any cloud."""
    from hybridgrid.model import plan as resolve
    from hybridgrid.spec import load_spec

    try:
        topology = load_spec(spec)
        existing = _registered_allocations(registry) if registry else None
        resolved = resolve(topology, existing, network_mtu=network_mtu)
    except TopologyError as err:
        fail(err)
    if json_output:
        typer.echo(resolved.model_dump_json(indent=2))
        return
    from rich.console import Console

    # Piped output keeps full lines; a terminal gets its own width.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(plan_table(resolved))


def _registered_allocations(name: str):
    import asyncio

    from hybridgrid.blocks.registry import load_registry

    try:
        return asyncio.run(load_registry(name)).allocations()
    except Exception as exc:  # any API failure: say which and stop
        typer.echo(
            f"error: --registry: cannot read registry {name!r} ({exc.__class__.__name__}). "
            "Fix: check PREFECT_API_URL and that the Prefect server is up",
            err=True,
        )
        raise typer.Exit(1) from None


def _attach_groups() -> None:
    for name, sub in (("site", site_app), ("home", home_app), ("cloud", cloud_app)):
        if sub.registered_commands or sub.registered_groups:
            app.add_typer(sub, name=name)


def main() -> None:
    _attach_groups()
    app(prog_name="hybridgrid")
