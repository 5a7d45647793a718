"""Parsers used by pinning and verification: console-log host keys, `wg show dump`."""

from __future__ import annotations

import asyncssh
import pytest

from hybridgrid.retry.classify import is_transient
from hybridgrid.sshclient.hostkeys import (
    HostKeyConsoleMismatch,
    HostKeysNotYetInConsole,
    parse_console_host_keys,
)
from hybridgrid.wireguard.state import WgDumpParseError, parse_wg_dump

# ---------------------------------------------------------------- console host keys


@pytest.fixture(scope="module")
def server_keys():
    return {
        "ECDSA": asyncssh.generate_private_key("ecdsa-sha2-nistp256"),
        "ED25519": asyncssh.generate_private_key("ssh-ed25519"),
        "RSA": asyncssh.generate_private_key("ssh-rsa", key_size=2048),
    }


def _pub(key) -> str:
    return key.export_public_key("openssh").decode().strip()


def console_log(keys, host="hg-giessen-vpn", fingerprints=True, key_block=True) -> str:
    """Shaped like an Ubuntu cloud image's first-boot serial console (syslog-prefixed fps)."""
    bits = {"ECDSA": 256, "ED25519": 256, "RSA": 2048}
    out = [
        "[    0.000000] Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075)",
        "[   12.417002] cloud-init[612]: Cloud-init v. 24.1.3 running 'init' at Wed, 27 Nov 2026",
        "ci-info: ++++++++++++++++++++++++Net device info+++++++++++++++++++++++++",
        "ci-info: |  ens3  | True |  192.168.77.13  | 255.255.255.0 | global | fa:16:3e:1b |",
        "[   14.920331] cloud-init[612]: Generating public/private ed25519 key pair.",
    ]
    if fingerprints:
        prefix = "<14>Nov 27 09:02:11 cloud-init: "
        out.append(prefix + "#" * 61)
        out.append(prefix + "-----BEGIN SSH HOST KEY FINGERPRINTS-----")
        for kind, key in keys.items():
            fp = key.get_fingerprint("sha256")
            out.append(f"{prefix}{bits[kind]} {fp} root@{host} ({kind})")
        out.append(prefix + "-----END SSH HOST KEY FINGERPRINTS-----")
        out.append(prefix + "#" * 61)
    if key_block:
        out.append("-----BEGIN SSH HOST KEY KEYS-----")
        out.extend(f"{_pub(key)} root@{host}" for key in keys.values())
        out.append("-----END SSH HOST KEY KEYS-----")
    out.append(
        "[   16.101223] cloud-init[801]: Cloud-init v. 24.1.3 finished at Wed, 27 Nov 2026 "
        "09:02:11 +0000. Datasource DataSourceOpenStackLocal.  Up 16.09 seconds"
    )
    return "\r\n".join(out) + "\r\n"


def test_console_keys_are_parsed_and_verified(server_keys):
    got = parse_console_host_keys(console_log(server_keys), "hg-giessen-vpn")
    assert got.verified
    assert sorted(got.host_key_lines) == sorted(
        " ".join(_pub(k).split()[:2]) for k in server_keys.values()
    )
    assert {f.key_type for f in got.fingerprints} == {"ECDSA", "ED25519", "RSA"}
    ed = next(k for k in got.keys if k.algorithm == "ssh-ed25519")
    assert ed.fingerprint == server_keys["ED25519"].get_fingerprint("sha256")
    assert ed.comment == "root@hg-giessen-vpn"


def test_only_fingerprints_gives_pins_but_not_verified(server_keys):
    got = parse_console_host_keys(console_log(server_keys, key_block=False))
    assert not got.verified and got.keys == []
    assert server_keys["ED25519"].get_fingerprint("sha256") in got.fingerprint_strings


def test_key_not_matching_any_fingerprint_is_refused(server_keys):
    other = dict(server_keys, ED25519=asyncssh.generate_private_key("ssh-ed25519"))
    log = console_log(server_keys, key_block=False) + console_log(other, fingerprints=False)
    with pytest.raises(HostKeyConsoleMismatch, match="ssh-ed25519") as err:
        parse_console_host_keys(log, "hg-giessen-vpn")
    assert not is_transient(err.value)


def test_last_complete_block_wins_after_a_rebuild(server_keys):
    new = {"ED25519": asyncssh.generate_private_key("ssh-ed25519")}
    cut = console_log(new).split("-----END SSH HOST KEY KEYS-----")[0]  # still printing
    log = console_log(server_keys) + console_log(new) + cut
    got = parse_console_host_keys(log)
    assert [k.fingerprint for k in got.keys] == [new["ED25519"].get_fingerprint("sha256")]


def test_console_without_keys_yet_is_transient():
    early = "[    0.000000] Linux version 6.8.0\r\n[   3.2] cloud-init[612]: starting\r\n"
    with pytest.raises(HostKeysNotYetInConsole) as err:
        parse_console_host_keys(early, "hg-giessen-vpn")
    assert "hg-giessen-vpn" in str(err.value)
    assert is_transient(err.value)


# ---------------------------------------------------------------- wg show dump

PRIV = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUB = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PEER2 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
PSK = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="


def test_parse_dump_interface_and_peers():
    dump = (
        f"{PRIV}\t{PUB}\t51820\toff\n"
        f"{PEER}\t(none)\t198.51.100.10:51820\t10.0.0.2/32,192.168.77.0/24\t1764234000\t"
        f"92412\t110236\t25\n"
        f"{PEER2}\t{PSK}\t(none)\t10.0.0.3/32\t0\t0\t0\toff\n"
    )
    state = parse_wg_dump(dump)
    assert state.interface.public_key == PUB
    assert state.interface.listen_port == 51820
    assert state.interface.fwmark is None
    assert state.interface.has_private_key
    p = state.peer(PEER)
    assert p is not None
    assert p.endpoint == "198.51.100.10:51820"
    assert [str(n) for n in p.allowed_ips] == ["10.0.0.2/32", "192.168.77.0/24"]
    assert (p.rx_bytes, p.tx_bytes, p.keepalive) == (92412, 110236, 25)
    assert p.handshake_age(now=1764234030) == 30
    assert p.handshake_fresh(now=1764234030)
    assert not p.handshake_fresh(now=1764234000 + 180)
    q = state.peer(PEER2)
    assert q is not None
    assert q.endpoint is None and q.keepalive is None and q.has_preshared_key
    assert q.handshake_age() is None and not q.handshake_fresh()
    # the parsed records never carry the private or preshared key
    assert PRIV not in state.model_dump_json() and PSK not in state.model_dump_json()


def test_parse_masked_dump_and_interface_without_key():
    state = parse_wg_dump("(none)\t(none)\t0\t0x1\n")
    assert not state.interface.has_private_key
    assert state.interface.public_key is None and state.peers == []
    assert state.interface.fwmark == 1


@pytest.mark.parametrize(
    ("dump", "needle"),
    [
        ("", "empty"),
        (f"{PRIV}\t{PUB}\t51820\n", "line 1"),
        (
            f"{PRIV}\t{PUB}\t51820\toff\n{PEER}\t(none)\t(none)\t10.0.0.2/32\tsoon\t0\t0\toff\n",
            "line 2: latest handshake",
        ),
        (f"{PRIV}\t{PUB}\t51820\toff\n{PEER}\t(none)\n", "line 2"),
    ],
)
def test_bad_dump_names_the_line_but_never_echoes_it(dump, needle):
    with pytest.raises(WgDumpParseError, match=needle) as err:
        parse_wg_dump(dump)
    assert PRIV not in str(err.value)


# ---------------------------------------------------------------- wg verification verdicts

NOW = 1764234100


def _state(*, priv=True, pub=PUB, peers=None):
    head = f"{PRIV if priv else '(none)'}\t{pub}\t51820\toff\n"
    peers = (
        peers
        if peers is not None
        else [
            f"{PEER}\t(none)\t198.51.100.10:51820\t10.0.0.2/32,192.168.77.0/24\t{NOW - 30}"
            f"\t100\t200\t25"
        ]
    )
    return parse_wg_dump(head + "".join(p + "\n" for p in peers))


def _expected(**kw):
    from hybridgrid.wireguard.state import ExpectedPeer

    base = {
        "public_key": PEER,
        "name": "hg-giessen-vpn",
        "endpoint": "198.51.100.10:51820",
        "allowed_ips": ["10.0.0.2/32", "192.168.77.0/24"],
    }
    return [ExpectedPeer(**{**base, **kw})]


def _check(state, **kw):
    from hybridgrid.wireguard.state import check_wg_state

    args = {"node": "hg-bielefeld-master", "public_key": PUB, "peers": _expected(), "now": NOW}
    return check_wg_state(state, **{**args, **kw})


def test_check_passes_on_a_healthy_interface():
    verdict = _check(_state())
    assert verdict.ok and verdict.problems == []


@pytest.mark.parametrize(
    ("state", "kw", "cause"),
    [
        (None, {}, "wg0 is down on hg-bielefeld-master"),
        (_state(priv=False), {}, "no private key"),
        (_state(pub=PEER2), {}, f"runs with public key {PEER2}"),
        (_state(peers=[]), {}, "peer hg-giessen-vpn is missing"),
        (
            _state(peers=[f"{PEER}\t(none)\t(none)\t10.0.0.2/32,192.168.77.0/24\t0\t0\t0\t25"]),
            {},
            "no handshake between hg-bielefeld-master and hg-giessen-vpn yet: likely UDP 51820",
        ),
        (_state(), {"now": NOW + 600}, "was 630 s ago"),
        (_state(), {"peers": _expected(endpoint="198.51.100.99:51820")}, "expected 198.51.100.99"),
        (
            _state(),
            {"peers": _expected(allowed_ips=["10.0.0.2/32", "192.168.88.0/24"])},
            "lacks AllowedIPs 192.168.88.0/24",
        ),
        (_state(), {"peers": _expected(public_key=PEER2)}, f"unexpected peer {PEER}"),
    ],
)
def test_check_names_the_cause(state, kw, cause):
    verdict = _check(state, **kw)
    assert not verdict.ok
    assert any(cause in p for p in verdict.problems), verdict.problems
