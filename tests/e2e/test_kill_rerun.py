"""Kill and rerun, through the real command line in child processes.

`hybridgrid home bootstrap` and `hybridgrid site add` run as separate processes against the
session's Prefect API. The first `site add` is killed hard (``HYBRIDGRID_KILL_AFTER``, the
flows' test hook: ``os._exit(137)``) right after the site's servers exist; the rerun must
converge to a verified site with no duplicate server, network, router, group, rule, floating
IP or key pair, and exactly one peer on the master.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.dataplane

REGISTRY = "kill-rerun"
SITE = "giessen"
SPEC = """\
wireguard: {cidr: 10.0.0.0/24, port: 51820, keepalive: 25}
home:
  cloud: bielefeld
  subnet: 192.168.66.0/24
  master: {create: true}
  workers: 0
site_pool: 192.168.64.0/18
sites:
  - {name: giessen, cloud: giessen, workers: 1}
"""
HYBRIDGRID = shutil.which("hybridgrid", path=str(Path(sys.executable).parent))


def _cli(seed, *args: str, kill_after: str | None = None) -> subprocess.CompletedProcess:
    env = seed.env()
    if kill_after:
        env["HYBRIDGRID_KILL_AFTER"] = kill_after
    return subprocess.run(
        [HYBRIDGRID, *args, "--registry", REGISTRY],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def killed_and_rerun(seed_clouds, tmp_path_factory):
    spec = tmp_path_factory.mktemp("kill") / "spec.yaml"
    spec.write_text(SPEC)
    boot = _cli(seed_clouds, "home", "bootstrap", str(spec))
    assert boot.returncode == 0, boot.stdout + boot.stderr
    killed = _cli(
        seed_clouds,
        "site",
        "add",
        str(spec),
        "--site",
        SITE,
        kill_after="add-remote-site:servers-launched",
    )
    servers_after_kill = sorted(s.name for s in seed_clouds.conn("giessen").compute.servers())
    rerun = _cli(seed_clouds, "site", "add", str(spec), "--site", SITE)
    return seed_clouds, boot, killed, servers_after_kill, rerun


def test_first_run_was_killed_after_the_servers_existed(killed_and_rerun):
    _, boot, killed, servers, _ = killed_and_rerun
    assert "hg-bielefeld-master" in boot.stdout
    assert killed.returncode == 137, killed.stdout + killed.stderr
    assert "killed after step 'servers-launched'" in killed.stderr
    assert servers == ["hg-giessen-vpn", "hg-giessen-worker-1"]


def test_rerun_converges_verified(killed_and_rerun):
    _, _, _, _, rerun = killed_and_rerun
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for layer in ("api", "wireguard", "handshake", "overlay ping", "mtu"):
        assert layer in rerun.stdout
    assert "FAILED" not in rerun.stdout


def _dupes(names) -> dict[str, int]:
    return {n: c for n, c in Counter(names).items() if c > 1}


def test_no_duplicates_after_rerun(killed_and_rerun):
    seed, *_ = killed_and_rerun
    tag = f"hybridgrid-site={SITE}"
    for cloud in ("giessen", "bielefeld"):
        conn = seed.conn(cloud)
        assert not _dupes(s.name for s in conn.compute.servers()), cloud
        assert not _dupes(n.name for n in conn.network.networks(tags=tag)), cloud
        assert not _dupes(n.name for n in conn.network.subnets(tags=tag)), cloud
        assert not _dupes(r.name for r in conn.network.routers(tags=tag)), cloud
        assert not _dupes(g.name for g in conn.network.security_groups(tags="hybridgrid")), cloud
        assert not _dupes(k.name for k in conn.compute.keypairs()), cloud
        for g in conn.network.security_groups(tags="hybridgrid"):
            rules = [
                (
                    r.direction,
                    r.ether_type,
                    r.protocol,
                    r.port_range_min,
                    r.port_range_max,
                    r.remote_ip_prefix,
                    r.remote_group_id,
                )
                for r in conn.network.security_group_rules(security_group_id=g.id)
            ]
            assert not _dupes(rules), (cloud, g.name)
    giessen = seed.conn("giessen")
    assert sorted(s.name for s in giessen.compute.servers()) == [
        "hg-giessen-vpn",
        "hg-giessen-worker-1",
    ]
    assert len(list(giessen.network.ips(tags=tag))) == 1
    assert [n.name for n in giessen.network.networks(tags=tag)] == ["hg-giessen-net"]


def test_master_has_exactly_one_peer(killed_and_rerun):
    seed, *_ = killed_and_rerun
    rc, out = seed.exec("hg-bielefeld-master", "wg show wg0 peers", "bielefeld")
    assert rc == 0 and len(out.split()) == 1, out


def test_sites_command_shows_the_verification(killed_and_rerun):
    seed, *_ = killed_and_rerun
    out = _cli(seed, "sites")
    assert out.returncode == 0, out.stderr
    assert "giessen" in out.stdout and "ok" in out.stdout and "hg-bielefeld-master" in out.stdout
