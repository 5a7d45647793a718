"""hybridgrid: join OpenStack sites to a home cluster over WireGuard, as Prefect flows.

This folder is the core (docs/architecture.md §2): `model` (topology, validation,
allocation, the plan), `desired` (what one site's wiring must be: rules, pairs, AllowedIPs,
routes, MTU, both ends' wg0 — docs/architecture.md §8), `drift` (the drift check's data:
observations, a site's desired state, verdicts), `changes` (the one comparison of desired and
observed, for drift and `plan --live`), `live_plan` (`plan --live` as data),
`naming` (names and ownership tags), `access` (how a cloud's servers are reached), `report`
(site summary, rendered), `spec` (YAML specs), and plain data: `registry_data` (the
registry's models), `rules` (security-group rules), `records` (what an OpenStack operation
did), `layers` (verification verdicts), `wgconfig` and `wgstate` (wg0's config and running
state), `ssh_target` (where and how to reach a host), `shell` (the remote shell protocol and
its errors). Beside the core: the CLI (`cli`, `cli_*`, `prefect_client`, `demo_profile`). The
other folders install beneath it: `hybridgrid.flows`, `.tasks`, `.blocks`, `.deployments` and
the libraries `.cloudops`, `.sshclient`, `.retry`, `.wireguard`.

May import: the core imports only itself, pydantic, PyYAML (`spec`), jinja2 and the standard
library — neither Prefect, openstacksdk, keystoneauth1 nor asyncssh, nor any other folder of
the product. The CLI may import anything, inside its commands, so `hybridgrid plan` starts
without Prefect. tests/test_import_contract.py checks both.
"""
