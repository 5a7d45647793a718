"""hybridgrid.tasks: the flows' steps as Prefect tasks, and the I/O libraries they call.

Prefect tasks: `site_tasks` (OpenStack steps), `node_tasks` (steps on a node over SSH),
`verify`, `drift_tasks`, `removal_tasks`, `rotation_tasks`. Plain libraries, today in the same
folder: `openstack` (idempotent OpenStack operations, docs/architecture.md §3), `preflight`,
`remote` (SSH), `wireguard` and `wgstate` (wg0.conf rendering, node-side commands, `wg show`
parsing; the config models are the core's `hybridgrid.wgconfig`, re-exported), `hostkeys`,
`sshkeys`, `retry` (the retry policy), `clouds` and `credentials`
(connections and keys by block name, cached per process).

May import: `hybridgrid.blocks`, the core (`hybridgrid.naming`, `.access`, `.drift`),
openstacksdk, asyncssh, Prefect; never `hybridgrid.flows`. Today the core imports back
from here (`drift`: `wgstate`; `report`: `Record`, `LayerResult`; `access`:
`SSHTarget`) and `blocks/ssh.py` imports `sshkeys`: the target (issue 16) moves those plain
types down into the core so the direction is one way (docs/architecture.md §2).
"""
