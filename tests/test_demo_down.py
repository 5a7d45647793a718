"""`make demo-down` (scripts/demo.sh down) on a demo's state in a tmp dir: it ends the worker
and the server by their PID files — also one that ignores SIGTERM, as a worker started in the
background may — removes the demo's Prefect state and its profile, and makes the profile
active before the demo active again. Real script, real processes, real profiles file; the
localcloud state dir is an empty tmp dir (nothing of anyone's clouds is touched)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def _start(code: str) -> int:
    """`code` detached as demo.sh detaches the worker and the server (setsid, a background
    job of a shell that exits): not our child, so its PID is gone once it ends."""
    script = 'setsid "$0" -c "$1" >/dev/null 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["bash", "-c", script, sys.executable, code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(out.stdout.strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def test_demo_down_stops_by_pid_and_removes_state_and_profile(tmp_path):
    from hybridgrid import demo_profile

    home = tmp_path / "home"
    profiles = home / ".prefect" / "profiles.toml"
    profiles.parent.mkdir(parents=True)
    profiles.write_text('active = "mine"\n\n[profiles.mine]\nPREFECT_API_URL = "http://x:1/api"\n')
    demo = tmp_path / "demo"
    (demo / "prefect").mkdir(parents=True)
    (demo / "prefect" / "prefect.db").write_text("the demo's database")
    demo_profile.activate("http://127.0.0.1:4310/api", demo / "previous-profile", profiles)

    worker = _start(STUBBORN)  # ignores TERM: demo-down must KILL it after its bounded wait
    server = _start("import time; time.sleep(300)")
    (demo / "worker.pid").write_text(f"{worker}\n")
    (demo / "prefect.pid").write_text(f"{server}\n")
    time.sleep(0.5)  # the stubborn one has set its handler
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        HOME=str(home),
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
        HYBRIDGRID_DEMO_DIR=str(demo),
        HYBRIDGRID_DEMO_LOCALCLOUD_DIR=str(tmp_path / "localcloud"),
    )
    try:
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "demo.sh"), "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert _gone(worker) and _gone(server)
        assert f"Prefect worker (pid {worker}, SIGKILL after 15 s)" in out.stdout
        assert f"Prefect server (pid {server})" in out.stdout
        assert not demo.exists()  # database, PID files, the note of the previous profile
        doc = tomllib.loads(profiles.read_text())
        assert doc["active"] == "mine" and "hybridgrid-demo" not in doc["profiles"]
        again = subprocess.run(
            ["bash", str(ROOT / "scripts" / "demo.sh"), "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0, again.stdout + again.stderr  # idempotent
    finally:
        for pid in (worker, server):
            if _alive(pid):
                os.killpg(pid, 9)
