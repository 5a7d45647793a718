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

from hybridgrid.desired import WiredPlan
from hybridgrid.model import TopologyError
from hybridgrid.prefect_client import print_artifacts, report_end, require_server, run_flow

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
key_app = typer.Typer(help="SSH key blocks the flows log in with.", no_args_is_help=True)

EXIT_INVALID = 2  # bad input, like a usage error
DEFAULT_REGISTRY = "hybridgrid"


@app.callback()
def _root() -> None:
    """Join OpenStack sites to a home cluster over WireGuard, as Prefect flows."""
    # A callback keeps `hybridgrid plan …` a sub-command while it is the only one.


def fail(err: TopologyError) -> NoReturn:
    """Print one clear error and exit 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(EXIT_INVALID)


def prefect_failed(what: str, exc: BaseException) -> NoReturn:
    """A Prefect API call failed: say which, and exit 1."""
    typer.echo(
        f"error: {what} ({exc.__class__.__name__}). "
        "Fix: check PREFECT_API_URL and that the Prefect server is up",
        err=True,
    )
    raise typer.Exit(EXIT_FAILED) from None


def _lines(items) -> str:
    return "\n".join(str(i) for i in items)


def plan_table(p: WiredPlan):
    """The plan as a rich table: the hub first, then one row per spoke (AllowedIPs from each
    site's wiring, the same `hybridgrid.desired` the flows build from)."""
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
            _lines(s.wiring.hub_allowed_ips),
            _lines(s.wiring.spoke_allowed_ips),
            str(p.tunnel_mtu),
        )
    return table


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/seed.yaml")],
    json_output: Annotated[
        bool,
        typer.Option("--json", help="print the resolved plan (with --live: the changes) as JSON"),
    ] = False,
    network_mtu: Annotated[
        int, typer.Option(help="underlay network MTU; the tunnel MTU is 80 less")
    ] = 1450,
    registry: Annotated[
        str | None,
        typer.Option(
            help="keep the allocations recorded in this SiteRegistry block (reads the Prefect "
            "API, never a cloud); with --live the registry to compare (default hybridgrid)"
        ),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="compare the desired wiring with what is on the clouds and print what a run "
            "would add (+), change (~) or destroy (-); reads only. Exit 0 no change, "
            "3 changes pending, 1 not all observed or not right without a change (! lines), "
            "2 bad input",
        ),
    ] = False,
) -> None:
    """Show the resolved plan of a topology spec without touching any cloud (--live: what a
    run would change on the clouds, touching nothing)."""
    from hybridgrid.desired import plan as resolve

    topology = _load(spec)
    data = _read_registry(registry or DEFAULT_REGISTRY) if live else None
    try:
        if data is not None:
            _require_home(data, topology, registry or DEFAULT_REGISTRY, spec)
        existing = data.allocations() if data else _registered_allocations(registry)
        resolved = resolve(topology, existing, network_mtu=network_mtu)
    except TopologyError as err:
        fail(err)
    if data is not None:
        from hybridgrid.cli_plan import show_live_plan

        raise typer.Exit(show_live_plan(topology, resolved, data, registry, json_output))
    if json_output:
        typer.echo(resolved.model_dump_json(indent=2))
        return
    _console().print(plan_table(resolved))


def _registered_allocations(name: str | None):
    return _read_registry(name).allocations() if name else None


# ---------------------------------------------------------------- running the flows

RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry", envvar="HYBRIDGRID_REGISTRY", help="SiteRegistry block the flows record in"
    ),
]
EXIT_FAILED = 1  # the run failed or the site is not verified


def _load(spec: Path):
    from hybridgrid.spec import load_spec

    try:
        return load_spec(spec)
    except TopologyError as err:
        fail(err)


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _read_registry(name: str):
    import asyncio

    from hybridgrid.blocks.registry import load_registry

    require_server()
    try:
        return asyncio.run(load_registry(name))
    except Exception as exc:  # any API failure: say which and stop
        prefect_failed(f"cannot read registry {name!r}", exc)


def _require_home(data, topology, registry: str, spec: Path) -> None:
    """The registry holds a home, the one the spec names (exit 1 without, 2 for another)."""
    if data.home is None or data.home.master is None:
        typer.echo(
            f"error: registry {registry!r} has no home cluster. "
            f"Fix: run `hybridgrid home bootstrap {spec}` first",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED)
    if data.home.subnet != topology.home.subnet:
        raise TopologyError(
            "home.subnet",
            f"the spec says {topology.home.subnet}, registry {registry!r} holds home "
            f"{data.home.name} on {data.home.subnet}",
            "use the spec the home was bootstrapped from, or another --registry",
        )


def layers_table(site: str, layers) -> object:
    """Each verification layer of a site: ok / FAILED / n/a and what it saw."""
    from rich.table import Table

    table = Table(title=f"verification of {site}")
    for col in ("layer", "result", "detail"):
        table.add_column(col)
    for x in layers:
        table.add_row(x.layer, x.mark, "; ".join(x.problems) or x.detail)
    return table


@site_app.command("add")
def site_add(
    spec: Annotated[Path, typer.Argument(help="topology spec (YAML) that lists the site")],
    site: Annotated[str, typer.Option("--site", help="name of the site in the spec to add")],
    registry: RegistryOption = "hybridgrid",
    ssh_key_block: Annotated[
        str | None,
        typer.Option(help="SSHKey block for the site's servers (default hg-<site>-ssh, made)"),
    ] = None,
    boot_timeout: Annotated[float, typer.Option(help="seconds to wait for servers")] = 600,
    verify: Annotated[bool, typer.Option(help="run the layered verification")] = True,
) -> None:
    """Add (or converge) one remote site: runs the add-remote-site flow and prints its checks."""
    topology = _load(spec)
    remote = next((s for s in topology.sites if s.name == site), None)
    if remote is None:
        names = ", ".join(s.name for s in topology.sites) or "none"
        fail(TopologyError("--site", f"{spec} has no site {site!r} (sites: {names})", "name one"))
    try:
        _require_home(_read_registry(registry), topology, registry, spec)
    except TopologyError as err:
        fail(err)
    from hybridgrid.cli_runs import add_site_call
    from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site

    options = AddSiteOptions(
        registry=registry, ssh_key_block=ssh_key_block, boot_timeout=boot_timeout, verify=verify
    )
    outcome = run_flow(add_remote_site, add_site_call(remote, options))
    if outcome.result is None:  # a deployment run, followed: its artifacts tell the checks
        print_artifacts(outcome)
        raise typer.Exit(report_end(outcome, f"add-remote-site {site}"))
    result, link = outcome.result, outcome.link
    console = _console()
    if isinstance(result, BaseException):
        typer.echo(f"error: add-remote-site {site} failed: {result}", err=True)
        if link:
            typer.echo(f"flow run: {link}", err=True)
        raise typer.Exit(EXIT_FAILED)
    s = result.summary
    console.print(layers_table(site, s.layers))
    typer.echo(
        f"{site}: {s.site_subnet}, wg {s.nodes[1].wg_address if len(s.nodes) > 1 else '?'}, "
        f"tunnel MTU {s.tunnel_mtu}; mutating API calls: "
        + (", ".join(f"{c} {n}" for c, n in sorted(s.mutating_calls.items())) or "none")
    )
    t = result.timings
    if t:
        typer.echo(
            f"wall time {t['total']:.1f} s: servers booting {t['boot_wait']:.1f} s, "
            f"everything else {t['total'] - t['boot_wait']:.1f} s"
        )
    if link:
        typer.echo(f"flow run: {link}")
    if verify and not result.verified:
        raise typer.Exit(EXIT_FAILED)


@home_app.command("bootstrap")
def home_bootstrap(
    spec: Annotated[Path, typer.Argument(help="topology spec (YAML); its home section is used")],
    registry: RegistryOption = "hybridgrid",
    ssh_key_block: Annotated[
        str | None,
        typer.Option(help="SSHKey block that logs into the master (default hg-<home>-ssh, made)"),
    ] = None,
    boot_timeout: Annotated[float, typer.Option(help="seconds to wait for servers")] = 600,
) -> None:
    """Create (master: {create: true}) or adopt (master: {name: …}) the home cluster."""
    topology = _load(spec)
    from hybridgrid.cli_runs import home_call
    from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home

    options = HomeOptions(
        registry=registry,
        ssh_key_block=ssh_key_block,
        site_pool=topology.site_pool,
        boot_timeout=boot_timeout,
    )
    outcome = run_flow(bootstrap_home, home_call(topology.home, topology.wireguard, options))
    if outcome.result is None:  # a deployment run, followed
        print_artifacts(outcome)
        raise typer.Exit(report_end(outcome, f"bootstrap-home {topology.home.name}"))
    result, link = outcome.result, outcome.link
    if isinstance(result, BaseException):
        typer.echo(f"error: bootstrap-home {topology.home.name} failed: {result}", err=True)
        if link:
            typer.echo(f"flow run: {link}", err=True)
        raise typer.Exit(EXIT_FAILED)
    typer.echo(
        f"home {result.home}: master {result.master} at {result.master_floating_ip}, "
        f"WireGuard public key {result.master_public_key}"
    )
    typer.echo(f"workers: {', '.join(result.workers) or 'none'}")
    if link:
        typer.echo(f"flow run: {link}")


@app.command("sites")
def sites(registry: RegistryOption = "hybridgrid") -> None:
    """The registry: the home and every site with its addresses and last verification."""
    from rich.table import Table

    data = _read_registry(registry)
    if data.home is None and not data.sites:
        typer.echo(
            f"registry {registry!r} is empty: run `hybridgrid home bootstrap SPEC`, "
            "then `hybridgrid site add SPEC --site NAME`"
        )
        return
    table = Table(title=f"registry {registry}: WireGuard {data.wireguard.cidr}")
    for col in ("site", "role", "cloud", "subnet", "WireGuard", "public IP", "last verification"):
        table.add_column(col)
    if data.home is not None:
        h = data.home
        table.add_row(
            h.name,
            f"hub: {h.master or '?'}",
            h.cloud,
            str(h.subnet),
            str(h.wg_address),
            str(h.public_ips.get("master", "")),
            "",
        )
    for name, e in sorted(data.sites.items()):
        v = e.last_verification
        seen = (
            f"{'ok' if v.ok else 'FAILED'} {v.at:%Y-%m-%d %H:%M:%S} UTC: {v.summary}"
            if v
            else "never (run did not finish)"
        )
        table.add_row(
            name,
            "spoke",
            e.cloud,
            str(e.subnet),
            str(e.wg_address),
            str(e.public_ips.get("vpn", "")),
            seen,
        )
    _console().print(table)


@cloud_app.command("import")
def cloud_import(
    name: Annotated[str, typer.Argument(help="the cloud's entry in clouds.yaml")],
    clouds_yaml: Annotated[
        Path | None,
        typer.Option(
            "--clouds-yaml",
            help="clouds.yaml to read (default: where openstack looks, OS_CLIENT_CONFIG_FILE)",
        ),
    ] = None,
    block: Annotated[
        str | None, typer.Option(help="credentials block name (default: NAME)")
    ] = None,
    proxy_command: Annotated[
        str | None,
        typer.Option(
            help="how SSH reaches the cloud's floating IPs (or its bastion): an OpenSSH "
            "ProxyCommand with %h %p, e.g. 'ssh -W %h:%p gw.example'"
        ),
    ] = None,
    bastion: Annotated[
        str | None,
        typer.Option(help="SSH jump host in front of the floating IPs: USER@HOST[:PORT]"),
    ] = None,
    bastion_host_key: Annotated[
        list[str] | None,
        typer.Option(help="the bastion's host key to pin, 'ssh-ed25519 AAAA…' (repeatable)"),
    ] = None,
    bastion_key_block: Annotated[
        str | None,
        typer.Option(help="SSHKey block that logs in to the bastion (default: NAME-bastion)"),
    ] = None,
    bastion_key_file: Annotated[
        Path | None,
        typer.Option(help="private key file for the bastion, saved as --bastion-key-block"),
    ] = None,
    direct: Annotated[
        bool, typer.Option("--direct", help="no ProxyCommand, no bastion (clears them)")
    ] = False,
) -> None:
    """Save a clouds.yaml entry as an OpenStackCredentials block (replaces one of that name).

    The access options say how the flows reach the cloud's servers over SSH; without any, an
    existing block keeps its access setting (a new one is direct)."""
    import asyncio

    from hybridgrid.cli_access import (
        AccessOptions,
        load_credentials,
        save_credentials,
        saved_line,
    )

    block = block or name
    options = AccessOptions(
        direct=direct,
        proxy_command=proxy_command,
        bastion=bastion,
        host_keys=bastion_host_key or [],
        key_block=bastion_key_block or f"{block}-bastion",
        key_file=bastion_key_file,
    )
    try:
        creds, access = load_credentials(name, clouds_yaml, block, options)
    except TopologyError as exc:
        fail(exc)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    require_server()
    try:
        existed = asyncio.run(
            save_credentials(creds, access, block, options.key_file, options.key_block)
        )
    except Exception as exc:
        prefect_failed(f"cannot save block {block!r}", exc)
    typer.echo(saved_line(creds, block, existed))


@key_app.command("create")
def key_create(
    block: Annotated[str, typer.Argument(help="SSHKey block name, e.g. hg-giessen-ssh")],
    user: Annotated[str, typer.Option(help="login user on the servers")] = "ubuntu",
    proxy_command: Annotated[
        str | None,
        typer.Option(
            help="older use, only for clouds whose access is direct: set the way in on the "
            "cloud instead (hybridgrid cloud import NAME --proxy-command …)"
        ),
    ] = None,
    jump_host: Annotated[
        str | None,
        typer.Option(help="not used: set the cloud's bastion (cloud import NAME --bastion …)"),
    ] = None,
) -> None:
    """Make an ed25519 SSH key pair as an SSHKey block, unless the block exists (kept as is:
    servers may already trust it). The private key is never printed. How servers are reached
    is the cloud's access setting (hybridgrid cloud import), not the key's."""
    import asyncio

    from hybridgrid.blocks.ssh import SSHKey

    if jump_host is not None:
        fail(
            TopologyError(
                "--jump-host",
                "a key's jump host is not used: a bastion needs a pinned host key",
                "hybridgrid cloud import CLOUD --bastion USER@HOST "
                "--bastion-host-key 'ssh-ed25519 …'",
            )
        )

    require_server()

    async def make() -> tuple[bool, str]:
        from prefect.exceptions import ObjectNotFound

        try:
            return False, (await SSHKey.aload(block)).public_key
        except (ValueError, ObjectNotFound) as exc:
            if "Unable to find block document" not in str(exc) and not isinstance(
                exc, ObjectNotFound
            ):
                raise
        try:
            key = SSHKey.generate(user=user, comment=block, proxy_command=proxy_command)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_INVALID) from None
        await key.asave(block, overwrite=False)
        return True, key.public_key

    try:
        made, public = asyncio.run(make())
    except typer.Exit:
        raise
    except Exception as exc:
        prefect_failed(f"cannot read or save block {block!r}", exc)
    typer.echo(f"{'made' if made else 'kept existing'} SSH key block {block!r}: {public}")


def _attach_groups() -> None:
    for name, sub in (
        ("site", site_app),
        ("home", home_app),
        ("cloud", cloud_app),
        ("key", key_app),
    ):
        if sub.registered_commands or sub.registered_groups:
            app.add_typer(sub, name=name)


def _day_two() -> None:
    """`hybridgrid drift`, `site remove`, `site rotate-keys` (hybridgrid/cli_day_two.py)."""
    from hybridgrid import cli_day_two

    cli_day_two.register(app, site_app)


def main() -> None:
    _day_two()
    _attach_groups()
    app(prog_name="hybridgrid")
