"""How the CLI talks to Prefect: one reachable server, deployment runs followed to their end.

- `require_server()`: the server of the active profile (or PREFECT_API_URL) must answer, else
  the command says how to get one and exits 2 — never a quiet temporary server, whose empty
  database would answer "registry has no home cluster".
- `run_or_follow()`: when the flow's deployment is registered on that server, a flow run of
  it is created (`run_deployment(..., timeout=0)`) named after the site, and followed here:
  its logs stream to the terminal, the UI link is printed, the exit code follows its final
  state. Runs made this way show Retry and "Run again" in the UI. Without the deployment the
  flow runs in this process, as before.

Every wait here is bounded: a run nobody picks up within `PICKUP_TIMEOUT` s, or one that is
still running after the command's follow timeout, ends the command with a named cause (the
run itself goes on; the link says where).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import typer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

PICKUP_TIMEOUT = 60.0  # s a run may stay Scheduled/Pending before we say no worker took it
FOLLOW_TIMEOUT = 3600.0  # s the CLI follows one run at most (the run itself is not bounded)
POLL = 1.0  # s between state/log reads while following
HEALTH_TIMEOUT = 3.0
MAX_LOG_LINES = 2000  # lines streamed per run at most (the UI keeps all of them)

FIX = (
    "Fix: start the demo's server with `make demo`, or `prefect profile use NAME` for a "
    "profile whose PREFECT_API_URL points at a running server, or set "
    "PREFECT_API_URL=http://HOST:4200/api"
)


class NoServer(Exception):
    """No Prefect server is configured, or the configured one does not answer."""


def api_url() -> str | None:
    """PREFECT_API_URL of the active profile or the environment (None when unset)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def profile_name() -> str:
    from prefect.context import get_settings_context

    try:
        return get_settings_context().profile.name
    except Exception:  # no settings context: only the environment counts
        return "?"


def check_server(timeout: float = HEALTH_TIMEOUT) -> str:
    """The API URL when its /health answers 200; NoServer naming what is wrong otherwise."""
    import httpx

    url = api_url()
    if not url:
        raise NoServer(
            f"no Prefect server: PREFECT_API_URL is not set (active profile "
            f"{profile_name()!r}, nothing in the environment)"
        )
    try:
        r = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise NoServer(
            f"the Prefect server at {url} does not answer ({exc.__class__.__name__}; "
            f"active profile {profile_name()!r})"
        ) from None
    if r.status_code != 200:
        raise NoServer(f"the Prefect server at {url} answered {r.status_code} to /health")
    return url


def require_server() -> str:
    """check_server(), or the error and its fix on stderr and exit 2."""
    try:
        return check_server()
    except NoServer as exc:
        typer.echo(f"error: {exc}. {FIX}", err=True)
        raise typer.Exit(EXIT_INVALID) from None


# ------------------------------------------------------------------ deployment runs


@dataclass
class FlowCall:
    """One flow run to make: the deployment (= flow) name, its JSON parameters, the run's
    name and tags. The in-process path calls the flow with the same parameters."""

    deployment: str  # "add-remote-site": flow and deployment share the name
    parameters: dict[str, Any]
    run_name: str
    tags: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.deployment}/{self.deployment}"


@dataclass
class Outcome:
    """How a followed run ended: its state, message, UI link and artifacts (markdown/table)."""

    state: str  # COMPLETED, FAILED, CRASHED, CANCELLED, or TIMEOUT / NOT_PICKED_UP
    message: str
    link: str | None
    run_id: str | None = None
    artifacts: list[Any] = field(default_factory=list)
    result: Any = None  # in-process runs only: the flow's return value or exception

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"


async def deployment_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def run_link(run_id: Any) -> str | None:
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=run_id) if run_id else None


async def form_parameters(call: FlowCall) -> dict[str, Any]:
    """The call's parameters as the deployment's form sends them: block names become block
    references where the schema has a block picker (hybridgrid.deployments.forms)."""
    from prefect.client.orchestration import get_client

    from hybridgrid.deployments.forms import as_form_parameters

    async with get_client() as client:
        dep = await client.read_deployment_by_name(call.full_name)
        return await as_form_parameters(client, dep.parameter_openapi_schema, call.parameters)


async def create_run(call: FlowCall):
    """A flow run of the deployment, created and not awaited (what the UI's Run does)."""
    from prefect.deployments import run_deployment

    return await run_deployment(
        call.full_name,
        parameters=await form_parameters(call),
        flow_run_name=call.run_name,
        tags=call.tags,
        timeout=0,
        as_subflow=False,
    )


def _log_line(log: Any) -> str:
    level = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(
        log.level, str(log.level)
    )
    lines = log.message.splitlines() or [""]
    if len(lines) > 6:  # a traceback: its first and last line here, the whole of it in the UI
        lines = [lines[0], f"  … {len(lines) - 2} more lines in the UI …", lines[-1]]
    return f"{log.timestamp:%H:%M:%S} {level:<7} " + "\n".join(lines)


def quiet(log: Any) -> bool:
    """A task run's own "Finished in state Completed()": one per task, nothing to read (the
    UI keeps them); a task's failure or retry is shown."""
    return log.task_run_id is not None and log.message.startswith("Finished in state Completed")


class LogStream:
    """New log lines of one flow run (its tasks' too), each printed once, in time order."""

    def __init__(self, run_id: Any, echo: Callable[[str], None]):
        self.run_id, self.echo = run_id, echo
        self.seen: set[Any] = set()
        self.after = None
        self.printed = 0

    async def pump(self, client: Any) -> None:
        from prefect.client.schemas.filters import (
            LogFilter,
            LogFilterFlowRunId,
            LogFilterTimestamp,
        )
        from prefect.client.schemas.sorting import LogSort

        flt = LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[self.run_id]),
            timestamp=LogFilterTimestamp(after_=self.after) if self.after else None,
        )
        for log in await client.read_logs(log_filter=flt, sort=LogSort.TIMESTAMP_ASC, limit=200):
            if log.id in self.seen:
                continue
            self.seen.add(log.id)
            self.after = log.timestamp
            if quiet(log):
                continue
            self.printed += 1
            if self.printed <= MAX_LOG_LINES:
                self.echo(_log_line(log))
            elif self.printed == MAX_LOG_LINES + 1:
                self.echo(f"… more log lines in the UI (first {MAX_LOG_LINES} shown)")


async def follow(
    run_id: Any,
    echo: Callable[[str], None],
    timeout: float = FOLLOW_TIMEOUT,
    pickup_timeout: float = PICKUP_TIMEOUT,
) -> Outcome:
    """Stream a run's logs until it is final; bounded by `timeout` (and by `pickup_timeout`
    while nobody has picked it up)."""
    from prefect.client.orchestration import get_client

    link = run_link(run_id)
    started = time.monotonic()
    stream = LogStream(run_id, echo)
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(run_id)
            await stream.pump(client)
            state = run.state
            if state is not None and state.is_final():
                await asyncio.sleep(0.5)  # the last lines may land just after the state
                await stream.pump(client)
                arts = await _artifacts(client, run_id)
                return Outcome(state.type.value, state.message or "", link, str(run_id), arts)
            waited = time.monotonic() - started
            waiting = state is None or state.type.value in ("SCHEDULED", "PENDING")
            if waiting and waited > pickup_timeout:
                return Outcome(
                    "NOT_PICKED_UP",
                    f"no worker picked the run up in {pickup_timeout:.0f} s (state "
                    f"{state.name if state else '?'}). Fix: start a worker for the pool, "
                    "`prefect worker start --pool hybridgrid` (`make demo` runs one); the run "
                    "stays queued and starts when one comes",
                    link,
                    str(run_id),
                )
            if waited > timeout:
                return Outcome(
                    "TIMEOUT",
                    f"still {state.name if state else '?'} after {timeout:.0f} s; it goes on: "
                    "follow it in the UI",
                    link,
                    str(run_id),
                )
            await asyncio.sleep(POLL)


async def _artifacts(client: Any, run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )


def in_process(flow: Any, call: FlowCall) -> Outcome:
    """Run the flow here (no deployment registered): same parameters, same outcome type."""

    async def go():
        state = await flow.with_options(flow_run_name=call.run_name)(
            **call.parameters, return_state=True
        )
        return state, await state.aresult(raise_on_failure=False)

    state, result = asyncio.run(go())
    run_id = getattr(state.state_details, "flow_run_id", None)
    message = str(result) if isinstance(result, BaseException) else (state.message or "")
    return Outcome(state.type.value, message, run_link(run_id), str(run_id), result=result)


def start_deployment_run(call: FlowCall, echo: Callable[[str], None]) -> Outcome | None:
    """Create and follow a run of the deployment; None when the deployment is not registered.
    A refused run (parameters invalid for the deployment's schema) exits 2."""
    from prefect.exceptions import PrefectHTTPStatusError

    from hybridgrid.deployments.forms import UnknownBlock

    if not asyncio.run(deployment_exists(call.full_name)):
        return None
    try:
        run = asyncio.run(create_run(call))
    except UnknownBlock as exc:  # a cloud or key block that does not exist: nothing made
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except PrefectHTTPStatusError as exc:
        detail = exc.response.text[:500] if exc.response is not None else str(exc)
        typer.echo(f"error: the server refused a run of {call.full_name}: {detail}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    link = run_link(run.id)
    echo(f"flow run {run.name!r} of deployment {call.full_name}: {link}")
    try:
        return asyncio.run(follow(run.id, echo))
    except KeyboardInterrupt:
        typer.echo(f"\nstopped following; the run goes on: {link}", err=True)
        raise typer.Exit(130) from None


def run_flow(flow: Any, call: FlowCall, echo: Callable[[str], None] = typer.echo) -> Outcome:
    """The deployment's run when the deployment exists on the server, else this process."""
    require_server()
    outcome = start_deployment_run(call, echo)
    if outcome is None:
        echo(f"(deployment {call.full_name} is not registered: running the flow here)")
        outcome = in_process(flow, call)
    return outcome


BAD_INPUT = re.compile(r"\b(TopologyError|ValidationError|ParameterTypeError)\b")


def exit_code(outcome: Outcome) -> int:
    """0 completed; 2 when the run failed on its input (a TopologyError or a parameter the
    flow refused); 1 for any other end."""
    if outcome.ok:
        return EXIT_OK
    from hybridgrid.model import TopologyError

    if isinstance(outcome.result, TopologyError) or BAD_INPUT.search(outcome.message or ""):
        return EXIT_INVALID
    return EXIT_FAILED


def print_artifacts(outcome: Outcome, echo: Callable[[str], None] = typer.echo) -> None:
    """A followed run's artifacts as text: markdown as is, tables as rich tables."""
    import json

    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for art in outcome.artifacts:
        if art.type == "table":
            rows = art.data if isinstance(art.data, list) else json.loads(art.data or "[]")
            if rows and isinstance(rows[0], dict):
                table = Table(title=art.key or art.description or "table")
                cols = list(rows[0])
                for c in cols:
                    table.add_column(str(c))
                for row in rows:
                    table.add_row(*(str(row.get(c, "")) for c in cols))
                console.print(table)
        elif art.type == "markdown" and art.data:
            echo(str(art.data))


def report_end(outcome: Outcome, what: str) -> int:
    """The end of a deployment run in words; its exit code."""
    code = exit_code(outcome)
    if outcome.ok:
        typer.echo(f"{what}: Completed")
    else:
        typer.echo(f"error: {what}: {outcome.state}: {outcome.message}", err=True)
    if outcome.link:
        typer.echo(f"flow run: {outcome.link}", err=not outcome.ok)
    return code
