"""Low-level helpers for network namespaces: commands, setns, sockets, process lookup.

Client sockets to simulated public addresses must never be opened in the root namespace
(its default route leads off the machine): ``open_connection_socket`` creates the socket
inside localcloud's internet namespace from a short-lived thread that calls setns(2).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from localcloud.dataplane import names

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DataplaneError(RuntimeError):
    """A command that shapes the data plane failed (message names the command and stderr)."""


def run(
    argv: list[str], *, input: str | None = None, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": SAFE_PATH, "LC_ALL": "C"},
    )
    if check and proc.returncode != 0:
        raise DataplaneError(
            f"{' '.join(argv[:6])} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


def ip(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    base = ["ip"] if ns is None else ["ip", "-n", ns]
    return run([*base, *args], check=check)


def ip_batch(ns: str, commands: list[str]) -> None:
    """Run many `ip` commands in one process (one fork instead of dozens)."""
    if commands:
        run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


def ip_json(ns: str, *args: str) -> list[dict]:
    out = run(["ip", "-j", "-n", ns, *args]).stdout.strip()
    return json.loads(out) if out else []


def nsexec(ns: str, argv: list[str], *, input: str | None = None, check: bool = True):
    """Run a tool in a network namespace (same mount namespace: cheaper than `ip netns exec`)."""
    return run(["nsenter", f"--net={NETNS_DIR / ns}", "--", *argv], input=input, check=check)


def sysctl(ns: str, settings: dict[str, str]) -> None:
    nsexec(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def ns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def add_namespace(ns: str) -> None:
    if not ns_exists(ns):
        run(["ip", "netns", "add", ns])


def ns_inode(ns: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / ns).st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(ns: str) -> list[int]:
    """Every process whose network namespace is `ns` (found by scanning /proc)."""
    ino = ns_inode(ns)
    if ino is None:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino == ino:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _gone(pid: int) -> bool:
    """Exited (zombies count: their parent, maybe init, reaps them later)."""
    try:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
                return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_pids(pids: list[int], *, wait: float = 2.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if not _gone(pid)]
        if pending:
            time.sleep(0.005)


def _is_pidns_init(pid: int) -> bool:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        pass
    return False


def delete_namespace(ns: str) -> None:
    """Kill every process inside, then remove the namespace (links inside go with it).

    PID-namespace inits (server holders) go first: that ends their whole server and lets
    their `unshare` parent reap them and exit, instead of leaving orphaned zombies.
    """
    pids = pids_in_netns(ns)
    kill_pids([p for p in pids if _is_pidns_init(p)])
    kill_pids(pids_in_netns(ns))
    if ns_exists(ns):
        run(["ip", "netns", "del", ns], check=False)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(ns: str, fn):
    """Call `fn()` in a fresh thread that has joined network namespace `ns`; return its result.

    Sockets keep the namespace they were created in, so a socket made here can be used from
    any thread afterwards.
    """
    result: dict = {}

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    if not ns_exists(ns):
        raise DataplaneError(f"network namespace {ns} does not exist: is localcloud up?")
    thread = threading.Thread(target=target, name=f"setns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def find_inet_ns(state_dir: Path | None = None) -> str:
    """The internet namespace of the instance at `state_dir` (or the only one running)."""
    if state_dir is not None:
        return names.inet_ns(names.instance_tag(state_dir))
    env = os.environ.get("LOCALCLOUD_STATE_DIR")
    if env:
        return names.inet_ns(names.instance_tag(Path(env)))
    running = [ns for ns in list_namespaces() if names.INSTANCE_NS_RE.match(ns)]
    if len(running) == 1:
        return running[0]
    return names.inet_ns(names.instance_tag(Path(".localcloud")))


def open_connection_socket(
    host: str, port: int, *, state_dir: Path | None = None, timeout: float = 10.0
) -> socket.socket:
    """A TCP socket connected to host:port as seen from localcloud's internet namespace.

    For asyncssh: ``asyncssh.connect(host, sock=open_connection_socket(host, 22))``.
    """
    ns = find_inet_ns(state_dir)

    def connect() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(None)
        return sock

    return in_netns(ns, connect)


def is_alive(pid: int | None, ns: str) -> bool:
    """True if `pid` still runs inside network namespace `ns` (guards against PID reuse)."""
    if not pid:
        return False
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == ns_inode(ns)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return False
        raise
