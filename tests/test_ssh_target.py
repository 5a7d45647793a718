"""`SSHTarget` lives in the core and checks host-key lines without an SSH library: the check
agrees with asyncssh (which connects with those pins) on real and broken lines."""

from __future__ import annotations

import base64

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from hybridgrid.ssh_target import SSHTarget, is_public_key_line


def _line(key) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode() + " root@host"


KEYS = [
    _line(ed25519.Ed25519PrivateKey.generate()),
    _line(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    _line(ec.generate_private_key(ec.SECP256R1())),
    _line(ec.generate_private_key(ec.SECP384R1())),
]


def _asyncssh_accepts(line: str) -> bool:
    try:
        asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError):
        return False
    return True


def _broken(line: str) -> list[str]:
    kind, blob = line.split()[:2]
    raw = base64.b64decode(blob)
    other = "ssh-rsa" if kind != "ssh-rsa" else "ssh-ed25519"
    return [
        f"{kind} {base64.b64encode(raw[:-3]).decode()}",  # truncated
        f"{kind} {base64.b64encode(raw + b'x').decode()}",  # trailing bytes
        f"{other} {blob}",  # the blob names another type
        f"{kind} {blob[:-4]}!!!!",  # not base64
        kind,  # no blob
        "not a key",
    ]


@pytest.mark.parametrize("line", KEYS)
def test_real_host_key_lines_pass_as_asyncssh_reads_them(line: str) -> None:
    assert is_public_key_line(line) and _asyncssh_accepts(line)
    assert SSHTarget(host="203.0.113.10", host_keys=[f"  {line} "]).host_keys == [line]


@pytest.mark.parametrize("line", [b for k in KEYS for b in _broken(k)])
def test_broken_lines_are_refused_as_asyncssh_refuses_them(line: str) -> None:
    assert not is_public_key_line(line) and not _asyncssh_accepts(line)
    with pytest.raises(ValidationError, match=r"host_keys\[0\] is not an OpenSSH public key"):
        SSHTarget(host="203.0.113.10", host_keys=[line])
