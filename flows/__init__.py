"""hybridgrid.flows: the user-facing Prefect flows, one module each (docs/architecture.md §4–§5).

`add_remote_site` (the main job: its steps in `add_site_steps.py`, what they know in
`site_run.py`), `bootstrap_home`, `check_drift`, `remove_remote_site`, `rotate_keys`. What
they share, one module each: `forms.py` (the UI's parameter models), `checkpoints.py` (the
kill-test step boundaries), `runs.py` (run names, tags, API call counts), `home.py` (the
registry's home: `ReadyHome`), `ssh_access.py` (SSH key blocks, host keys, front doors),
`hub.py` (the hub lock and the hub's apply), `verification.py` (the layered verification's
wiring). `prefect.yaml` points at `flows/<module>.py:<flow>`.

May import: everything below it — `hybridgrid.tasks`, `hybridgrid.blocks`, the libraries
(`hybridgrid.cloudops`, `.sshclient`, `.retry`, `.wireguard`), the core, Prefect
(tests/test_import_contract.py checks it). Nothing imports
the flows except the CLI, the deployments (by entrypoint) and other flows (check-drift's
repair runs add-remote-site as a subflow).
"""
