"""The hybrid cluster runs jobs: a home bootstrapped with `scheduler: slurm` (slurmctld and
munge on the created master, its worker a node of partition bielefeld) and giessen added
(its worker a dynamic configless node of partition giessen). Checked from the master through
localcloud's operator console, as a user would: sinfo, srun, a job that reads data only the
Gießen worker has; the munge key 0400 munge on every node and the same everywhere."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from hybridgrid.flows.add_remote_site import add_remote_site
from hybridgrid.flows.bootstrap_home import bootstrap_home
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite

pytestmark = pytest.mark.dataplane

MASTER, HOME_WORKER, WORKER = "hg-bielefeld-master", "hg-bielefeld-worker-1", "hg-giessen-worker-1"
HOME = HomeSite(
    cloud="bielefeld",
    master=MasterSpec(create=True),
    subnet=ipaddress.IPv4Network("192.168.66.0/24"),
    workers=1,
    scheduler="slurm",
)
GIESSEN = RemoteSite(
    name="giessen",
    subnet=ipaddress.IPv4Network("192.168.77.0/24"),
    workers=1,
    partition={"max_time": "30"},
)


@pytest.fixture(scope="module")
def cluster(seed_clouds):
    asyncio.run(bootstrap_home(HOME))
    result = asyncio.run(add_remote_site(GIESSEN))
    return seed_clouds, result


def _ok(seed, server: str, cmd: str, cloud: str) -> str:
    rc, out = seed.exec(server, cmd, cloud)
    assert rc == 0, (server, cmd, out)
    return out


def test_the_job_layer_passes(cluster):
    _, result = cluster
    job = next(x for x in result.summary.layers if x.layer == "job")
    assert job.ok is True, job.problems
    assert f"{WORKER} idle" in job.detail


def test_sinfo_shows_partition_giessen_with_its_worker_idle(cluster):
    seed, _ = cluster
    out = _ok(seed, MASTER, "sinfo -h -N -p giessen -o '%N %T %l'", "bielefeld")
    assert out.split() == [WORKER, "idle", "30:00"]


def test_srun_in_giessen_runs_on_the_giessen_worker(cluster):
    seed, _ = cluster
    out = _ok(seed, MASTER, "timeout 60 srun -p giessen -t 1 hostname", "bielefeld")
    assert out.strip() == WORKER


def test_the_home_partition_runs_on_the_home_worker(cluster):
    seed, _ = cluster
    out = _ok(seed, MASTER, "timeout 60 srun -p bielefeld -t 1 hostname", "bielefeld")
    assert out.strip() == HOME_WORKER


def test_a_job_reads_data_that_only_the_site_has(cluster):
    seed, _ = cluster
    want = _ok(
        seed,
        WORKER,
        "echo 'reads at the site' > /srv/sample.txt; sha256sum /srv/sample.txt",
        "giessen",
    )
    got = _ok(
        seed, MASTER, "timeout 60 srun -p giessen -t 1 sha256sum /srv/sample.txt", "bielefeld"
    )
    assert got == want
    rc, _ = seed.exec(MASTER, "test -e /srv/sample.txt", "bielefeld")
    assert rc == 1  # the data never moved


def test_one_munge_key_0400_munge_on_every_node(cluster):
    seed, _ = cluster
    nodes = [(MASTER, "bielefeld"), (HOME_WORKER, "bielefeld"), (WORKER, "giessen")]
    prints = set()
    for server, cloud in nodes:
        assert _ok(seed, server, "stat -c '%U %a' /etc/munge/munge.key", cloud) == "munge 400\n"
        prints.add(_ok(seed, server, "sha256sum /etc/munge/munge.key", cloud).split()[0])
    assert len(prints) == 1


def test_names_resolve_on_both_sides(cluster):
    seed, _ = cluster
    assert WORKER in _ok(seed, MASTER, f"getent hosts {WORKER}", "bielefeld")
    assert MASTER in _ok(seed, WORKER, f"getent hosts {MASTER}", "giessen")


def test_the_operators_slurm_conf_is_untouched_by_a_rerun(cluster):
    seed, _ = cluster
    before = _ok(
        seed, MASTER, "sha256sum /etc/slurm/slurm.conf /etc/slurm/hybridgrid.conf", "bielefeld"
    )
    result = asyncio.run(add_remote_site(GIESSEN))
    assert result.verified
    after = _ok(
        seed, MASTER, "sha256sum /etc/slurm/slurm.conf /etc/slurm/hybridgrid.conf", "bielefeld"
    )
    assert after == before
    assert "PartitionName=giessen " in _ok(
        seed, MASTER, "cat /etc/slurm/hybridgrid.conf", "bielefeld"
    )


def _until(seed, server: str, cmd: str, cloud: str, want: str, timeout: float = 30) -> str:
    import time

    deadline = time.monotonic() + timeout
    while True:
        _, out = seed.exec(server, cmd, cloud)
        if want in out or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def test_removal_waits_for_the_sites_job_and_leaves_other_partitions_alone(cluster):
    """Last in this module: giessen goes. A job running in giessen is waited for; a job in
    bielefeld runs on; afterwards Slurm has neither the partition nor the node."""
    from hybridgrid.flows.remove_remote_site import remove_remote_site

    seed, _ = cluster
    for partition, seconds, out in (
        ("giessen", 6, "/tmp/site-job"),
        ("bielefeld", 12, "/tmp/home-job"),
    ):
        job = f"srun -p {partition} -t 2 sh -c 'sleep {seconds}; echo done-{partition}' > {out}"
        _ok(seed, MASTER, f'setsid sh -c "{job}" </dev/null >/dev/null 2>&1 &', "bielefeld")
    running = _until(seed, MASTER, "squeue -h -t RUNNING -o '%P'", "bielefeld", "giessen")
    assert "giessen" in running and "bielefeld" in running, running

    result = asyncio.run(remove_remote_site("giessen", drain_timeout=60))
    assert result.registered and result.peer_removed
    # the site's job finished before its node went; the home's job was not disturbed
    assert _ok(seed, MASTER, "cat /tmp/site-job", "bielefeld").strip() == "done-giessen"
    assert "done-bielefeld" in _until(seed, MASTER, "cat /tmp/home-job", "bielefeld", "done-", 40)
    partitions = _ok(seed, MASTER, "sinfo -h -o '%R'", "bielefeld").split()
    assert partitions == ["bielefeld"]
    rc, out = seed.exec(MASTER, f"scontrol show node {WORKER}", "bielefeld")
    assert rc != 0 and "not found" in out.lower(), out
    assert "giessen" not in _ok(seed, MASTER, "cat /etc/slurm/hybridgrid.conf", "bielefeld")
