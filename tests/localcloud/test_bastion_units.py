"""The bastion's input checks and address plan (no root needed)."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from typer.testing import CliRunner

from localcloud.backend import Network
from localcloud.cli import app
from localcloud.dataplane import names
from localcloud.dataplane.bastion import BastionError, parse_authorized_keys
from localcloud.dataplane.namespace_backend import BASTION_NETWORK, _check_public
from localcloud.dataplane.netns import DataplaneError


def _public(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _private_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def test_public_key_lines_of_every_common_type_are_kept():
    ed = _public(ed25519.Ed25519PrivateKey.generate())
    ecdsa = _public(ec.generate_private_key(ec.SECP256R1()))
    rsa_key = _public(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    text = f"# my keys\n\n{ed} alice@laptop\n  {ecdsa}\n{rsa_key} bob  at  work\n"
    assert parse_authorized_keys(text) == [f"{ed} alice@laptop", ecdsa, f"{rsa_key} bob at work"]
    assert parse_authorized_keys([ed, ecdsa]) == [ed, ecdsa]


def test_security_key_lines_are_accepted():
    kind = "sk-ssh-ed25519@openssh.com"
    blob = struct.pack(">I", len(kind)) + kind.encode() + b"\0" * 40
    line = f"{kind} {base64.b64encode(blob).decode()} yubikey"
    assert parse_authorized_keys(line) == [line]


def test_a_private_key_is_refused_without_echoing_it():
    pem = _private_pem(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(BastionError, match="private key") as err:
        parse_authorized_keys(pem)
    body = pem.splitlines()[1]
    assert body[:20] not in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "none given"),
        ("# only a comment\n", "none given"),
        ("ssh-ed25519", "line 1 is not an OpenSSH public key line"),
        ("ssh-ed25519 AAAAnot-a-key", "line 1 .* not a valid OpenSSH public key"),
        ('from="10.0.0.1" ssh-ed25519 AAAA', "key options"),
    ],
)
def test_bad_authorized_keys_are_refused_with_the_line_and_the_fix(text, match):
    with pytest.raises(BastionError, match=match):
        parse_authorized_keys(text)


def test_no_cloud_may_take_the_bastion_network():
    net = Network(id="n", name="public", external=True)
    _check_public("198.19.254.0/24", net)  # a neighbour is fine
    with pytest.raises(DataplaneError, match="reserved for localcloud's bastion"):
        _check_public(str(BASTION_NETWORK), net)


def test_bastion_namespace_name_is_the_instances_own():
    ns = names.bastion_ns("ab12")
    assert ns == "lcab12-bastion" and ns.startswith(names.prefix("ab12"))
    assert names.BASTION_NS_RE.match(ns) and not names.INSTANCE_NS_RE.match(ns)
    assert len(names.BASTION_INET_LINK) <= 15


def test_cli_names_a_missing_key_file(tmp_path):
    res = CliRunner().invoke(
        app,
        ["bastion", "up", "--authorized-key", str(tmp_path / "nope.pub"), "--state-dir",
         str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--authorized-key" in res.output and "no such file" in res.output


def test_cli_show_without_a_bastion_says_how_to_make_one(tmp_path):
    res = CliRunner().invoke(app, ["bastion", "show", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1 and "localcloud bastion up" in res.output
