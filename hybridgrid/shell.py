"""What a remote shell is (plain types): the `RemoteShell` protocol the node-side code runs
on, a command's result, and the errors of a command that failed or timed out.

`hybridgrid.sshclient` implements the protocol over SSH (and on this machine, `LocalShell`);
the WireGuard edges (`hybridgrid.wireguard.node`, `.state`) are written against it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel

STDERR_TAIL = 2000


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class RemoteError(Exception):
    """Base of the errors of a remote command or of the SSH connection it runs on.

    Picklable as is (Prefect may persist a failed task's exception): the subclasses' own
    constructors take other arguments than `args`, so pickling restores args and attributes.
    """

    def __reduce__(self):
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class RemoteCommandError(RemoteError):
    """A remote command exited non-zero. Carries the command's label and stderr, nothing else."""

    def __init__(self, name: str, label: str, exit_status: int | None, stderr: str):
        self.name = name
        self.label = label
        self.exit_status = exit_status
        self.stderr = stderr[-STDERR_TAIL:]
        detail = self.stderr.strip() or "(no stderr)"
        super().__init__(f"{name!r} on {label} failed with exit status {exit_status}: {detail}")


class RemoteCommandTimeout(RemoteCommandError, TimeoutError):
    def __init__(self, name: str, label: str, timeout: float, stderr: str = ""):
        super().__init__(name, label, None, stderr)
        self.args = (f"{name!r} on {label} did not finish within {timeout:g} s",)

    def __str__(self) -> str:
        return self.args[0]


# ---------------------------------------------------------------- shell protocol


class CommandResult(BaseModel):
    name: str
    exit_status: int
    stdout: str
    stderr: str


@runtime_checkable
class RemoteShell(Protocol):
    """What tasks need from a host: run a root shell snippet, upload a file atomically."""

    label: str

    async def run(
        self,
        cmd: str,
        *,
        name: str,
        timeout: float = 60,
        check: bool = True,
        input: bytes | None = None,
    ) -> CommandResult: ...

    async def upload(
        self, path: str, content: bytes, *, mode: int = 0o600, name: str | None = None
    ) -> None: ...
