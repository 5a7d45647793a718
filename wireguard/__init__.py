"""hybridgrid.wireguard: WireGuard on the nodes, pure (docs/architecture.md §2).

`render` (wg0.conf from the config models, `WgPaths`), `commands` (the node-side shell
scripts: key, assemble, up/sync, rotation, forwarding, MSS clamp, tools, routes), `node` (those
scripts run over any `hybridgrid.shell.RemoteShell`), `state` (`wg show dump` parsed into the
core's `WgState`, and checked against what is expected). The plain models are the core's:
`hybridgrid.wgconfig` (wg0's config) and `hybridgrid.wgstate` (what runs).

May import: the core (`hybridgrid` without its CLI), pydantic, jinja2, the standard library;
never Prefect, openstacksdk, keystoneauth1 or asyncssh, nor the libraries, blocks, tasks or
flows. It sits just above the core, which does not import it (so no folder loop).
"""
