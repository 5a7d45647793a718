"""Run localcloud from Python (tests, demo, CLI): start, stop, down, status, stats, faults.

handle = start(Path(".localcloud"), clouds=["bielefeld", "giessen"])
conn = openstack.connect(cloud="bielefeld")  # with OS_CLIENT_CONFIG_FILE=handle.clouds_yaml
handle.set_faults({"bielefeld": {"error_rate": 0.2}})
stop(handle.state_dir)  # keeps state;  down(handle.state_dir) removes it
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from localcloud.api_main import BACKEND_FILE, make_backend
from localcloud.clientconf import CLOUDS_YAML
from localcloud.config import (
    CONFIG_FILE,
    DEFAULT_CLOUDS,
    DEFAULT_PORT,
    LocalcloudConfig,
    load_config,
    save_config,
)
from localcloud.faults import write_faults
from localcloud.store import Store

PID_FILE = "server.pid"
LOG_FILE = "server.log"


class LocalcloudError(RuntimeError):
    pass


class Endpoints(BaseModel):
    cloud: str
    index: int
    auth_url: str
    compute: str
    network: str
    image: str
    external_cidr: str


class Handle(BaseModel):
    """A running localcloud: where it listens and how to reach its admin endpoints."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    state_dir: Path
    port: int
    pid: int
    clouds: dict[str, Endpoints]
    clouds_yaml: Path
    admin_token: str = Field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str) -> Any:
        return _admin(self.base_url, self.admin_token, method, path)

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "/_localcloud/stats")

    def reset_stats(self) -> None:
        self.admin("DELETE", "/_localcloud/stats")

    def settle(self) -> dict[str, Any]:
        return self.admin("POST", "/_localcloud/settle")

    def set_faults(self, faults: dict[str, Any] | None) -> None:
        set_faults(self.state_dir, faults)

    def bastion(
        self,
        authorized_key: str | list[str],
        bastion_only: list[str] | None = None,
        *,
        add: bool = False,
    ) -> Any:
        """A bastion host in this localcloud's internet (idempotent): a ``BastionInfo`` with
        address, port, user, host key line and the ProxyCommand that reaches it; clouds in
        `bastion_only` are then reachable only through it (see
        ``localcloud.dataplane.bastion``; needs the data plane)."""
        from localcloud.dataplane import bastion

        return bastion.up(self.state_dir, authorized_key, bastion_only or [], add=add)

    def env(self) -> dict[str, str]:
        """Environment for `openstack` / `openstack.connect(cloud=…)` to find clouds.yaml."""
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml)}


def _admin(base_url: str, token: str, method: str, path: str) -> Any:
    req = urllib.request.Request(  # noqa: S310 - loopback URL we built
        base_url + path, method=method, headers={"X-Localcloud-Admin": token}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        body = resp.read()
    return json.loads(body) if body else None


def set_faults(state_dir: Path, faults: dict[str, Any] | None) -> None:
    """Switch fault injection (None or {} = off); the running server applies it at once."""
    write_faults(Path(state_dir), faults or {})


# ---- process bookkeeping ----------------------------------------------------------------


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and b"localcloud.api_main" in cmdline


def running_pid(state_dir: Path) -> int | None:
    path = Path(state_dir) / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _log_tail(state_dir: Path, lines: int = 20) -> str:
    path = Path(state_dir) / LOG_FILE
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _handle(state_dir: Path, config: LocalcloudConfig, pid: int) -> Handle:
    base = f"http://127.0.0.1:{config.port}"
    clouds = {
        c.name: Endpoints(
            cloud=c.name,
            index=c.index,
            auth_url=f"{base}/{c.name}/identity/v3",
            compute=f"{base}/{c.name}/compute/v2.1",
            network=f"{base}/{c.name}/network",
            image=f"{base}/{c.name}/image",
            external_cidr=str(c.external_cidr),
        )
        for c in config.clouds
    }
    return Handle(
        state_dir=state_dir,
        port=config.port,
        pid=pid,
        clouds=clouds,
        clouds_yaml=state_dir / CLOUDS_YAML,
        admin_token=(state_dir / "admin.token").read_text().strip(),
    )


# ---- start / stop / down ----------------------------------------------------------------


def start(
    state_dir: Path,
    clouds: list[str] | None = None,
    port: int | None = None,
    faults: dict[str, Any] | None = None,
    dataplane: bool | None = None,
    cloud_options: dict[str, dict[str, Any]] | None = None,
    timeout: float = 60.0,
) -> Handle:
    """Start the API in the background (or find it running); return once every cloud answers.

    `clouds` are added to those the state directory already has (default: bielefeld and
    giessen for a new one). `dataplane=False` forces the API-only backend; None decides by
    ``LOCALCLOUD_DATAPLANE`` and whether ``localcloud.dataplane`` exists.
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    existing = load_config(state_dir)
    names = list(clouds) if clouds else ([] if existing else list(DEFAULT_CLOUDS))
    base = existing or LocalcloudConfig(port=port or DEFAULT_PORT)
    config = base.merged(names, cloud_options)
    if port is not None:
        config.port = port
    if faults is not None:
        set_faults(state_dir, faults)
    pid = running_pid(state_dir)
    if pid is not None:
        if existing is not None and config == existing:
            return _handle(state_dir, config, pid)
        raise LocalcloudError(
            f"localcloud already runs from {state_dir} (pid {pid}) with other settings: "
            "run `localcloud stop` first, then `up` with the new clouds or port"
        )
    save_config(state_dir, config)
    proc = _spawn_api(state_dir, dataplane)
    _wait_until_answering(proc, state_dir, config, timeout)
    return _handle(state_dir, config, proc.pid)


def _spawn_api(state_dir: Path, dataplane: bool | None) -> subprocess.Popen:
    """Start the API process in its own session (it outlives the caller), logging to a file."""
    env = dict(os.environ)
    if dataplane is False:
        env["LOCALCLOUD_DATAPLANE"] = "0"
    elif dataplane is True:
        env["LOCALCLOUD_DATAPLANE"] = "1"
    with open(state_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localcloud.api_main", "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=state_dir,
        )
    (state_dir / PID_FILE).write_text(f"{proc.pid}\n")
    return proc


def _wait_until_answering(
    proc: subprocess.Popen, state_dir: Path, config: LocalcloudConfig, timeout: float
) -> None:
    """Health first, then every cloud's identity endpoint; stop the process on a timeout."""
    base_url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + timeout
    pending = ["/_localcloud/health"] + [f"/{c.name}/identity/v3" for c in config.clouds]
    while pending:
        if proc.poll() is not None:
            raise LocalcloudError(
                f"localcloud exited with code {proc.returncode} during start-up "
                f"(port {config.port} in use?):\n{_log_tail(state_dir)}"
            )
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            raise LocalcloudError(
                f"localcloud did not answer within {timeout:.0f} s:\n{_log_tail(state_dir)}"
            )
        try:
            if _get(base_url + pending[0]) == 200:
                pending.pop(0)
                continue
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)


def _terminate(pid: int, timeout: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            _alive(pid)  # reap
            return
        time.sleep(0.05)


def stop(state_dir: Path) -> bool:
    """Stop the API process, keep all state. False if it was not running."""
    state_dir = Path(state_dir).resolve()
    pid = running_pid(state_dir)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    if pid is None:
        return False
    _terminate(pid)
    return True


def down(state_dir: Path) -> None:
    """Stop, let the backend remove what it made, then remove the state directory."""
    state_dir = Path(state_dir).resolve()
    if not state_dir.exists():
        return
    stop(state_dir)
    kind_file = state_dir / BACKEND_FILE
    kind = kind_file.read_text().strip() if kind_file.exists() else "null"
    make_backend(state_dir, kind).destroy()
    if (state_dir / CONFIG_FILE).exists() or not any(state_dir.iterdir()):
        shutil.rmtree(state_dir)
    else:
        raise LocalcloudError(
            f"{state_dir} has no {CONFIG_FILE}: not a localcloud state directory, left alone"
        )


def status(state_dir: Path) -> dict[str, Any]:
    """Clouds, endpoints and servers, read from the state (works while stopped too)."""
    state_dir = Path(state_dir).resolve()
    config = load_config(state_dir)
    if config is None:
        return {"state_dir": str(state_dir), "running": False, "clouds": {}}
    pid = running_pid(state_dir)
    handle = _handle(state_dir, config, pid or 0) if (state_dir / "admin.token").exists() else None
    clouds: dict[str, Any] = {}
    for c in config.clouds:
        db = state_dir / f"{c.name}.db"
        servers = []
        if db.exists():
            store = Store(db, readonly=True)
            try:
                ports = store.all("ports")
                fips = store.all("floatingips")
                for s in store.all("servers"):
                    mine = [p for p in ports if p["device_id"] == s["id"]]
                    addrs = [ip["ip_address"] for p in mine for ip in p["fixed_ips"]]
                    addrs += [
                        f["floating_ip_address"]
                        for f in fips
                        if f["port_id"] in {p["id"] for p in mine}
                    ]
                    servers.append(
                        {
                            "id": s["id"],
                            "name": s["name"],
                            "status": s["status"],
                            "addresses": addrs,
                        }
                    )
            finally:
                store.close()
        ep = handle.clouds[c.name].model_dump() if handle else {}
        clouds[c.name] = {**ep, "servers": servers}
    return {
        "state_dir": str(state_dir),
        "running": pid is not None,
        "pid": pid,
        "port": config.port,
        "clouds": clouds,
        "bastion": _bastion_status(state_dir),
    }


def _bastion_status(state_dir: Path) -> dict[str, Any] | None:
    """The bastion host's address, user and host key, or None (also without a data plane)."""
    try:
        from localcloud.dataplane import bastion
    except ImportError:
        return None
    info = bastion.info(state_dir)
    return info.model_dump() if info else None


def handle(state_dir: Path) -> Handle:
    """The handle of an already running localcloud."""
    state_dir = Path(state_dir).resolve()
    config = load_config(state_dir)
    pid = running_pid(state_dir)
    if config is None or pid is None:
        raise LocalcloudError(f"localcloud is not running from {state_dir}: run `localcloud up`")
    return _handle(state_dir, config, pid)
