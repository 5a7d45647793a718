"""``localcloud`` — run OpenStack-compatible clouds on this machine.

localcloud up [--state-dir DIR] [--cloud NAME]… [--port N] [--faults FILE]
localcloud status | stop | down | stats [--json] [--reset]
localcloud proxy HOST PORT | exec SERVER -- CMD | bastion up|down|show (the data plane's)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
import yaml

from localcloud import control
from localcloud.config import DEFAULT_STATE_DIR

app = typer.Typer(
    help="An OpenStack-compatible cloud (Keystone, Nova, Neutron, Glance) on this machine.",
    no_args_is_help=True,
    add_completion=False,
)

StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="LOCALCLOUD_STATE_DIR",
        help="Where state, clouds.yaml and logs live.",
    ),
]


def _fail(message: str) -> None:
    typer.echo(f"localcloud: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def up(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    cloud: Annotated[
        list[str] | None,
        typer.Option("--cloud", help="Cloud name (repeat); default: bielefeld and giessen."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="API port on 127.0.0.1 (default 8780).")] = None,
    faults: Annotated[
        Path | None, typer.Option(help="YAML fault-injection file to use (see localcloud.faults).")
    ] = None,
) -> None:
    """Start the API in the background; return once every cloud answers."""
    fault_data = None
    if faults is not None:
        if not faults.exists():
            _fail(f"--faults {faults}: no such file")
        fault_data = yaml.safe_load(faults.read_text()) or {}
    try:
        handle = control.start(state_dir, clouds=cloud or None, port=port, faults=fault_data)
    except (control.LocalcloudError, ValueError) as exc:
        _fail(str(exc))
        return
    typer.echo(f"localcloud is up (pid {handle.pid}) on http://127.0.0.1:{handle.port}")
    for name, ep in handle.clouds.items():
        typer.echo(f"  {name:<12} {ep.auth_url}   public {ep.external_cidr}")
    typer.echo(f"clouds.yaml: {handle.clouds_yaml}")
    typer.echo(f"  export OS_CLIENT_CONFIG_FILE={handle.clouds_yaml}")
    typer.echo(f"  openstack --os-cloud {next(iter(handle.clouds))} server list")


@app.command()
def stop(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Stop the API server; every resource stays for the next `up`."""
    if control.stop(state_dir):
        typer.echo("localcloud stopped (state kept)")
    else:
        typer.echo("localcloud was not running")


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Stop and remove everything localcloud made, state included."""
    try:
        control.down(state_dir)
    except control.LocalcloudError as exc:
        _fail(str(exc))
    typer.echo(f"localcloud removed ({state_dir})")


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List clouds, endpoints and servers."""
    info = control.status(state_dir)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    if not info["clouds"]:
        typer.echo(f"no localcloud in {info['state_dir']}")
        return
    state = f"running (pid {info['pid']})" if info["running"] else "stopped"
    typer.echo(f"localcloud in {info['state_dir']}: {state}, port {info['port']}")
    for name, c in info["clouds"].items():
        typer.echo(f"{name}: {c.get('auth_url', '')}  public {c.get('external_cidr', '')}")
        for s in c["servers"]:
            typer.echo(f"  {s['name']:<24} {s['status']:<7} {', '.join(s['addresses'])}")
        if not c["servers"]:
            typer.echo("  (no servers)")
    if b := info.get("bastion"):
        state = "" if b["running"] else " (NOT running)"
        typer.echo(f"bastion: {b['user']}@{b['address']}:{b['port']}{state}  {b['host_key']}")


@app.command()
def stats(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="Zero the counters.")] = False,
) -> None:
    """API calls per cloud, service and method (mutating: writes but token issue, console reads)."""
    try:
        handle = control.handle(state_dir)
    except control.LocalcloudError as exc:
        _fail(str(exc))
        return
    if reset:
        handle.reset_stats()
        typer.echo("counters reset")
        return
    data = handle.stats()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    if not data:
        typer.echo("no API calls counted")
    for name, c in data.items():
        typer.echo(
            f"{name}: {c['total']} calls, {c['mutating']} mutating, "
            f"{c['injected_errors']} injected errors"
        )
        for svc, methods in sorted(c["by_service"].items()):
            counts = ", ".join(f"{m} {n}" for m, n in sorted(methods.items()))
            typer.echo(f"  {svc:<9} {counts}")


@app.command("faults")
def faults_cmd(
    file: Annotated[Path | None, typer.Argument(help="YAML faults file to switch to.")] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    off: Annotated[bool, typer.Option("--off", help="Switch all fault injection off.")] = False,
) -> None:
    """Show or change fault injection while localcloud runs (format: localcloud/faults.py)."""
    if off or file is not None:
        data = {} if off else (yaml.safe_load(file.read_text()) if file.exists() else None)
        if data is None and not off:
            _fail(f"{file}: no such file")
        try:
            control.set_faults(state_dir, data)
        except ValueError as exc:
            _fail(f"{file}: {exc}")
        typer.echo("fault injection off" if off else f"fault injection from {file}")
        return
    path = state_dir / "faults.yaml"
    typer.echo(
        path.read_text()
        if path.exists() and path.read_text().strip() not in ("", "{}")
        else "fault injection off"
    )


try:
    from localcloud.dataplane.cli import register
except ImportError:
    register = None
if register is not None:
    register(app)


def main() -> None:
    os.umask(0o077)  # clouds.yaml and keys we write are for this user only
    app()


if __name__ == "__main__":
    main()
