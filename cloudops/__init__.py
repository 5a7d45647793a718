"""hybridgrid.cloudops: idempotent OpenStack operations, one module per concern
(docs/architecture.md §2, §3).

`finder` (reads that retry in place; the one finder of what a site owns), `networks`
(network, subnet, router), `security_groups` (groups and rules), `keypairs`, `servers`
(launch, wait, replace, console), `ports` (allowed-address pairs, groups), `floating_ips`,
`removal` (a site's tagged resources), `preflight` (read-only checks before anything is made),
`errors`. What an operation did is a `hybridgrid.records.Record` (core).

Every function takes an `openstack.connection.Connection` and is plain, so it can be tested
and composed; `hybridgrid.tasks.site_tasks` runs them as step-sized Prefect tasks. The rules:
none found → create; one → compare and update; several → a clear error, never a guess.
Removal only deletes what carries our tags (or, for rules on a group we share, our
description). Reads retry in place (`finder.read`), writes never do: a failed task is retried
whole, finds what an earlier attempt made and goes on, so a retry never duplicates a resource;
every `ensure_*` rerun on a converged cloud makes no mutating call.

May import: `hybridgrid.retry`, `hybridgrid.wireguard`, the core (`hybridgrid` without its CLI),
openstacksdk and keystoneauth1; never `hybridgrid.sshclient`, the blocks, tasks or flows.
"""
