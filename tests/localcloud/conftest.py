"""Fixtures for localcloud's API tests: a real localcloud process on a free loopback port, with
the API-only backend (no root, no namespaces), torn down even when tests fail."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcloud import control
from localcloud.clientconf import connect

OPENSTACK_CLI = Path(sys.executable).parent / "openstack"
API_CLOUDS = ["bielefeld", "giessen", "plain"]
# `plain` is a cloud like some real ones: no allowed-address-pairs, no port-security.
API_CLOUD_OPTIONS = {
    "plain": {"extensions_disabled": ["allowed-address-pairs", "port-security"]},
    # Many tests share bielefeld: room for all of them.
    "bielefeld": {
        "quotas": {
            "instances": 50,
            "cores": 100,
            "ram": 204800,
            "security_group": 100,
            "security_group_rule": 1000,
            "router": 50,
            "floatingip": 100,
        }
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_localcloud(state_dir: Path, clouds: list[str], **kwargs: Any) -> control.Handle:
    return control.start(state_dir, clouds=clouds, port=free_port(), dataplane=False, **kwargs)


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def lc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[control.Handle]:
    """One localcloud for the whole session (bielefeld, giessen, plain)."""
    state_dir = tmp_path_factory.mktemp("localcloud-api")
    handle = start_localcloud(state_dir, API_CLOUDS, cloud_options=API_CLOUD_OPTIONS)
    try:
        yield handle
    finally:
        control.down(state_dir)


@pytest.fixture(scope="session")
def conn(lc: control.Handle) -> Any:
    """openstacksdk connection to bielefeld (password auth)."""
    return connect(lc.state_dir, "bielefeld")


@pytest.fixture(scope="session")
def giessen(lc: control.Handle) -> Any:
    """openstacksdk connection to giessen (application-credential auth)."""
    return connect(lc.state_dir, "giessen-appcred")


@pytest.fixture
def faults(lc: control.Handle) -> Iterator[Any]:
    """Set faults with `faults(dict)`; always switched off again afterwards."""
    try:
        yield lc.set_faults
    finally:
        lc.set_faults(None)


def _openstack_cli(handle: control.Handle, cloud: str, *args: str, parse: bool = True) -> Any:
    """Run the unmodified `openstack` CLI against localcloud; JSON output parsed."""
    env = {**os.environ, **handle.env()}
    for key in [k for k in env if k.startswith("OS_") and k != "OS_CLIENT_CONFIG_FILE"]:
        env.pop(key)
    cmd = [str(OPENSTACK_CLI), "--os-cloud", cloud, *args]
    if parse:
        cmd += ["-f", "json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout) if parse and proc.stdout.strip() else proc.stdout


@pytest.fixture(scope="session")
def os_cli(lc: control.Handle) -> Any:
    """`os_cli("bielefeld", "server", "list")` runs the real `openstack` CLI (JSON parsed)."""

    def run(cloud: str, *args: str, parse: bool = True) -> Any:
        return _openstack_cli(lc, cloud, *args, parse=parse)

    return run


@pytest.fixture
def new_localcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Factory for an extra, private localcloud (own state dir and port); all torn down."""
    made: list[Path] = []

    def make(clouds: list[str], **kwargs: Any) -> control.Handle:
        state_dir = tmp_path_factory.mktemp("localcloud-extra")
        made.append(state_dir)
        return start_localcloud(state_dir, clouds, **kwargs)

    try:
        yield make
    finally:
        for state_dir in made:
            control.down(state_dir)


def pytest_configure(config: pytest.Config) -> None:
    # openstacksdk announces its own future API changes on every find_*/proxy call.
    config.addinivalue_line("filterwarnings", "ignore::PendingDeprecationWarning")
