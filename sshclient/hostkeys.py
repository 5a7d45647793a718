"""Host keys from a server's console log (cloud-init prints them at first boot).

cloud-init writes two blocks: `-----BEGIN SSH HOST KEY FINGERPRINTS-----` (lines like
`256 SHA256:… root@host (ED25519)`, usually prefixed with a syslog header) and
`-----BEGIN SSH HOST KEY KEYS-----` (OpenSSH public key lines). We take the last complete block
of each, and when both are there every key must match a fingerprint.
"""

from __future__ import annotations

import re

import asyncssh
from pydantic import BaseModel, ConfigDict

from hybridgrid.retry.classify import TransientError

_FP_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
_FP_END = "-----END SSH HOST KEY FINGERPRINTS-----"
_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
_KEYS_END = "-----END SSH HOST KEY KEYS-----"

_KEY_LINE = re.compile(
    r"(?P<alg>ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(?:256|384|521)"
    r"|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
    r"\s+(?P<blob>AAAA[A-Za-z0-9+/]+={0,2})(?:\s+(?P<comment>\S+))?"
)
_FP_LINE = re.compile(
    r"(?P<bits>\d+)\s+(?P<fp>SHA256:[A-Za-z0-9+/]{43})\s+(?P<comment>.*?)\s*\((?P<type>[A-Z0-9-]+)\)\s*$"
)


class HostKeysNotYetInConsole(TransientError):
    """cloud-init has not printed the host keys yet (retry later)."""


class HostKeyConsoleMismatch(ValueError):
    """The console log's keys and fingerprints disagree. Permanent: do not pin anything."""


class HostKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    algorithm: str
    key: str  # base64 blob
    comment: str | None = None
    fingerprint: str  # SHA256:…

    @property
    def openssh_line(self) -> str:
        return f"{self.algorithm} {self.key}"


class HostKeyFingerprint(BaseModel):
    model_config = ConfigDict(frozen=True)

    bits: int
    fingerprint: str
    comment: str
    key_type: str  # ED25519, ECDSA, RSA…


class ConsoleHostKeys(BaseModel):
    model_config = ConfigDict(frozen=True)

    keys: list[HostKey]
    fingerprints: list[HostKeyFingerprint]
    verified: bool  # keys were present and each one matched a printed fingerprint

    @property
    def host_key_lines(self) -> list[str]:
        return [k.openssh_line for k in self.keys]

    @property
    def fingerprint_strings(self) -> list[str]:
        return [f.fingerprint for f in self.fingerprints]

    def pins(self) -> dict[str, list[str]]:
        """Keyword arguments for `SSHTarget(...)`: the key lines when the console had them,
        and the fingerprints (which alone also suffice to verify the server)."""
        return {"host_keys": self.host_key_lines, "host_key_fingerprints": self.fingerprint_strings}


def _last_block(lines: list[str], begin: str, end: str) -> list[str] | None:
    """Lines strictly between the last complete begin/end pair, or None."""
    result = None
    inside: list[str] | None = None
    for line in lines:
        if begin in line:
            inside = []
        elif end in line and inside is not None:
            result, inside = inside, None
        elif inside is not None:
            inside.append(line)
    return result


def parse_console_host_keys(console: str, server: str = "server") -> ConsoleHostKeys:
    lines = console.replace("\r", "").splitlines()
    fp_block = _last_block(lines, _FP_BEGIN, _FP_END)
    key_block = _last_block(lines, _KEYS_BEGIN, _KEYS_END)
    if fp_block is None and key_block is None:
        raise HostKeysNotYetInConsole(
            f"the console log of {server} shows no SSH host keys yet (cloud-init still booting?)"
        )
    fingerprints = []
    for line in fp_block or []:
        m = _FP_LINE.search(line)
        if m:
            fingerprints.append(
                HostKeyFingerprint(
                    bits=int(m["bits"]),
                    fingerprint=m["fp"],
                    comment=m["comment"],
                    key_type=m["type"],
                )
            )
    keys = []
    for line in key_block or []:
        m = _KEY_LINE.search(line)
        if not m:
            continue
        try:
            parsed = asyncssh.import_public_key(f"{m['alg']} {m['blob']}")
        except (asyncssh.KeyImportError, ValueError):
            raise HostKeyConsoleMismatch(
                f"the console log of {server} has a garbled {m['alg']} host key line"
            ) from None
        keys.append(
            HostKey(
                algorithm=m["alg"],
                key=m["blob"],
                comment=m["comment"],
                fingerprint=parsed.get_fingerprint("sha256"),
            )
        )
    if not keys and not fingerprints:
        raise HostKeysNotYetInConsole(f"the host key blocks in the console of {server} are empty")
    verified = False
    if keys and fingerprints:
        printed = {f.fingerprint for f in fingerprints}
        wrong = [k.algorithm for k in keys if k.fingerprint not in printed]
        if wrong:
            raise HostKeyConsoleMismatch(
                f"the console log of {server} lists {', '.join(wrong)} host key(s) whose "
                f"fingerprint is not among the printed fingerprints; refusing to pin them "
                f"(check the console log by hand; rebuild the server if in doubt)"
            )
        verified = True
    return ConsoleHostKeys(keys=keys, fingerprints=fingerprints, verified=verified)
