"""Remote shell over asyncssh: pinned host keys, jump hosts, proxy commands, atomic uploads.

Host keys are pinned (OpenSSH key lines and/or SHA256 fingerprints from the console log);
there is no trust-on-first-use and no known_hosts file: a server that shows another key is
refused with `HostKeyMismatch`. The client key comes in as a string and stays in memory.
Commands run as root: `sh -c …` for root, `sudo -n sh -c …` otherwise. File contents travel on
stdin, never in argv, and never appear in errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import inspect
import re
import shlex
import socket
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hybridgrid.tasks.retry import PermanentError, is_transient, with_retries
from hybridgrid.tasks.sshkeys import SSHKeyError, load_private_key

STDERR_TAIL = 2000


# ---------------------------------------------------------------- errors


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class RemoteError(Exception):
    """Base of everything this module raises.

    Picklable as is (Prefect may persist a failed task's exception): the subclasses' own
    constructors take other arguments than `args`, so pickling restores args and attributes.
    """

    def __reduce__(self):
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class HostKeyMismatch(RemoteError):
    """The server presented a host key we have not pinned. Permanent: never retried."""

    def __init__(self, label: str, presented: str | None = None):
        self.label = label
        self.presented = presented
        shown = f" (it presented {presented})" if presented else ""
        super().__init__(
            f"host key of {label} does not match the pinned key{shown}. Either someone is "
            f"intercepting the connection, or the server was rebuilt: if it was rebuilt, pin its "
            f"new host keys again from its console log (rerun the pinning step), then retry."
        )


class SSHAuthError(RemoteError):
    """The server refused our client key. Permanent."""

    def __init__(self, label: str):
        self.label = label
        super().__init__(
            f"{label} refused the SSH key (permission denied): check that the site's SSH key "
            f"block holds the key whose public half is in the server's authorized_keys"
        )


class SSHUnreachable(RemoteError, ConnectionError):
    """SSH is not (yet) reachable: refused, reset, timed out, lost. Transient.

    `path` says whether the failure lies on the way in rather than at the server (no route,
    a ProxyCommand that exits, the bastion): `wait_for_ssh` gives up on those early."""

    def __init__(
        self, label: str, cause: BaseException, *, bastion: bool = False, hint: str | None = None
    ):
        self.label = label
        self.hint = hint
        self.path = _path_failure(cause, bastion)
        reason = str(cause) or type(cause).__name__
        via = f" (way in: {hint})" if hint and self.path else ""
        super().__init__(f"SSH to {label} not reachable: {type(cause).__name__}: {reason}{via}")


def _path_failure(cause: BaseException, bastion: bool) -> str | None:
    """Why the way in (not the server) failed, or None when the server may just be slow."""
    if bastion:
        return f"the bastion is not reachable ({type(cause).__name__}: {cause or 'no answer'})"
    if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to the address from where the flow runs"
    if isinstance(cause, asyncssh.ConnectionLost):
        return "the ProxyCommand exited before the server answered"
    return None


class SSHConnectError(RemoteError):
    """SSH failed for a reason retrying will not fix (bad proxy command, protocol error)."""

    def __init__(self, label: str, cause: BaseException):
        self.label = label
        reason = str(cause) or type(cause).__name__
        super().__init__(f"SSH to {label} failed: {type(cause).__name__}: {reason}")


class SSHAccessError(RemoteError, PermanentError):
    """The way in to a cloud's servers cannot work: no route from where the flow runs, a
    ProxyCommand that exits, a bastion that cannot be reached, refuses us or shows an unpinned
    host key. Permanent: the message names the cloud's access setting to fix."""

    def __init__(self, label: str, reason: str, hint: str | None):
        self.label = label
        self.reason = reason
        self.hint = hint
        fix = f" Fix {hint}." if hint else ""
        super().__init__(f"SSH to {label} cannot work: {reason}.{fix}")


def _connection_error(target: SSHTarget, exc: BaseException) -> RemoteError:
    label = target.label
    if target.key_block is not None:  # a bastion: the way in itself failed
        return SSHUnreachable(label, exc, bastion=True, hint=target.hint)
    if is_transient(exc):
        return SSHUnreachable(label, exc, hint=target.hint)
    return SSHConnectError(label, exc)


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


def _result(name: str, label: str, status: int | None, out: bytes, err: bytes, check: bool):
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
        return _result(name, self.label, proc.returncode, out, err, check)

    async def upload(
        self, path: str, content: bytes, *, mode: int = 0o600, name: str | None = None
    ) -> None:
        await self.run(
            upload_command(path, mode), name=name or f"upload {path}", input=content, timeout=60
        )


# ---------------------------------------------------------------- SSH target


_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")


class SSHTarget(BaseModel):
    """Where and how to reach a host. Holds no secret (the client key is passed separately)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    host_keys: list[str] = Field(
        default_factory=list, description="pinned OpenSSH public key lines (ssh-ed25519 AAAA…)"
    )
    host_key_fingerprints: list[str] = Field(
        default_factory=list, description="pinned SHA256:… fingerprints (cloud-init console log)"
    )
    jump: SSHTarget | None = None
    proxy_command: str | None = Field(
        default=None, description="OpenSSH-style ProxyCommand; %h, %p, %r and %% are expanded"
    )
    sock_factory: Callable[[], socket.socket] | None = Field(default=None, exclude=True)
    connect_timeout: float = Field(default=15, gt=0)
    key_block: str | None = Field(
        default=None,
        description="SSHKey block this hop logs in with (a bastion's own key); None: the "
        "key of the target behind it",
    )
    hint: str | None = Field(
        default=None, description="the setting that decides the way in, named in errors"
    )

    @field_validator("host_keys")
    @classmethod
    def _parse_keys(cls, v: list[str]) -> list[str]:
        for i, line in enumerate(v):
            try:
                asyncssh.import_public_key(line.strip())
            except (asyncssh.KeyImportError, ValueError):
                raise ValueError(
                    f"host_keys[{i}] is not an OpenSSH public key line "
                    f"(expected e.g. 'ssh-ed25519 AAAA… root@host')"
                ) from None
        return [line.strip() for line in v]

    @field_validator("host_key_fingerprints")
    @classmethod
    def _fps(cls, v: list[str]) -> list[str]:
        for i, fp in enumerate(v):
            if not _FINGERPRINT.match(fp):
                raise ValueError(f"host_key_fingerprints[{i}] must look like SHA256:<43 chars>")
        return v

    @model_validator(mode="after")
    def _pinned(self) -> SSHTarget:
        if not self.host_keys and not self.host_key_fingerprints:
            raise ValueError(
                f"host_keys: no pinned host key for {self.host}; pin the keys from the server's "
                f"console log first (hybridgrid.tasks.hostkeys.parse_console_host_keys)"
            )
        ways = [
            self.jump is not None,
            self.proxy_command is not None,
            self.sock_factory is not None,
        ]
        if sum(ways) > 1:
            raise ValueError("jump, proxy_command and sock_factory are alternatives: set one")
        return self

    @property
    def label(self) -> str:
        via = f" via {self.jump.label}" if self.jump else ""
        return f"{self.user}@{self.host}:{self.port}{via}"

    def expanded_proxy_command(self) -> list[str] | None:
        if self.proxy_command is None:
            return None
        subst = {"%h": self.host, "%p": str(self.port), "%r": self.user, "%%": "%"}
        return [
            re.sub(r"%[hpr%]", lambda m: subst[m.group(0)], arg)
            for arg in shlex.split(self.proxy_command)
        ]


class _PinnedClient(asyncssh.SSHClient):
    """Accepts a key not in the pinned list only when its SHA256 fingerprint is pinned."""

    def __init__(self, fingerprints: list[str]):
        self._fingerprints = set(fingerprints)
        self.presented: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key) -> bool:
        fp = key.get_fingerprint("sha256")
        self.presented = fp
        return fp in self._fingerprints


class RemoteHost:
    """An open SSH connection to one target; implements RemoteShell."""

    def __init__(self, target: SSHTarget, conn: asyncssh.SSHClientConnection):
        self.target = target
        self.conn = conn
        self.label = target.label

    @property
    def server_host_key(self) -> str:
        """The host key the server proved it holds (OpenSSH line), to store in the registry."""
        key = self.conn.get_server_host_key()
        assert key is not None
        return key.export_public_key("openssh").decode().strip()

    async def run(
        self,
        cmd: str,
        *,
        name: str,
        timeout: float = 60,
        check: bool = True,
        input: bytes | None = None,
    ) -> CommandResult:
        try:
            proc = await self.conn.run(
                as_root(cmd, self.target.user),
                input=input or b"",
                encoding=None,
                check=False,
                timeout=timeout,
            )
        except asyncssh.TimeoutError as exc:
            raise RemoteCommandTimeout(name, self.label, timeout) from exc
        except (OSError, asyncssh.Error) as exc:
            raise _connection_error(self.target, exc) from exc
        out = proc.stdout if isinstance(proc.stdout, bytes) else b""
        err = proc.stderr if isinstance(proc.stderr, bytes) else b""
        return _result(name, self.label, proc.exit_status, out, err, check)

    async def upload(
        self, path: str, content: bytes, *, mode: int = 0o600, name: str | None = None
    ) -> None:
        await self.run(
            upload_command(path, mode), name=name or f"upload {path}", input=content, timeout=60
        )


async def open_connection(
    target: SSHTarget,
    key: asyncssh.SSHKey,
    tunnel: asyncssh.SSHClientConnection | None = None,
) -> asyncssh.SSHClientConnection:
    """One SSH connection to `target` (host key pinned), through `tunnel` when given (then
    `target.jump` is not used). Close it with `close_connection`; `connect` does both."""
    pinned = [asyncssh.import_public_key(line) for line in target.host_keys]
    client = _PinnedClient(target.host_key_fingerprints)
    kwargs: dict = {}
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    elif target.proxy_command is not None:
        kwargs["proxy_command"] = target.expanded_proxy_command()
    try:
        if tunnel is None and target.proxy_command is None and target.sock_factory is not None:
            kwargs["sock"] = await asyncio.to_thread(target.sock_factory)
        return await asyncssh.connect(
            target.host,
            target.port,
            username=target.user,
            client_keys=[key],
            known_hosts=(pinned, [], []),
            client_factory=lambda: client,
            # with fingerprint pins the key type is unknown up front: offer every algorithm
            server_host_key_algs="default" if target.host_key_fingerprints else (),
            config=[],
            agent_path=None,
            password=None,
            kbdint_auth=False,
            gss_auth=False,
            preferred_auth="publickey",
            connect_timeout=target.connect_timeout,
            keepalive_interval=30,  # notice a dead path (NAT, rebuilt hub) on long commands
            **kwargs,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise _bastion_refused(target, HostKeyMismatch(target.label, client.presented)) from exc
    except asyncssh.KeyExchangeFailed as exc:
        # no common host key algorithm: the server has none of the pinned key types
        if "host key" in str(exc).lower():
            raise _bastion_refused(target, HostKeyMismatch(target.label)) from exc
        raise SSHConnectError(target.label, exc) from exc
    except asyncssh.PermissionDenied as exc:
        raise _bastion_refused(target, SSHAuthError(target.label)) from exc
    except (OSError, asyncssh.Error) as exc:  # refused, reset, unreachable, timeout, lost…
        raise _connection_error(target, exc) from exc


def _bastion_refused(target: SSHTarget, exc: RemoteError) -> RemoteError:
    """On a bastion hop a host-key or login refusal is the cloud's access setting's fault."""
    if target.key_block is None:
        return exc
    if isinstance(exc, HostKeyMismatch):
        shown = f" {exc.presented}" if exc.presented else " a key"
        reason = (
            f"the bastion {target.label} presented{shown} that is not pinned in "
            f"access.bastion.host_keys (a changed bastion, or someone in between)"
        )
    else:
        reason = (
            f"the bastion {target.label} refused the key of SSHKey block {target.key_block!r} "
            f"(access.bastion.key_block): its public half must be in the bastion's "
            f"authorized_keys for user {target.user}"
        )
    return SSHAccessError(target.label, reason, target.hint)


class SharedConnections:
    """SSH connections kept open for the length of a `reuse_connections()` scope (one flow
    run): every `connect` in the scope to the same target — same address, port, user, way in
    and pinned host keys — with the same client key gets the connection the first one made.

    The pins are part of the identity, so a re-pinned (rebuilt) server gets a new connection;
    a connection that closed, or whose holder failed with a connection-level error, is
    dropped and the next `connect` opens a new one. At most `PER_CONNECTION` holders share a
    connection at a time (sshd allows 10 sessions per connection by default).
    """

    PER_CONNECTION = 4

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._conns: dict[tuple, asyncssh.SSHClientConnection] = {}
        self._opening: dict[tuple, asyncio.Lock] = {}
        self._slots: dict[tuple, asyncio.Semaphore] = {}
        self.opened = 0  # connections made (diagnostics, tests)
        self.closed = False

    @staticmethod
    def identity(target: SSHTarget, key: asyncssh.SSHKey) -> tuple:
        return (target.model_dump_json(exclude={"sock_factory"}), key.get_fingerprint())

    def usable(self) -> bool:
        return asyncio.get_running_loop() is self._loop

    async def get(self, target: SSHTarget, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
        """The scope's connection to `target`, opened when there is none (or it closed).

        After the scope ended (a task still running when its flow returned, e.g. a sibling
        of a failed step) no connection is opened any more: it would outlive the scope."""
        ident = self.identity(target, key)
        self._refuse_if_closed(target)
        async with self._opening.setdefault(ident, asyncio.Lock()):
            self._refuse_if_closed(target)
            conn = self._conns.get(ident)
            if conn is None or conn.is_closed():
                tunnel = None
                if target.jump is not None:
                    tunnel = await self.get(target.jump, await hop_key(target.jump, key))
                try:
                    conn = await open_connection(target, key, tunnel)
                except (SSHUnreachable, SSHConnectError):
                    if target.jump is not None:  # the hop's connection may be the dead part
                        await self.drop(target.jump, await hop_key(target.jump, key))
                    raise
                if self.closed:  # the scope ended while this one was connecting
                    await close_connection(conn)
                    self._refuse_if_closed(target)
                self._conns[ident] = conn
                self.opened += 1
            return conn

    def _refuse_if_closed(self, target: SSHTarget) -> None:
        if self.closed:
            raise SSHConnectError(
                target.label, RuntimeError("the flow run that shared its SSH connections ended")
            )

    def slot(self, target: SSHTarget, key: asyncssh.SSHKey) -> asyncio.Semaphore:
        return self._slots.setdefault(
            self.identity(target, key), asyncio.Semaphore(self.PER_CONNECTION)
        )

    async def drop(self, target: SSHTarget, key: asyncssh.SSHKey) -> None:
        conn = self._conns.pop(self.identity(target, key), None)
        if conn is not None:
            await close_connection(conn)

    async def aclose(self) -> None:
        self.closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in reversed(conns):  # workers before the hops they tunnel through
            await close_connection(conn)


_shared: contextvars.ContextVar[SharedConnections | None] = contextvars.ContextVar(
    "hybridgrid_shared_ssh", default=None
)


@contextlib.asynccontextmanager
async def reuse_connections() -> AsyncIterator[SharedConnections]:
    """Within this block (and the tasks it runs: Prefect copies the context), `connect`
    reuses SSH connections instead of opening one per task; all are closed at the end."""
    pool = SharedConnections()
    token = _shared.set(pool)
    try:
        yield pool
    finally:
        _shared.reset(token)
        await pool.aclose()


def sharing_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: the async function (a flow) runs inside `reuse_connections()`. Put it
    under `@flow`. The signature is resolved here, in the function's own module (Prefect
    would otherwise evaluate string annotations in this module's namespace)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        async with reuse_connections():
            return await fn(*args, **kwargs)

    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    wrapper.__annotations__ = typing.get_type_hints(fn)
    return wrapper


# Errors after which a shared connection is not trusted again.
_CONNECTION_LEVEL = (SSHUnreachable, SSHConnectError, asyncssh.Error, OSError)


@contextlib.asynccontextmanager
async def connect(
    target: SSHTarget,
    client_key: SecretStr | str | asyncssh.SSHKey,
    *,
    via: RemoteHost | None = None,
) -> AsyncIterator[RemoteHost]:
    """Open SSH to `target` with the given private key: through `via` (an open connection to
    the hop, reused: many workers behind one hub/spoke need one hop connection), else through
    `target.jump` first, if any. Inside `reuse_connections()` the scope's connection to the
    same target is used (and kept open) instead."""
    if isinstance(client_key, asyncssh.SSHKey):
        key = client_key
    else:
        try:
            key = load_private_key(client_key)
        except SSHKeyError as exc:
            raise SSHKeyError(f"client key for {target.label}: {exc}") from None
    pool = _shared.get()
    if pool is not None and pool.usable() and via is None and target.sock_factory is None:
        async with pool.slot(target, key):
            conn = await pool.get(target, key)
            try:
                yield RemoteHost(target, conn)
            except _CONNECTION_LEVEL:
                await pool.drop(target, key)
                raise
        return
    async with contextlib.AsyncExitStack() as stack:
        if via is not None:
            conn = await open_connection(target, key, via.conn)
            stack.push_async_callback(close_connection, conn)
        else:
            conn = await _open_chain(stack, target, key)
        yield RemoteHost(target, conn)


async def _open_chain(
    stack: contextlib.AsyncExitStack, target: SSHTarget, key: asyncssh.SSHKey
) -> asyncssh.SSHClientConnection:
    """Connections to every hop of `target.jump` (outermost first), then to `target`; all
    closed with `stack`, innermost first."""
    tunnel = None
    if target.jump is not None:
        tunnel = await _open_chain(stack, target.jump, await hop_key(target.jump, key))
    conn = await open_connection(target, key, tunnel)
    stack.push_async_callback(close_connection, conn)
    return conn


async def hop_key(hop: SSHTarget, key: asyncssh.SSHKey) -> asyncssh.SSHKey:
    """The key a hop logs in with: its own block's (a bastion), else the target's `key`."""
    if hop.key_block is None:
        return key
    from hybridgrid.tasks.credentials import ssh_key

    try:
        block = await ssh_key(hop.key_block)
    except Exception as exc:  # missing or unusable block: the access setting names it
        raise SSHAccessError(
            hop.label,
            f"the bastion's login key, SSHKey block {hop.key_block!r} "
            f"(access.bastion.key_block), cannot be loaded: {type(exc).__name__}: {exc}",
            hop.hint,
        ) from None
    return load_private_key(block.private_key)


async def close_connection(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    with contextlib.suppress(Exception):
        await conn.wait_closed()


# A way in that failed this long (no route, proxy exits, bastion) will not start working.
PATH_BUDGET = 60.0
# Seconds between progress lines of a wait; with 15 s connect attempts, lines are ≤ ~30 s apart.
PROGRESS_EVERY = 15.0


async def wait_for_ssh(
    target: SSHTarget,
    client_key: SecretStr | str,
    *,
    timeout: float = 300.0,
    auth_grace: bool = True,
    path_budget: float = PATH_BUDGET,
) -> str:
    """Wait until `target` accepts SSH and runs a command; return its proven host key line.

    Refused/reset/lost connections are retried with backoff until `timeout`, with a progress
    line in the run's log at least every ~30 s. With `auth_grace`, "permission denied" is
    retried too: sshd often starts before cloud-init has written authorized_keys. A host key
    mismatch is never retried. When every attempt for `path_budget` seconds failed on the way
    in (no route, a ProxyCommand that exits, the bastion), the wait ends with
    `SSHAccessError` naming the access setting, long before `timeout`: the callers wait for
    SSH only after the console showed the host keys, so sshd is up by then.
    """

    loop = asyncio.get_running_loop()
    started = loop.time()
    reached = False  # once any attempt got past the way in, the path is known to work

    async def attempt() -> str:
        nonlocal reached
        try:
            async with connect(target, client_key) as host:
                await host.run("true", name="ssh ready", timeout=30)
                return host.server_host_key
        except SSHUnreachable as exc:
            elapsed = loop.time() - started
            if exc.path is None:
                reached = True
            elif not reached and elapsed >= path_budget:
                raise SSHAccessError(
                    target.label, f"{exc.path}, for {elapsed:.0f} s", exc.hint or target.hint
                ) from exc
            raise
        except (SSHAuthError, RemoteCommandError):
            reached = True
            raise

    def retry(exc: BaseException) -> bool:
        return is_transient(exc) or (auth_grace and isinstance(exc, SSHAuthError))

    return await with_retries(
        attempt,
        attempts=10_000,
        base=0.5,
        max_delay=5.0,
        deadline=timeout,
        transient=retry,
        what=f"ssh on {target.label}",
        progress_every=PROGRESS_EVERY,
    )
