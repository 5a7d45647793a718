"""Behaviour that OpenStack's own API tests (Tempest) check and that localcloud once got wrong:
each test here failed before its fix, over real HTTP against a real localcloud process."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from openstack import exceptions


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _raw(conn: Any, method: str, url: str, **kwargs: Any) -> requests.Response:
    """A request with the connection's token, without any client-side interpretation."""
    headers = {"X-Auth-Token": conn.auth_token, **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


def test_no_group_can_be_renamed_to_default(conn):
    name = _name("sg")
    sg = conn.network.create_security_group(name=name)
    try:
        with pytest.raises(exceptions.ConflictException):
            conn.network.update_security_group(sg.id, name="default")
        assert conn.network.get_security_group(sg.id).name == name
        # With one `default` group, a server without explicit groups still gets it.
        net = conn.network.create_network(name=_name("net"))
        conn.network.create_subnet(network_id=net.id, cidr="10.77.0.0/24", ip_version=4)
        server = conn.compute.create_server(
            name=_name("vm"), image_id=_image(conn), flavor_id=_flavor(conn),
            networks=[{"uuid": net.id}],
        )  # fmt: skip
        assert [g["name"] for g in conn.compute.get_server(server.id).security_groups] == [
            "default"
        ]
        conn.compute.delete_server(server.id)
        conn.network.delete_network(net.id)
    finally:
        conn.network.delete_security_group(sg.id)


def _image(conn: Any) -> str:
    return next(iter(conn.image.images())).id


def _flavor(conn: Any) -> str:
    return min(conn.compute.flavors(), key=lambda f: f.ram).id


def test_tcp_rule_with_only_port_range_max_is_refused(conn):
    sg = conn.network.create_security_group(name=_name("sg"))
    try:
        with pytest.raises(exceptions.BadRequestException, match="port_range_min must be <="):
            conn.network.create_security_group_rule(
                security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_max=6
            )
        rule = conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="tcp",
            port_range_min=22, port_range_max=22,
        )  # fmt: skip
        assert (rule.port_range_min, rule.port_range_max) == (22, 22)
    finally:
        conn.network.delete_security_group(sg.id)


def test_nova_echoes_request_id_and_microversion(lc, conn):
    url = lc.clouds["bielefeld"].compute + "/flavors"
    plain = _raw(conn, "GET", url)
    assert plain.status_code == 200
    assert plain.headers["x-openstack-request-id"].startswith("req-")
    assert plain.headers["X-OpenStack-Nova-API-Version"] == "2.1"
    for header, value in (
        ("OpenStack-API-Version", "compute 2.53"),
        ("X-OpenStack-Nova-API-Version", "2.53"),
    ):
        resp = _raw(conn, "GET", url, headers={header: value})
        assert resp.headers["OpenStack-API-Version"] == "compute 2.53"
        assert resp.headers["X-OpenStack-Nova-API-Version"] == "2.53"
    latest = _raw(conn, "GET", url, headers={"OpenStack-API-Version": "compute latest"})
    assert latest.headers["X-OpenStack-Nova-API-Version"] == "2.96"
    too_new = _raw(conn, "GET", url, headers={"OpenStack-API-Version": "compute 2.97"})
    assert too_new.status_code == 406 and "maximum is 2.96" in too_new.text
    bad = _raw(conn, "GET", url, headers={"OpenStack-API-Version": "compute two"})
    assert bad.status_code == 400 and "badRequest" in bad.json()
    other = _raw(conn, "GET", url, headers={"OpenStack-API-Version": "volume 3.0"})
    assert other.headers["X-OpenStack-Nova-API-Version"] == "2.1"
    # Errors carry both as well, and the other services their request id.
    missing = _raw(conn, "GET", url + "/nope")
    assert missing.status_code == 404 and missing.headers["x-openstack-request-id"]
    neutron = _raw(conn, "GET", lc.clouds["bielefeld"].network + "/v2.0/networks")
    assert neutron.headers["x-openstack-request-id"].startswith("req-")


def test_keypair_create_answer_has_nova_fields_only(lc, conn):
    url = lc.clouds["bielefeld"].compute + "/os-keypairs"
    name = _name("kp")
    resp = _raw(
        conn, "POST", url, json={"keypair": {"name": name}},
        headers={"OpenStack-API-Version": "compute 2.10"},
    )  # fmt: skip
    try:
        assert resp.status_code == 201
        assert set(resp.json()["keypair"]) == {
            "name", "public_key", "fingerprint", "user_id", "type", "private_key",
        }  # fmt: skip
        shown = _raw(conn, "GET", f"{url}/{name}").json()["keypair"]
        assert {"id", "created_at", "deleted", "user_id"} <= set(shown)
    finally:
        _raw(conn, "DELETE", f"{url}/{name}")


@pytest.fixture(scope="module")
def server(conn):
    net = conn.network.create_network(name=_name("net"))
    conn.network.create_subnet(network_id=net.id, cidr="10.78.0.0/24", ip_version=4)
    server = conn.compute.create_server(
        name=_name("vm"), image_id=_image(conn), flavor_id=_flavor(conn),
        networks=[{"uuid": net.id}], access_ipv4="198.51.100.7",
    )  # fmt: skip
    server = conn.compute.wait_for_server(server, wait=60)
    try:
        yield server
    finally:
        conn.compute.delete_server(server.id)
        conn.compute.wait_for_delete(server, wait=60)
        conn.network.delete_network(net.id)


def test_console_output_length_as_nova(lc, conn, server):
    url = f"{lc.clouds['bielefeld'].compute}/servers/{server.id}/action"
    full = _raw(conn, "POST", url, json={"os-getConsoleOutput": {}}).json()["output"]
    assert full.endswith("\n")
    tail = _raw(conn, "POST", url, json={"os-getConsoleOutput": {"length": 3}}).json()["output"]
    assert tail == "\n".join(full.split("\n")[-3:])  # two lines and the empty last piece
    assert len(tail.split("\n")) == 3
    whole = _raw(conn, "POST", url, json={"os-getConsoleOutput": {"length": -1}}).json()
    assert whole["output"] == full
    bad = _raw(conn, "POST", url, json={"os-getConsoleOutput": {"length": -2}})
    assert bad.status_code == 400


def test_server_without_groups_has_no_security_groups_key(lc, conn, server):
    url = f"{lc.clouds['bielefeld'].compute}/servers/{server.id}"
    assert _raw(conn, "GET", url).json()["server"]["security_groups"] == [{"name": "default"}]
    action = {"removeSecurityGroup": {"name": "default"}}
    assert _raw(conn, "POST", url + "/action", json=action).status_code == 202
    try:
        assert "security_groups" not in _raw(conn, "GET", url).json()["server"]
    finally:
        add = {"addSecurityGroup": {"name": "default"}}
        assert _raw(conn, "POST", url + "/action", json=add).status_code == 202


def test_access_ips_are_echoed(conn, server):
    shown = conn.compute.get_server(server.id)
    assert shown.access_ipv4 == "198.51.100.7"
    assert conn.compute.update_server(server.id, access_ipv6="2001:db8::7").access_ipv6 == (
        "2001:db8::7"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"imageRef": 42},
        {"imageRef": ["x"]},
        {"flavorRef": {"id": 1}},
        {"max_count": "many"},
        {"key_name": 7},
        {"accessIPv4": "not-an-ip"},
        {"block_device_mapping_v2": "image"},
    ],
)
def test_server_create_with_wrong_types_is_400(lc, conn, change):
    body = {"name": _name("vm"), "imageRef": _image(conn), "flavorRef": _flavor(conn)} | change
    resp = _raw(conn, "POST", lc.clouds["bielefeld"].compute + "/servers", json={"server": body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["badRequest"]["code"] == 400


def test_flavor_filters(conn, lc):
    url = lc.clouds["bielefeld"].compute + "/flavors/detail"
    every = _raw(conn, "GET", url).json()["flavors"]
    assert len(every) > 2

    def ids(**params: Any) -> list[str]:
        resp = _raw(conn, "GET", url, params=params)
        assert resp.status_code == 200, resp.text
        return [f["id"] for f in resp.json()["flavors"]]

    by_ram = sorted(every, key=lambda f: f["ram"])
    assert by_ram[0]["id"] not in ids(minRam=by_ram[1]["ram"])
    by_disk = sorted(every, key=lambda f: f["disk"])
    assert by_disk[0]["id"] not in ids(minDisk=by_disk[-1]["disk"])
    assert ids(limit=1) == [every[0]["id"]]
    assert ids(marker=every[0]["id"]) == [f["id"] for f in every[1:]]
    assert ids(marker=every[0]["id"], limit=1) == [every[1]["id"]]
    assert _raw(conn, "GET", url, params={"marker": "nope"}).status_code == 400
    assert _raw(conn, "GET", url, params={"minRam": "lots"}).status_code == 400


def test_glance_root_is_multiple_choices(lc):
    resp = requests.get(lc.clouds["bielefeld"].image + "/", timeout=10)
    assert resp.status_code == 300
    assert resp.json()["versions"][0]["status"] == "CURRENT"
    assert requests.get(lc.clouds["bielefeld"].image + "/versions", timeout=10).status_code == 200


def test_server_ips(lc, conn, server):
    url = f"{lc.clouds['bielefeld'].compute}/servers/{server.id}/ips"
    resp = _raw(conn, "GET", url)
    assert resp.status_code == 200, resp.text
    (network, entries), *_ = resp.json()["addresses"].items()
    assert entries[0]["addr"].startswith("10.78.0.")
    assert set(entries[0]) == {"addr", "version"}
    one = _raw(conn, "GET", f"{url}/{network}")
    assert one.json() == {network: entries}
    assert _raw(conn, "GET", f"{url}/no-such-net").status_code == 404


def test_keystone_reads_for_the_one_user(lc, conn):
    assert [u.name for u in conn.identity.users()] == ["admin"]
    user = conn.identity.find_user("admin")
    project = conn.identity.find_project("admin")
    roles = {r.name for r in conn.identity.roles()}
    assert {"admin", "member", "reader"} <= roles
    assignments = list(conn.identity.role_assignments(user_id=user.id))
    assert {a.scope["project"]["id"] for a in assignments} == {project.id}
    base = lc.clouds["bielefeld"].auth_url
    resp = _raw(conn, "GET", f"{base}/projects/{project.id}/users/{user.id}/roles")
    assert {r["name"] for r in resp.json()["roles"]} == roles
