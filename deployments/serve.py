"""Serve every hybridgrid deployment from this one process, without a work pool or worker
(a laptop, the demo): runs triggered in the UI or by `prefect deployment run` execute here.

    python -m hybridgrid.deployments.serve [--limit N]

Same deployments as prefect.yaml (hybridgrid.deployments.catalog.all_deployments); scheduled
ones keep their schedules while this process runs (Prefect pauses them when it stops).
"""

from __future__ import annotations

import argparse

from hybridgrid.deployments.catalog import all_deployments


def runner_deployments() -> list:
    out = []
    for d in all_deployments():
        out.append(
            d.load_flow().to_deployment(
                name=d.name,
                description=d.description,
                tags=d.tags,
                cron=d.cron,
                parameters=d.parameters or None,
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    ap = argparse.ArgumentParser(prog="python -m hybridgrid.deployments.serve", description=__doc__)
    ap.add_argument("--limit", type=int, default=None, help="at most N flow runs at once")
    args = ap.parse_args(argv)
    serve(*runner_deployments(), limit=args.limit)


if __name__ == "__main__":
    main()
