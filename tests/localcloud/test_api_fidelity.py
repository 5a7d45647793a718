"""Behaviour that OpenStack's own API tests (Tempest) check and that localcloud once got wrong:
each test here failed before its fix, over real HTTP against a real localcloud process."""

from __future__ import annotations

import re
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


def _nova(lc: Any, conn: Any, method: str, path: str, mv: str = "2.1", **kw: Any):
    headers = {"OpenStack-API-Version": f"compute {mv}", **kw.pop("headers", {})}
    return _raw(conn, method, lc.clouds["bielefeld"].compute + path, headers=headers, **kw)


def test_multiple_create_and_server_list_paging(lc, conn, server):
    body = {
        "name": _name("many"), "imageRef": _image(conn), "flavorRef": _flavor(conn),
        "networks": [{"uuid": _net_of(conn, server)}], "min_count": 2, "max_count": "3",
    }  # fmt: skip
    resp = _nova(
        lc, conn, "POST", "/servers", json={"server": body | {"return_reservation_id": True}}
    )
    assert resp.status_code == 202, resp.text
    rid = resp.json()["reservation_id"]
    made = _nova(lc, conn, "GET", "/servers", params={"reservation_id": rid}).json()["servers"]
    try:
        assert sorted(s["name"] for s in made) == [f"{body['name']}-{i}" for i in (1, 2, 3)]
        every = _nova(lc, conn, "GET", "/servers").json()["servers"]
        first = _nova(lc, conn, "GET", "/servers", params={"limit": 1}).json()
        assert [s["id"] for s in first["servers"]] == [every[0]["id"]]
        assert "marker=" in first["servers_links"][0]["href"]
        after = _nova(lc, conn, "GET", "/servers", params={"marker": every[0]["id"]}).json()
        assert [s["id"] for s in after["servers"]] == [s["id"] for s in every[1:]]
        future = {"changes-since": "2051-01-01T12:34:00Z"}
        assert _nova(lc, conn, "GET", "/servers", params=future).json()["servers"] == []
        bad_date = _nova(lc, conn, "GET", "/servers", params={"changes-since": "2011/01/01"})
        assert bad_date.status_code == 400
        ip = next(iter(conn.compute.get_server(server.id).addresses.values()))[0]["addr"]
        by_ip = _nova(lc, conn, "GET", "/servers", params={"ip": f"^{ip}$"}).json()["servers"]
        assert [s["id"] for s in by_ip] == [server.id]
        for count in ({"min_count": 0}, {"min_count": 3, "max_count": 2}, {"max_count": 2.5}):
            assert (
                _nova(lc, conn, "POST", "/servers", json={"server": body | count}).status_code
                == 400
            )
    finally:
        for s in made:
            conn.compute.delete_server(s["id"])


def _net_of(conn: Any, server: Any) -> str:
    return next(iter(conn.network.ports(device_id=server.id))).network_id


def test_update_answer_progress_lock_tags_and_actions(lc, conn, server):
    path = f"/servers/{server.id}"
    updated = _nova(lc, conn, "PUT", path, json={"server": {"name": server.name}}).json()["server"]
    assert "OS-EXT-STS:vm_state" not in updated and "key_name" not in updated
    rename = {"server": {"name": server.name}}
    assert (
        "OS-EXT-STS:vm_state"
        in _nova(lc, conn, "PUT", path, mv="2.75", json=rename).json()["server"]
    )
    assert (
        "server_groups"
        not in _nova(lc, conn, "GET", "/servers/detail", mv="2.96").json()["servers"][0]
    )
    assert _nova(lc, conn, "POST", path + "/action", json={"lock": None}).status_code == 202
    try:
        assert _nova(lc, conn, "GET", path, mv="2.9").json()["server"]["locked"] is True
        assert _nova(lc, conn, "POST", path + "/action", json={"os-stop": None}).status_code == 409
        assert _nova(lc, conn, "DELETE", path).status_code == 409
    finally:
        assert _nova(lc, conn, "POST", path + "/action", json={"unlock": None}).status_code == 202
    assert _nova(lc, conn, "POST", path + "/action", json={"os-stop": None}).status_code == 202
    assert "progress" not in _nova(lc, conn, "GET", path).json()["server"]
    assert _nova(lc, conn, "POST", path + "/action", json={"os-start": None}).status_code == 202
    # tags (2.26)
    assert _nova(lc, conn, "GET", path + "/tags").status_code == 404  # not before 2.26
    assert _nova(lc, conn, "PUT", path + "/tags/a", mv="2.26").status_code == 201
    assert _nova(lc, conn, "PUT", path + "/tags/a", mv="2.26").status_code == 204
    replaced = _nova(lc, conn, "PUT", path + "/tags", mv="2.26", json={"tags": ["b", "c"]})
    assert replaced.json() == {"tags": ["b", "c"]}
    assert _nova(lc, conn, "GET", path + "/tags/a", mv="2.26").status_code == 404
    assert _nova(lc, conn, "DELETE", path + "/tags", mv="2.26").status_code == 204
    assert _nova(lc, conn, "GET", path + "/tags", mv="2.26").json() == {"tags": []}
    # instance actions, found by the request id Nova answered with
    actions = _nova(lc, conn, "GET", path + "/os-instance-actions").json()["instanceActions"]
    assert {"create", "lock", "unlock", "stop", "start"} <= {a["action"] for a in actions}
    create = next(a for a in actions if a["action"] == "create")
    shown = _nova(lc, conn, "GET", f"{path}/os-instance-actions/{create['request_id']}", mv="2.84")
    assert shown.json()["instanceAction"]["events"][0]["result"] == "Success"
    assert _nova(lc, conn, "GET", path + "/os-server-password").json() == {"password": ""}


def test_metadata_quota_and_legacy_quota_fields(lc, conn, server):
    many = {"metadata": {f"k{i}": "v" for i in range(129)}}
    resp = _nova(lc, conn, "PUT", f"/servers/{server.id}/metadata", json=many)
    assert resp.status_code == 403, resp.text
    project = conn.current_project_id
    old = _nova(lc, conn, "GET", f"/os-quota-sets/{project}").json()["quota_set"]
    assert {"floating_ips", "security_group_rules", "injected_files"} <= set(old)
    new = _nova(lc, conn, "GET", f"/os-quota-sets/{project}", mv="2.57").json()["quota_set"]
    assert not {"floating_ips", "injected_files"} & set(new)


def test_icmp_rule_type_and_code_checked(conn):
    sg = conn.network.create_security_group(name=_name("sg"))
    try:
        cases = [(1, 256, "ICMP code"), (None, 6, "ICMP type (port-range-min) is missing"),
                 (300, 1, "ICMP type")]  # fmt: skip
        for pmin, pmax, text in cases:
            with pytest.raises(exceptions.BadRequestException, match=re.escape(text)):
                conn.network.create_security_group_rule(
                    security_group_id=sg.id, direction="ingress", protocol="icmp",
                    port_range_min=pmin, port_range_max=pmax,
                )  # fmt: skip
        rule = conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="icmp",
            port_range_min=8, port_range_max=0,
        )  # fmt: skip
        assert (rule.port_range_min, rule.port_range_max) == (8, 0)
    finally:
        conn.network.delete_security_group(sg.id)


def test_method_no_route_takes_is_a_shaped_405(lc, conn):
    resp = _raw(conn, "OPTIONS", lc.clouds["bielefeld"].network + "/v2.0/networks")
    assert resp.status_code == 405
    assert resp.json()["NeutronError"]["type"] == "HTTPMethodNotAllowed"
    assert resp.headers["x-openstack-request-id"].startswith("req-")


def test_server_groups_and_the_group_hint(lc, conn, server):
    made = _nova(lc, conn, "POST", "/os-server-groups", mv="2.64",
                 json={"server_group": {"name": "g", "policy": "anti-affinity"}})  # fmt: skip
    assert made.status_code == 200, made.text
    group = made.json()["server_group"]
    assert (group["policy"], group["members"]) == ("anti-affinity", [])
    old = _nova(lc, conn, "GET", f"/os-server-groups/{group['id']}").json()["server_group"]
    assert old["policies"] == ["anti-affinity"] and "policy" not in old
    body = {
        "server": {"name": _name("grouped"), "imageRef": _image(conn), "flavorRef": _flavor(conn),
                   "networks": [{"uuid": _net_of(conn, server)}]},
        "os:scheduler_hints": {"group": group["id"]},
    }  # fmt: skip
    created = _nova(lc, conn, "POST", "/servers", json=body).json()["server"]
    try:
        shown = _nova(lc, conn, "GET", f"/os-server-groups/{group['id']}").json()["server_group"]
        assert shown["members"] == [created["id"]]
        view = _nova(lc, conn, "GET", f"/servers/{created['id']}", mv="2.71").json()["server"]
        assert view["server_groups"] == [group["id"]]
    finally:
        assert _nova(lc, conn, "DELETE", f"/servers/{created['id']}").status_code == 204
    left = _nova(lc, conn, "GET", f"/os-server-groups/{group['id']}").json()["server_group"]
    assert left["members"] == []
    assert _nova(lc, conn, "DELETE", f"/os-server-groups/{group['id']}").status_code == 204
    bad = _nova(
        lc,
        conn,
        "POST",
        "/os-server-groups",
        json={"server_group": {"name": "g", "policies": ["x"]}},
    )
    assert bad.status_code == 400
