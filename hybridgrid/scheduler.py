"""The home cluster's scheduler as data (pure): a site's partition options, the partitions
and name entries the registry implies, and the files hybridgrid writes for Slurm.

hybridgrid's own Slurm lines live in one managed file, `/etc/slurm/hybridgrid.conf`, which
the master's slurm.conf includes; the operator's own settings are never rewritten. Slurm 22.05
in configless mode does not send included files to the nodes (checked: its conf-cache holds
slurm.conf and cgroup.conf only), so every node gets a one-line stand-in at the same path:
slurmd needs the line to parse, not the partitions (only slurmctld reads those).

Every worker joins as a dynamic node (`slurmd -Z`) whose feature is its site's name; a site's
partition takes the nodes of that feature (`NodeSet`), so adding a node needs no change to
slurm.conf and no `scontrol reconfigure` — only a new partition does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Scheduler = Literal["none", "slurm"]
SLURM_DIR = "/etc/slurm"
MANAGED_CONF = f"{SLURM_DIR}/hybridgrid.conf"
INCLUDE_LINE = f"Include {MANAGED_CONF}"
SRUN_PORTS = (60001, 60100)  # SrunPortRange: srun's listening ports on the submit host
SLURMCTLD_PORT, SLURMD_PORT = 6817, 6818
# Slurm time limits: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or UNLIMITED
_TIME = re.compile(r"^(UNLIMITED|INFINITE|\d+(-\d+)?(:\d+){0,2})$", re.IGNORECASE)
HOSTS_BEGIN = "# BEGIN hybridgrid: the hybrid cluster's node names (managed, do not edit)"
HOSTS_END = "# END hybridgrid"


class PartitionOptions(BaseModel):
    """The site's Slurm partition (named after the site), when the home runs Slurm."""

    model_config = ConfigDict(extra="forbid")

    max_time: str = Field(
        "UNLIMITED", description="MaxTime of the partition: minutes, D-HH:MM:SS or UNLIMITED"
    )
    default: bool = Field(False, description="make it the cluster's default partition")

    @field_validator("max_time")
    @classmethod
    def _slurm_time(cls, v: str) -> str:
        if not _TIME.match(v.strip()):
            raise ValueError(
                f"{v!r} is not a Slurm time limit. Fix: write minutes (60), D-HH:MM:SS "
                "(1-00:00:00) or UNLIMITED"
            )
        return v.strip().upper() if v.strip().isalpha() else v.strip()


class Partition(BaseModel):
    """One partition hybridgrid manages: its nodes are the dynamic nodes of feature `name`."""

    model_config = ConfigDict(frozen=True)

    name: str
    max_time: str = "UNLIMITED"
    default: bool = False

    def lines(self) -> list[str]:
        default = "YES" if self.default else "NO"
        return [
            f"NodeSet={self.name} Feature={self.name}",
            f"PartitionName={self.name} Nodes={self.name} MaxTime={self.max_time} "
            f"Default={default} State=UP",
        ]


def managed_conf(partitions: Iterable[Partition]) -> str:
    """/etc/slurm/hybridgrid.conf on the master: one NodeSet and partition per site."""
    lines = [
        "# Managed by hybridgrid: one partition per remote site, rewritten from the registry",
        "# whenever a site is added or removed. Your own settings belong in slurm.conf.",
    ]
    for p in sorted(partitions, key=lambda p: p.name):
        lines += p.lines()
    return "\n".join(lines) + "\n"


STAND_IN_CONF = (
    "# hybridgrid: slurm.conf includes this file; the partitions it lists are read by\n"
    "# slurmctld on the master only. This node is a dynamic, configless one.\n"
)


def base_conf(cluster: str, master: str, master_ip: IPv4Address, home_partition: str) -> str:
    """slurm.conf of a master hybridgrid creates (written once, then the operator's): a
    configless controller that takes dynamic nodes, and the home's own partition (slurmctld
    will not start without one)."""
    first, last = SRUN_PORTS
    return f"""\
# Written once by hybridgrid's bootstrap-home for the master it created; yours from now on.
# hybridgrid keeps its own lines (the remote sites' partitions) in {MANAGED_CONF}.
ClusterName={cluster}
SlurmctldHost={master}({master_ip})
SlurmctldParameters=enable_configless
SlurmUser=slurm
AuthType=auth/munge
# dynamic nodes (slurmd -Z) need room in the node table
MaxNodeCount=1000
TreeWidth=65533
ReturnToService=2
SlurmctldPort={SLURMCTLD_PORT}
SlurmdPort={SLURMD_PORT}
SrunPortRange={first}-{last}
# linuxproc and task/none work on any VM and in containers; switch to cgroup when you can
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
{Partition(name=home_partition, default=True).lines()[0]}
{Partition(name=home_partition, default=True).lines()[1]}
{INCLUDE_LINE}
"""


CGROUP_CONF = "# Written once by hybridgrid (configless nodes fetch it)\nCgroupAutomount=yes\n"


class HostEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    address: IPv4Address
    name: str


def hosts_block(entries: Iterable[HostEntry]) -> str:
    """The managed block of /etc/hosts: every node name of the hybrid cluster a node needs."""
    unique = {e.name: e for e in entries}
    body = [f"{e.address} {e.name}" for e in sorted(unique.values(), key=lambda e: e.name)]
    return "\n".join([HOSTS_BEGIN, *body, HOSTS_END]) + "\n"


def slurmd_options(conf_server: IPv4Address, feature: str) -> str:
    """SLURMD_OPTIONS for a dynamic, configless node in the partition of `feature`."""
    return f"-Z --conf-server {conf_server} --conf Feature={feature}"
