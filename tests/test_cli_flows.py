"""The flow commands of `hybridgrid` without clouds: help, input errors, `cloud import`, and
`sites` on an empty registry — the real console script against the session's Prefect API."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed.yaml"
HYBRIDGRID = shutil.which("hybridgrid", path=str(Path(sys.executable).parent))
SECRET = "s3cr3t-Pa55-do-not-print"


def run(*args: str, api: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if api:
        from prefect.settings import PREFECT_API_URL

        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    return subprocess.run(
        [HYBRIDGRID, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--help"], ["site", "home", "cloud", "sites", "plan"]),
        (["site", "--help"], ["add"]),
        (["site", "add", "--help"], ["--site", "--registry", "SPEC"]),
        (["home", "bootstrap", "--help"], ["--registry", "--ssh-key-block"]),
        (["cloud", "import", "--help"], ["--clouds-yaml", "--block"]),
    ],
)
def test_help(args, words):
    out = run(*args)
    assert out.returncode == 0, out.stderr
    for w in words:
        assert w.lower() in out.stdout.lower(), w


def test_site_add_unknown_site_exits_2_before_any_api_call(tmp_path):
    out = run("site", "add", str(SEED), "--site", "heidelberg")
    assert out.returncode == 2
    assert "--site" in out.stderr and "heidelberg" in out.stderr and "giessen" in out.stderr


def test_site_add_missing_spec_exits_2(tmp_path):
    out = run("site", "add", str(tmp_path / "nope.yaml"), "--site", "giessen")
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_site_add_without_home_says_bootstrap_first(prefect_harness):
    out = run("site", "add", str(SEED), "--site", "giessen", "--registry", "no-home", api=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no home cluster" in out.stderr and "hybridgrid home bootstrap" in out.stderr


def test_sites_on_an_empty_registry(prefect_harness):
    out = run("sites", "--registry", "empty-one", api=True)
    assert out.returncode == 0, out.stderr
    assert "is empty" in out.stdout and "home bootstrap" in out.stdout


def _clouds_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "clouds.yaml"
    path.write_text(
        f"""\
clouds:
  testcloud:
    region_name: RegionOne
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: alice
      password: {SECRET}
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
"""
    )
    path.chmod(0o600)
    return path


def test_cloud_import_saves_a_block_and_prints_no_secret(tmp_path, prefect_harness):
    from hybridgrid.blocks.openstack import OpenStackCredentials

    path = _clouds_yaml(tmp_path)
    out = run("cloud", "import", "testcloud", "--clouds-yaml", str(path), api=True)
    assert out.returncode == 0, out.stderr
    assert "saved block 'testcloud'" in out.stdout
    assert "http://127.0.0.1:5000/v3" in out.stdout and "alice" in out.stdout
    assert SECRET not in out.stdout + out.stderr
    creds = asyncio.run(OpenStackCredentials.aload("testcloud"))
    assert creds.username == "alice" and creds.password.get_secret_value() == SECRET
    again = run(
        "cloud", "import", "testcloud", "--clouds-yaml", str(path), "--block", "tc2", api=True
    )
    assert again.returncode == 0 and "saved block 'tc2'" in again.stdout
    replaced = run("cloud", "import", "testcloud", "--clouds-yaml", str(path), api=True)
    assert replaced.returncode == 0 and "replaced block 'testcloud'" in replaced.stdout


def test_cloud_import_errors_name_the_fix(tmp_path, prefect_harness):
    path = _clouds_yaml(tmp_path)
    out = run("cloud", "import", "nosuch", "--clouds-yaml", str(path), api=True)
    assert out.returncode == 2 and "no cloud named 'nosuch'" in out.stderr
    assert "testcloud" in out.stderr
    out = run("cloud", "import", "testcloud", "--clouds-yaml", str(tmp_path / "x.yaml"))
    assert out.returncode == 2 and "--clouds-yaml" in out.stderr
    out = run("cloud", "import", "testcloud", "--block", "Bad_Name", "--clouds-yaml", str(path))
    assert out.returncode == 2 and "--block" in out.stderr


def test_key_create_makes_once_and_keeps(prefect_harness):
    from hybridgrid.blocks.ssh import SSHKey

    out = run("key", "create", "hg-cli-test-ssh", "--proxy-command", "nc %h %p", api=True)
    assert out.returncode == 0, out.stderr
    assert "made SSH key block 'hg-cli-test-ssh': ssh-ed25519 " in out.stdout
    key = asyncio.run(SSHKey.aload("hg-cli-test-ssh"))
    assert key.proxy_command == "nc %h %p" and key.public_key in out.stdout
    secret = key.private_key.get_secret_value()
    assert secret.strip().splitlines()[1] not in out.stdout + out.stderr
    again = run("key", "create", "hg-cli-test-ssh", api=True)
    assert again.returncode == 0 and "kept existing" in again.stdout
    assert asyncio.run(SSHKey.aload("hg-cli-test-ssh")).public_key == key.public_key


def test_cloud_import_saves_the_access_setting_and_keeps_it(tmp_path, prefect_harness):
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from hybridgrid.blocks.ssh import SSHKey
    from hybridgrid.sshclient.keys import generate_ssh_keypair

    path = _clouds_yaml(tmp_path)
    out = run(
        "cloud", "import", "testcloud", "--clouds-yaml", str(path), "--block", "tc-proxy",
        "--proxy-command", "nc %h %p", api=True,
    )  # fmt: skip
    assert out.returncode == 0 and "SSH access: proxy_command" in out.stdout, out.stderr
    assert asyncio.run(OpenStackCredentials.aload("tc-proxy")).access.proxy_command == "nc %h %p"
    # a re-import without access options keeps the setting; --direct clears it
    again = run(
        "cloud", "import", "testcloud", "--clouds-yaml", str(path), "--block", "tc-proxy", api=True
    )
    assert again.returncode == 0 and "SSH access: proxy_command" in again.stdout
    cleared = run(
        "cloud", "import", "testcloud", "--clouds-yaml", str(path), "--block", "tc-proxy",
        "--direct", api=True,
    )  # fmt: skip
    assert cleared.returncode == 0 and "SSH access: direct" in cleared.stdout

    pair = generate_ssh_keypair("bastion-login")
    keyfile = tmp_path / "bastion_ed25519"
    keyfile.write_text(pair.private_key.get_secret_value())
    keyfile.chmod(0o600)
    host_key = generate_ssh_keypair("bastion-host").public_key
    out = run(
        "cloud", "import", "testcloud", "--clouds-yaml", str(path), "--block", "tc-bastion",
        "--bastion", "jump@198.19.0.10", "--bastion-host-key", host_key,
        "--bastion-key-file", str(keyfile), api=True,
    )  # fmt: skip
    assert out.returncode == 0 and "SSH access: bastion" in out.stdout, out.stderr
    assert pair.private_key.get_secret_value().splitlines()[1] not in out.stdout + out.stderr
    access = asyncio.run(OpenStackCredentials.aload("tc-bastion")).access
    assert access.bastion is not None and access.bastion.user == "jump"
    assert access.bastion.host_keys == [" ".join(host_key.split()[:2])]
    login = asyncio.run(SSHKey.aload(access.bastion.key_block))
    assert login.public_key.split()[:2] == pair.public_key.split()[:2]


def test_cloud_import_access_errors_name_the_option(tmp_path, prefect_harness):
    path = _clouds_yaml(tmp_path)
    base = ["cloud", "import", "testcloud", "--clouds-yaml", str(path), "--block", "tc-bad"]
    out = run(*base, "--bastion", "198.19.0.10", "--bastion-host-key", "ssh-ed25519 AAAA")
    assert out.returncode == 2 and "--bastion" in out.stderr and "USER@HOST" in out.stderr
    out = run(*base, "--bastion", "jump@198.19.0.10")
    assert out.returncode == 2 and "--bastion-host-key" in out.stderr
    out = run(*base, "--bastion", "jump@198.19.0.10", "--bastion-host-key", "not a key")
    assert out.returncode == 2 and "host_keys" in out.stderr
    out = run(*base, "--direct", "--proxy-command", "nc %h %p")
    assert out.returncode == 2 and "--direct" in out.stderr
    loose = tmp_path / "k"
    loose.write_text("x")
    loose.chmod(0o644)
    out = run(
        *base, "--bastion", "jump@h", "--bastion-host-key",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA", "--bastion-key-file", str(loose),
    )  # fmt: skip
    assert out.returncode == 2 and "chmod 600" in out.stderr
