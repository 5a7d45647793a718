"""Run → first task: the latency of the UI's "Run" on the demo's live control plane.

    make demo                                   # server + process worker as the demo sets it
    .venv/bin/python bench/ui_run_latency.py [--rounds 5] [--api-url URL]

Creates flow runs exactly as the UI's Run button does (POST /deployments/{id}/create_flow_run
with the form's parameters) of add-remote-site (the registry's first site again: a converging
rerun, no cloud change) and check-drift, one at a time, waits for each to end, and splits the
time from creation to the first task run starting into: worker pickup (created → Pending),
flow process start (Pending → Running: process spawn, pull step, flow module import) and
Running → first task. Bound: 2 s (issue 15). Nothing is started or left behind but those
flow runs. The API URL is the active Prefect profile's (the demo's) unless given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hgbench.run_latency import BOUND, Phases, phases, summary
from hgbench.table import Row, render

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT = 300.0  # s per flow run at most


def _client(api_url: str):
    import httpx

    return httpx.Client(base_url=api_url, timeout=30)


def ui_run(api_url: str, deployment: str, parameters: dict) -> tuple[str, str]:
    """A flow run as the UI's Run makes it: (its id, its created timestamp)."""
    with _client(api_url) as c:
        dep = c.get(f"/deployments/name/{deployment}/{deployment}")
        dep.raise_for_status()
        r = c.post(
            f"/deployments/{dep.json()['id']}/create_flow_run", json={"parameters": parameters}
        )
        r.raise_for_status()
        run = r.json()
        return run["id"], run["created"]


def wait_final(api_url: str, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT
    with _client(api_url) as c:
        while True:
            run = c.get(f"/flow_runs/{run_id}").json()
            if run["state_type"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"flow run {run_id} still {run['state_type']} after {RUN_TIMEOUT:.0f} s"
                )
            time.sleep(0.5)


def timeline(api_url: str, run_id: str, created: str) -> Phases:
    with _client(api_url) as c:
        states = c.get("/flow_run_states/", params={"flow_run_id": run_id}).json()
        tasks = c.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    starts = [t["start_time"] for t in tasks if t.get("start_time")]
    return phases(created, states, starts)


def site_parameters(api_url: str) -> dict:
    """The form's parameters for a rerun of the registry's first site: its name and cloud."""
    import asyncio

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridgrid.blocks.registry import load_registry
    from hybridgrid.cli_runs import add_site_call
    from hybridgrid.flows.add_remote_site import AddSiteOptions
    from hybridgrid.model import RemoteSite
    from hybridgrid.prefect_client import form_parameters

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        data = asyncio.run(load_registry("hybridgrid"))
        if not data.sites:
            raise SystemExit("the registry has no site: run `make demo` first")
        name, entry = sorted(data.sites.items())[0]
        call = add_site_call(RemoteSite(name=name, cloud=entry.cloud), AddSiteOptions())
        call.parameters = {"site": call.parameters["site"]}  # only what the form asks for
        return asyncio.run(form_parameters(call))  # the cloud as the picker's block reference


def measure(api_url: str, deployment: str, parameters: dict, rounds: int) -> list[Phases]:
    out = []
    for i in range(rounds):
        time.sleep(1.5)  # not back to back with the previous run's last writes (SQLite)
        run_id, created = ui_run(api_url, deployment, parameters)
        run = wait_final(api_url, run_id)
        p = timeline(api_url, run_id, created)
        print(
            f"  {deployment} #{i + 1}: {run['state_type']}, pickup {p.pickup:.2f} s, process "
            f"{p.process:.2f} s, first task {p.first_task:.2f} s, total {p.total:.2f} s",
            flush=True,
        )
        out.append(p)
    return out


def rows_for(deployment: str, runs: list[Phases]) -> list[Row]:
    s = summary(runs)
    n = len(runs)
    return [
        Row(
            figure=f"{deployment}: Run → first task (median of {n})", value=s["total"], bound=BOUND
        ),
        Row(
            figure=f"{deployment}: Run → first task (worst of {n})",
            value=s["worst_total"],
            bound=BOUND,
        ),
        Row(figure="  worker pickup (created → Pending)", value=s["pickup"]),
        Row(figure="  flow process start (Pending → Running)", value=s["process"]),
        Row(figure="  Running → first task", value=s["first_task"]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--api-url", default=None, help="default: the active Prefect profile's")
    args = ap.parse_args(argv)
    from hybridgrid.prefect_client import NoServer, check_server

    try:
        api_url = args.api_url or check_server()
    except NoServer as exc:
        raise SystemExit(f"{exc}: run `make demo` first") from None
    rows: list[Row] = []
    for deployment, params in (
        ("add-remote-site", site_parameters(api_url)),
        ("check-drift", {}),
    ):
        rows += rows_for(deployment, measure(api_url, deployment, params, args.rounds))
    print(render(rows))
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
