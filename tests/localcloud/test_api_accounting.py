"""Request accounting: a server action that only reads (console output, console URLs) is not
a mutating call, as it changes nothing; every other action still is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests


@pytest.fixture(scope="module")
def active_server(giessen: Any) -> Iterator[Any]:
    net = giessen.network.create_network(name="accounting-net")
    giessen.network.create_subnet(network_id=net.id, cidr="192.168.127.0/24", ip_version=4)
    server = giessen.compute.create_server(
        name="accounting",
        image_id=giessen.image.find_image("ubuntu-22.04").id,
        flavor_id=giessen.compute.find_flavor("de.NBI tiny").id,
        networks=[{"uuid": net.id}],
    )
    giessen.compute.wait_for_server(server, wait=30, interval=0.2)
    try:
        yield server
    finally:
        giessen.compute.delete_server(server)
        giessen.compute.wait_for_delete(server, wait=30, interval=0.2)
        giessen.network.delete_network(net)


def _action(lc: Any, giessen: Any, server: Any, body: dict[str, Any]) -> requests.Response:
    url = f"{lc.clouds['giessen'].compute}/servers/{server.id}/action"
    headers = {"X-Auth-Token": giessen.auth_token}
    return requests.post(url, json=body, headers=headers, timeout=10)


def _compute_counts(lc: Any) -> tuple[int, int, dict[str, int]]:
    stats = lc.stats()["giessen"]
    return stats["total"], stats["mutating"], stats["by_service"].get("compute", {})


def test_a_console_read_is_not_counted_as_mutating(lc, giessen, active_server):
    giessen.auth_token  # noqa: B018 - issue the token before the counters are reset
    lc.reset_stats()
    output = giessen.compute.get_server_console_output(active_server, length=5)["output"]
    assert "cloud-init" in output  # the body reached Nova's handler after the accounting
    total, mutating, compute = _compute_counts(lc)
    assert (total, mutating, compute) == (1, 0, {"POST": 1})


def test_console_url_actions_are_reads_even_when_not_implemented(lc, giessen, active_server):
    lc.reset_stats()
    answer = _action(lc, giessen, active_server, {"os-getVNCConsole": {"type": "novnc"}})
    assert answer.status_code == 400 and "no such action" in answer.text
    assert _compute_counts(lc)[:2] == (1, 0)


def test_state_changing_actions_stay_mutating(lc, giessen, active_server):
    lc.reset_stats()
    assert _action(lc, giessen, active_server, {"lock": None}).status_code == 202
    assert _action(lc, giessen, active_server, {"unlock": None}).status_code == 202
    # two action objects in one body: not a read, and Nova refuses it
    both = {"os-getConsoleOutput": {}, "lock": None}
    assert _action(lc, giessen, active_server, both).status_code == 400
    assert _action(lc, giessen, active_server, {"reboot": {"type": "SOFT"}}).status_code == 202
    assert _compute_counts(lc)[:2] == (4, 4)


def test_a_streamed_body_beyond_the_peek_limit_is_mutating_and_still_served(
    lc, giessen, active_server
):
    """The gateway reads at most 64 KiB of a streamed body to classify it; beyond that it does
    not guess (mutating), and the handler still gets the whole body (what was read, then the
    rest)."""
    body = json.dumps({"os-getConsoleOutput": {"length": 3, "pad": "x" * 200_000}}).encode()
    chunks = (body[i : i + 16_384] for i in range(0, len(body), 16_384))
    url = f"{lc.clouds['giessen'].compute}/servers/{active_server.id}/action"
    headers = {"X-Auth-Token": giessen.auth_token, "Content-Type": "application/json"}
    lc.reset_stats()
    answer = requests.post(url, data=chunks, headers=headers, timeout=10)
    assert answer.status_code == 200 and "cloud-init" in answer.json()["output"]
    assert _compute_counts(lc)[:2] == (1, 1)
