"""Bad input: each case is ONE clear error that names the cause and the fix, and leaves 0
resources in every cloud: no mutating API call reached localcloud (its own counters) and
nothing carries the case's site tag (or name) afterwards.

The cases are the table in docs/bad-input.md (regenerate it from the summary this suite
prints). Runs after the fault soak (file order), so site ``fulda-1`` is registered on giessen.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reliab_support import CLOUDS, HOME_SUBNET, REGISTRY, SITE_CLOUD, SUMMARY

from hybridgrid.model import RemoteSite

pytestmark = pytest.mark.dataplane

HYBRIDGRID = shutil.which("hybridgrid", path=str(Path(sys.executable).parent))
NET = ipaddress.IPv4Network


def site(name: str, **kw) -> RemoteSite:
    return RemoteSite(name=name, **{"cloud": SITE_CLOUD, "workers": 1, **kw})


# case id -> (site, substrings the one message must hold: the cause ... and the fix)
CASES = {
    "subnet overlaps the home subnet": (
        site("bi-overlap", subnet=NET("192.168.66.128/25")),
        ["192.168.66.128/25 overlaps the home subnet 192.168.66.0/24", "Fix: choose a subnet"],
    ),
    "subnet overlaps the WireGuard CIDR": (
        site("bi-wgcidr", subnet=NET("10.0.0.0/25")),
        ["overlaps the WireGuard CIDR 10.0.0.0/24", "Fix: choose a subnet"],
    ),
    "site named like the home": (
        site("bielefeld"),
        ["sites[0].name: 'bielefeld' is already used by home.name", "Fix: give every site"],
    ),
    "registered site name, other cloud": (
        site("fulda-1", cloud="bielefeld"),
        ["'fulda-1' is registered on cloud 'giessen', not 'bielefeld'", "Fix: give the new"],
    ),
    "unknown image": (
        site("bi-image", image="ubuntu-99.04"),
        ["image 'ubuntu-99.04' does not exist", "use one of"],
    ),
    "unknown flavor": (
        site("bi-flavor", vpn_flavor="de.NBI huge"),
        ["flavor 'de.NBI huge' does not exist", "use one of"],
    ),
    "unknown external network": (
        site("bi-extnet", external_network="outside"),
        ["external network 'outside' does not exist", "use one of"],
    ),
    "wrong credentials": (
        site("bi-creds", cloud="giessen-wrong"),
        ["authentication rejected", "check the credentials block 'giessen-wrong'"],
    ),
    "expired application credential": (
        site("bi-expired", cloud="marburg-appcred"),
        ["application credential", "has expired", "create a new one"],
    ),
    "instance quota exceeded": (
        site("bi-quota", cloud="marburg", workers=2),
        ["quota for instances would be exceeded: 0 used + 3 needed > limit 1", "ask the cloud"],
    ),
    "floating-IP quota exceeded": (
        site("bi-fipquota", cloud="marburg", workers=0),
        ["quota for floating IPs would be exceeded: 1 used + 1 needed > limit 1", "free 1"],
    ),
    "no allowed-address-pairs extension": (
        site("bi-pairs", cloud="wetzlar"),
        ["lacks the 'allowed-address-pairs' extension", "ask the cloud's operators"],
    ),
    "SSH key block holds no key": (
        site("bi-badkey"),
        ["SSHKey block 'hg-bi-badkey-ssh' does not hold a usable key", "Fix: save an"],
    ),
}


def _save_bad_key_block(name: str) -> None:
    """A block that passed no validation: what a hand-edited block in the UI can hold."""
    from pydantic import SecretStr

    from hybridgrid.blocks.ssh import SSHKey

    bad = SSHKey.model_construct(
        private_key=SecretStr("this is not a private key"),
        public_key=None,
        user="ubuntu",
        jump_host=None,
        proxy_command=None,
    )
    asyncio.run(bad.asave(name, overwrite=True))


def _tagged_everywhere(rel, name: str) -> int:
    return sum(rel.tagged(cloud, name) for cloud in CLOUDS)


def _registered(name: str) -> bool:
    from hybridgrid.blocks.registry import load_registry

    return name in asyncio.run(load_registry(REGISTRY)).sites


def _key_block_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from hybridgrid.blocks.ssh import SSHKey

    async def read() -> bool:
        async with get_client() as client:
            try:
                await client.read_block_document_by_name(
                    f"hg-{name}-ssh", SSHKey.get_block_type_slug(), include_secrets=False
                )
            except ObjectNotFound:
                return False
            return True

    return asyncio.run(read())


@pytest.fixture(scope="module")
def bad_input(rel):
    """Run every case once; (message, mutating calls, tagged resources, newly registered,
    new key block) per case."""
    from hybridgrid.blocks import loading

    # marburg's floating-IP quota (1) is used up by an IP hybridgrid does not own
    marburg = rel.conn("marburg")
    fip = marburg.network.create_ip(floating_network_id=marburg.network.find_network("public").id)
    _save_bad_key_block("hg-bi-badkey-ssh")
    loading.forget_ssh_key("hg-bi-badkey-ssh")
    for name in ("bi-overlap", "bi-wgcidr", "bi-image", "bi-flavor", "bi-extnet", "bi-quota"):
        rel.key_block(name)  # so the key block is never what fails
    out = {}
    try:
        for case, (spec, _) in CASES.items():
            before = _tagged_everywhere(rel, spec.name)  # the home / fulda-1 hold their own
            was_registered, had_block = _registered(spec.name), _key_block_exists(spec.name)
            rel.handle.reset_stats()
            try:
                rel.add_site(spec, timeout=120)
                message = "NO ERROR"
            except Exception as exc:
                message = str(exc)
                rel.watch.text(message)
            mutating = sum(rel.mutating().values())
            out[case] = (
                message,
                mutating,
                _tagged_everywhere(rel, spec.name) - before,
                _registered(spec.name) and not was_registered,
                _key_block_exists(spec.name) and not had_block,
            )
    finally:
        marburg.network.delete_ip(fip)
    for case, (message, mutating, tagged, *_) in out.items():
        SUMMARY.bad_input.append((case, " ".join(message.split()), mutating, tagged))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_one_clear_error(bad_input, case):
    message, *_ = bad_input[case]
    for part in CASES[case][1]:
        assert part in message, (case, message)


@pytest.mark.parametrize("case", list(CASES))
def test_nothing_created(bad_input, case):
    _, mutating, tagged, *_ = bad_input[case]
    assert (mutating, tagged) == (0, 0), (case, bad_input[case][0])


@pytest.mark.parametrize("case", list(CASES))
def test_nothing_reserved_and_no_key_block_made(bad_input, case):
    """A failed run leaves no registry entry (no subnet or overlay address reserved) and makes
    no SSH key block: the key blocks are read, and a missing one made, only after pre-flight."""
    *_, newly_registered, new_block = bad_input[case]
    assert not newly_registered, (case, bad_input[case][0])
    assert not new_block, (case, bad_input[case][0])


SPEC = f"""\
wireguard: {{cidr: 10.0.0.0/24, port: 51820, keepalive: 25}}
home: {{cloud: bielefeld, subnet: {HOME_SUBNET}, master: {{create: true}}, workers: 1}}
sites:
  - {{name: Fulda_1, cloud: giessen}}
"""


def test_invalid_name_through_the_cli(rel, tmp_path):
    """The CLI reads the spec before it talks to anything: one line, exit code non-zero."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    rel.handle.reset_stats()
    proc = subprocess.run(
        [HYBRIDGRID, "site", "add", str(spec), "--site", "Fulda_1", "--registry", REGISTRY],
        capture_output=True,
        text=True,
        timeout=120,
        env=rel.env(),
        check=False,
    )
    rel.watch.text(proc.stdout, proc.stderr)
    message = " ".join(proc.stderr.split())
    SUMMARY.bad_input.append(("invalid site name (CLI)", message, sum(rel.mutating().values()), 0))
    assert proc.returncode != 0
    assert "sites[0].name" in message and "'Fulda_1' is not a valid site name" in message
    assert "Fix: use 1–20 lowercase letters" in message
    assert sum(rel.mutating().values()) == 0
