"""A real Prefect stack for the UI and scale-out tests: `prefect server` and process workers as
child processes (own PREFECT_HOME, own port), `prefect deploy --all` from the repo root, flow
runs through the REST API, and a localcloud with the data plane whose blocks live on that
server. Every process is started in its own session and ended by its process-group id.

Run as a script it saves blocks into the server named by PREFECT_API_URL (so saving blocks
never switches the test process's Prefect settings): ``python hg_stack.py blocks STATE_DIR
CLOUD…``. Only `PrefectStack.form_parameters` points the process's client at the stack, inside
a `temporary_settings` block, to read block ids for the form's block references.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PREFECT = str(VENV_BIN / "prefect")
# the project's deployments; HG_PREFECT_FILE points the tests at another file (development)
PREFECT_FILE = Path(os.environ.get("HG_PREFECT_FILE") or REPO / "prefect.yaml")

QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
}
# What this machine's Chromium needs (machine notes): root → no sandbox; no background
# networking, the closed network refuses those connections by the dozen.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_group(pid: int, timeout: float = 10.0) -> None:
    """TERM the process group `pid` leads, KILL what is left after `timeout` (workers started
    in the background may ignore TERM)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class PrefectStack:
    """One Prefect server (SQLite in its own home unless `database_url`) and its workers."""

    def __init__(self, root: Path, database_url: str | None = None, port: int | None = None):
        self.root = Path(root)
        self.home = self.root / "prefect-home"
        self.logs = self.root / "logs"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.database_url = database_url
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: this server only, nothing of the test session's Prefect."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(QUIET)
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="5",
            PREFECT_LOGGING_LEVEL="INFO",
        )
        env.update(extra)
        return env

    def _spawn(self, key: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{key}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,  # its own group: ended by pgid with its children
                # background children of scripts inherit SIGINT ignored; restore it
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        finally:
            log.close()
        self.procs[key] = proc
        return proc

    def start_server(self, timeout: float = 120.0) -> None:
        extra = {
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        if self.database_url:
            extra["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        argv = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        proc = self._spawn("server", [*argv, "--analytics-off"], self.env(**extra))
        wait_healthy(self.api_url, timeout, proc, self.logs / "server.log")

    def start_worker(self, pool: str, name: str, limit: int | None = None) -> None:
        argv = [PREFECT, "worker", "start", "--pool", pool, "--name", name, "--type", "process"]
        if limit:
            argv += ["--limit", str(limit)]
        self._spawn(f"worker-{name}", argv, self.env())

    def prefect(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
        """A prefect CLI command against this server, from the repo root; raises with its
        output when it fails."""
        proc = subprocess.run(
            [PREFECT, "--no-prompt", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=REPO,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def python(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=REPO,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"python {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def stop(self) -> None:
        for key in reversed(list(self.procs)):
            end_group(self.procs[key].pid)
            with contextlib.suppress(Exception):
                self.procs[key].wait(timeout=5)
        self.procs.clear()

    def log_tail(self, key: str, lines: int = 40) -> str:
        path = self.logs / f"{key}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ REST API
    def client(self):
        """HTTP to the server's API; a 503 (SQLite busy under concurrent writes) is retried a
        few times with backoff, as Prefect's own client does."""
        return httpx.Client(
            base_url=self.api_url, timeout=30, transport=_RetryOn503(httpx.HTTPTransport())
        )

    def deployment(self, flow: str, name: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/deployments/name/{flow}/{name}")
            r.raise_for_status()
            return r.json()

    def block_document(self, name: str, slug: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/block_types/slug/{slug}/block_documents/name/{name}")
            r.raise_for_status()
            return r.json()

    def run_deployment(self, flow: str, name: str, parameters: dict[str, Any]) -> str:
        """A flow run of the deployment as the UI's form makes it: block names in
        `parameters` become block references (hybridgrid.deployments.forms)."""
        dep = self.deployment(flow, name)
        parameters = self.form_parameters(dep, parameters)
        with self.client() as c:
            r = c.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters})
            if r.status_code >= 400:
                raise RuntimeError(f"run of {flow}/{name} refused ({r.status_code}): {r.text}")
            return r.json()["id"]

    def form_parameters(self, dep: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from hybridgrid.deployments.forms import as_form_parameters

        async def convert() -> dict[str, Any]:
            async with get_client() as client:
                return await as_form_parameters(client, dep["parameter_openapi_schema"], parameters)

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            return asyncio.run(convert())

    def flow_run(self, run_id: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/flow_runs/{run_id}")
            r.raise_for_status()
            return r.json()

    def wait_runs(self, run_ids: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Poll until every run is final (COMPLETED, FAILED, CRASHED or CANCELLED)."""
        pending = list(run_ids)
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for rid in list(pending):
                run = self.flow_run(rid)
                if run["state_type"] in TERMINAL:
                    done[rid] = run
                    pending.remove(rid)
            if pending and time.monotonic() > deadline:
                states = {r: self.flow_run(r)["state_type"] for r in pending}
                raise TimeoutError(f"flow runs not final after {timeout:.0f} s: {states}")
            if pending:
                time.sleep(1)
        return done

    def run_logs(self, run_id: str, limit: int = 60) -> str:
        with self.client() as c:
            r = c.post(
                "/logs/filter",
                json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": limit},
            )
            r.raise_for_status()
            return "\n".join(f"{x['level']:>2} {x['message']}" for x in r.json())

    def flow_runs(self, deployment_id: str) -> list[dict[str, Any]]:
        with self.client() as c:
            r = c.post(
                "/flow_runs/filter",
                json={"deployments": {"id": {"any_": [deployment_id]}}, "limit": 50},
            )
            r.raise_for_status()
            return r.json()

    def artifacts(self, key: str) -> list[dict[str, Any]]:
        with self.client() as c:
            r = c.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}})
            r.raise_for_status()
            return r.json()


def wait_healthy(api_url: str, timeout: float, proc=None, log: Path | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prefect server at {api_url} not healthy after {timeout:.0f} s")
        time.sleep(0.5)


def pool_of(deployment_name: str) -> str:
    """The work pool prefect.yaml gives a deployment (the lead's file is the source of truth)."""
    import yaml

    doc = yaml.safe_load(PREFECT_FILE.read_text()) or {}
    for dep in doc.get("deployments") or []:
        if dep.get("name") == deployment_name:
            pool = (dep.get("work_pool") or {}).get("name")
            if pool:
                return str(pool)
    raise LookupError(f"prefect.yaml has no deployment {deployment_name!r} with a work pool")


def yaml_deployment(deployment_name: str) -> dict[str, Any] | None:
    if not PREFECT_FILE.exists():
        return None
    import yaml

    doc = yaml.safe_load(PREFECT_FILE.read_text()) or {}
    for dep in doc.get("deployments") or []:
        if dep.get("name") == deployment_name:
            return dep
    return None


class _RetryOn503(httpx.BaseTransport):
    """An httpx transport that resends a request answered 503, at most 5 times (≤ ~15 s)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def handle_request(self, request: Any) -> Any:
        for attempt in range(5):
            response = self.inner.handle_request(request)
            if response.status_code != 503 or attempt == 4:
                return response
            response.close()
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.inner.close()


# ---------------------------------------------------------------------- localcloud
def start_clouds(state_dir: Path, clouds: list[str], stack: PrefectStack):
    """localcloud with the data plane and its credentials blocks (named as the clouds, access:
    localcloud's proxy, as `hybridgrid cloud import --proxy-command` saves them), saved on
    `stack`'s server. No SSH key block: the flows make those, as for a new user."""
    from localcloud import control as server

    handle = server.start(state_dir, clouds=clouds, port=free_port(), dataplane=True)
    try:
        here = str(Path(__file__).resolve())
        stack.python(here, "blocks", str(state_dir), *clouds)
    except BaseException:
        server.down(state_dir)
        raise
    return handle


def _save_blocks(argv: list[str]) -> None:
    import asyncio

    from hybridgrid.access import CloudAccess
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from localcloud.dataplane.cli import proxy_command

    state_dir = Path(argv[0])
    access = CloudAccess(proxy_command=proxy_command(state_dir))

    async def save() -> None:
        for cloud in argv[1:]:
            creds = OpenStackCredentials.from_clouds_yaml(cloud, state_dir / "clouds.yaml", access)
            await creds.asave(cloud, overwrite=True)

    asyncio.run(save())


if __name__ == "__main__":
    if sys.argv[1:2] == ["blocks"]:
        _save_blocks(sys.argv[2:])
    else:
        raise SystemExit(__doc__)


# ---------------------------------------------------------------------- the run form
def pick_block(page: Any, name: str) -> None:
    """A block picker of a run form: open its dropdown, choose the block, wait until the
    dropdown has closed (a click while it closes is swallowed)."""
    page.get_by_role("button", name="Select a block").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    page.get_by_role("listbox").wait_for(state="hidden")


def submit_form(page: Any) -> None:
    """Submit a Custom run form and wait until the UI says the run was made: the run's page
    (v1) or a "scheduled to start" toast (v2). If neither shows within 20 s and the form is
    still there, the click was lost: click once more, as a user would."""
    import re

    made = page.get_by_text(re.compile("scheduled to start|Flow run created")).or_(
        page.get_by_role("tab", name="Task Runs")
    )
    submit = page.get_by_role("button", name="Submit")
    submit.click()
    try:
        made.first.wait_for(timeout=20_000)
    except Exception:
        if not submit.count():
            raise
        submit.click()
        made.first.wait_for(timeout=20_000)


def body_with(page: Any, texts: tuple[str, ...], timeout: float = 20.0) -> str:
    """The page's text once it holds every one of texts, or as it is after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        body = page.inner_text("body")
        if all(t in body for t in texts) or time.monotonic() > deadline:
            return body
        time.sleep(0.5)
