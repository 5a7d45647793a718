"""CLI commands of the data plane, added to localcloud's Typer app by ``register(app)``.

- ``localcloud proxy HOST PORT``: pipe stdin/stdout to HOST:PORT from inside the internet
  namespace (OpenSSH ``ProxyCommand``, asyncssh ``proxy_command``).
- ``localcloud exec [--cloud NAME] SERVER -- CMD…``: run CMD as root inside a server (the
  hypervisor admin's console); output and exit code pass through.

Standalone: ``python -m localcloud.dataplane.cli proxy …``.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from localcloud.dataplane import server as server_mod
from localcloud.dataplane.netns import is_alive, open_connection_socket
from localcloud.dataplane.state import find_server, load_state

STATE_DIR_HELP = "localcloud's state directory (default: $LOCALCLOUD_STATE_DIR or .localcloud)"


def _state_dir(value: Path | None) -> Path | None:
    if value is not None:
        return value
    env = os.environ.get("LOCALCLOUD_STATE_DIR")
    return Path(env) if env else None


def pipe(sock: socket.socket, fd_in: int = 0, fd_out: int = 1) -> None:
    """Copy fd_in -> sock and sock -> fd_out until the remote side closes."""
    sel = selectors.DefaultSelector()
    sel.register(fd_in, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(fd_in, 65536)
                if not data:
                    sel.unregister(fd_in)
                    sock.shutdown(socket.SHUT_WR)
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(fd_out, view) :]


def proxy(
    host: Annotated[str, typer.Argument(help="address as seen from the internet namespace")],
    port: Annotated[int, typer.Argument(help="TCP port")],
    state_dir: Annotated[Path | None, typer.Option(help=STATE_DIR_HELP)] = None,
) -> None:
    """Pipe stdin/stdout to HOST:PORT inside localcloud's internet (for ssh ProxyCommand)."""
    try:
        sock = open_connection_socket(host, port, state_dir=_state_dir(state_dir))
    except OSError as exc:
        typer.echo(f"localcloud proxy: cannot connect to {host}:{port}: {exc}", err=True)
        raise typer.Exit(255) from exc
    try:
        pipe(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()


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


def main() -> None:
    app = typer.Typer(add_completion=False, no_args_is_help=True)
    register(app)
    app(prog_name="localcloud")


def proxy_command(state_dir: Path | None = None, executable: str | None = None) -> str:
    """A ProxyCommand string for OpenSSH / asyncssh (``%h %p`` filled in by the client)."""
    exe = executable or f"{sys.executable} -m localcloud.dataplane.cli"
    sd = f" --state-dir {Path(state_dir).resolve()}" if state_dir else ""
    return f"{exe} proxy{sd} %h %p"


if __name__ == "__main__":
    sys.exit(main())
