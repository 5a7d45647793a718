"""Unmodified openstacksdk (proxy and cloud layer) against a running localcloud over HTTP."""

from __future__ import annotations

import base64
import ipaddress
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from openstack import exceptions

TINY = "de.NBI tiny"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def tenant(conn):
    """A network + subnet + router with gateway and interface (what a site needs)."""
    public = conn.network.find_network("public")
    net = conn.network.create_network(name=_name("sdk-net"))
    cidr = f"10.{uuid.uuid4().int % 200 + 20}.{uuid.uuid4().int % 250}.0/24"
    subnet = conn.network.create_subnet(
        network_id=net.id, cidr=cidr, ip_version=4, name=_name("sdk-subnet")
    )
    router = conn.network.create_router(
        name=_name("sdk-router"), external_gateway_info={"network_id": public.id}
    )
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    return {"net": net, "subnet": subnet, "router": router, "public": public}


def test_cloud_layer_create_server_wait_auto_ip(conn, tenant):
    name = _name("sdk-vm")
    server = conn.create_server(
        name,
        image="ubuntu-22.04",
        flavor=TINY,
        network=tenant["net"].id,
        userdata="#cloud-config\nruncmd: [true]\n",
        meta={"hybridgrid-site": "giessen"},
        wait=True,
        auto_ip=True,
        timeout=60,
    )
    assert server.status == "ACTIVE"
    floating = [
        a["addr"]
        for a in server.addresses[tenant["net"].name]
        if a["OS-EXT-IPS:type"] == "floating"
    ]
    assert len(floating) == 1
    assert ipaddress.ip_address(floating[0]) in ipaddress.ip_network("203.0.113.0/24")
    assert server.metadata == {"hybridgrid-site": "giessen"}
    assert conn.get_server(name).id == server.id
    output = conn.get_server_console(server.id)
    assert "SSH HOST KEY FINGERPRINTS" in output
    (port,) = conn.network.ports(device_id=server.id)
    fip = conn.network.find_ip(floating[0])
    assert fip.port_id == port.id and fip.router_id == tenant["router"].id

    assert conn.delete_server(server.id, wait=True, timeout=30)
    assert conn.network.find_port(port.id) is None
    assert conn.network.get_ip(fip.id).port_id is None


def test_proxy_layer_server_with_premade_port(conn, tenant):
    keypair = conn.compute.create_keypair(
        name=_name("sdk-key"),
        public_key=ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode(),
    )
    sg = conn.network.create_security_group(name=_name("sdk-sg"))
    port = conn.network.create_port(
        network_id=tenant["net"].id, name=_name("sdk-port"), security_group_ids=[sg.id]
    )
    server = conn.compute.create_server(
        name=_name("sdk-vm"),
        image_id=conn.image.find_image("ubuntu-22.04").id,
        flavor_id=conn.compute.find_flavor(TINY).id,
        networks=[{"port": port.id}],
        key_name=keypair.name,
        user_data=base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
        metadata={"a": "1"},
    )
    assert server.id  # Nova answers 202 with the id; status comes with the first GET
    server = conn.compute.wait_for_server(server, wait=30, interval=0.2)
    assert server.status == "ACTIVE"
    assert server.flavor.original_name == TINY and server.key_name == keypair.name
    bound = conn.network.get_port(port.id)
    assert (bound.device_id, bound.device_owner, bound.status) == (
        server.id,
        "compute:nova",
        "ACTIVE",
    )

    conn.compute.set_server_metadata(server, b="2")
    assert conn.compute.get_server_metadata(server).metadata == {"a": "1", "b": "2"}
    conn.compute.delete_server_metadata(server, ["a"])
    assert conn.compute.get_server(server.id).metadata == {"b": "2"}
    assert [s.id for s in conn.compute.servers(name=f"^{server.name}$")] == [server.id]
    assert [i.port_id for i in conn.compute.server_interfaces(server)] == [port.id]

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=30, interval=0.2)
    with pytest.raises(exceptions.NotFoundException):
        conn.compute.get_server(server.id)
    kept = conn.network.get_port(port.id)  # a port the user made is detached, not deleted
    assert (kept.device_id, kept.device_owner) == ("", "")
    conn.compute.delete_keypair(keypair)
    with pytest.raises(exceptions.NotFoundException):
        conn.compute.get_keypair(keypair.name)


def test_keypairs(conn):
    name = _name("kp")
    created = conn.compute.create_keypair(name=name)
    assert created.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert conn.compute.get_keypair(name).public_key.startswith("ssh-ed25519 ")
    assert name in {k.name for k in conn.compute.keypairs()}
    with pytest.raises(exceptions.ConflictException):
        conn.compute.create_keypair(name=name)
    with pytest.raises(exceptions.BadRequestException, match="Keypair data is invalid"):
        conn.compute.create_keypair(name=_name("kp"), public_key="ssh-ed25519 not-base64")
    conn.compute.delete_keypair(name)


def test_tags_and_filters(conn, tenant):
    net = conn.network.create_network(
        name=_name("tagged"), tags=["hybridgrid", "hybridgrid-site=a"]
    )
    other = conn.network.create_network(name=_name("tagged"), tags=["hybridgrid"])
    assert sorted(net.tags) == ["hybridgrid", "hybridgrid-site=a"]
    conn.network.add_tag(other, "hybridgrid-site=b")
    conn.network.remove_tag(other, "hybridgrid")
    assert conn.network.get_network(other.id).tags == ["hybridgrid-site=b"]
    conn.network.set_tags(other, ["x", "y"])
    assert sorted(conn.network.get_network(other.id).tags) == ["x", "y"]

    def ids(**query):
        return {n.id for n in conn.network.networks(**query)}

    assert net.id in ids(tags="hybridgrid,hybridgrid-site=a")
    assert ids(tags="hybridgrid,hybridgrid-site=a") & {other.id} == set()
    assert {net.id, other.id} <= ids(any_tags="hybridgrid-site=a,x")
    assert net.id not in ids(not_tags="hybridgrid,hybridgrid-site=a")
    assert other.id not in ids(not_any_tags="y,zzz")
    assert ids(name=net.name) == {net.id}

    subnet = tenant["subnet"]
    conn.network.set_tags(subnet, ["hybridgrid"])
    assert [s.id for s in conn.network.subnets(network_id=tenant["net"].id, cidr=subnet.cidr)] == [
        subnet.id
    ]
    assert [s.id for s in conn.network.subnets(tags="hybridgrid", network_id=tenant["net"].id)] == [
        subnet.id
    ]
    port = conn.network.create_port(network_id=tenant["net"].id, tags=["hybridgrid"])
    ip = port.fixed_ips[0]["ip_address"]
    assert [p.id for p in conn.network.ports(fixed_ips=[f"ip_address={ip}"])] == [port.id]
    assert port.id in {
        p.id for p in conn.network.ports(network_id=tenant["net"].id, tags="hybridgrid")
    }
    router = tenant["router"]
    conn.network.set_tags(router, ["hybridgrid"])
    assert [r.id for r in conn.network.routers(tags="hybridgrid", name=router.name)] == [router.id]
    sg = conn.network.create_security_group(name=_name("sg"), tags=["hybridgrid"])
    assert [g.id for g in conn.network.security_groups(tags="hybridgrid", name=sg.name)] == [sg.id]


def test_router_routes_and_interfaces(conn, tenant):
    router, subnet = tenant["router"], tenant["subnet"]
    hop = str(ipaddress.ip_network(subnet.cidr)[5])
    updated = conn.network.update_router(
        router, routes=[{"destination": "10.0.0.0/24", "nexthop": hop}]
    )
    assert updated.routes == [{"destination": "10.0.0.0/24", "nexthop": hop}]
    with pytest.raises(exceptions.BadRequestException, match="nexthop is not connected"):
        conn.network.update_router(
            router, routes=[{"destination": "10.1.0.0/24", "nexthop": "172.31.0.1"}]
        )
    with pytest.raises(exceptions.ConflictException, match="required by one or more routes"):
        conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
    with pytest.raises(exceptions.ConflictException, match="still has ports"):
        conn.network.delete_router(router)
    conn.network.update_router(router, routes=[])
    other = str(ipaddress.ip_network(subnet.cidr)[6])
    added = conn.network.add_extra_routes_to_router(
        router, body={"router": {"routes": [{"destination": "10.2.0.0/24", "nexthop": other}]}}
    )
    assert added.routes == [{"destination": "10.2.0.0/24", "nexthop": other}]
    removed = conn.network.remove_extra_routes_from_router(
        router, body={"router": {"routes": [{"destination": "10.2.0.0/24", "nexthop": other}]}}
    )
    assert removed.routes == []
    conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
    assert (
        list(conn.network.ports(device_id=router.id, device_owner="network:router_interface")) == []
    )
    conn.network.delete_router(router)
    assert list(conn.network.ports(device_id=router.id)) == []  # gateway port gone too


def test_security_groups_and_rules(conn, tenant):
    default = conn.network.find_security_group("default")
    assert len(default.security_group_rules) == 4
    sg = conn.network.create_security_group(name=_name("sg"), description="wg")
    assert {(r["direction"], r["ethertype"]) for r in sg.security_group_rules} == {
        ("egress", "IPv4"),
        ("egress", "IPv6"),
    }
    rule = conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", protocol="udp", port_range_min=51820,
        port_range_max=51820, remote_ip_prefix="198.51.100.7/32", ethertype="IPv4",
    )  # fmt: skip
    with pytest.raises(exceptions.ConflictException, match="already exists"):
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="udp", port_range_min=51820,
            port_range_max=51820, remote_ip_prefix="198.51.100.7/32", ethertype="IPv4",
        )  # fmt: skip
    grp = conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", remote_group_id=sg.id
    )
    assert [
        r.id
        for r in conn.network.security_group_rules(security_group_id=sg.id, direction="ingress")
    ] == [rule.id, grp.id]
    conn.network.delete_security_group_rule(rule)
    assert [
        r.id
        for r in conn.network.security_group_rules(security_group_id=sg.id, direction="ingress")
    ] == [grp.id]
    port = conn.network.create_port(network_id=tenant["net"].id, security_group_ids=[sg.id])
    with pytest.raises(exceptions.ConflictException, match="in use"):
        conn.network.delete_security_group(sg)
    conn.network.delete_port(port)
    conn.network.delete_security_group(sg)
    with pytest.raises(exceptions.ConflictException):
        conn.network.delete_security_group(default)


def test_ip_allocation_never_repeats(conn, tenant):
    net = tenant["net"]
    seen = []
    for _ in range(6):
        port = conn.network.create_port(network_id=net.id)
        seen.append(port.fixed_ips[0]["ip_address"])
        conn.network.delete_port(port)
    assert len(set(seen)) == len(seen)
    taken = conn.network.create_port(network_id=net.id)
    with pytest.raises(exceptions.ConflictException, match="already allocated"):
        conn.network.create_port(
            network_id=net.id, fixed_ips=[{"ip_address": taken.fixed_ips[0]["ip_address"]}]
        )
    with pytest.raises(exceptions.ConflictException, match="ports still in use"):
        conn.network.delete_network(net)


def test_allowed_address_pairs_and_port_security(conn, tenant):
    port = conn.network.create_port(network_id=tenant["net"].id)
    port = conn.network.update_port(
        port,
        allowed_address_pairs=[{"ip_address": "10.0.0.0/24"}, {"ip_address": "192.168.77.0/24"}],
    )
    assert [p["ip_address"] for p in port.allowed_address_pairs] == [
        "10.0.0.0/24",
        "192.168.77.0/24",
    ]
    with pytest.raises(exceptions.ConflictException, match="Port Security must be enabled"):
        conn.network.update_port(port, port_security_enabled=False, security_group_ids=[])
    off = conn.network.update_port(
        port, allowed_address_pairs=[], port_security_enabled=False, security_group_ids=[]
    )
    assert off.is_port_security_enabled is False and off.security_group_ids == []
    with pytest.raises(exceptions.ConflictException, match="Port Security must be enabled"):
        conn.network.update_port(port, allowed_address_pairs=[{"ip_address": "10.0.0.5"}])


def test_floating_ips(conn, tenant):
    public = tenant["public"]
    port = conn.network.create_port(network_id=tenant["net"].id)
    fip = conn.network.create_ip(floating_network_id=public.id)
    assert fip.status == "DOWN" and fip.port_id is None
    fip = conn.network.update_ip(fip, port_id=port.id)
    assert (
        fip.fixed_ip_address == port.fixed_ips[0]["ip_address"]
        and fip.router_id == tenant["router"].id
    )
    assert [f.id for f in conn.network.ips(port_id=port.id)] == [fip.id]
    assert [f.id for f in conn.network.ips(floating_ip_address=fip.floating_ip_address)] == [fip.id]
    fip = conn.network.update_ip(fip, port_id=None)
    assert fip.port_id is None and fip.fixed_ip_address is None
    conn.network.delete_ip(fip)
    assert conn.network.find_ip(fip.id) is None

    lonely = conn.network.create_network(name=_name("lonely"))
    conn.network.create_subnet(network_id=lonely.id, cidr="172.30.0.0/24", ip_version=4)
    stray = conn.network.create_port(network_id=lonely.id)
    with pytest.raises(exceptions.NotFoundException, match="not reachable"):
        conn.network.create_ip(floating_network_id=public.id, port_id=stray.id)
    with pytest.raises(exceptions.BadRequestException, match="external network"):
        conn.network.create_ip(floating_network_id=lonely.id)


def test_quota_and_limits_views(conn):
    limits = conn.compute.get_limits()
    assert limits.absolute.instances >= 1 and limits.absolute.total_cores_used >= 0
    details = conn.network.get_quota(conn.current_project_id, details=True)
    assert details.networks["limit"] == 100 and details.networks["used"] >= 1


def test_concurrent_port_creates_get_distinct_addresses(lc, tenant):
    from concurrent.futures import ThreadPoolExecutor

    from localcloud.clientconf import connect

    conns = [connect(lc.state_dir, "bielefeld") for _ in range(4)]

    def make(i: int) -> str:
        return (
            conns[i % 4].network.create_port(network_id=tenant["net"].id).fixed_ips[0]["ip_address"]
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        addresses = list(pool.map(make, range(40)))
    assert len(set(addresses)) == 40
