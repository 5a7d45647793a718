"""hybridgrid.flows: the user-facing Prefect flows, one module each (docs/architecture.md §4–§5).

`add_remote_site` (the main job), `bootstrap_home`, `check_drift`, `remove_remote_site`,
`rotate_keys`; `common.py` holds what they share (run names and tags, the kill-test
checkpoints, the registry's view of the home, SSH key blocks, the hub lock and hub config,
spoke AllowedIPs, the verification wiring). `prefect.yaml` points at `flows/<module>.py:<flow>`.

May import: everything below it — `hybridgrid.tasks`, `hybridgrid.blocks`, the core
(`hybridgrid.model`, `.naming`, `.access`, `.drift`, `.report`), Prefect. Nothing imports
the flows except the CLI, the deployments (by entrypoint) and other flows (check-drift's
repair runs add-remote-site as a subflow).
"""
