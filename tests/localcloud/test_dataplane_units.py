"""Pure parts of the data plane: names, SG rule rendering, cloud-config, host keys, state."""

from __future__ import annotations

import base64
import gzip
import shutil
import subprocess
import uuid

import pytest

from localcloud.backend import AddressPair, FixedIP, Port, Rule, SecurityGroup
from localcloud.dataplane import firewall, names
from localcloud.dataplane.cloudconfig import UserDataError, parse_user_data
from localcloud.dataplane.hostkeys import console_text, fingerprint, generate_host_keys
from localcloud.dataplane.state import DataplaneState, ServerRecord, find_server


def test_link_names_fit_linux_limit_and_instances_differ(tmp_path):
    for _ in range(50):
        i = str(uuid.uuid4())
        for fn in (names.bridge, names.port_link, names.uplink, names.inet_link,
                   names.router_gw_link, names.router_if_link):  # fmt: skip
            assert len(fn(i)) <= 15
    a, b = names.instance_tag(tmp_path / "a"), names.instance_tag(tmp_path / "b")
    assert a != b and len(a) == 4
    assert names.INSTANCE_NS_RE.match(names.inet_ns(a))
    assert names.server_ns(a, "x").startswith(names.prefix(a))


def _rule(**kw) -> Rule:
    return Rule(id="r", **{"direction": "ingress", **kw})


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (_rule(), ""),
        (_rule(protocol="udp", port_range_min=51820, port_range_max=51820,
               remote_ip_prefix="203.0.113.10/32"), "ip saddr 203.0.113.10/32 udp dport 51820"),
        (_rule(protocol="tcp", port_range_min=8000, port_range_max=8100), "tcp dport 8000-8100"),
        (_rule(protocol="tcp"), "meta l4proto tcp"),
        (_rule(protocol="icmp", port_range_min=8, port_range_max=0), "icmp type 8 icmp code 0"),
        (_rule(protocol="17", remote_ip_prefix="0.0.0.0/0"), "meta l4proto udp"),
        (_rule(direction="egress", remote_ip_prefix="10.0.0.0/8"), "ip daddr 10.0.0.0/8"),
        (_rule(ethertype="IPv6"), None),
        (_rule(remote_group_id="empty"), None),
        (_rule(remote_group_id="g"), "ip saddr { 192.168.66.10, 192.168.77.0/24 }"),
    ],
)  # fmt: skip
def test_security_group_rule_rendering(rule, expected):
    assert firewall.rule_match(rule, {"g": ["192.168.77.0/24", "192.168.66.10"]}) == expected


def test_port_security_sets_cover_fixed_ips_and_pairs():
    port = Port(
        id="p", network_id="n", mac_address="FA:16:3E:00:00:01",
        fixed_ips=[FixedIP(subnet_id="s", ip_address="192.168.66.10")],
        allowed_address_pairs=[
            AddressPair(ip_address="192.168.77.0/24", mac_address="fa:16:3e:00:00:99")
        ],
        security_group_ids=["g"],
    )  # fmt: skip
    sg = SecurityGroup(
        id="g", name="default", rules=[_rule(remote_group_id="g"), _rule(direction="egress")]
    )
    pp = firewall.protected_port(port, "tx", {"g": sg}, firewall.group_members([port]))
    assert pp.ips == ["192.168.66.10", "192.168.77.0/24"]
    assert pp.macs == ["fa:16:3e:00:00:01", "fa:16:3e:00:00:99"]
    assert pp.egress == [""] and pp.ingress == ["ip saddr { 192.168.66.10, 192.168.77.0/24 }"]
    text = firewall.render_fabric([pp])
    assert (
        'iifname "tx" jump ps_1' in text
        and "ip saddr != { 192.168.66.10, 192.168.77.0/24 } drop" in text
    )
    assert "ct state established,related accept" in text


def test_router_nat_rendering():
    text = firewall.render_router_nat(
        "qg1", "203.0.113.2", ["192.168.66.0/24"],
        [firewall.FloatingNat(floating_ip="203.0.113.10", fixed_ip="192.168.66.10")], snat=True,
    )  # fmt: skip
    assert "ip daddr 203.0.113.10 dnat to 192.168.66.10" in text
    assert 'oifname "qg1" ip saddr 192.168.66.10 snat to 203.0.113.10' in text
    assert 'oifname "qg1" ip saddr { 192.168.66.0/24 } snat to 203.0.113.2' in text
    no_snat = firewall.render_router_nat("qg1", "203.0.113.2", ["192.168.66.0/24"], [], snat=False)
    assert "snat to 203.0.113.2" not in no_snat


def test_cloud_config_subset():
    hi = base64.b64encode(b"hi").decode()
    zz = base64.b64encode(gzip.compress(b"zz")).decode()
    ud = parse_user_data(
        "#cloud-config\n"
        "ssh_authorized_keys: [ssh-ed25519 AAAA x@y]\n"
        "write_files:\n"
        f"- {{path: /a, content: {hi}, encoding: b64, permissions: '0600'}}\n"
        f"- {{path: /b, content: {zz}, encoding: gz+b64,"
        " owner: 'ubuntu:ubuntu', append: true}\n"
        "runcmd:\n- [echo, hello world]\n- touch /c\n"
    )
    assert ud.ssh_authorized_keys == ["ssh-ed25519 AAAA x@y"]
    assert [(f.path, f.content, f.permissions) for f in ud.write_files] == [
        ("/a", b"hi", 0o600),
        ("/b", b"zz", 0o644),
    ]
    assert ud.write_files[1].owner == "ubuntu:ubuntu" and ud.write_files[1].append
    assert ud.runcmd == ["echo 'hello world'", "touch /c"]
    assert parse_user_data("#!/bin/sh\necho hi\n").runcmd == ["#!/bin/sh\necho hi\n"]
    assert parse_user_data(None).runcmd == []
    with pytest.raises(UserDataError, match=r"write_files\[0\] needs a 'path'"):
        parse_user_data("#cloud-config\nwrite_files:\n- {content: x}\n")


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen")
def test_console_fingerprints_match_ssh_keygen(tmp_path):
    keys = generate_host_keys()
    assert "PRIVATE" not in repr(keys) and "PRIVATE" not in str(keys[0])
    text = console_text("master", [k.public_only() for k in keys], ["192.168.66.10"])
    for key in keys:
        pub = tmp_path / f"{key.kind}.pub"
        pub.write_text(key.public + "\n")
        out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True).stdout
        assert out.split()[1] == fingerprint(key.public)
        assert f"256 {fingerprint(key.public)} root@master (" in text
        assert f"{key.public} root@master" in text
    assert "PRIVATE" not in text


def test_find_server_by_name_or_id():
    state = DataplaneState(tag="abcd")
    for sid, cloud in (("1", "bielefeld"), ("2", "giessen")):
        state.servers[sid] = ServerRecord(id=sid, cloud=cloud, name="worker", ns=f"ns{sid}")
    assert find_server(state, "2").cloud == "giessen"
    assert find_server(state, "worker", "bielefeld").id == "1"
    with pytest.raises(LookupError, match=r"ambiguous.*--cloud"):
        find_server(state, "worker")
    with pytest.raises(LookupError, match="no server 'nope'"):
        find_server(state, "nope")
