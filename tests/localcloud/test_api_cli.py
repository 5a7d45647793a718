"""The unmodified `openstack` CLI against localcloud: every command the issue names succeeds and
returns what it created. (~20 CLI runs at 1–2 s each; the bulk of checks is in the SDK tests.)"""

from __future__ import annotations

import ipaddress
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_identity_catalog_images_flavors(os_cli, lc):
    token = os_cli("bielefeld", "token", "issue")
    assert token["id"] and token["project_id"] and token["expires"]
    catalog = os_cli("bielefeld-appcred", "catalog", "list")
    types = {entry["Type"]: entry for entry in catalog}
    assert set(types) >= {"identity", "compute", "network", "image"}
    assert lc.clouds["bielefeld"].compute in json.dumps(types["compute"]["Endpoints"])
    images = os_cli("bielefeld", "image", "list")
    assert "ubuntu-22.04" in {i["Name"] for i in images}
    flavors = os_cli("bielefeld", "flavor", "list")
    assert {"de.NBI tiny", "de.NBI small"} <= {f["Name"] for f in flavors}


def test_network_server_port_floating_ip(os_cli, conn, tmp_path):
    cli = os_cli
    pub = tmp_path / "key.pub"
    pub.write_text(_public_key() + "\n")
    key = cli("bielefeld", "keypair", "create", "--public-key", str(pub), "cli-key")
    assert key["name"] == "cli-key" and key["fingerprint"].count(":") == 15

    net = cli("bielefeld", "network", "create", "cli-net")
    assert net["name"] == "cli-net" and net["mtu"] == 1450
    subnet = cli(
        "bielefeld", "subnet", "create", "cli-subnet", "--network", "cli-net",
        "--subnet-range", "192.168.166.0/24",
    )  # fmt: skip
    assert subnet["cidr"] == "192.168.166.0/24" and subnet["gateway_ip"] == "192.168.166.1"
    router = cli("bielefeld", "router", "create", "cli-router", "--external-gateway", "public")
    gw = router["external_gateway_info"]
    assert gw["network_id"] == conn.network.find_network("public").id
    assert ipaddress.ip_address(gw["external_fixed_ips"][0]["ip_address"]) in ipaddress.ip_network(
        "203.0.113.0/24"
    )
    cli("bielefeld", "router", "add", "subnet", "cli-router", "cli-subnet", parse=False)
    assert [
        p.fixed_ips[0]["ip_address"]
        for p in conn.network.ports(device_id=router["id"], device_owner="network:router_interface")
    ] == ["192.168.166.1"]

    sg = cli("bielefeld", "security", "group", "create", "cli-sg")
    assert sg["name"] == "cli-sg"
    rule = cli(
        "bielefeld", "security", "group", "rule", "create", "cli-sg", "--protocol", "udp",
        "--dst-port", "51820", "--remote-ip", "198.51.100.10/32",
    )  # fmt: skip
    assert (rule["protocol"], rule["port_range_min"], rule["port_range_max"]) == (
        "udp",
        51820,
        51820,
    )
    assert rule["remote_ip_prefix"] == "198.51.100.10/32" and rule["security_group_id"] == sg["id"]

    server = cli(
        "bielefeld", "server", "create", "cli-vm", "--image", "ubuntu-22.04",
        "--flavor", "de.NBI tiny", "--network", "cli-net", "--key-name", "cli-key",
        "--security-group", "cli-sg", "--wait",
    )  # fmt: skip
    assert server["status"] == "ACTIVE" and server["name"] == "cli-vm"
    shown = cli("bielefeld", "server", "show", "cli-vm")
    assert shown["id"] == server["id"] and shown["key_name"] == "cli-key"
    assert "192.168.166." in json.dumps(shown["addresses"])
    listed = cli("bielefeld", "server", "list", "--name", "^cli-vm$")
    assert [s["ID"] for s in listed] == [server["id"]]
    console = cli("bielefeld", "console", "log", "show", "cli-vm", parse=False)
    assert "BEGIN SSH HOST KEY KEYS" in console and "ssh-ed25519 " in console

    ports = cli("bielefeld", "port", "list", "--server", "cli-vm")
    assert len(ports) == 1
    port_id = ports[0]["ID"]
    cli(
        "bielefeld",
        "port",
        "set",
        port_id,
        "--allowed-address",
        "ip-address=10.0.0.0/24",
        parse=False,
    )
    port = conn.network.get_port(port_id)
    assert [p["ip_address"] for p in port.allowed_address_pairs] == ["10.0.0.0/24"]
    assert port.allowed_address_pairs[0]["mac_address"] == port.mac_address
    assert set(port.security_group_ids) == {sg["id"]}

    fip = cli("bielefeld", "floating", "ip", "create", "public")
    assert ipaddress.ip_address(fip["floating_ip_address"]) in ipaddress.ip_network(
        "203.0.113.0/24"
    )
    assert fip["port_id"] is None
    cli(
        "bielefeld",
        "floating",
        "ip",
        "set",
        "--port",
        port_id,
        fip["floating_ip_address"],
        parse=False,
    )
    fip_now = conn.network.get_ip(fip["id"])
    assert (
        fip_now.port_id == port_id and fip_now.fixed_ip_address == port.fixed_ips[0]["ip_address"]
    )
    addresses = conn.compute.get_server(server["id"]).addresses["cli-net"]
    assert {a["OS-EXT-IPS:type"]: a["addr"] for a in addresses} == {
        "fixed": port.fixed_ips[0]["ip_address"],
        "floating": fip["floating_ip_address"],
    }

    cli("bielefeld", "server", "delete", "--wait", "cli-vm", parse=False)
    assert conn.compute.find_server("cli-vm") is None
    assert conn.network.find_port(port_id) is None  # Nova's port went with the server
    assert conn.network.get_ip(fip["id"]).port_id is None  # the floating IP stays, unbound
