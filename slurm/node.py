"""Slurm and munge on a node, over any `RemoteShell`: the controller on the master, a dynamic
configless slurmd on a worker, the munge key carried from one to the other, name entries, and
jobs sent from the master.

The munge key is read on the master and written on the worker within `carry_munge_key`: it
passes through this process's memory only, in a holder whose repr says nothing, and never
reaches a log, a result, an argument or a local file.
"""

from __future__ import annotations

import base64
from ipaddress import IPv4Address

from pydantic import BaseModel

from hybridgrid.scheduler import CGROUP_CONF, MANAGED_CONF, STAND_IN_CONF, slurmd_options
from hybridgrid.shell import RemoteShell
from hybridgrid.slurm import commands as cmd


def _last(text: str, allowed: tuple[str, ...], what: str) -> str:
    words = text.strip().split()
    if not words or words[0] not in allowed:
        raise ValueError(f"{what}: unexpected output, expected one of {', '.join(allowed)}")
    return words[0]


async def _tools(host: RemoteShell, daemon: str) -> str:
    res = await host.run(cmd.install_command(daemon), name=f"install {daemon}", timeout=600)
    return _last(res.stdout, ("present", "installed"), f"install {daemon}")


async def _adopted(host: RemoteShell) -> str:
    await host.run(cmd.adopted_controller_command(), name="the adopted master's Slurm")
    return "present"


class ControllerState(BaseModel):
    tools: str  # present | installed
    munge_key: str  # made | kept
    slurm_conf: str  # written | kept (an existing slurm.conf is the operator's)
    include: str  # added | present
    partitions: str  # changed | unchanged
    slurmctld: str  # started | reconfigured | running


class ConfiglessError(RuntimeError):
    """An adopted controller that cannot take configless, dynamic nodes."""


async def ensure_controller(
    host: RemoteShell, base_conf: str | None, managed: str, *, install: bool = True
) -> ControllerState:
    """slurmctld with munge on the master. `base_conf`: slurm.conf to write when the master
    has none (a master hybridgrid created); an existing one only gains the include line.
    `install`: the packages when missing (not on an adopted master: its Slurm is its own)."""
    tools = await _tools(host, "slurmctld") if install else await _adopted(host)
    key = await host.run(cmd.make_munge_key_command(), name="munge key", timeout=60)
    conf = "kept"
    if base_conf is not None:
        res = await host.run(
            cmd.write_if_absent_command(cmd.SLURM_CONF), name="slurm.conf", input=base_conf.encode()
        )
        conf = _last(res.stdout, ("written", "kept"), "slurm.conf")
        await host.run(
            cmd.write_if_absent_command(f"{cmd.SLURM_DIR}/cgroup.conf"),
            name="cgroup.conf",
            input=CGROUP_CONF.encode(),
        )
    parts = await _write(host, MANAGED_CONF, managed)
    include = _last(
        (await host.run(cmd.include_managed_command(), name="include hybridgrid.conf")).stdout,
        ("present", "added"),
        "include",
    )
    up = await host.run(
        cmd.controller_up_command(reconfigure=parts == "changed" or include == "added"),
        name="slurmctld",
        timeout=90,
    )
    await _check_configless(host)
    return ControllerState(
        tools=tools,
        munge_key=_last(key.stdout, ("made", "kept"), "munge key"),
        slurm_conf=conf,
        include=include,
        partitions=parts,
        slurmctld=_last(up.stdout, ("started", "reconfigured", "running"), "slurmctld"),
    )


async def _check_configless(host: RemoteShell) -> None:
    out = (await host.run(cmd.controller_config_command(), name="slurmctld config")).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    values = {k.strip(): v.strip() for k, v in values.items()}
    problems = []
    if "enable_configless" not in values.get("SlurmctldParameters", ""):
        problems.append("SlurmctldParameters=enable_configless")
    if values.get("MaxNodeCount", "0").split()[0] in ("0", "(null)", ""):
        problems.append("MaxNodeCount=1000 (room for dynamic nodes)")
    if problems:
        raise ConfiglessError(
            f"slurmctld on {host.label} takes no dynamic, configless nodes: add "
            + " and ".join(problems)
            + f" to {cmd.SLURM_CONF} and restart slurmctld (hybridgrid does not change your "
            "own settings)"
        )


async def sync_partitions(host: RemoteShell, managed: str) -> str:
    """The managed partitions file on the master; slurmctld re-reads it when it changed."""
    state = await _write(host, MANAGED_CONF, managed)
    if state == "changed":
        await host.run(cmd.controller_up_command(reconfigure=True), name="slurmctld", timeout=90)
    return state


async def _write(host: RemoteShell, path: str, content: str) -> str:
    res = await host.run(
        cmd.write_managed_command(path), name=f"write {path}", input=content.encode()
    )
    return _last(res.stdout, ("changed", "unchanged"), f"write {path}")


class _Key:
    """The munge key in memory: its repr and str say nothing about it."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def __repr__(self) -> str:
        return "<munge key>"

    __str__ = __repr__


async def carry_munge_key(master: RemoteShell, worker: RemoteShell) -> str:
    """The master's munge key onto the worker (0400 munge, munged restarted when it changed).
    Returns changed|unchanged."""
    res = await master.run(cmd.read_munge_key_command(), name="read the munge key")
    key = _Key(base64.b64decode(res.stdout.strip(), validate=True))
    res.stdout = ""  # the result object outlives this call in tracebacks' frames
    out = await worker.run(
        cmd.install_munge_key_command(),
        name="install the munge key",
        input=base64.b64encode(key._raw),
    )
    del key
    return _last(out.stdout, ("changed", "unchanged"), "munge key")


async def munge_fingerprint(host: RemoteShell) -> str:
    """A short SHA-256 prefix of the node's key: equal on two nodes means one key."""
    return (
        await host.run(cmd.munge_fingerprint_command(), name="munge key fingerprint")
    ).stdout.strip()


class WorkerState(BaseModel):
    tools: str
    munge_key: str  # changed | unchanged
    slurmd: str  # started | restarted | running


async def ensure_worker(
    master: RemoteShell, worker: RemoteShell, conf_server: IPv4Address, partition: str
) -> WorkerState:
    """slurmd on the worker as a dynamic, configless node with the site's feature."""
    tools = await _tools(worker, "slurmd")
    key = await carry_munge_key(master, worker)
    await _write(worker, MANAGED_CONF, STAND_IN_CONF)
    res = await worker.run(
        cmd.slurmd_command(slurmd_options(conf_server, partition)), name="slurmd", timeout=60
    )
    return WorkerState(
        tools=tools,
        munge_key=key,
        slurmd=_last(res.stdout, ("started", "restarted", "running"), "slurmd"),
    )


async def ensure_hosts(host: RemoteShell, block: str) -> str:
    res = await host.run(cmd.hosts_command(), name="/etc/hosts", input=block.encode())
    return _last(res.stdout, ("changed", "unchanged"), "/etc/hosts")


async def node_states(master: RemoteShell, partition: str) -> dict[str, str]:
    """The nodes of `partition` and their states, as the controller sees them."""
    res = await master.run(
        cmd.node_states_command(partition), name=f"sinfo -p {partition}", check=False
    )
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


async def partitions(master: RemoteShell) -> list[str]:
    res = await master.run(cmd.partitions_command(), name="sinfo partitions", check=False)
    return [p.strip() for p in res.stdout.splitlines() if p.strip()]


class JobRun(BaseModel):
    exit_status: int
    stdout: str
    stderr: str


async def srun(
    master: RemoteShell, partition: str, node: str, argv: list[str], timeout: int = 60
) -> JobRun:
    res = await master.run(
        cmd.srun_command(partition, node, argv, timeout),
        name=f"srun on {node}",
        timeout=timeout + 15,
        check=False,
    )
    return JobRun(exit_status=res.exit_status, stdout=res.stdout, stderr=res.stderr[-500:])


async def slurmd_running(host: RemoteShell) -> bool:
    res = await host.run(cmd.slurmd_status_command(), name="slurmd running", check=False)
    return res.stdout.strip() == "up"


async def stop_slurmd(worker: RemoteShell) -> None:
    await worker.run(cmd.stop_slurmd_command(), name="stop slurmd", timeout=60)


async def drain_partition(master: RemoteShell, partition: str) -> None:
    await master.run(cmd.drain_partition_command(partition), name=f"drain {partition}")


async def partition_jobs(master: RemoteShell, partition: str) -> list[str]:
    """The unfinished jobs of `partition`, as `JOBID STATE`."""
    res = await master.run(cmd.partition_jobs_command(partition), name=f"squeue -p {partition}")
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


async def cancel_partition_jobs(master: RemoteShell, partition: str) -> None:
    await master.run(cmd.cancel_partition_command(partition), name=f"scancel -p {partition}")


async def delete_node(master: RemoteShell, node: str) -> None:
    await master.run(cmd.delete_node_command(node), name=f"delete node {node}")
