"""hybridgrid.deployments: what `prefect.yaml` cannot express (docs/architecture.md §10).

`catalog.py` and `day_two.py`: the list of deployments that `prefect.yaml` mirrors (a test
checks both agree); `serve.py`: every deployment served from one process, no worker;
`setup.py`: the process work pool and the locks (global concurrency limits) ahead of the
first run; `automations.py` + `automations.yaml`: the alert when check-drift fails.

May import: `hybridgrid.blocks` (`setup.py`), the flows by entrypoint (`catalog.py` loads
them with importlib), Prefect. Nothing in the product imports this package.
"""
