"""hybridgrid.slurm: Slurm and munge on the nodes, pure (docs/architecture.md §2).

`commands` (the node-side shell scripts: packages, the munge key, slurmctld and a dynamic
configless slurmd, the managed files, /etc/hosts entries, jobs), `node` (those scripts run
over any `hybridgrid.shell.RemoteShell`, and the munge key carried master → worker). The plain
models and the files' contents are the core's: `hybridgrid.scheduler`.

May import: the core, pydantic, the standard library; never Prefect, openstacksdk,
keystoneauth1 or asyncssh, nor the libraries, blocks, tasks or flows.
"""
