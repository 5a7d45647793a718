"""hybridgrid: join OpenStack sites to a home cluster over WireGuard, as Prefect flows.

This folder is the core (docs/architecture.md §2): `model` (topology, validation,
allocation, the plan), `desired` (what one site's wiring must be: rules, pairs, AllowedIPs,
routes, MTU, both ends' wg0 — docs/architecture.md §8), `registry_data`, `rules` and
`wgconfig` (plain data: the registry's models, security-group rules, wg0 config models),
`naming` (names and ownership tags), `access` (how a cloud's servers are reached), `drift`
(the drift check's data: observations, a site's desired state, verdicts), `changes` (the one
comparison of desired and observed, for drift and `plan --live`), `live_plan` (`plan --live`
as data), `report` (site summary and artifacts), `spec` (YAML specs); and the CLI (`cli`,
`cli_access`, `cli_day_two`, `cli_plan`). The other folders
install beneath it: `hybridgrid.flows`, `.tasks`, `.blocks`, `.deployments`.

May import, in the target: pydantic (and PyYAML for `spec`) only — neither Prefect nor
openstacksdk, nor the other folders; the CLI may import anything, inside its commands. True
today for `model`, `desired`, `registry_data`, `rules`, `wgconfig`, `naming`, `spec` and
`access` (`access` imports `tasks.remote.SSHTarget` inside its functions). Not yet for
`drift`, `changes` and `live_plan` (import `tasks.wgstate`, a pure module in the tasks
folder) and `report` (imports `tasks.openstack`, `tasks.verify`, and Prefect to publish
artifacts).
"""
