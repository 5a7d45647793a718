"""prefect.yaml for real: a `prefect server` (SQLite, 127.0.0.1, temp PREFECT_HOME), the work
pool and limits from `hybridgrid.deployments.setup`, `prefect --no-prompt deploy --all`, a
process worker, then bootstrap-home and add-remote-site runs triggered from the deployments
against localcloud. Also: prefect.yaml and the catalog `serve()` uses list the same
deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hybridgrid.deployments.catalog import DEPLOYMENTS, POOL, all_deployments

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_prefect_yaml_matches_the_catalog():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    listed = {d["name"]: d for d in spec["deployments"]}
    catalog = all_deployments()
    assert set(listed) == {d.name for d in catalog}
    assert {"add-remote-site", "bootstrap-home"} <= set(listed)
    for d in catalog:
        y = listed[d.name]
        assert y["entrypoint"] == d.entrypoint
        assert y["work_pool"]["name"] == POOL
        assert sorted(y["tags"]) == sorted(d.tags)
        assert y.get("description") and d.description
        assert [s["cron"] for s in y.get("schedules", [])] == ([d.cron] if d.cron else [])
        assert (ROOT / d.entrypoint.split(":")[0]).is_file()
        assert d.load_flow().name == d.name  # flow name = deployment name
    for d in DEPLOYMENTS:  # the main job's: word for word
        assert listed[d.name]["description"].split() == d.description.split()
    pull = spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == "{{ project.stdout }}"


def test_serve_builds_every_deployment():
    from hybridgrid.deployments.serve import runner_deployments

    built = runner_deployments()
    assert sorted(b.name for b in built) == sorted(d.name for d in all_deployments())
    for b in built:
        props = b._parameter_openapi_schema.properties
        assert props, b.name
        assert "hybridgrid" in b.tags and b.description


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a process we started (its own session) and its children, by its PID."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a background worker may ignore SIGTERM
        proc.wait(timeout=10)


class Server:
    def __init__(self, home: Path, port: int):
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}/api"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        env.update(PREFECT_HOME=str(self.home), PREFECT_API_URL=self.url, **extra)
        env.pop("HYBRIDGRID_KILL_AFTER", None)
        return env

    def run(self, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
        out = subprocess.run(
            list(argv),
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert out.returncode == 0, f"{argv}:\n{out.stdout}\n{out.stderr}"
        return out


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Server:
    home = tmp_path_factory.mktemp("prefect-home")
    server = Server(home, _free_port())
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed in finally
    env = server.env(PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")
    env.pop("PREFECT_API_URL")  # no scheduler: check-drift's schedule must not start runs here
    argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
    argv += ["--port", str(server.port), "--analytics-off"]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(  # noqa: S310 - http://127.0.0.1
                    server.url + "/health", timeout=2
                ) as r,
            ):
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "prefect server did not start in 120 s"
            time.sleep(0.5)
        yield server
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def deployed(prefect_server: Server, seed_clouds):
    """Pool, limits, deployments, the clouds' credentials blocks (access: localcloud's proxy,
    as `make demo` imports them; the flows make the SSH key blocks) and a running process
    worker on the real server."""
    from localcloud.dataplane.cli import proxy_command

    s = prefect_server
    setup = s.run(sys.executable, "-m", "hybridgrid.deployments.setup")
    deploy = s.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
    clouds_yaml = str(seed_clouds.state_dir / "clouds.yaml")
    proxy = proxy_command(seed_clouds.state_dir)
    for cloud in ("bielefeld", "giessen"):
        s.run(
            str(BIN / "hybridgrid"),
            "cloud",
            "import",
            cloud,
            "--clouds-yaml",
            clouds_yaml,
            "--proxy-command",
            proxy,
        )
    log = open(s.home / "worker.log", "w")  # noqa: SIM115 - closed in finally
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL],
        cwd=ROOT,
        # as `make demo` sets it: polls every second, SIGINT at its default
        env=s.env(
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="10",
            PREFECT_LOGGING_LEVEL="INFO",  # the runs' INFO lines reach the API (and the CLI)
        ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        yield s, seed_clouds, setup, deploy, worker
    finally:
        _stop(worker)
        log.close()


def _run(server: Server, name: str, parameters: dict):
    """A run as the UI's form makes it: block names become the pickers' block references."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridgrid.deployments.forms import as_form_parameters

    async def form() -> dict:
        async with get_client() as client:
            dep = await client.read_deployment_by_name(name)
            return await as_form_parameters(client, dep.parameter_openapi_schema, parameters)

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        params = asyncio.run(form())
        return run_deployment(name, parameters=params, timeout=420, poll_interval=1)


async def _read(server: Server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        dep = await client.read_deployment_by_name("add-remote-site/add-remote-site")
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["hybridgrid-giessen-summary"])
            )
        )
        return dep, arts


@pytest.mark.dataplane
@pytest.mark.slow
def test_worker_runs_the_deployments(deployed):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server, clouds, setup, deploy, worker = deployed
    assert "work pool hybridgrid: created" in setup.stdout
    assert "add-remote-site/add-remote-site" in deploy.stdout
    assert "bootstrap-home/bootstrap-home" in deploy.stdout
    assert "check-drift/check-drift" in deploy.stdout

    home = _run(
        server,
        "bootstrap-home/bootstrap-home",
        {
            "home": {
                "name": "bielefeld",
                "cloud": "bielefeld",
                "subnet": "192.168.66.0/24",
                "master": {"create": True},
            }
        },
    )
    assert home.state.is_completed(), (home.state, (server.home / "worker.log").read_text()[-4000:])
    site = _run(
        server,
        "add-remote-site/add-remote-site",
        {"site": {"name": "giessen", "cloud": "giessen", "subnet": "192.168.77.0/24"}},
    )
    assert site.state.is_completed(), (site.state, (server.home / "worker.log").read_text()[-4000:])
    assert worker.poll() is None
    assert site.name == "giessen" and {"hybridgrid", "site:giessen"} <= set(site.tags)
    assert site.deployment_id is not None

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        dep, arts = asyncio.run(_read(server))
    assert dep.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    schema = dep.parameter_openapi_schema
    assert schema["required"] == ["site"]
    fields = schema["definitions"]["SiteForm"]["properties"]
    assert fields["workers"]["default"] == 1 and fields["subnet"]["description"]
    assert schema["definitions"]["AddSiteOptions"]["properties"]["registry"]["default"]
    assert arts and arts[-1].flow_run_id == site.id
    text = arts[-1].data
    assert ": verified" in text and "NOT verified" not in text and "192.168.77.0/24" in text
    rc, out = clouds.exec("hg-bielefeld-master", "wg show wg0 peers", "bielefeld")
    assert rc == 0 and len(out.split()) == 1, out


async def _runs_named(server: Server, deployment: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            sort=FlowRunSort.START_TIME_DESC,
        )


def _hybridgrid(server: Server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hybridgrid"), *args],
        cwd=ROOT,
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.dataplane
@pytest.mark.slow
def test_cli_makes_runs_of_the_deployments_and_follows_them(deployed, tmp_path):
    """`hybridgrid home bootstrap` / `site add` with the deployments registered: each makes a
    flow run OF THE DEPLOYMENT named after the site, streams its logs, prints its link and
    exits with its state (0 Completed, 1 Failed)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = deployed[0]
    demo = str(ROOT / "examples" / "demo.yaml")
    home = _hybridgrid(server, "home", "bootstrap", demo)
    assert home.returncode == 0, home.stdout + home.stderr
    assert "of deployment bootstrap-home/bootstrap-home" in home.stdout
    assert "bootstrap-home bielefeld: Completed" in home.stdout

    site = _hybridgrid(server, "site", "add", demo, "--site", "giessen")
    assert site.returncode == 0, site.stdout + site.stderr
    assert "flow run 'giessen' of deployment add-remote-site/add-remote-site" in site.stdout
    assert "Beginning flow run 'giessen'" in site.stdout  # the run's logs, streamed here
    assert "verify handshake    ok" in site.stdout
    assert "add-remote-site giessen: Completed" in site.stdout
    assert ": verified" in site.stdout  # the run's summary artifact
    assert f"http://127.0.0.1:{server.port}/runs/flow-run/" in site.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "examples" / "demo.yaml").read_text()
        + "  - name: marburg\n    cloud: giessen\n    subnet: 192.168.88.0/24\n"
        + "    image: no-such-image\n"
        + "  - name: fulda\n    cloud: nosuch\n    subnet: 192.168.89.0/24\n"
    )
    failed = _hybridgrid(server, "site", "add", str(bad), "--site", "marburg")
    assert failed.returncode == 1, failed.stdout + failed.stderr  # the run Failed (pre-flight)
    assert "add-remote-site marburg: FAILED" in failed.stderr
    assert "no-such-image" in failed.stderr
    refused = _hybridgrid(server, "site", "add", str(bad), "--site", "fulda")
    assert refused.returncode == 2, refused.stdout + refused.stderr  # no such block: no run
    assert "no hybridgrid-openstack-credentials block named 'nosuch'" in refused.stderr

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        giessen = asyncio.run(_runs_named(server, "add-remote-site/add-remote-site", "giessen"))
        marburg = asyncio.run(_runs_named(server, "add-remote-site/add-remote-site", "marburg"))
    assert giessen and giessen[0].state.is_completed()
    assert {"hybridgrid", "site:giessen"} <= set(giessen[0].tags)
    assert giessen[0].parameters["site"]["name"] == "giessen"
    assert len(marburg) == 1 and marburg[0].state.is_failed()
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        assert not asyncio.run(_runs_named(server, "add-remote-site/add-remote-site", "fulda"))
