# ruff: noqa: E501 - request templates are kept one per line, as the clients send them
"""Property: whatever body a client sends, localcloud answers with an OpenStack-shaped 4xx (or a
2xx), never a 500. The bodies start from those hybridgrid, openstacksdk and the CLI send
(docs: /work/shared/notes/openstack-api-facts.md) and hypothesis mutates them: a field's value
replaced by any JSON, a field dropped, an unknown one added, the wrapper wrong, or no JSON at all.

Each endpoint gets a bounded number of examples from a fixed seed (derandomized), so the run is
reproducible and takes seconds; it talks to a private localcloud over real HTTP.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localcloud import control

EXAMPLES = 60

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "default", "auto", "none", "10.0.0.0/24", "-1", "0", "ssh-ed25519 AAAA"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _mutated(template: dict[str, Any]) -> st.SearchStrategy[Any]:
    """The template with one or two of its fields changed, dropped or added to (inside the
    resource wrapper, e.g. {"server": {...}}, when there is one), or replaced as a whole."""
    (wrapper, inner), *_ = template.items()
    if len(template) != 1 or not isinstance(inner, dict):
        wrapper, inner = None, template
    keys = sorted(inner) or ["name"]

    def change(edits: list[tuple[str, str, Any]]) -> Any:
        out = dict(inner)
        for how, key, value in edits:
            if how == "set":
                out[key] = value
            elif how == "nested":  # a field inside an object or a list of objects
                out[key] = _nested(out.get(key), value)
            elif how == "drop":
                out.pop(key, None)
            else:
                out[f"x-{key}"] = value
        return {wrapper: out} if wrapper else out

    how = st.sampled_from(["set", "nested", "nested", "drop", "add"])
    edit = st.tuples(how, st.sampled_from(keys), json_values)
    whole = json_values.map(lambda v: {wrapper: v}) if wrapper else json_values
    return st.lists(edit, min_size=1, max_size=2).map(change) | whole | json_values


def _nested(field: Any, value: Any) -> Any:
    """`field` with each of its sub-fields (of an object, or of a list's first object) set to
    `value` in turn - one of them, chosen by the value's hash, to stay deterministic."""
    target = field[0] if isinstance(field, list) and field and isinstance(field[0], dict) else field
    if not isinstance(target, dict) or not target:
        return value
    keys = sorted(target)
    changed = dict(target, **{keys[len(json.dumps(value)) % len(keys)]: value})
    return [changed, *field[1:]] if isinstance(field, list) else changed


class Api:
    def __init__(self, handle: Any, cloud: str) -> None:
        from localcloud.clientconf import connect

        self.conn = connect(handle.state_dir, cloud)
        self.ep = handle.clouds[cloud]
        self.session = requests.Session()
        self.session.headers["X-Auth-Token"] = self.conn.auth_token

    def url(self, service: str, path: str) -> str:
        base = {
            "compute": self.ep.compute,
            "network": self.ep.network + "/v2.0",
            "identity": self.ep.auth_url,
        }[service]
        return base + path


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("localcloud-fuzz")
    quotas = {
        "instances": 10000, "cores": 100000, "ram": 10**9, "key_pairs": 10000, "network": 10000,
        "subnet": 10000, "port": 10000, "router": 10000, "floatingip": 10000,
        "security_group": 10000, "security_group_rule": 100000,
    }  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handle = control.start(
        state_dir, clouds=["fuzz"], port=port, dataplane=False,
        cloud_options={"fuzz": {"quotas": quotas}},
    )  # fmt: skip
    try:
        a = Api(handle, "fuzz")
        c = a.conn
        a.net = c.network.create_network(name="net")
        a.subnet = c.network.create_subnet(network_id=a.net.id, cidr="10.5.0.0/24", ip_version=4)
        a.port = c.network.create_port(network_id=a.net.id)
        a.router = c.network.create_router(name="r")
        a.sg = c.network.create_security_group(name="sg")
        a.public = c.network.find_network("public")
        a.image = next(iter(c.image.images())).id
        a.flavor = next(iter(c.compute.flavors())).id
        a.server = c.compute.create_server(
            name="s", image_id=a.image, flavor_id=a.flavor, networks=[{"uuid": a.net.id}]
        )
        yield a
    finally:
        control.down(state_dir)


def _templates(a: Api) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(service, method, path, body) as hybridgrid and the clients send them."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOz6XPqcvfXJ9a+HvWYzkLzI5n5aHwWpC9cW6IVexg7E t"
    server_body = {
        "name": "n", "imageRef": a.image, "flavorRef": a.flavor, "networks": [{"uuid": a.net.id}],
        "key_name": None, "security_groups": [{"name": "default"}], "user_data": "aGk=",
        "metadata": {"role": "worker"}, "min_count": 1, "max_count": 1,
        "block_device_mapping_v2": [{"boot_index": 0, "uuid": a.image, "source_type": "image",
                                     "destination_type": "local"}],
    }  # fmt: skip
    s = f"/servers/{a.server.id}"
    return [
        ("compute", "POST", "/servers", {"server": server_body}),
        ("compute", "PUT", s, {"server": {"name": "m", "description": "d"}}),
        ("compute", "POST", s + "/action", {"os-getConsoleOutput": {"length": 10}}),
        ("compute", "POST", s + "/action", {"addSecurityGroup": {"name": "sg"}}),
        ("compute", "POST", s + "/action", {"lock": {"locked_reason": "x"}}),
        ("compute", "PUT", s + "/metadata", {"metadata": {"a": "b"}}),
        ("compute", "PUT", s + "/tags", {"tags": ["a", "b"]}),
        ("compute", "POST", "/os-server-groups", {"server_group": {"name": "g", "policies": ["affinity"]}}),
        ("compute", "POST", "/os-keypairs", {"keypair": {"name": "k", "public_key": key, "type": "ssh"}}),
        ("compute", "PUT", f"/os-quota-sets/{a.conn.current_project_id}", {"quota_set": {"instances": 5}}),
        ("network", "POST", "/networks", {"network": {"name": "n", "tags": ["t"], "mtu": 1450, "admin_state_up": True, "port_security_enabled": True}}),
        ("network", "PUT", f"/networks/{a.net.id}", {"network": {"name": "n2", "description": ""}}),
        ("network", "POST", "/subnets", {"subnet": {"network_id": a.net.id, "cidr": "10.6.0.0/24", "ip_version": 4, "gateway_ip": "10.6.0.1", "allocation_pools": [{"start": "10.6.0.10", "end": "10.6.0.20"}], "dns_nameservers": [], "enable_dhcp": True}}),
        ("network", "POST", "/ports", {"port": {"network_id": a.net.id, "fixed_ips": [{"subnet_id": a.subnet.id, "ip_address": "10.5.0.50"}], "security_groups": [a.sg.id], "allowed_address_pairs": [{"ip_address": "10.9.0.0/24"}], "port_security_enabled": True}}),
        ("network", "PUT", f"/ports/{a.port.id}", {"port": {"allowed_address_pairs": [{"ip_address": "10.9.0.0/24", "mac_address": "fa:16:3e:00:00:01"}], "security_groups": [a.sg.id], "port_security_enabled": True}}),
        ("network", "POST", "/routers", {"router": {"name": "r", "external_gateway_info": {"network_id": a.public.id}, "admin_state_up": True}}),
        ("network", "PUT", f"/routers/{a.router.id}", {"router": {"routes": [{"destination": "10.9.0.0/24", "nexthop": "10.5.0.9"}], "external_gateway_info": {"network_id": a.public.id}}}),
        ("network", "PUT", f"/routers/{a.router.id}/add_router_interface", {"subnet_id": a.subnet.id, "port_id": a.port.id}),
        ("network", "PUT", f"/routers/{a.router.id}/add_extraroutes", {"router": {"routes": [{"destination": "10.8.0.0/24", "nexthop": "10.5.0.8"}]}}),
        ("network", "POST", "/security-groups", {"security_group": {"name": "g", "description": "g", "stateful": True}}),
        ("network", "PUT", f"/security-groups/{a.sg.id}", {"security_group": {"name": "h", "description": "x"}}),
        ("network", "POST", "/security-group-rules", {"security_group_rule": {"security_group_id": a.sg.id, "direction": "ingress", "ethertype": "IPv4", "protocol": "udp", "port_range_min": 51820, "port_range_max": 51820, "remote_ip_prefix": "198.51.100.10/32", "remote_group_id": None}}),
        ("network", "POST", "/floatingips", {"floatingip": {"floating_network_id": a.public.id, "port_id": a.port.id, "fixed_ip_address": "10.5.0.5"}}),
        ("network", "PUT", f"/networks/{a.net.id}/tags", {"tags": ["a", "b"]}),
        ("network", "PUT", f"/quotas/{a.conn.current_project_id}", {"quota": {"port": 20}}),
        ("identity", "POST", "/auth/tokens", {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": "x"}}}, "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}),
    ]  # fmt: skip


def _check(resp: requests.Response, what: str, body: Any) -> None:
    shown = json.dumps(body)[:300] if not isinstance(body, bytes) else repr(body[:60])
    assert resp.status_code < 500, f"{what} with {shown} -> {resp.status_code}: {resp.text[:300]}"
    if resp.status_code >= 400:
        fault = resp.json()  # OpenStack-shaped: one key (or Glance's flat code/title/message)
        assert isinstance(fault, dict) and fault, f"{what} -> {resp.status_code}: {resp.text}"


TEMPLATE_NAMES = [
    "servers create", "server update", "console output", "add security group", "lock",
    "metadata", "server tags", "server group", "keypair", "nova quota", "network create", "network update",
    "subnet", "port create", "port update", "router create", "router update",
    "router interface", "extra routes", "sg create", "sg update", "sg rule", "floating ip",
    "network tags", "neutron quota", "token",
]  # fmt: skip


@pytest.mark.parametrize("index", range(len(TEMPLATE_NAMES)), ids=TEMPLATE_NAMES)
def test_no_body_gets_a_500(api, index):
    service, method, path, template = _templates(api)[index]
    url = api.url(service, path)

    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )  # fmt: skip
    @given(body=_mutated(template))
    def check(body: Any) -> None:
        resp = api.session.request(method, url, json=body, timeout=30)
        _check(resp, f"{method} {path}", body)

    check()
    # ... and bodies that are not JSON at all
    for raw in (b"", b"{", b"\xff\xfe", b"[]", b'"text"', b"null", b"1e400"):
        resp = api.session.request(
            method, url, data=raw, headers={"Content-Type": "application/json"}, timeout=30
        )
        _check(resp, f"{method} {path}", raw)
