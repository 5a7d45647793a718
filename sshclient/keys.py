"""The site's SSH key pair: ed25519 made with `cryptography`, checked without echoing it."""

from __future__ import annotations

import re

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, SecretStr


class SSHKeyError(ValueError):
    """A private key string is unusable. The message never contains the key."""


class SSHKeyPair(BaseModel):
    model_config = ConfigDict(frozen=True)

    private_key: SecretStr  # OpenSSH PEM ("-----BEGIN OPENSSH PRIVATE KEY-----")
    public_key: str  # one OpenSSH line: "ssh-ed25519 AAAA… comment"


def generate_ssh_keypair(comment: str = "hybridgrid") -> SSHKeyPair:
    if "\n" in comment:
        raise ValueError("comment must be one line")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return SSHKeyPair(private_key=SecretStr(private), public_key=f"{public} {comment}".strip())


def load_private_key(value: SecretStr | str) -> asyncssh.SSHKey:
    """Parse an unencrypted OpenSSH/PEM private key; a clear error that never quotes it."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not text or not text.strip():
        raise SSHKeyError("SSH private key is empty: store the key in the SSHKey block")
    if "PRIVATE KEY-----" not in text:
        raise SSHKeyError(
            "SSH private key is not in PEM/OpenSSH format (expected a "
            "'-----BEGIN OPENSSH PRIVATE KEY-----' block); did you paste the public key?"
        )
    encrypted = SSHKeyError(
        "SSH private key is passphrase-protected; store an unencrypted key "
        "(hybridgrid runs unattended)"
    )
    try:
        return asyncssh.import_private_key(text)
    except asyncssh.KeyEncryptionError:
        raise encrypted from None
    except (asyncssh.KeyImportError, ValueError) as exc:
        # asyncssh's own message says "passphrase"/"encrypt…" for encrypted keys; it never
        # contains key material, but we only look at it and do not pass it on
        if re.search(r"passphrase|encrypt", str(exc), re.IGNORECASE) or "ENCRYPTED" in text:
            raise encrypted from None
        raise SSHKeyError(
            "SSH private key could not be parsed (truncated or corrupted?); "
            "paste the whole key including the BEGIN/END lines"
        ) from None


def public_key_of(value: SecretStr | str) -> str:
    """The OpenSSH public key line of a private key."""
    key = load_private_key(value)
    return key.export_public_key("openssh").decode().strip()
