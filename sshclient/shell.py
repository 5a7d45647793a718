"""Running commands as root and uploading files atomically: the command lines every shell
sends, and `LocalShell`, the `RemoteShell` on this machine (optionally behind a prefix such as
`ip netns exec NS`). File contents travel on stdin, never in argv."""

from __future__ import annotations

import asyncio
import shlex

from hybridgrid.shell import CommandResult, RemoteCommandError, RemoteCommandTimeout


def upload_command(path: str, mode: int = 0o600) -> str:
    """Shell that writes stdin to `path` atomically: temp file in the same dir, chmod, rename."""
    if not path.startswith("/") or "\n" in path or path.endswith("/"):
        raise ValueError(f"upload path must be an absolute file path, got {path!r}")
    if not 0 <= mode <= 0o7777:
        raise ValueError("mode must be a permission mode like 0o600")
    dest = shlex.quote(path)
    return f"""umask 077
set -e
dest={dest}
dir=$(dirname "$dest")
mkdir -p "$dir"
tmp=$(mktemp "$dir/.$(basename "$dest").XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
chmod {mode:o} "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
"""


def as_root(cmd: str, user: str) -> str:
    """The command line to send: sh for root, non-interactive sudo for everyone else."""
    inner = f"sh -c {shlex.quote(cmd)}"
    return inner if user == "root" else f"sudo -n {inner}"


def command_result(name: str, label: str, status: int | None, out: bytes, err: bytes, check: bool):
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    code = -1 if status is None else status
    if check and code != 0:
        raise RemoteCommandError(name, label, code, stderr)
    return CommandResult(name=name, exit_status=code, stdout=stdout, stderr=stderr)


class LocalShell:
    """RemoteShell on this machine, optionally behind a prefix such as `ip netns exec NS`.

    Used where no SSH is needed (tests with temp dirs; localcloud servers via nsenter).
    """

    def __init__(self, prefix: list[str] | None = None, label: str = "local"):
        self.prefix = list(prefix or [])
        self.label = label

    async def run(
        self,
        cmd: str,
        *,
        name: str,
        timeout: float = 60,
        check: bool = True,
        input: bytes | None = None,
    ) -> CommandResult:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            "sh",
            "-c",
            cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input or b""), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RemoteCommandTimeout(name, self.label, timeout) from None
        return command_result(name, self.label, proc.returncode, out, err, check)

    async def upload(
        self, path: str, content: bytes, *, mode: int = 0o600, name: str | None = None
    ) -> None:
        await self.run(
            upload_command(path, mode), name=name or f"upload {path}", input=content, timeout=60
        )
