"""Fault injection (off by default, switchable at runtime, seeded) and request accounting."""

from __future__ import annotations

import pytest
import requests
from openstack import exceptions

from localcloud.clientconf import cloud_entry


def _issue(lc, cloud: str = "giessen") -> requests.Response:
    auth = cloud_entry(lc.state_dir, f"{cloud}-appcred")["auth"]
    body = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {
                    "id": auth["application_credential_id"],
                    "secret": auth["application_credential_secret"],
                },
            }
        }
    }
    return requests.post(auth["auth_url"] + "/auth/tokens", json=body, timeout=10)


@pytest.fixture(scope="module")
def headers(lc):
    resp = _issue(lc)
    assert resp.status_code == 201
    return {"X-Auth-Token": resp.headers["X-Subject-Token"]}


def _statuses(lc, headers, n: int, cloud: str = "giessen") -> list[int]:
    url = lc.clouds[cloud].network + "/v2.0/networks"
    if cloud != "giessen":
        headers = {"X-Auth-Token": _issue(lc, cloud).headers["X-Subject-Token"]}
    return [requests.get(url, headers=headers, timeout=10).status_code for _ in range(n)]


def test_off_by_default(lc, headers):
    assert lc.admin("GET", "/_localcloud/faults") == {}
    assert set(_statuses(lc, headers, 40)) == {200}


def test_twenty_percent_transient_errors(lc, headers, faults):
    faults({"giessen": {"seed": 3, "error_rate": 0.2, "error_codes": [500, 503, 409]}})
    lc.reset_stats()
    url = lc.clouds["giessen"].network + "/v2.0/networks"
    answers = [requests.get(url, headers=headers, timeout=10) for _ in range(100)]
    failed = [a for a in answers if a.status_code != 200]
    assert 5 <= len(failed) <= 40
    assert {a.status_code for a in failed} <= {500, 503, 409}
    assert all("injected" in a.json()["NeutronError"]["message"] for a in failed)
    assert all(_issue(lc).status_code == 201 for _ in range(10))  # token issue is exempt
    assert set(_statuses(lc, headers, 20, cloud="bielefeld")) == {200}  # per cloud
    assert lc.stats()["giessen"]["injected_errors"] == len(failed)

    faults(None)  # switched off at runtime, no restart
    assert set(_statuses(lc, headers, 20)) == {200}


def test_same_seed_same_failures(lc, headers, faults):
    config = {"giessen": {"seed": 11, "error_rate": 0.3, "error_codes": [503]}}
    faults(config)
    first = _statuses(lc, headers, 30)
    faults(config)  # re-writing the file restarts the streams from the seed
    assert _statuses(lc, headers, 30) == first
    assert 503 in first


def test_dropped_connection(lc, headers, faults):
    faults({"giessen": {"errors": [{"rate": 1.0, "codes": ["drop"], "service": "compute"}]}})
    with pytest.raises(requests.ConnectionError):
        requests.get(lc.clouds["giessen"].compute + "/servers", headers=headers, timeout=10)
    assert set(_statuses(lc, headers, 3)) == {200}


def test_fault_per_operation(giessen, faults):
    faults(
        {
            "giessen": {
                "errors": [
                    {"rate": 1.0, "codes": [409], "method": "POST", "path": "^/v2.0/floatingips$"}
                ]
            }
        }
    )
    public = giessen.network.find_network("public")
    with pytest.raises(exceptions.ConflictException, match="injected"):
        giessen.network.create_ip(floating_network_id=public.id)
    assert list(giessen.network.ips()) is not None  # other calls pass


def test_boot_delay_then_active_and_boot_failure(giessen, faults):
    net = giessen.network.create_network(name="boot-net")
    giessen.network.create_subnet(network_id=net.id, cidr="192.168.120.0/24", ip_version=4)
    spec = {
        "image_id": giessen.image.find_image("ubuntu-22.04").id,
        "flavor_id": giessen.compute.find_flavor("de.NBI tiny").id,
        "networks": [{"uuid": net.id}],
    }
    faults({"giessen": {"boot_delay": 3.0}})
    slow = giessen.compute.create_server(name="boot-slow", **spec)
    assert giessen.compute.get_server(slow.id).status == "BUILD"
    with pytest.raises(exceptions.ConflictException, match="building"):
        giessen.compute.get_server_console_output(slow.id)
    assert giessen.compute.wait_for_server(slow, wait=30, interval=0.2).status == "ACTIVE"

    faults({"giessen": {"boot_failure_rate": 1.0}})
    bad = giessen.compute.create_server(name="boot-bad", **spec)
    with pytest.raises(exceptions.ResourceFailure):
        giessen.compute.wait_for_server(bad, wait=30, interval=0.2)
    failed = giessen.compute.get_server(bad.id)
    assert failed.status == "ERROR" and "injected" in failed.fault["message"]
    for server in (slow, bad):
        giessen.compute.delete_server(server)
        giessen.compute.wait_for_delete(server, wait=30, interval=0.2)
    giessen.network.delete_network(net)


def test_stats_count_calls_by_service_and_method(lc, headers):
    lc.reset_stats()
    base = lc.clouds["giessen"].network + "/v2.0/networks"
    assert _issue(lc).status_code == 201
    requests.get(base, headers=headers, timeout=10)
    requests.get(base, headers=headers, timeout=10)
    made = requests.post(base, json={"network": {"name": "stats-net"}}, headers=headers, timeout=10)
    assert made.status_code == 201
    gone = requests.delete(f"{base}/{made.json()['network']['id']}", headers=headers, timeout=10)
    assert gone.status_code == 204
    stats = lc.stats()["giessen"]
    assert (stats["total"], stats["mutating"]) == (5, 2)
    assert stats["by_service"] == {
        "identity": {"POST": 1},
        "network": {"GET": 2, "POST": 1, "DELETE": 1},
    }
    lc.reset_stats()
    assert lc.stats() == {}


def test_answer_lost_after_the_work_was_done(lc, headers, faults):
    faults(
        {
            "giessen": {
                "errors": [
                    {
                        "rate": 1.0,
                        "codes": [503],
                        "method": "POST",
                        "path": "networks$",
                        "after": True,
                    }
                ]
            }
        }
    )
    base = lc.clouds["giessen"].network + "/v2.0/networks"
    resp = requests.post(
        base, json={"network": {"name": "lost-answer"}}, headers=headers, timeout=10
    )
    assert resp.status_code == 503
    faults(None)
    (made,) = requests.get(
        base, params={"name": "lost-answer"}, headers=headers, timeout=10
    ).json()["networks"]
    requests.delete(f"{base}/{made['id']}", headers=headers, timeout=10)


def test_faults_from_the_environment(new_localcloud, monkeypatch):
    monkeypatch.setenv(
        "LOCALCLOUD_FAULTS",
        '{"envcloud": {"errors": [{"rate": 1.0, "codes": [500], "service": "image"}]}}',
    )
    handle = new_localcloud(["envcloud"])
    assert handle.admin("GET", "/_localcloud/faults")["envcloud"]["errors"][0]["codes"] == [500]
    token = _issue(handle, "envcloud").headers["X-Subject-Token"]
    resp = requests.get(
        handle.clouds["envcloud"].image + "/v2/images", headers={"X-Auth-Token": token}, timeout=10
    )
    assert resp.status_code == 500
