"""Scale-out as documented (docs/scale-out.md): scripts/scaleout.sh starts PostgreSQL on
127.0.0.1, `prefect server` on it and two process workers on the project's work pool, and
deploys prefect.yaml. Three sites (erlangen, passau, ulm — all on the giessen cloud, home
bielefeld, registry `scaleout`) are added by three deployment runs at once; both workers run
some of them, every link is verified, the hub has all three peers, and the runs are rows in
PostgreSQL. Everything the script started is ended by PID (`scaleout.sh down`), even when
the test fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ui"))
from hg_stack import (
    PREFECT_FILE,
    REPO,
    PrefectStack,
    end_group,
    start_clouds,
)

pytestmark = [pytest.mark.slow, pytest.mark.dataplane]

SCRIPT = REPO / "scripts" / "scaleout.sh"
REGISTRY = "scaleout"
SITES = ["erlangen", "passau", "ulm"]
SITE_CLOUD = "giessen"
WORKERS = {"scaleout-worker-1", "scaleout-worker-2"}
HOME = {
    "home": {
        "name": "bielefeld",
        "cloud": "bielefeld",
        "master": {"create": True},
        "subnet": "192.168.66.0/24",
        "workers": 1,
    },
    "options": {"registry": REGISTRY},
}


def _needs() -> str | None:
    if os.geteuid() != 0:
        return "needs root (localcloud's namespaces; PostgreSQL runs as the postgres user)"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "Debian postgresql not installed (scripts/ui_deps.sh)"
    if not PREFECT_FILE.exists():
        return "prefect.yaml not there yet"
    return None


class ScaleOut:
    def __init__(self, state: Path, env: dict[str, str]):
        self.state = state
        self.env = env
        port = int((state / "api.port").read_text())
        # the script's server, used through the same REST helpers as the UI tests
        self.stack = PrefectStack(state / "client", port=port)
        self.clouds: Any = None

    def script(self, *args: str, timeout: float = 240) -> str:
        proc = subprocess.run(
            [str(SCRIPT), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def psql(self, sql: str) -> str:
        pg_bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        env = dict(os.environ, PGPASSWORD=(self.state / "pg.pass").read_text().strip())
        port = (self.state / "pg.port").read_text().strip()
        argv = [f"{pg_bin}/psql", "-h", "127.0.0.1", "-p", port, "-U", "prefect", "-d", "prefect"]
        proc = subprocess.run(
            [*argv, "-qAtc", sql], capture_output=True, text=True, env=env, timeout=30, check=True
        )
        return proc.stdout.strip()

    def exec(self, server_name: str, cmd: str, cloud: str) -> tuple[int, str]:
        argv = [sys.executable, "-m", "localcloud.dataplane.cli", "exec"]
        argv += ["--state-dir", str(self.clouds.state_dir), "--cloud", cloud]
        argv += [server_name, "--", "sh", "-c", cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        return proc.returncode, proc.stdout + proc.stderr


def _end_by_pid_files(state: Path) -> None:
    """Last resort after `scaleout.sh down`: end whatever the pid files still name."""
    for pid_file in (state / "pids").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            continue
        if pid_file.stem == "postgres":
            subprocess.run(["kill", "-KILL", str(pid)], check=False, capture_output=True)
        else:
            end_group(pid, timeout=5)


@pytest.fixture(scope="module")
def scaleout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOut]:
    reason = _needs()
    if reason:
        pytest.skip(reason)
    from localcloud import control as server

    # PostgreSQL runs as `postgres`, which cannot enter pytest's 0700 tmp tree: own dir in /tmp
    state = Path(tempfile.mkdtemp(prefix="hg-scaleout-"))
    clouds_dir = tmp_path_factory.mktemp("scaleout-clouds")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        HG_STATE=str(state),
        HG_API_PORT="auto",
        HG_WORKERS="2",
        HG_WORKER_LIMIT="2",
        HG_DEPLOY="1",
        HG_PREFECT_FILE=str(PREFECT_FILE),
        PREFECT_LOGGING_LEVEL="INFO",
    )
    so: ScaleOut | None = None
    try:
        up = subprocess.run(
            [str(SCRIPT), "up"], capture_output=True, text=True, env=env, timeout=240, check=False
        )
        assert up.returncode == 0, up.stdout + up.stderr
        so = ScaleOut(state, env)
        so.clouds = start_clouds(clouds_dir, ["bielefeld", SITE_CLOUD], so.stack)
        so.stack.python("-m", "hybridgrid.deployments.setup", "--registry", REGISTRY)
        home = so.stack.run_deployment("bootstrap-home", "bootstrap-home", HOME)
        run = so.stack.wait_runs([home], timeout=240)[home]
        assert run["state_type"] == "COMPLETED", so.stack.run_logs(home)
        yield so
    finally:
        try:
            subprocess.run(
                [str(SCRIPT), "down"], env=env, timeout=120, check=False, capture_output=True
            )
        finally:
            _end_by_pid_files(state)  # whatever `down` could not end
            try:
                server.down(clouds_dir)
            finally:
                keep = REPO / "test-artifacts" / "scaleout"
                if (state / "logs").exists():
                    shutil.copytree(state / "logs", keep, dirs_exist_ok=True)
                shutil.rmtree(state, ignore_errors=True)


def test_three_sites_over_two_workers_on_postgresql(scaleout: ScaleOut) -> None:
    stack = scaleout.stack
    options = {"registry": REGISTRY}
    runs = [
        stack.run_deployment(
            "add-remote-site",
            "add-remote-site",
            {"site": {"name": s, "cloud": SITE_CLOUD, "workers": 1}, "options": options},
        )
        for s in SITES
    ]
    done = stack.wait_runs(runs, timeout=300)
    for rid, run in done.items():
        assert run["state_type"] == "COMPLETED", (run["name"], stack.run_logs(rid))
    assert sorted(r["name"] for r in done.values()) == SITES

    # both workers executed runs (each run carries the labels of the worker that ran it)
    by_worker: dict[str, list[str]] = {}
    for run in done.values():
        by_worker.setdefault(run["labels"].get("prefect.worker.name"), []).append(run["name"])
    assert set(by_worker) == WORKERS, by_worker

    # every link verified, as its artifact says
    for site in SITES:
        (art,) = stack.artifacts(f"hybridgrid-{site}-summary")[-1:]
        first_line = art["data"].splitlines()[0]
        assert "verified" in first_line and "NOT verified" not in first_line, first_line

    # the hub has one peer per site, each with a recent handshake
    rc, out = scaleout.exec("hg-bielefeld-master", "wg show wg0 peers | wc -l", "bielefeld")
    assert rc == 0 and out.strip() == "3", out

    # and the server really stored them in PostgreSQL
    names = scaleout.psql(
        "SELECT name FROM flow_run WHERE state_type = 'COMPLETED' ORDER BY name"
    ).splitlines()
    assert set(SITES) <= set(names), names
