"""hybridgrid.tasks: the flows' steps as Prefect tasks, and nothing else (docs/architecture.md §2).

`site_tasks` (OpenStack steps), `node_tasks` (steps on a node over SSH), `verify` (the layered
verification), `drift_tasks` (check-drift's observations), `removal_tasks`, `rotation_tasks`.
The libraries they call live in packages named for what they are: `hybridgrid.cloudops`,
`hybridgrid.sshclient`, `hybridgrid.wireguard`, `hybridgrid.retry`.

May import: `hybridgrid.blocks` (blocks and connections by name), the libraries, the core,
Prefect, openstacksdk; never `hybridgrid.flows`, the deployments or the CLI
(tests/test_import_contract.py checks it).
"""
