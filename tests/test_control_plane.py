"""The CLI's way to the one Prefect server: with no reachable server every command that needs
one says so and how to fix it (exit 2) instead of starting a temporary server; the demo's
profile is made active and removed again with the previous profile restored; the parameters
of each flow run the CLI makes come from one function per flow and validate against the flow.
Real console script, real Prefect profiles files (in tmp dirs), no server needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.yaml"
HYBRIDGRID = shutil.which("hybridgrid", path=str(Path(sys.executable).parent))


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """A new shell: nothing of Prefect exported, a HOME of its own (so no profile either)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(HOME=str(home), **extra)
    return env


def hg(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HYBRIDGRID, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=bare_env(home, **extra),
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["sites"],
        ["drift"],
        ["site", "add", str(DEMO), "--site", "giessen"],
        ["site", "remove", "giessen"],
        ["site", "rotate-keys", "giessen"],
        ["home", "bootstrap", str(DEMO)],
    ],
)
def test_no_server_configured_exits_2_with_the_fix(tmp_path, args):
    out = hg(tmp_path, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no Prefect server: PREFECT_API_URL is not set" in out.stderr
    assert "make demo" in out.stderr and "prefect profile use" in out.stderr
    # no temporary server was started: nothing of one under the new HOME
    assert not (tmp_path / ".prefect" / "prefect.db").exists()


def test_a_server_that_does_not_answer_exits_2(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    out = hg(tmp_path, "sites", PREFECT_API_URL=url)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"the Prefect server at {url} does not answer" in out.stderr
    assert "PREFECT_API_URL" in out.stderr


def test_plan_needs_no_server(tmp_path):
    out = hg(tmp_path, "plan", str(DEMO))
    assert out.returncode == 0, out.stderr
    assert "giessen" in out.stdout and "192.168.77.0/24" in out.stdout


def test_bad_input_still_comes_first(tmp_path):
    out = hg(tmp_path, "site", "add", str(DEMO), "--site", "nowhere")
    assert out.returncode == 2 and "--site" in out.stderr and "nowhere" in out.stderr


# ---------------------------------------------------------------- the demo's profile


def _profiles(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_profile_activate_then_deactivate_restores_the_previous(tmp_path):
    from hybridgrid import demo_profile

    path = tmp_path / "profiles.toml"
    path.write_text('active = "mine"\n\n[profiles.mine]\nPREFECT_API_URL = "http://x:1/api"\n')
    previous = tmp_path / "demo" / "previous-profile"

    before = demo_profile.activate("http://127.0.0.1:4310/api", previous, path)
    assert before == "mine"
    doc = _profiles(path)
    assert doc["active"] == demo_profile.NAME
    assert doc["profiles"][demo_profile.NAME]["PREFECT_API_URL"] == "http://127.0.0.1:4310/api"
    assert doc["profiles"][demo_profile.NAME]["PREFECT_UI_URL"] == "http://127.0.0.1:4310"
    assert doc["profiles"]["mine"]["PREFECT_API_URL"] == "http://x:1/api"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    # a second `make demo`: the first note of what was active stays
    assert demo_profile.activate("http://127.0.0.1:4310/api", previous, path) == demo_profile.NAME
    assert previous.read_text().strip() == "mine"

    now = demo_profile.deactivate(previous, path)
    assert now == "mine"
    doc = _profiles(path)
    assert doc["active"] == "mine" and demo_profile.NAME not in doc["profiles"]
    assert doc["profiles"]["mine"]["PREFECT_API_URL"] == "http://x:1/api"
    assert not previous.exists()


def test_profile_is_what_a_new_shell_uses(tmp_path):
    """After activate, Prefect itself (a new process, nothing exported) resolves the demo's
    server from ~/.prefect/profiles.toml; after deactivate it resolves none."""
    from hybridgrid import demo_profile

    path = tmp_path / ".prefect" / "profiles.toml"
    previous = tmp_path / "previous-profile"
    demo_profile.activate("http://127.0.0.1:4310/api", previous, path)
    probe = [
        sys.executable,
        "-c",
        "from prefect.settings import get_current_settings as s; print(s().api.url)",
    ]

    def resolved() -> str:
        out = subprocess.run(
            probe, capture_output=True, text=True, env=bare_env(tmp_path), timeout=60, check=True
        )
        return out.stdout.strip()

    assert resolved() == "http://127.0.0.1:4310/api"
    assert demo_profile.deactivate(previous, path) is None
    assert resolved() == "None"


def test_profile_cli_via_the_demo_script_functions(tmp_path):
    """`python -m hybridgrid.demo_profile` as demo.sh calls it (activate, deactivate)."""
    path = tmp_path / "p.toml"
    prev = tmp_path / "prev"
    base = [sys.executable, "-m", "hybridgrid.demo_profile"]
    env = bare_env(tmp_path)
    files = ["--previous", str(prev), "--profiles", str(path)]
    on = subprocess.run(
        [*base, "activate", "--api-url", "http://127.0.0.1:4311/api", *files],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert on.returncode == 0, on.stderr
    assert _profiles(path)["active"] == "hybridgrid-demo"
    off = subprocess.run(
        [*base, "deactivate", "--profiles", str(path), "--previous", str(prev)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert off.returncode == 0, off.stderr
    assert "hybridgrid-demo" not in _profiles(path).get("profiles", {})
    bad = subprocess.run(
        [*base, "activate", "--previous", str(prev), "--profiles", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "--api-url" in bad.stderr


# ---------------------------------------------------------------- one function per flow


def test_run_parameters_validate_against_the_flows():
    """What the CLI sends is what each flow accepts (the server validates the same schema)."""
    from prefect.utilities.callables import parameter_schema

    from hybridgrid import cli_runs
    from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
    from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
    from hybridgrid.flows.check_drift import check_drift
    from hybridgrid.flows.remove_remote_site import remove_remote_site
    from hybridgrid.flows.rotate_keys import rotate_keys
    from hybridgrid.spec import load_spec

    topo = load_spec(DEMO)
    calls = [
        (add_remote_site, cli_runs.add_site_call(topo.sites[0], AddSiteOptions())),
        (
            bootstrap_home,
            cli_runs.home_call(topo.home, topo.wireguard, HomeOptions(site_pool=topo.site_pool)),
        ),
        (check_drift, cli_runs.drift_call(False, None, "hybridgrid")),
        (remove_remote_site, cli_runs.remove_call("giessen", "hybridgrid")),
        (rotate_keys, cli_runs.rotate_call("giessen", False, "hybridgrid", 60)),
    ]
    for flow, call in calls:
        assert call.deployment == flow.name
        assert set(call.parameters) <= set(parameter_schema(flow).properties)
        flow.validate_parameters(call.parameters)  # raises on a bad one
        assert "hybridgrid" in call.tags
    add = calls[0][1]
    assert add.run_name == "giessen" and "site:giessen" in add.tags
    assert add.parameters["site"] == {
        "name": "giessen",
        "cloud": "giessen",
        "subnet": "192.168.77.0/24",
        "workers": 1,
    }
    assert calls[1][1].run_name == "bielefeld" and calls[2][1].run_name == "drift"
