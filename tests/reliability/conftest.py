"""Fixtures of the reliability and security suite: ONE localcloud (data plane on) for the
whole package with a home bootstrapped in registry ``reliab``; the session summary hook."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliab_support import (
    CLOUD_OPTIONS,
    CLOUDS,
    HOME_CLOUD,
    HOME_SUBNET,
    REGISTRY,
    SITE_CLOUD,
    SUMMARY,
    LeakWatch,
    Rel,
    _forget_cached_clients,
    _free_port,
    _secret,
)

from localcloud import control as server


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = SUMMARY.lines()
    if not lines:
        return
    terminalreporter.section("hybridgrid reliability summary")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability-summary.txt"
    try:
        out.parent.mkdir(exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
    except OSError:
        pass


@pytest.fixture(scope="package")
def watch(prefect_harness: None) -> Iterator[LeakWatch]:
    # after the harness: Prefect's logging set-up (dictConfig) replaces the root's handlers
    w = LeakWatch()
    w.start()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="package")
def rel(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None, watch: LeakWatch
) -> Iterator[Rel]:
    """One localcloud for the whole suite and the home `bielefeld` bootstrapped in `reliab`."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    from hybridgrid.access import CloudAccess
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
    from hybridgrid.model import HomeSite, MasterSpec
    from localcloud.dataplane.cli import proxy_command

    state_dir: Path = tmp_path_factory.mktemp("reliab-clouds")
    handle = server.start(
        state_dir,
        clouds=CLOUDS,
        port=_free_port(),
        dataplane=True,
        cloud_options=CLOUD_OPTIONS,
    )
    try:
        r = Rel(handle, watch)
        clouds_yaml = state_dir / "clouds.yaml"

        async def blocks() -> None:
            access = CloudAccess(proxy_command=proxy_command(state_dir))
            for cloud in CLOUDS:
                creds = OpenStackCredentials.from_clouds_yaml(cloud, clouds_yaml, access)
                await creds.asave(cloud, overwrite=True)
            expired = OpenStackCredentials.from_clouds_yaml("marburg-appcred", clouds_yaml, access)
            await expired.asave("marburg-appcred", overwrite=True)
            wrong = OpenStackCredentials.from_clouds_yaml(SITE_CLOUD, clouds_yaml, access)
            wrong = wrong.model_copy(update={"password": _secret("not-the-password-0")})
            await wrong.asave("giessen-wrong", overwrite=True)

        asyncio.run(blocks())
        _forget_cached_clients()
        watch.ensure()
        r.key_block(HOME_CLOUD)
        home = HomeSite(
            cloud=HOME_CLOUD, master=MasterSpec(create=True), subnet=HOME_SUBNET, workers=1
        )
        asyncio.run(bootstrap_home(home, options=HomeOptions(registry=REGISTRY)))
        yield r
    finally:
        _forget_cached_clients()
        server.down(state_dir)


@pytest.fixture(autouse=True)
def _capture_logs(request: pytest.FixtureRequest) -> None:
    """Every test (and the module fixtures it set up) logs into the leak watch."""
    if "watch" in request.fixturenames:
        request.getfixturevalue("watch").ensure()
