"""The seed on two local clouds with real hosts: localcloud (API + data plane), blocks for both
clouds and SSH keys that reach servers through localcloud's proxy, a Prefect harness."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcloud import control as server

pytestmark = pytest.mark.dataplane
KILL_ENV = "HYBRIDGRID_KILL_AFTER"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Seed:
    """What the e2e tests share: the running clouds and helpers to look inside them."""

    def __init__(self, handle: server.Handle):
        self.handle = handle
        self.state_dir = handle.state_dir

    def conn(self, cloud: str) -> Any:
        from localcloud.clientconf import connect

        return connect(self.state_dir, cloud)

    def exec(self, server_name: str, cmd: str, cloud: str | None = None) -> tuple[int, str]:
        """Run a shell command as root inside a server (the operator's console)."""
        import subprocess
        import sys

        argv = [sys.executable, "-m", "localcloud.dataplane.cli", "exec"]
        argv += ["--state-dir", str(self.state_dir)]
        if cloud:
            argv += ["--cloud", cloud]
        argv += [server_name, "--", "sh", "-c", cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    def env(self) -> dict[str, str]:
        """Environment for a child process that runs flows against the session's Prefect API
        (the harness's temporary server) with the same quiet settings."""
        from prefect.settings import PREFECT_API_URL

        env = dict(os.environ)
        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        env.pop(KILL_ENV, None)
        return env

    def stats(self) -> dict[str, Any]:
        return self.handle.stats()

    def reset_stats(self) -> None:
        self.handle.reset_stats()


DEFAULT_CLOUDS = ["bielefeld", "giessen"]


@pytest.fixture(scope="module")
def seed_clouds(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    prefect_harness: None,
) -> Iterator[Seed]:
    """One localcloud per test module. A module sets ``LOCALCLOUD_CLOUDS = [...]`` for other
    clouds (default bielefeld + giessen) and ``LOCALCLOUD_FAULTS = {...}`` for faults."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    from hybridgrid.access import CloudAccess
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from localcloud.dataplane.cli import proxy_command

    names = list(getattr(request.module, "LOCALCLOUD_CLOUDS", DEFAULT_CLOUDS))
    faults = getattr(request.module, "LOCALCLOUD_FAULTS", None)
    state_dir: Path = tmp_path_factory.mktemp("seed-clouds")
    handle = server.start(state_dir, clouds=names, port=_free_port(), dataplane=True, faults=faults)
    try:
        clouds_yaml = state_dir / "clouds.yaml"

        # Only what a user sets up: a credentials block per cloud whose access is localcloud's
        # proxy (its floating IPs are reachable only from its internet namespace). The SSH
        # key blocks are the flows' to make, as for a new user.
        async def blocks() -> None:
            access = CloudAccess(proxy_command=proxy_command(state_dir))
            for cloud in names:
                creds = OpenStackCredentials.from_clouds_yaml(cloud, clouds_yaml, access)
                await creds.asave(cloud, overwrite=True)
                await _forget_key_block(f"hg-{cloud}-ssh")

        asyncio.run(blocks())
        _forget_cached_clients()
        yield Seed(handle)
    finally:
        _forget_cached_clients()
        server.down(state_dir)


async def _forget_key_block(name: str) -> None:
    """A previous module's key block of that name goes: each module's servers are new."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        with contextlib.suppress(ObjectNotFound):
            await client.delete_block_document(
                (await client.read_block_document_by_name(name, "hybridgrid-ssh-key")).id
            )


def _forget_cached_clients() -> None:
    """Connections and SSH keys are cached per process by block name: every module's cloud
    and keys are new, so the previous module's must go."""
    from hybridgrid.blocks import loading

    loading.forget()
    loading.forget_all_ssh_keys()
