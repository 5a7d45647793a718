"""Prefect tasks for the home cluster's Slurm: the controller on the master, the partitions
file, a site's workers as dynamic nodes, name entries, and the verification layer "job"
(a job per worker from the master, and one that reads data only the site holds).

Each task does one idempotent thing over SSH and returns a small typed result; the munge key
moves master → worker inside `join_worker` and appears in no input, result or log.
"""

from __future__ import annotations

import asyncio
import time
from ipaddress import IPv4Address

from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict

from hybridgrid.layers import LayerResult
from hybridgrid.retry.policy import TRANSIENT
from hybridgrid.shell import RemoteShell
from hybridgrid.slurm import node as slurm
from hybridgrid.ssh_target import SSHTarget
from hybridgrid.tasks.node_tasks import session

READY_STATES = ("idle", "mixed", "allocated", "completing")
PROBE_DIR = "/srv/hybridgrid-probe"


def _base_state(states: dict[str, str], node: str) -> str:
    """A node's state without sinfo's flag suffixes (idle* = not responding, …)."""
    return states.get(node, "").rstrip("*~#%$@+")


@task(task_run_name="slurmctld on {target.label}", **TRANSIENT)
async def ensure_controller(
    target: SSHTarget, key_block: str, base_conf: str | None, managed: str, install: bool = True
) -> slurm.ControllerState:
    """slurmctld and munge on the master, hybridgrid's partitions file included."""
    async with session(target, key_block) as host:
        state = await slurm.ensure_controller(host, base_conf, managed, install=install)
    get_run_logger().info(
        "slurmctld on %s: %s (tools %s, munge key %s, slurm.conf %s, include %s)",
        target.label,
        state.slurmctld,
        state.tools,
        state.munge_key,
        state.slurm_conf,
        state.include,
    )
    return state


@task(task_run_name="slurm partitions on {target.label}", **TRANSIENT)
async def sync_partitions(target: SSHTarget, key_block: str, managed: str) -> str:
    async with session(target, key_block) as host:
        return await slurm.sync_partitions(host, managed)


@task(task_run_name="name entries on {target.label}", **TRANSIENT)
async def ensure_hosts(target: SSHTarget, key_block: str, block: str) -> str:
    async with session(target, key_block) as host:
        return await slurm.ensure_hosts(host, block)


@task(task_run_name="slurmd on {worker.label}", **TRANSIENT)
async def join_worker(
    master: SSHTarget,
    master_key_block: str,
    worker: SSHTarget,
    worker_key_block: str,
    conf_server: IPv4Address,
    partition: str,
) -> slurm.WorkerState:
    """The worker as a dynamic node of `partition`, with the master's munge key."""
    async with (
        session(master, master_key_block) as m,
        session(worker, worker_key_block) as w,
    ):
        return await slurm.ensure_worker(m, w, conf_server, partition)


class JobNode(BaseModel):
    """A worker the job layer sends jobs to (its server name is its Slurm node name)."""

    model_config = ConfigDict(frozen=True)

    name: str
    target: SSHTarget
    key_block: str


async def _wait_registered(
    master: RemoteShell, partition: str, names: list[str], timeout: float
) -> dict[str, str]:
    """The partition's node states once every node is ready, or as they are at the deadline."""
    log, deadline, next_note = get_run_logger(), time.monotonic() + timeout, time.monotonic() + 10
    while True:
        states = await slurm.node_states(master, partition)
        waiting = [n for n in names if _base_state(states, n) not in READY_STATES]
        if not waiting or time.monotonic() > deadline:
            return states
        if time.monotonic() > next_note:
            log.info("waiting for %s to register in partition %s", ", ".join(waiting), partition)
            next_note = time.monotonic() + 10
        await asyncio.sleep(0.5)


async def _why_not_registered(master: RemoteShell, node: JobNode, state: str) -> str:
    """The likely cause, from the worker's side: slurmd, the munge key, the master's name."""
    async with session(node.target, node.key_block) as w:
        running = await slurm.slurmd_running(w)
        theirs = await slurm.munge_fingerprint(w)
    if not running:
        return f"{node.name} is {state or 'not registered'}: slurmd is down on it"
    if theirs != await slurm.munge_fingerprint(master):
        return (
            f"{node.name} is {state or 'not registered'}: its munge key differs from the master's"
        )
    return (
        f"{node.name} is {state or 'not registered'}: slurmd runs with the master's munge key, "
        "so slurmctld (TCP 6817) on the master or slurmd (TCP 6818) on the worker is not "
        "reachable: check the security groups and the routes"
    )


def _job_failure(node: str, run: slurm.JobRun) -> str:
    err = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "(no stderr)"
    low = run.stderr.lower()
    if run.exit_status == 124:
        cause = (
            "the job did not finish in time: a closed port (srun listens on the master's "
            "SrunPortRange 60001-60100, slurmd on 6818)"
        )
    elif "credential" in low or "authentication" in low or "munge" in low:
        cause = "munge key mismatch between the master and the worker"
    elif "resolve" in low or "invalid node name" in low or "unknown host" in low:
        cause = "a node name that does not resolve"
    else:
        cause = "the job failed"
    return f"job on {node}: {cause} (exit {run.exit_status}: {err})"


@task(task_run_name="verify job in partition {partition}")
async def verify_jobs(
    master: SSHTarget, master_key_block: str, partition: str, nodes: list[JobNode]
) -> LayerResult:
    """From the master: every node registered, a job on each returns its hostname, and a job
    reads a file that only the first node has (its checksum comes back, the master has none)."""
    if not nodes:
        return LayerResult(layer="job", ok=None, detail=f"partition {partition} has no workers")
    problems: list[str] = []
    async with session(master, master_key_block) as m:
        states = await _wait_registered(m, partition, [n.name for n in nodes], timeout=90)
        for n in nodes:
            state = _base_state(states, n.name)
            if state not in READY_STATES:
                problems.append(await _why_not_registered(m, n, state))
        if problems:
            return LayerResult(layer="job", ok=False, detail=_states(states), problems=problems)
        runs = await asyncio.gather(
            *(slurm.srun(m, partition, n.name, ["hostname"]) for n in nodes)
        )
        for n, r in zip(nodes, runs, strict=True):
            if r.exit_status != 0:
                problems.append(_job_failure(n.name, r))
            elif r.stdout.strip() != n.name:
                problems.append(f"job for {n.name} ran on {r.stdout.strip()!r}")
        if not problems:
            problems += await _data_stays(m, partition, nodes[0])
    detail = f"{_states(states)}; hostname on {', '.join(n.name for n in nodes)}; "
    detail += f"checksum of data only on {nodes[0].name}"
    return LayerResult(layer="job", ok=not problems, detail=detail, problems=problems)


def _states(states: dict[str, str]) -> str:
    return ", ".join(f"{n} {s}" for n, s in sorted(states.items())) or "no nodes"


async def _data_stays(m: RemoteShell, partition: str, node: JobNode) -> list[str]:
    """A file written on the worker only; a job from the master returns its checksum."""
    path = f"{PROBE_DIR}/probe.txt"
    async with session(node.target, node.key_block) as w:
        made = await w.run(
            f"umask 022; mkdir -p {PROBE_DIR}; head -c 64 /dev/urandom | base64 > {path}"
            f" && sha256sum {path}",
            name="write the site's probe data",
        )
    want = made.stdout.split()[0]
    run = await slurm.srun(m, partition, node.name, ["sha256sum", path])
    if run.exit_status != 0:
        return [_job_failure(node.name, run)]
    if run.stdout.split()[:1] != [want]:
        return [f"the job read another file than {node.name}'s {path}"]
    here = await m.run(f"test -e {path} && echo present || echo absent", name="probe on master")
    if here.stdout.strip() != "absent":
        return [f"{path} is on the master too: the job could have read the master's copy"]
    return []


class SiteLeft(BaseModel):
    """What taking a site out of Slurm did."""

    partition_found: bool
    jobs_waited_for: int = 0
    jobs_cancelled: int = 0
    nodes_deleted: list[str] = []


class JobsStillRunning(RuntimeError):
    """The site's partition still runs jobs after the drain timeout."""


@task(task_run_name="take {partition} out of Slurm on {master.label}", **TRANSIENT)
async def leave_slurm(
    master: SSHTarget,
    key_block: str,
    partition: str,
    timeout: float = 600,
    force: bool = False,
) -> SiteLeft:
    """Drain the site's partition (no new job starts), wait for its jobs up to `timeout` (with
    `force`: cancel them instead), delete its nodes. The partition itself leaves with the
    partitions file (`sync_partitions`, under the hub lock). A rerun goes on from any step."""
    log = get_run_logger()
    async with session(master, key_block) as m:
        if partition not in await slurm.partitions(m):
            return SiteLeft(partition_found=False)
        await slurm.drain_partition(m, partition)
        jobs = await slurm.partition_jobs(m, partition)
        waited, cancelled = len(jobs), 0
        if jobs and force:
            log.warning("force: cancelling %d job(s) in %s: %s", len(jobs), partition, jobs)
            await slurm.cancel_partition_jobs(m, partition)
            cancelled, waited = len(jobs), 0
        jobs = await _until_no_jobs(m, partition, timeout if not force else 60)
        if jobs:
            raise JobsStillRunning(
                f"partition {partition} still has {len(jobs)} job(s) after {timeout:g} s "
                f"({', '.join(jobs)}); it is drained, so no new job starts. Fix: wait and "
                "run remove-remote-site again, cancel them (scancel), or run it with force=true"
            )
        nodes = sorted(await slurm.node_states(m, partition))
        for node in nodes:
            await slurm.delete_node(m, node)
    log.info("Slurm: partition %s drained, node(s) %s deleted", partition, ", ".join(nodes) or "-")
    return SiteLeft(
        partition_found=True,
        jobs_waited_for=waited,
        jobs_cancelled=cancelled,
        nodes_deleted=nodes,
    )


async def _until_no_jobs(m: RemoteShell, partition: str, timeout: float) -> list[str]:
    """The partition's jobs once there are none, or those left at the deadline."""
    log, deadline, next_note = get_run_logger(), time.monotonic() + timeout, 0.0
    while True:
        jobs = await slurm.partition_jobs(m, partition)
        if not jobs or time.monotonic() > deadline:
            return jobs
        if time.monotonic() > next_note:
            left = deadline - time.monotonic()
            log.info(
                "waiting for %d job(s) in %s (%.0f s left): %s", len(jobs), partition, left, jobs
            )
            next_note = time.monotonic() + 15
        await asyncio.sleep(1)
