"""What the data plane has applied, kept in ``<state_dir>/dataplane/state.json``.

Independent of the API's database: the CLI's ``exec`` and a restarted API find servers
(holder PIDs, namespaces) here; ``destroy`` also finds leftovers by name prefix.
Only public keys are stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from localcloud.dataplane.hostkeys import HostKey


class ServerRecord(BaseModel):
    id: str
    cloud: str
    name: str
    ns: str
    pid: int | None = None  # PID 1 of the server's PID namespace, as seen from the host
    booted: bool = False  # sshd started (ACTIVE); False again after SHUTOFF
    cloud_init_done: bool = False  # write_files/runcmd run once per instance, as cloud-init
    ifaces: dict[str, str] = Field(default_factory=dict)  # port id -> ethN
    host_keys: list[HostKey] = Field(default_factory=list)  # public parts only


class RouterRecord(BaseModel):
    id: str
    cloud: str
    ns: str


class CloudRecord(BaseModel):
    name: str
    index: int
    fabric: str
    external_cidrs: list[str] = Field(default_factory=list)


class DataplaneState(BaseModel):
    tag: str
    clouds: dict[str, CloudRecord] = Field(default_factory=dict)
    servers: dict[str, ServerRecord] = Field(default_factory=dict)
    routers: dict[str, RouterRecord] = Field(default_factory=dict)


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / "dataplane" / "state.json"


def load_state(state_dir: Path, tag: str) -> DataplaneState:
    path = state_path(state_dir)
    if path.exists():
        return DataplaneState.model_validate_json(path.read_text())
    return DataplaneState(tag=tag)


def save_state(state_dir: Path, state: DataplaneState) -> None:
    path = state_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state.model_dump(mode="json"), indent=1))
    os.replace(tmp, path)


def find_server(state: DataplaneState, server: str, cloud: str | None = None) -> ServerRecord:
    """A server by id or name (optionally within one cloud); clear error if unknown/ambiguous."""
    cands = [s for s in state.servers.values() if cloud is None or s.cloud == cloud]
    by_id = [s for s in cands if s.id == server]
    if by_id:
        return by_id[0]
    by_name = [s for s in cands if s.name == server]
    if len(by_name) == 1:
        return by_name[0]
    if not by_name:
        known = ", ".join(sorted(f"{s.cloud}/{s.name}" for s in cands)) or "none"
        raise LookupError(
            f"no server {server!r}{f' in cloud {cloud}' if cloud else ''} (known: {known})"
        )
    clouds = ", ".join(sorted(s.cloud for s in by_name))
    raise LookupError(f"server name {server!r} is ambiguous (clouds: {clouds}): pass --cloud")
