"""SSH host keys of emulated servers and the cloud-init style console text that shows them."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import BaseModel

# (file stem, label printed by cloud-init, bits)
KEY_TYPES = (("ecdsa", "ECDSA", 256), ("ed25519", "ED25519", 256))


class HostKey(BaseModel):
    kind: str  # ecdsa | ed25519
    public: str  # "ssh-ed25519 AAAA..." (no comment)
    private: str = ""  # OpenSSH PEM; never persisted, never logged

    def __repr__(self) -> str:  # keep private keys out of reprs and tracebacks
        return f"HostKey(kind={self.kind!r}, public={self.public[:30]!r}...)"

    __str__ = __repr__

    def public_only(self) -> HostKey:
        return HostKey(kind=self.kind, public=self.public)


def generate_host_keys() -> list[HostKey]:
    keys = []
    for kind, _label, _bits in KEY_TYPES:
        priv = (
            ed25519.Ed25519PrivateKey.generate()
            if kind == "ed25519"
            else ec.generate_private_key(ec.SECP256R1())
        )
        private = priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = (
            priv.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        keys.append(HostKey(kind=kind, public=public, private=private))
    return keys


def fingerprint(public: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line ("SHA256:…", no padding)."""
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def console_text(hostname: str, keys: list[HostKey], fixed_ips: list[str]) -> str:
    """What cloud-init prints on the serial console once a server has booted."""
    labels = {kind: (label, bits) for kind, label, bits in KEY_TYPES}
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    lines = [
        f"[    0.000000] Linux version 6 (localcloud) #1 SMP {now}",
        f"Cloud-init v. 24.1 running 'init' at {now}. Up 0.20 seconds.",
        *(f"ci-info: | eth{i} | True | {ipa} |" for i, ipa in enumerate(fixed_ips)),
        f"Cloud-init v. 24.1 running 'modules:final' at {now}. Up 0.40 seconds.",
        "#############################################################",
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----",
    ]
    for key in keys:
        label, bits = labels[key.kind]
        lines.append(f"{bits} {fingerprint(key.public)} root@{hostname} ({label})")
    lines += [
        "-----END SSH HOST KEY FINGERPRINTS-----",
        "#############################################################",
        "-----BEGIN SSH HOST KEY KEYS-----",
        *(f"{key.public} root@{hostname}" for key in keys),
        "-----END SSH HOST KEY KEYS-----",
        f"Cloud-init v. 24.1 finished at {now}. Datasource DataSourceOpenStackLocal. "
        "Up 0.50 seconds",
    ]
    return "\n".join(lines) + "\n"
