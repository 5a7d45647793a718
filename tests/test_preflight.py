"""Pre-flight against localcloud: every problem of a cloud in one report, each naming cause and
fix, and not one mutating API call."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from hybridgrid.blocks import loading
from hybridgrid.cloudops.preflight import (
    Needs,
    PreflightError,
    PreflightRequest,
    pair_limit_problems,
    preflight,
)
from hybridgrid.retry.policy import transient_options
from localcloud import control as server
from localcloud.clientconf import connect

CLOUDS = ["giessen", "plain"]
OPTIONS = {
    "plain": {"extensions_disabled": ["allowed-address-pairs", "port-security"]},
    "giessen": {"quotas": {"instances": 3, "floatingip": 2}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.Handle]:
    state_dir = tmp_path_factory.mktemp("lc-preflight")
    handle = server.start(
        state_dir, clouds=CLOUDS, port=free_port(), dataplane=False, cloud_options=OPTIONS
    )
    try:
        yield handle
    finally:
        server.down(state_dir)


@pytest.fixture
def no_mutation(lc: server.Handle) -> Iterator[None]:
    """Whatever the test does, pre-flight must not change anything on any cloud."""
    lc.reset_stats()
    yield
    stats = lc.stats()
    assert stats, "no API call reached localcloud: the test checked nothing"
    assert {cloud: s["mutating"] for cloud, s in stats.items()} == dict.fromkeys(stats, 0)


GOOD = PreflightRequest(
    cloud="giessen",
    image="ubuntu-22.04",
    flavors=["de.NBI tiny", "de.NBI small"],
    external_network="public",
    instances_by_flavor={"de.NBI tiny": 1, "de.NBI small": 2},
    needs=Needs(floating_ips=1, networks=1, routers=1, security_groups=1),
)


def test_a_good_cloud_passes_with_ids_and_mtu(lc: server.Handle, no_mutation: None) -> None:
    conn = connect(lc.state_dir, "giessen")
    req = GOOD.model_copy(update={"network": "public"})
    report = preflight(conn, req)
    assert report.ok and report.problems == []
    assert report.image_id == conn.image.find_image("ubuntu-22.04", ignore_missing=False).id
    assert set(report.flavor_ids) == {"de.NBI tiny", "de.NBI small"}
    assert report.external_network_id and report.network_mtu == 1450


def test_all_problems_of_a_cloud_come_together(lc: server.Handle, no_mutation: None) -> None:
    conn = connect(lc.state_dir, "giessen-appcred")
    req = PreflightRequest(
        cloud="giessen",
        image="ubuntu-99.04",
        flavors=["de.NBI tiny", "m1.huge"],
        external_network="internet",
        network="no-such-net",
        instances_by_flavor={"de.NBI tiny": 4},
        needs=Needs(floating_ips=3),
    )
    report = preflight(conn, req)
    assert not report.ok
    text = "\n".join(report.problems)
    assert len(report.problems) == 6, text
    assert (
        "image 'ubuntu-99.04' does not exist: use one of ['ubuntu-22.04', 'ubuntu-24.04']" in text
    )
    assert "flavor 'm1.huge' does not exist: use one of [" in text and "'de.NBI tiny'" in text
    assert "external network 'internet' does not exist: use one of ['public']" in text
    assert "network 'no-such-net' does not exist" in text
    assert "quota for instances would be exceeded: 0 used + 4 needed > limit 3" in text
    assert "quota for floating IPs would be exceeded: 0 used + 3 needed > limit 2" in text
    assert "free 1 instances in the project or ask the cloud operator for a higher quota" in text
    assert "m1.tiny" not in report.flavor_ids and report.flavor_ids.keys() == {"de.NBI tiny"}


def test_a_cloud_without_the_needed_extensions(lc: server.Handle, no_mutation: None) -> None:
    report = preflight(connect(lc.state_dir, "plain"), GOOD.model_copy(update={"cloud": "plain"}))
    assert not report.ok
    assert len(report.problems) == 2, report.problems
    assert "lacks the 'allowed-address-pairs' extension" in report.problems[0]
    assert "lacks the 'port-security' extension" in report.problems[1]
    assert all("ask the cloud's operators to enable it" in p for p in report.problems)


def test_wrong_credentials_are_one_clear_problem(lc: server.Handle, no_mutation: None) -> None:
    from pydantic import SecretStr

    from hybridgrid.blocks.openstack import OpenStackCredentials

    good = OpenStackCredentials.from_clouds_yaml("giessen-appcred", lc.clouds_yaml)
    bad = good.model_copy(update={"application_credential_secret": SecretStr("wrong-secret")})
    report = preflight(bad.connect(), GOOD.model_copy(update={"cloud": "giessen-bad"}))
    assert not report.ok and len(report.problems) == 1
    problem = report.problems[0]
    assert "authentication rejected" in problem and "'giessen-bad'" in problem
    assert "wrong-secret" not in problem
    assert good.application_credential_secret.get_secret_value() not in problem


def test_the_task_fails_at_once_with_every_problem(
    lc: server.Handle, no_mutation: None, prefect_harness: Any
) -> None:

    from hybridgrid.tasks.site_tasks import preflight_cloud

    loading.use_connection("plain", connect(lc.state_dir, "plain"))
    fast = preflight_cloud.with_options(**transient_options(retries=3, backoff=0.01))
    loading.use_connection("giessen-ok", connect(lc.state_dir, "giessen"))
    report = asyncio.run(fast(req=GOOD.model_copy(update={"cloud": "giessen-ok"})))
    assert report.ok and report.cloud == "giessen-ok"

    bad = GOOD.model_copy(update={"image": "nope", "cloud": "plain"})
    conn = loading.connection("plain")
    preflight(conn, bad)  # warm: discovery and token, as for the task below
    lc.reset_stats()
    preflight(conn, bad)
    one_attempt = lc.stats()["plain"]["total"]
    lc.reset_stats()
    state = asyncio.run(fast(req=bad, return_state=True))
    assert state.is_failed() and lc.stats()["plain"]["total"] == one_attempt  # no retry
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, PreflightError)
    assert len(exc.report.problems) == 3
    assert str(exc).startswith("pre-flight on cloud 'plain' failed:")
    loading.forget("plain")
    loading.forget("giessen-ok")


def test_pair_limit_counts_only_pairs_the_port_lacks() -> None:
    have = [f"172.16.{i}.0/24" for i in range(8)] + ["10.0.0.0/24"]
    # the overlay is there already (written without the prefix's canonical form elsewhere)
    assert pair_limit_problems("master m", "p1", have, ["10.0.0.0/24"], 10) == []
    assert pair_limit_problems("master m", "p1", have, ["192.168.64.0/18"], 10) == []
    [problem] = pair_limit_problems(
        "master m", "p1", have, ["192.168.64.0/18", "172.20.0.0/24"], 10
    )
    assert "port p1 of master m would carry 11 allowed-address pairs" in problem
    assert "this site adds 192.168.64.0/18, 172.20.0.0/24" in problem
    assert "Fix: give the site a subnet inside site_pool" in problem
