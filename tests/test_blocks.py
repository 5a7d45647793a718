"""Blocks: credentials → connection, SSH keys, the locked registry, and secrets never shown."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from hybridgrid.blocks import OpenStackCredentials, SiteRegistry, SSHKey
from hybridgrid.blocks.registry import (
    allocate_site,
    load_registry,
    lock_name,
    release_site,
    update_registry,
)
from hybridgrid.model import Topology, TopologyError
from hybridgrid.registry_data import RegistryData, SiteEntry

PASSWORD = "pw-Zq8-very-secret"
APP_SECRET = "appcred-Xy7-very-secret"

CLOUDS_YAML = f"""\
clouds:
  giessen:
    auth:
      auth_url: http://127.0.0.1:9/v3
      username: alice
      password: {PASSWORD}
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
  heidelberg:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://127.0.0.1:9/v3
      application_credential_id: ac-1
      application_credential_secret: {APP_SECRET}
    cacert: /etc/ssl/certs/ca-certificates.crt
"""


def password_creds(**kw) -> OpenStackCredentials:
    return OpenStackCredentials(
        auth_url=kw.pop("auth_url", "http://127.0.0.1:9/v3"),
        username="alice",
        password=PASSWORD,
        project_name="demo",
        user_domain_name="Default",
        project_domain_name="Default",
        **kw,
    )


def appcred_creds() -> OpenStackCredentials:
    return OpenStackCredentials(
        auth_url="http://127.0.0.1:9/v3",
        application_credential_id="ac-1",
        application_credential_secret=APP_SECRET,
    )


@pytest.fixture
def clouds_yaml(tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS_YAML)
    path.chmod(0o600)
    return path


@pytest.fixture
def loopback_listener():
    """A TCP listener on 127.0.0.1 that counts connections (and drops them)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    hits: list[int] = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            hits.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1], hits
    finally:
        srv.close()
        thread.join(timeout=5)


# ---- OpenStackCredentials -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {
                "username": "u",
                "password": PASSWORD,
                "application_credential_id": "i",
                "application_credential_secret": APP_SECRET,
            },
            "both a password and an application credential",
        ),
        ({}, "no credentials are set"),
        ({"username": "u"}, "password is missing"),
        ({"password": PASSWORD}, "username is missing"),
        ({"application_credential_secret": APP_SECRET}, "application_credential_id is missing"),
        ({"application_credential_id": "i"}, "application_credential_secret is missing"),
    ],
)
def test_exactly_one_auth_method(fields, words):
    with pytest.raises(ValidationError) as info:
        OpenStackCredentials(auth_url="http://127.0.0.1:9/v3", **fields)
    assert words in str(info.value)
    for secret in (PASSWORD, APP_SECRET):
        assert secret not in str(info.value) and secret not in repr(info.value)


def test_from_clouds_yaml_password_and_appcred(clouds_yaml):
    c = OpenStackCredentials.from_clouds_yaml("giessen", clouds_yaml)
    assert (c.auth_url, c.username, c.project_name) == ("http://127.0.0.1:9/v3", "alice", "demo")
    assert (c.region_name, c.interface, c.user_domain_name) == ("RegionOne", "public", "Default")
    assert c.password.get_secret_value() == PASSWORD
    a = OpenStackCredentials.from_clouds_yaml("heidelberg", clouds_yaml)
    assert a.auth_type == "v3applicationcredential" and a.username is None
    assert a.application_credential_secret.get_secret_value() == APP_SECRET
    assert a.cacert == "/etc/ssl/certs/ca-certificates.crt"


def test_a_rejected_clouds_yaml_entry_keeps_its_secrets_masked(tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text(
        CLOUDS_YAML.replace(
            "      project_name: demo\n",
            f"      project_name: demo\n      application_credential_secret: {APP_SECRET}\n",
            1,
        )
    )
    with pytest.raises(ValidationError, match="both a password") as info:
        OpenStackCredentials.from_clouds_yaml("giessen", path)
    for text in (str(info.value), repr(info.value), info.value.json(), str(info.value.errors())):
        assert PASSWORD not in text and APP_SECRET not in text


def test_from_clouds_yaml_honours_os_client_config_file(clouds_yaml, monkeypatch):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml))
    assert OpenStackCredentials.from_clouds_yaml("giessen").username == "alice"
    with pytest.raises(ValueError, match=r"no cloud named 'mainz' \(known: giessen, heidelberg"):
        OpenStackCredentials.from_clouds_yaml("mainz")


def test_from_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    with pytest.raises(ValueError, match="OS_AUTH_URL is not set"):
        OpenStackCredentials.from_env()
    monkeypatch.setenv("OS_AUTH_URL", "http://127.0.0.1:9/v3")
    monkeypatch.setenv("OS_USERNAME", "bob")
    monkeypatch.setenv("OS_PASSWORD", PASSWORD)
    monkeypatch.setenv("OS_PROJECT_NAME", "demo")
    monkeypatch.setenv("OS_USER_DOMAIN_NAME", "Default")
    monkeypatch.setenv("OS_PROJECT_DOMAIN_NAME", "Default")
    monkeypatch.setenv("OS_REGION_NAME", "RegionTwo")
    monkeypatch.setenv("OS_INTERFACE", "internal")
    c = OpenStackCredentials.from_env()
    assert (c.username, c.region_name, c.interface) == ("bob", "RegionTwo", "internal")
    assert c.password.get_secret_value() == PASSWORD


def test_connect_builds_a_connection_without_any_request(clouds_yaml, loopback_listener):
    port, hits = loopback_listener
    conn = password_creds(auth_url=f"http://127.0.0.1:{port}/v3", region_name="RegionOne").connect()
    assert conn.config.get_region_name() == "RegionOne"
    assert conn.config.config["auth"]["auth_url"] == f"http://127.0.0.1:{port}/v3"
    assert conn.config.config["auth"]["username"] == "alice"
    assert hits == []  # constructing it talked to nobody
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        conn.authorize()  # the first real request does reach the listener
    assert hits


def test_connect_from_a_clouds_yaml_entry(clouds_yaml):
    conn = OpenStackCredentials.from_clouds_yaml("heidelberg", clouds_yaml).connect()
    assert conn.config.config["auth_type"] == "v3applicationcredential"
    assert conn.config.config["auth"]["application_credential_id"] == "ac-1"
    assert conn.config.config["cacert"] == "/etc/ssl/certs/ca-certificates.crt"


# ---- SSHKey --------------------------------------------------------------------------------


def test_generated_key_matches_ssh_keygen(tmp_path):
    key = SSHKey.generate(user="debian")
    assert key.user == "debian" and key.public_key.startswith("ssh-ed25519 ")
    path = tmp_path / "id"
    path.touch(mode=0o600)
    path.write_text(key.private_key.get_secret_value())
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert derived.split()[:2] == key.public_key.split()[:2]


def test_pem_rsa_key_is_accepted_and_public_key_derived():
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    key = SSHKey(private_key=pem)
    assert key.public_key.startswith("ssh-rsa ")


JUNK = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo-not-a-key-material"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            f"-----BEGIN OPENSSH PRIVATE KEY-----\n{JUNK}\n-----END OPENSSH PRIVATE KEY-----\n",
            "could not be parsed",
        ),
        (f"ssh-ed25519 {JUNK} me@host", "not in PEM/OpenSSH format"),
        ("", "empty"),
    ],
)
def test_a_bad_private_key_is_a_clear_error_that_does_not_echo_it(text, words):
    with pytest.raises(ValidationError) as info:
        SSHKey(private_key=text)
    assert words in str(info.value)
    assert "private_key" in str(info.value)
    assert JUNK not in str(info.value) and JUNK not in repr(info.value)
    assert JUNK not in info.value.json() and JUNK not in str(info.value.errors())


def test_public_key_must_match_and_jump_host_and_proxy_are_checked():
    key = SSHKey.generate()
    other = SSHKey.generate()
    with pytest.raises(ValidationError, match="does not belong"):
        SSHKey(private_key=key.private_key, public_key=other.public_key)
    j = SSHKey(private_key=key.private_key, jump_host="admin@203.0.113.5:2222")
    assert j.jump() == ("admin", "203.0.113.5", 2222)
    assert SSHKey(private_key=key.private_key, jump_host="bastion").jump() == (
        "ubuntu",
        "bastion",
        22,
    )
    for bad in ("a b", "host:99999", "user@"):
        with pytest.raises(ValidationError, match="jump_host"):
            SSHKey(private_key=key.private_key, jump_host=bad)
    with pytest.raises(ValidationError, match="one non-empty line"):
        SSHKey(private_key=key.private_key, proxy_command="nc %h %p\nrm -rf /")
    p = SSHKey(private_key=key.private_key, proxy_command="localcloud proxy %h %p")
    assert p.proxy_command == "localcloud proxy %h %p"
    assert (
        key.asyncssh_key().export_public_key("openssh").decode().split()[:2]
        == (key.public_key.split()[:2])
    )


# ---- secrets never shown --------------------------------------------------------------------


def secret_blocks():
    key = SSHKey.generate()
    private = key.private_key.get_secret_value()
    secret_line = private.splitlines()[1]  # key material, not the BEGIN line
    return [
        (password_creds(), PASSWORD),
        (appcred_creds(), APP_SECRET),
        (key, secret_line),
    ]


def test_secrets_not_in_repr_str_json_or_logs(caplog):
    log = logging.getLogger("hybridgrid.test")
    for block, secret in secret_blocks():
        with caplog.at_level(logging.DEBUG):
            log.info("block %s", block)
            log.info("block %r", block)
            log.info(block)
            log.info("dump %s", block.model_dump())
        shown = [repr(block), str(block), block.model_dump_json(), f"{block}", caplog.text]
        shown.append(str(block.model_dump(mode="json")))
        for text in shown:
            assert secret not in text
        caplog.clear()
    # revealed only on purpose
    assert password_creds().password.get_secret_value() == PASSWORD


# ---- with a Prefect server -------------------------------------------------------------------


def test_blocks_save_and_load_by_name_and_the_api_hides_secrets(prefect_harness):
    from prefect.client.orchestration import get_client

    blocks = secret_blocks()

    async def scenario():
        for i, (block, _) in enumerate(blocks):
            await block.asave(f"secret-{i}", overwrite=True)
        loaded = [
            await OpenStackCredentials.aload("secret-0"),
            await OpenStackCredentials.aload("secret-1"),
            await SSHKey.aload("secret-2"),
        ]
        async with get_client() as client:
            docs = [
                await client.read_block_document_by_name(
                    f"secret-{i}", block._block_type_slug, include_secrets=False
                )
                for i, (block, _) in enumerate(blocks)
            ]
        return loaded, docs

    loaded, docs = asyncio.run(scenario())
    assert loaded[0].password.get_secret_value() == PASSWORD
    assert loaded[0].username == "alice"
    assert loaded[1].application_credential_secret.get_secret_value() == APP_SECRET
    assert loaded[2].private_key.get_secret_value() == blocks[2][0].private_key.get_secret_value()
    assert loaded[2].public_key == blocks[2][0].public_key
    for doc, (_, secret) in zip(docs, blocks, strict=True):
        assert secret not in doc.model_dump_json()
        assert secret not in repr(doc)
    assert docs[0].data["username"] == "alice"


def test_prefect_block_register_lists_the_blocks(prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "prefect"),
            "block",
            "register",
            "-m",
            "hybridgrid.blocks",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr

    async def slugs():
        async with get_client() as client:
            return [
                (await client.read_block_type_by_slug(slug)).name
                for slug in (
                    "hybridgrid-openstack-credentials",
                    "hybridgrid-ssh-key",
                    "hybridgrid-site-registry",
                )
            ]

    assert asyncio.run(slugs()) == [
        "OpenStack Credentials",
        "hybridgrid SSH Key",
        "hybridgrid Site Registry",
    ]


def topology(*names: str) -> Topology:
    return Topology.model_validate(
        {
            "home": {"cloud": "bielefeld", "subnet": "192.168.66.0/24", "master": {"name": "m1"}},
            "sites": [{"name": n} for n in names],
        }
    )


def test_concurrent_allocations_never_collide(prefect_harness):
    registry = "concurrent-test"

    async def scenario():
        # Each run knows only its own site, as an add-site flow run does.
        results = await asyncio.gather(
            allocate_site(topology("giessen"), "giessen", registry),
            allocate_site(topology("heidelberg"), "heidelberg", registry),
            allocate_site(topology("mainz"), "mainz", registry),
        )
        again = await allocate_site(topology("heidelberg"), "heidelberg", registry)
        return results, again, await load_registry(registry)

    results, again, data = asyncio.run(scenario())
    subnets = {str(r.subnet) for r in results}
    addrs = {str(r.wg_address) for r in results}
    assert len(subnets) == 3 and len(addrs) == 3
    assert sorted(data.sites) == ["giessen", "heidelberg", "mainz"]  # no lost update
    assert data.home is not None and str(data.home.wg_address) == "10.0.0.1"
    for r in results:
        assert (data.sites[r.name].subnet, data.sites[r.name].wg_address) == (
            r.subnet,
            r.wg_address,
        )
    h = next(r for r in results if r.name == "heidelberg")
    assert (again.subnet, again.wg_address) == (h.subnet, h.wg_address)  # rerun moves nothing


def test_update_registry_is_locked_validated_and_atomic(prefect_harness):
    from prefect.client.orchestration import get_client

    registry = "update-test"

    def add(data: RegistryData) -> str:
        data.sites["a"] = SiteEntry(cloud="a", subnet="192.168.70.0/24", wg_address="10.0.0.5")
        data.sites["a"].host_keys["hg-a-vpn"] = ["ssh-ed25519 AAAA host"]
        return "added"

    def clash(data: RegistryData) -> None:
        data.sites["b"] = SiteEntry(cloud="b", subnet="192.168.70.128/25", wg_address="10.0.0.6")

    def boom(data: RegistryData) -> None:
        data.sites.clear()
        raise RuntimeError("mutation failed")

    async def scenario():
        assert await update_registry(add, registry) == "added"
        with pytest.raises(ValidationError, match="overlap"):
            await update_registry(clash, registry)
        with pytest.raises(RuntimeError):
            await update_registry(boom, registry)
        data = await load_registry(registry)
        block = await SiteRegistry.aload(registry)
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(lock_name(registry))
        removed = await release_site("a", registry)
        return data, block, limit, removed, await load_registry(registry)

    data, block, limit, removed, after = asyncio.run(scenario())
    assert list(data.sites) == ["a"] and data.sites["a"].host_keys["hg-a-vpn"]
    assert block.data == data
    assert limit.limit == 1
    assert removed and after.sites == {}


def test_allocate_refuses_a_changed_home_or_unknown_site(prefect_harness):
    async def scenario():
        await allocate_site(topology("giessen"), "giessen", "home-test")
        other_home = topology("giessen")
        other_home.home.subnet = other_home.home.subnet.supernet(new_prefix=23).subnets().__next__()
        other_home.home.wg_address = other_home.wireguard.cidr.network_address + 9
        with pytest.raises(TopologyError, match="holds home"):
            await allocate_site(other_home, "giessen", "home-test")
        with pytest.raises(TopologyError, match="no site named 'x'"):
            await allocate_site(topology("giessen"), "x", "home-test")

    asyncio.run(scenario())
