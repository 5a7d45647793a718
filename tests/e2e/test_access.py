"""How a cloud's servers are reached is the cloud's setting, and every SSH path uses it.

The credentials blocks carry localcloud's proxy as their access (what `hybridgrid cloud
import --proxy-command` saves); no SSH key block exists before the flows make one. A site on
the home's own cloud works end to end; a cloud whose access cannot work (direct, but its
floating IPs are reachable only inside localcloud's internet namespace) fails within 90 s
with an error naming the cloud's access setting, and its wait logs progress meanwhile.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from datetime import datetime

import pytest

from hybridgrid.blocks.openstack import OpenStackCredentials
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.flows.add_remote_site import add_remote_site
from hybridgrid.flows.bootstrap_home import bootstrap_home
from hybridgrid.flows.remove_remote_site import remove_remote_site
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite

pytestmark = pytest.mark.dataplane

HOME = HomeSite(
    cloud="bielefeld",
    master=MasterSpec(create=True),
    subnet=ipaddress.IPv4Network("192.168.66.0/24"),
    workers=1,
)


@pytest.fixture(scope="module")
def home(seed_clouds):
    asyncio.run(bootstrap_home(HOME))
    return seed_clouds


def test_a_site_on_the_home_cloud_works_end_to_end_with_a_key_the_flow_made(home):
    annex = RemoteSite(name="bi-annex", cloud="bielefeld", workers=1)
    result = asyncio.run(add_remote_site(annex))
    assert result.verified, result.summary.layers
    assert {x.layer for x in result.summary.layers if x.ok} >= {"handshake", "worker ping"}
    key = asyncio.run(SSHKey.aload("hg-bi-annex-ssh"))  # made by the flow, without a proxy
    assert key.proxy_command is None and key.jump_host is None
    asyncio.run(remove_remote_site("bi-annex"))


async def _run_logs(flow_run_id) -> list[tuple[datetime, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    return sorted((x.timestamp, x.message) for x in logs)


@pytest.fixture
def run_logs_at_info():
    """Progress lines are INFO; the suite's quiet settings would keep them from the API."""
    import logging

    names = ("prefect.flow_runs", "prefect.task_runs")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.INFO)
    yield
    for n, level in before.items():
        logging.getLogger(n).setLevel(level)


def test_an_access_path_that_cannot_work_fails_fast_naming_the_setting(home, run_logs_at_info):
    # giessen's credentials, but direct access: its floating IPs have no route from here
    creds = OpenStackCredentials.from_clouds_yaml("giessen", home.state_dir / "clouds.yaml")
    asyncio.run(creds.asave("giessen-direct", overwrite=True))
    site = RemoteSite(name="gi-direct", cloud="giessen-direct", workers=0)
    started = time.monotonic()
    state = asyncio.run(add_remote_site(site, return_state=True))
    elapsed = time.monotonic() - started
    try:
        assert state.is_failed()
        message = state.message or ""
        with pytest.raises(Exception) as info:
            state.result()
        text = f"{message} {info.value}"
        assert "access setting of cloud 'giessen-direct'" in text, text
        assert "no route" in text, text
        logs = asyncio.run(_run_logs(state.state_details.flow_run_id))
        waits = [t for t, m in logs if m.startswith("still waiting for ssh on")]
        assert waits, [m for _, m in logs]
        first_ssh = next(t for t, m in logs if "wait for ssh" in m or "ssh on" in m)
        gaps = [(b - a).total_seconds() for a, b in zip([first_ssh, *waits], waits, strict=False)]
        assert max(gaps) <= 35, gaps
        assert elapsed <= 150, elapsed  # boot + console + ≤ 90 s on the way in
        assert all("left" in m for t, m in logs if m.startswith("still waiting"))
    finally:
        asyncio.run(remove_remote_site("gi-direct"))


def _bastion_cloud(home, name: str, host_keys: list[str] | None = None) -> str:
    """Credentials block `name` for cloud giessen, reachable only through localcloud's
    bastion (its host key pinned; `host_keys` overrides the pin), as the operator sets it up:
    a login key of their own for the bastion, then `cloud import --bastion …`."""
    from hybridgrid.access import Bastion, CloudAccess

    login = SSHKey.generate(comment="bastion-login")
    asyncio.run(login.asave("giessen-bastion-login", overwrite=True))
    info = home.handle.bastion(login.public_key, bastion_only=["giessen"])
    access = CloudAccess(
        proxy_command=info.proxy_command,
        bastion=Bastion(
            host=info.address,
            port=info.port,
            user=info.user,
            host_keys=host_keys or [info.host_key],
            key_block="giessen-bastion-login",
        ),
    )
    creds = OpenStackCredentials.from_clouds_yaml("giessen", home.state_dir / "clouds.yaml", access)
    asyncio.run(creds.asave(name, overwrite=True))
    return name


def test_a_site_reachable_only_through_a_bastion_works_end_to_end(home):
    cloud = _bastion_cloud(home, "giessen-bastion")
    site = RemoteSite(name="gi-bastion", cloud=cloud, workers=1)
    try:
        result = asyncio.run(add_remote_site(site))
        assert result.verified, result.summary.layers
        vpn = next(n for n in result.summary.nodes if n.role.startswith("VPN"))
        # only the bastion reaches the cloud: the plain proxy's way is closed
        from localcloud.dataplane.netns import open_connection_socket

        with pytest.raises(OSError):
            open_connection_socket(vpn.floating_ip, 22, state_dir=home.state_dir, timeout=3)
    finally:
        asyncio.run(remove_remote_site("gi-bastion"))


def test_an_unpinned_bastion_key_is_refused_before_anything_is_made(home):
    other = SSHKey.generate(comment="not-the-bastion").public_key
    cloud = _bastion_cloud(home, "giessen-badbastion", host_keys=[other])
    before = {s.name for s in home.conn("giessen").compute.servers()}
    state = asyncio.run(
        add_remote_site(RemoteSite(name="gi-badkey", cloud=cloud, workers=0), return_state=True)
    )
    assert state.is_failed()
    with pytest.raises(Exception) as info:
        state.result()
    text = str(info.value)
    assert "not pinned in access.bastion.host_keys" in text, text
    assert "access setting of cloud 'giessen-badbastion'" in text, text
    after = {s.name for s in home.conn("giessen").compute.servers()}
    assert after == before
    nets = [n.name for n in home.conn("giessen").network.networks() if "gi-badkey" in n.name]
    assert nets == []
