"""The data plane's Typer commands (``proxy``, ``exec``); see ``localcloud.dataplane.cli``.

Kept apart from ``cli`` so that the SSH ProxyCommand path (``python -m
localcloud.dataplane.cli proxy``) never imports Typer, pydantic or the backend.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer

from localcloud.dataplane import server as server_mod
from localcloud.dataplane.cli import STATE_DIR_HELP, _state_dir, run_proxy
from localcloud.dataplane.netns import is_alive
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
    proc = subprocess.run([*server_mod.enter_argv(rec.pid), *cmd], env=server_mod.guest_env())
    raise typer.Exit(proc.returncode)


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
    app.command("exec", context_settings={"allow_interspersed_args": False})(exec_command)
