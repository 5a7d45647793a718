"""Servers can run Slurm and munge: on two servers of one cloud, each has its own empty munge
and Slurm state (the host's munge key is not visible), munged runs as `munge` with a key put
there with mode 0400 and credentials made on one server verify on the other, /srv is private
per server, the hostname is the server's name, `slurmd -C` runs, and a controller on one
server runs a job on the other (a dynamic, configless slurmd) that reads that server's /srv.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from typing import Any

import pytest
from dataplane_fixtures import CloudBuilder

from localcloud.dataplane import make_backend

pytestmark = [
    pytest.mark.dataplane,
    pytest.mark.skipif(
        os.geteuid() != 0
        or not shutil.which("nft")
        or not all(shutil.which(p) for p in ("munged", "slurmd", "slurmctld", "srun")),
        reason="needs root, nftables, munge and slurm-wlm",
    ),
]

CONTROLLER, CONTROLLER_IP = "slurm-ctl", "192.168.66.10"
WORKER, WORKER_IP = "slurm-worker", "192.168.66.11"
STATE_DIRS = {  # path: owner, mode
    "/etc/munge": ("munge", "700"),
    "/var/lib/munge": ("munge", "711"),
    "/var/log/munge": ("munge", "700"),
    "/run/munge": ("munge", "755"),
    "/etc/slurm": ("root", "755"),
    "/var/spool/slurmd": ("root", "755"),
    "/var/spool/slurmctld": ("slurm", "755"),
    "/var/log/slurm": ("slurm", "755"),
    "/srv": ("root", "755"),
}
SLURM_CONF = f"""\
ClusterName=lc
SlurmctldHost={CONTROLLER}({CONTROLLER_IP})
SlurmctldParameters=enable_configless
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
MaxNodeCount=100
TreeWidth=65533
SrunPortRange=60001-60100
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeSet=site1 Feature=site1
PartitionName=site1 Nodes=site1 MaxTime=5 State=UP
"""
CGROUP_CONF = "CgroupPlugin=cgroup/v1\nCgroupAutomount=yes\n"


class Cluster:
    """Two booted servers of one cloud, and a shell on each (as `localcloud exec` runs)."""

    def __init__(self, backend: Any, servers: dict[str, Any]) -> None:
        self.backend, self.servers = backend, servers
        self.before: dict[str, str] = {}  # what each server showed before anything was set up

    def sh(
        self, name: str, script: str, *, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return self.backend.exec(
            self.servers[name].id, ["sh", "-c", script], input=input, timeout=timeout
        )

    def ok(self, name: str, script: str, **kw: Any) -> str:
        res = self.sh(name, script, **kw)
        assert res.returncode == 0, (name, script, res.stdout, res.stderr)
        return res.stdout

    def until(self, name: str, script: str, want: str, timeout: float = 20) -> str:
        """Run `script` until its output holds `want` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.sh(name, script).stdout
            if want in out or time.monotonic() > deadline:
                return out
            time.sleep(0.2)


def _start_munge(cluster: Cluster, name: str, key: str) -> None:
    """The key through stdin (never in argv), mode 0400 munge:munge; munged as `munge`."""
    cluster.ok(
        name,
        "umask 077 && cat > /etc/munge/munge.key"
        " && chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key",
        input=key,
    )
    cluster.ok(name, "runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    builder = CloudBuilder("bielefeld", 0, "192.168.66.0/24")
    servers = {
        CONTROLLER: builder.add_server(CONTROLLER, CONTROLLER_IP, []),
        WORKER: builder.add_server(WORKER, WORKER_IP, []),
    }
    old_umask = os.umask(0o077)  # as the API process runs
    backend = make_backend(tmp_path_factory.mktemp("dataplane-slurm") / "state")
    try:
        backend.apply(builder.snapshot())
        cluster = Cluster(backend, servers)
        for name in servers:
            cluster.before[name] = cluster.ok(name, "ls -A /etc/munge /etc/slurm /srv")
        key = secrets.token_hex(64)
        for name in servers:
            _start_munge(cluster, name, key)
        yield cluster
    finally:
        os.umask(old_umask)
        backend.destroy()


def test_state_starts_empty_and_private_with_munge_owners_and_modes(cluster):
    host_key = "/etc/munge/munge.key"
    for name in cluster.servers:
        assert cluster.before[name] == "/etc/munge:\n\n/etc/slurm:\n\n/srv:\n", (
            f"{name} sees the host's files (host has {host_key}: {os.path.exists(host_key)})"
        )
        out = cluster.ok(name, "stat -c '%n %U %a' " + " ".join(STATE_DIRS))
        assert out.splitlines() == [f"{p} {u} {m}" for p, (u, m) in STATE_DIRS.items()]
        # munged's socket is meant for every local user; nothing else may be world-writable
        writable = f"find {' '.join(STATE_DIRS)} -perm -o+w ! -type s ! -type l"
        assert cluster.ok(name, writable) == ""


def test_munged_runs_as_munge_and_credentials_verify_on_both_servers(cluster):
    for name in cluster.servers:
        assert cluster.ok(name, "stat -c '%U %a' /etc/munge/munge.key") == "munge 400\n"
        assert cluster.ok(name, "ps -o user= -C munged").split() == ["munge"]
        decoded = cluster.until(name, "munge -n | unmunge", "STATUS:")
        assert "STATUS:          Success (0)" in decoded
    credential = cluster.ok(CONTROLLER, "munge -n")
    decoded = cluster.ok(WORKER, "unmunge", input=credential)
    assert "STATUS:          Success (0)" in decoded  # same key on both: one cluster


def test_srv_is_private_per_server(cluster):
    cluster.ok(CONTROLLER, "echo controller-data > /srv/only-here.txt")
    assert cluster.ok(CONTROLLER, "cat /srv/only-here.txt") == "controller-data\n"
    assert cluster.sh(WORKER, "test -e /srv/only-here.txt").returncode == 1
    assert not os.path.exists("/srv/only-here.txt")  # nor on the host


def test_hostname_is_the_server_name_and_slurmd_reports_it(cluster):
    for name in cluster.servers:
        assert cluster.ok(name, "hostname") == f"{name}\n"
        assert cluster.ok(name, "slurmd -C").startswith(f"NodeName={name} ")


def test_a_job_from_the_controller_runs_on_the_workers_dynamic_node(cluster):
    """Configless: the worker has no slurm.conf, registers itself in partition site1."""
    cluster.ok(CONTROLLER, "cat > /etc/slurm/slurm.conf", input=SLURM_CONF)
    cluster.ok(CONTROLLER, "cat > /etc/slurm/cgroup.conf", input=CGROUP_CONF)
    cluster.ok(CONTROLLER, "slurmctld </dev/null >/dev/null 2>&1")
    assert "is UP" in cluster.until(CONTROLLER, "scontrol ping", "is UP")
    cluster.ok(
        WORKER,
        f"slurmd -Z --conf-server {CONTROLLER_IP} --conf 'Feature=site1 CPUs=1 RealMemory=500'"
        " </dev/null >/dev/null 2>&1",
    )
    nodes = cluster.until(CONTROLLER, "sinfo -h -p site1 -o '%N %t'", "idle")
    assert nodes.split() == [WORKER, "idle"], cluster.sh(WORKER, "cat /var/log/slurm/*").stdout
    srun = "timeout 60 srun -p site1 -N1 -t 1"
    assert cluster.ok(CONTROLLER, f"{srun} hostname", timeout=70) == f"{WORKER}\n"
    cluster.ok(WORKER, "echo data-at-the-site > /srv/site.txt")
    want = cluster.ok(WORKER, "sha256sum /srv/site.txt")
    assert cluster.ok(CONTROLLER, f"{srun} sha256sum /srv/site.txt", timeout=70) == want
    assert cluster.sh(CONTROLLER, "test -e /srv/site.txt").returncode == 1
