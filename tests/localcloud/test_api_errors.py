"""Errors in OpenStack's shapes and codes: auth, not found, conflicts, quotas, extensions."""

from __future__ import annotations

import time

import pytest
import requests
from openstack import exceptions


def _token(lc, cloud: str = "giessen") -> str:
    from localcloud.clientconf import cloud_entry

    auth = cloud_entry(lc.state_dir, cloud)["auth"]
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": auth["username"],
                        "domain": {"name": "Default"},
                        "password": auth["password"],
                    }
                },
            },
            "scope": {"project": {"name": auth["project_name"], "domain": {"name": "Default"}}},
        }
    }
    resp = requests.post(auth["auth_url"] + "/auth/tokens", json=body, timeout=10)
    assert resp.status_code == 201, resp.text
    assert resp.json()["token"]["project"]["name"] == "admin"
    return resp.headers["X-Subject-Token"]


def test_token_required_and_checked(lc):
    url = lc.clouds["giessen"].compute + "/servers"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == 401
    bad = requests.get(url, headers={"X-Auth-Token": "forged.token"}, timeout=10)
    assert bad.status_code == 401
    other_cloud = requests.get(url, headers={"X-Auth-Token": _token(lc, "bielefeld")}, timeout=10)
    assert other_cloud.status_code == 401  # a bielefeld token is no good in giessen
    assert requests.get(url, headers={"X-Auth-Token": _token(lc)}, timeout=10).status_code == 200


def test_wrong_password_is_401(lc):
    url = lc.clouds["giessen"].auth_url + "/auth/tokens"
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"id": "default"}, "password": "nope"}
                },
            }
        }
    }
    resp = requests.post(url, json=body, timeout=10)
    assert resp.status_code == 401 and "X-Subject-Token" not in resp.headers


def test_token_expires(new_localcloud):
    handle = new_localcloud(["short"], cloud_options={"short": {"token_ttl": 3}})
    token = _token(handle, "short")
    url = handle.clouds["short"].network + "/v2.0/networks"
    assert requests.get(url, headers={"X-Auth-Token": token}, timeout=10).status_code == 200
    time.sleep(3.5)
    assert requests.get(url, headers={"X-Auth-Token": token}, timeout=10).status_code == 401


def test_not_found_shapes(lc):
    headers = {"X-Auth-Token": _token(lc)}
    nova = requests.get(lc.clouds["giessen"].compute + "/servers/nope", headers=headers, timeout=10)
    assert nova.status_code == 404
    assert nova.json() == {
        "itemNotFound": {"code": 404, "message": "Instance nope could not be found."}
    }
    neutron = requests.get(
        lc.clouds["giessen"].network + "/v2.0/networks/nope", headers=headers, timeout=10
    )
    assert neutron.status_code == 404
    assert neutron.json()["NeutronError"]["type"] == "NetworkNotFound"
    glance = requests.get(
        lc.clouds["giessen"].image + "/v2/images/nope", headers=headers, timeout=10
    )
    assert glance.status_code == 404
    unknown = requests.get(
        lc.clouds["giessen"].compute + "/os-hypervisors", headers=headers, timeout=10
    )
    assert unknown.status_code == 404 and "itemNotFound" in unknown.json()


def test_bad_requests_name_the_field(giessen):
    net = giessen.network.create_network(name="err-net")
    with pytest.raises(exceptions.BadRequestException, match="cidr"):
        giessen.network.create_subnet(network_id=net.id, cidr="300.1.2.0/24", ip_version=4)
    with pytest.raises(exceptions.BadRequestException, match="Unrecognized attribute"):
        giessen.network.create_network(name="x", colour="blue")
    with pytest.raises(exceptions.BadRequestException, match="MTU"):
        giessen.network.create_network(name="x", mtu=9000)
    with pytest.raises(exceptions.BadRequestException, match="Flavor"):
        giessen.compute.create_server(
            name="x",
            image_id=giessen.image.find_image("ubuntu-22.04").id,
            flavor_id="nope",
            networks=[{"uuid": net.id}],
        )
    with pytest.raises(exceptions.BadRequestException, match="key_name"):
        giessen.compute.create_server(
            name="x",
            image_id=giessen.image.find_image("ubuntu-22.04").id,
            flavor_id=giessen.compute.find_flavor("de.NBI tiny").id,
            networks=[{"uuid": net.id}],
            key_name="missing",
        )
    giessen.network.delete_network(net)


def test_quotas_answer_403_and_409(giessen):
    project = giessen.current_project_id
    net = giessen.network.create_network(name="quota-net")
    giessen.network.create_subnet(network_id=net.id, cidr="192.168.99.0/24", ip_version=4)
    image = giessen.image.find_image("ubuntu-22.04").id
    flavor = giessen.compute.find_flavor("de.NBI tiny").id
    public = giessen.network.find_network("public")
    giessen.compute.update_quota_set(project, instances=1)
    giessen.network.update_quota(project, floating_ips=1)
    created = []
    try:
        created.append(
            giessen.compute.create_server(
                name="q1", image_id=image, flavor_id=flavor, networks=[{"uuid": net.id}]
            )
        )
        with pytest.raises(exceptions.ForbiddenException, match="Quota exceeded for instances"):
            giessen.compute.create_server(
                name="q2", image_id=image, flavor_id=flavor, networks=[{"uuid": net.id}]
            )
        fip = giessen.network.create_ip(floating_network_id=public.id)
        with pytest.raises(
            exceptions.ConflictException, match=r"Quota exceeded for resources: \['floatingip'\]"
        ):
            giessen.network.create_ip(floating_network_id=public.id)
        giessen.network.delete_ip(fip)
    finally:
        giessen.compute.update_quota_set(project, instances=10)
        giessen.network.update_quota(project, floating_ips=50)
        for server in created:
            giessen.compute.delete_server(server)
        giessen.compute.wait_for_delete(created[0], wait=30, interval=0.2) if created else None
        giessen.network.delete_network(net.id) if not list(
            giessen.network.ports(network_id=net.id)
        ) else None


def test_extensions(lc, conn):
    aliases = {e.alias for e in conn.network.extensions()}
    assert {"router", "external-net", "extraroute", "security-group", "port-security",
            "allowed-address-pairs", "standard-attr-tag", "quotas"} <= aliases  # fmt: skip
    assert conn.network.find_extension("external-gateway-multihoming") is None
    headers = {"X-Auth-Token": _token(lc)}
    resp = requests.get(
        lc.clouds["giessen"].network + "/v2.0/extensions/external-gateway-multihoming",
        headers=headers,
        timeout=10,
    )
    assert resp.status_code == 404


def test_cloud_without_address_pairs_and_port_security(lc):
    from localcloud.clientconf import connect

    plain = connect(lc.state_dir, "plain")
    aliases = {e.alias for e in plain.network.extensions()}
    assert "allowed-address-pairs" not in aliases and "port-security" not in aliases
    net = plain.network.create_network(name="plain-net")
    plain.network.create_subnet(network_id=net.id, cidr="192.168.5.0/24", ip_version=4)
    port = plain.network.create_port(network_id=net.id)
    raw = plain.network.get(f"/ports/{port.id}").json()["port"]
    assert "allowed_address_pairs" not in raw and "port_security_enabled" not in raw
    with pytest.raises(
        exceptions.BadRequestException, match=r"Unrecognized attribute.*allowed_address_pairs"
    ):
        plain.network.update_port(port, allowed_address_pairs=[{"ip_address": "10.0.0.0/24"}])
    with pytest.raises(exceptions.BadRequestException, match="port_security_enabled"):
        plain.network.create_port(network_id=net.id, port_security_enabled=False)
