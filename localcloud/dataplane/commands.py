"""The data plane's Typer commands (``proxy``, ``exec``, ``bastion up|down|show``); see
``localcloud.dataplane.cli``.

Kept apart from ``cli`` so that the SSH ProxyCommand path (``python -m
localcloud.dataplane.cli proxy``) never imports Typer, pydantic or the backend.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from localcloud.dataplane import vm
from localcloud.dataplane.cli import STATE_DIR_HELP, _state_dir, run_proxy
from localcloud.dataplane.netns import DataplaneError, is_alive
from localcloud.dataplane.state import find_server, load_state


def proxy(
    host: Annotated[str, typer.Argument(help="address as seen from the internet namespace")],
    port: Annotated[int, typer.Argument(help="TCP port")],
    state_dir: Annotated[Path | None, typer.Option(help=STATE_DIR_HELP)] = None,
) -> None:
    """Pipe stdin/stdout to HOST:PORT inside localcloud's internet (for ssh ProxyCommand)."""
    code = run_proxy(host, port, state_dir)
    if code:
        raise typer.Exit(code)


def exec_command(
    server: Annotated[str, typer.Argument(help="server name or id")],
    cmd: Annotated[list[str], typer.Argument(help="command and arguments (after --)")],
    cloud: Annotated[str | None, typer.Option(help="cloud name, if server names repeat")] = None,
    state_dir: Annotated[Path | None, typer.Option(help=STATE_DIR_HELP)] = None,
) -> None:
    """Run a command as root inside a server; its output and exit code pass through."""
    if cmd and cmd[0] == "--":  # click keeps the separator once positional parsing began
        cmd = cmd[1:]
    if not cmd:
        typer.echo("localcloud exec: give a command after --", err=True)
        raise typer.Exit(2)
    sd = _state_dir(state_dir) or Path(".localcloud")
    state = load_state(sd, "")
    try:
        rec = find_server(state, server, cloud)
    except LookupError as exc:
        typer.echo(f"localcloud exec: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not rec.pid or not is_alive(rec.pid, rec.ns):
        typer.echo(f"localcloud exec: server {rec.name} is not running", err=True)
        raise typer.Exit(2)
    proc = subprocess.run([*vm.enter_argv(rec.pid), *cmd], env=vm.guest_env())
    raise typer.Exit(proc.returncode)


bastion_app = typer.Typer(
    help="A bastion (jump) host in localcloud's internet (see localcloud/dataplane/bastion.py).",
    no_args_is_help=True,
    add_completion=False,
)
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _key_lines(value: str) -> str:
    """An --authorized-key value: a public key line as is, or the text of a .pub file."""
    if len(value.split()) >= 2:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        typer.echo(
            f"localcloud bastion up: --authorized-key {value}: no such file, and not a public "
            "key line ('ssh-ed25519 AAAA… comment')",
            err=True,
        )
        raise typer.Exit(2)
    return path.read_text()


def _echo_bastion(info, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(info.model_dump(), indent=2))
        return
    state = "running" if info.running else "NOT running (run `localcloud bastion up` again)"
    typer.echo(f"bastion {info.user}@{info.address} port {info.port}: {state}")
    typer.echo(f"  namespace    {info.namespace} (pid {info.pid})")
    typer.echo(f"  host key     {info.host_key}")
    typer.echo(f"  fingerprint  {info.fingerprint}")
    typer.echo(f"  known_hosts  {info.known_hosts_line}")
    typer.echo(f"  keys         {len(info.authorized_keys)} authorized for {info.user}")
    for cloud, cidr in info.bastion_only.items():
        typer.echo(f"  only via the bastion: {cloud} ({cidr})")
    typer.echo(f"  reach it     ssh -o ProxyCommand='{info.proxy_command}' "
               f"{info.user}@{info.address}")  # fmt: skip


@bastion_app.command("up")
def bastion_up(
    authorized_key: Annotated[
        list[str],
        typer.Option(help="public key line or .pub file allowed to log in as `jump` (repeat)"),
    ],
    bastion_only: Annotated[
        list[str] | None,
        typer.Option(
            help="cloud whose public addresses only the bastion reaches; `localcloud proxy` "
            "gets 'No route to host' for them (repeat; each `up` sets the list)"
        ),
    ] = None,
    add: Annotated[
        bool, typer.Option("--add", help="keep the keys authorized before (default: replace)")
    ] = False,
    state_dir: Annotated[Path | None, typer.Option(help=STATE_DIR_HELP)] = None,
    as_json: AsJson = False,
) -> None:
    """Make the bastion (or find it: same host key) and set its authorized keys."""
    from localcloud.dataplane import bastion

    sd = _state_dir(state_dir) or Path(".localcloud")
    keys = [_key_lines(v) for v in authorized_key]
    try:
        info = bastion.up(sd, keys, bastion_only or [], add=add)
    except bastion.BastionError as exc:
        option = {"authorized_keys": "--authorized-key", "bastion_only": "--bastion-only"}
        message = str(exc).split(": ", 1)[1]
        typer.echo(f"localcloud bastion up: {option[exc.field]}: {message}", err=True)
        raise typer.Exit(2) from exc
    except DataplaneError as exc:
        typer.echo(f"localcloud bastion up: {exc}", err=True)
        raise typer.Exit(1) from exc
    _echo_bastion(info, as_json)


@bastion_app.command("down")
def bastion_down(
    state_dir: Annotated[Path | None, typer.Option(help=STATE_DIR_HELP)] = None,
) -> None:
    """Stop the bastion and remove its namespace (the clouds stay)."""
    from localcloud.dataplane import bastion

    sd = _state_dir(state_dir) or Path(".localcloud")
    typer.echo("bastion removed" if bastion.down(sd) else "no bastion was running")


@bastion_app.command("show")
def bastion_show(
    state_dir: Annotated[Path | None, typer.Option(help=STATE_DIR_HELP)] = None,
    as_json: AsJson = False,
) -> None:
    """Address, port, user and host key of the bastion (exit code 1 if there is none)."""
    from localcloud.dataplane import bastion

    info = bastion.info(_state_dir(state_dir) or Path(".localcloud"))
    if info is None:
        typer.echo("null" if as_json else "no bastion (localcloud bastion up --authorized-key …)")
        raise typer.Exit(1)
    _echo_bastion(info, as_json)


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
    app.command("exec", context_settings={"allow_interspersed_args": False})(exec_command)
    app.add_typer(bastion_app, name="bastion")
