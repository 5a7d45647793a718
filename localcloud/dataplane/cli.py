"""CLI commands of the data plane, added to localcloud's Typer app by ``register(app)``.

- ``localcloud proxy HOST PORT``: pipe stdin/stdout to HOST:PORT from inside the internet
  namespace (OpenSSH ``ProxyCommand``, asyncssh ``proxy_command``).
- ``localcloud exec [--cloud NAME] SERVER -- CMD…``: run CMD as root inside a server (the
  hypervisor admin's console); output and exit code pass through.

Standalone: ``python -m localcloud.dataplane.cli proxy …``. That is the ProxyCommand of every
SSH connection to a localcloud server, so its path is lean: this module imports only the
standard library at the top, and ``proxy`` run as ``__main__`` parses its arguments with
argparse and needs only ``netns`` (≈ 30 ms instead of ≈ 0.3–0.5 s with typer, pydantic and
the backend). Typer and the rest load only for the Typer commands.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
from pathlib import Path

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


def run_proxy(host: str, port: int, state_dir: Path | None = None) -> int:
    """Connect to host:port inside the internet namespace and pipe stdio; the exit code."""
    from localcloud.dataplane.netns import DataplaneError, open_connection_socket

    try:
        sock = open_connection_socket(host, port, state_dir=_state_dir(state_dir))
    except (OSError, DataplaneError) as exc:  # one line for ssh to show, no traceback
        print(f"localcloud proxy: cannot connect to {host}:{port}: {exc}", file=sys.stderr)
        return 255
    try:
        pipe(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return 0


def _proxy_main(argv: list[str]) -> int:
    """``proxy`` without Typer (argparse is in the standard library and loads in ms)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="localcloud proxy",
        description="Pipe stdin/stdout to HOST:PORT inside localcloud's internet "
        "(for ssh ProxyCommand).",
    )
    parser.add_argument("host", help="address as seen from the internet namespace")
    parser.add_argument("port", type=int, help="TCP port")
    parser.add_argument("--state-dir", type=Path, default=None, help=STATE_DIR_HELP)
    args = parser.parse_args(argv)
    return run_proxy(args.host, args.port, args.state_dir)


def register(app) -> None:
    """Add ``proxy`` and ``exec`` to a Typer app (Typer is imported only here)."""
    from localcloud.dataplane.commands import register as add_commands

    add_commands(app)


def main(argv: list[str] | None = None) -> int | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "proxy":  # the ProxyCommand path: no Typer
        return _proxy_main(argv[1:])
    import typer

    app = typer.Typer(add_completion=False, no_args_is_help=True)
    register(app)
    app(args=argv, prog_name="localcloud")
    return None


def proxy_command(state_dir: Path | None = None, executable: str | None = None) -> str:
    """A ProxyCommand string for OpenSSH / asyncssh (``%h %p`` filled in by the client)."""
    exe = executable or f"{sys.executable} -m localcloud.dataplane.cli"
    sd = f" --state-dir {Path(state_dir).resolve()}" if state_dir else ""
    return f"{exe} proxy{sd} %h %p"


if __name__ == "__main__":
    sys.exit(main())
