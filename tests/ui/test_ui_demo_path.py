"""The user's path through the Prefect UI, on a stack started the way `make demo` starts it.

`scripts/demo.sh` runs as a user runs it (own directories, ports and HOME so the machine's own
demo is untouched): Prefect server, profile, work pool, deployments, worker, localcloud with
bielefeld, giessen and the spare clouds, the demo's bootstrap-home and add-remote-site giessen
runs. The test creates nothing the demo would not create; then, in Debian's Chromium:

1. Deployments → add-remote-site → Run → Custom run;
2. a new site's name typed, its cloud picked from the saved blocks, Submit;
3. the run completes and its artifact shows every verification layer ok;
4. a worker of the new site pings a worker of giessen (site to site through the hub);
5. a run that failed (an injected boot failure) is retried from the UI and converges.

Screenshots go to test-artifacts/ui/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hg_stack import CHROMIUM, CHROMIUM_FLAGS, REPO, body_with, pick_block, submit_form

pytestmark = [pytest.mark.slow, pytest.mark.dataplane]

SHOTS = REPO / "test-artifacts" / "ui"
DEMO = REPO / "scripts" / "demo.sh"
NEW_SITE, NEW_CLOUD = "hd-lab", "heidelberg"
FAILING_SITE, FAILING_CLOUD = "tue-lab", "tuebingen"
LAYERS = ("api", "wireguard", "handshake", "overlay ping", "worker ping", "mtu")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """The demo's stack, started by scripts/demo.sh with its own dirs, ports and HOME."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.ui_url = f"http://127.0.0.1:{self.port}"
        self.lc_dir = root / "localcloud"
        self.env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HYBRIDGRID_"))
            },
            "HOME": str(root / "home"),
            "HYBRIDGRID_DEMO_DIR": str(root / "demo"),
            "HYBRIDGRID_DEMO_PORT": str(self.port),
            "HYBRIDGRID_DEMO_LOCALCLOUD_PORT": str(_free_port()),
            "HYBRIDGRID_DEMO_LOCALCLOUD_DIR": str(self.lc_dir),
            "HYBRIDGRID_DEMO_BOOT_DELAY": "1",
        }
        (root / "home").mkdir(parents=True, exist_ok=True)

    def script(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(DEMO), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def localcloud(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REPO / ".venv" / "bin" / "localcloud"), *args, "--state-dir", str(self.lc_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def exec(self, cloud: str, server: str, cmd: str) -> subprocess.CompletedProcess[str]:
        lc = str(REPO / ".venv" / "bin" / "localcloud")
        argv = [lc, "exec", "--state-dir", str(self.lc_dir), "--cloud", cloud, server]
        return subprocess.run(
            [*argv, "--", "sh", "-c", cmd],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.ui_url + "/api", timeout=30)

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        with self.api() as c:
            dep = c.get(f"/deployments/name/{deployment}/{deployment}").json()
            r = c.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [dep["id"]]}}})
            r.raise_for_status()
            return [x for x in r.json() if not x["auto_scheduled"]]

    def run(self, run_id: str) -> dict[str, Any]:
        with self.api() as c:
            return c.get(f"/flow_runs/{run_id}").json()

    def wait_final(self, run_id: str, timeout: float = 300, after: str | None = None) -> dict:
        """The run once final (and, with `after`, in a state newer than that timestamp)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            fresh = after is None or (run.get("state") or {}).get("timestamp", "") > after
            if run["state_type"] in TERMINAL and fresh:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not final after {timeout:.0f} s: {run['state']}")
            time.sleep(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if os.geteuid() != 0:
        pytest.skip("needs root (localcloud's network namespaces)")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (scripts/ui_deps.sh)")
    d = Demo(tmp_path_factory.mktemp("demo-path"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        up = d.script()
        (SHOTS / "demo-path-make-demo.log").write_text(up.stdout + up.stderr)
        assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
        yield d
    finally:
        for log in (d.root / "demo").glob("*.log"):  # before demo-down removes them
            shutil.copy(log, SHOTS / f"demo-path-{log.name}")
        down = d.script("down", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="module")
def browser(demo: Demo) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _ui_base(browser: Any, demo: Demo) -> str:
    """Where the UI lives: the start page redirects to the default UI (v2 under /v2)."""
    page = _page(browser)
    page.goto(demo.ui_url + "/")
    page.wait_for_url("**/dashboard**")
    base = demo.ui_url + ("/v2" if "/v2/" in page.url else "")
    page.close()
    return base


def _page(browser: Any) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    return page


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"demo-path-{name}.png"), full_page=True)


def _custom_run(page: Any, demo: Demo, site: str, cloud: str) -> None:
    """Deployments → add-remote-site → Run → Custom run; name typed, cloud picked; Submit."""
    page.goto(demo.ui_url + "/")
    page.get_by_role("link", name="Deployments", exact=True).first.click()
    page.get_by_role("link", name="add-remote-site", exact=True).first.click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    page.wait_for_url("**/run**")
    page.get_by_label("Name", exact=True).fill(site)
    pick_block(page, cloud)
    _shot(page, f"{site}-form")
    submit_form(page)
    _shot(page, f"{site}-submitted")


def _new_run(demo: Demo, before: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        new = [r for r in demo.runs("add-remote-site") if r["id"] not in before]
        if new or time.monotonic() > deadline:
            assert len(new) == 1, new  # the form made exactly one run
            return new[0]
        time.sleep(0.5)


def _retry(page: Any) -> None:
    """The failed run's Retry: a button in the header (v1) or in its ⋮ menu (v2), and the
    confirmation dialog when there is one."""
    button = page.get_by_role("button", name="Retry")
    if button.count():
        button.first.click()
    else:
        page.get_by_role("button", name="Open menu").first.click()
        page.get_by_role("menuitem", name="Retry").first.click()
    page.wait_for_timeout(1000)
    dialog = page.get_by_role("alertdialog").or_(page.get_by_role("dialog"))
    if dialog.count():
        _shot(page, "retry-dialog")
        dialog.first.get_by_role("button", name=re.compile("Retry|Confirm")).first.click()


def _fixed_ip(demo: Demo, cloud: str, server: str) -> str:
    info = json.loads(demo.localcloud("status", "--json").stdout)
    for s in info["clouds"][cloud]["servers"]:
        if s["name"] == server:
            return s["addresses"][0].split()[0]
    raise AssertionError(f"no server {server} in {cloud}: {info['clouds'][cloud]['servers']}")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    p = _page(browser)
    yield p
    _shot(p, "last")  # what the user saw when the test ended (passed or not)


def test_a_new_site_from_the_form_and_a_retried_failure(demo: Demo, page: Any) -> None:
    # 1–2: the form, as a user fills it
    before = {r["id"] for r in demo.runs("add-remote-site")}
    _custom_run(page, demo, NEW_SITE, NEW_CLOUD)
    run = _new_run(demo, before)
    assert run["parameters"]["site"]["name"] == NEW_SITE
    assert "$ref" in run["parameters"]["site"]["cloud"], run["parameters"]

    # 3: completed, every layer ok in the artifact
    done = demo.wait_final(run["id"])
    assert done["state_type"] == "COMPLETED", done["state"]
    assert done["name"] == NEW_SITE
    base = _ui_base(page.context.browser, demo)
    page.goto(f"{base}/runs/flow-run/{run['id']}?tab=Artifacts")
    page.get_by_text(f"hybridgrid-{NEW_SITE}-summary").first.click()
    page.wait_for_url("**/artifacts/artifact/**")
    heading = page.get_by_role("heading", level=1).filter(has_text=f"Site {NEW_SITE}")
    heading.first.wait_for()
    assert heading.first.inner_text().rstrip(" ✅").endswith(": verified")
    # The page renders its panes in more than one pass: wait (bounded) for the table.
    body = body_with(page, LAYERS)
    assert all(layer in body for layer in LAYERS), body[:4000]
    _shot(page, f"{NEW_SITE}-artifact")

    # 4: site to site through the hub
    target = _fixed_ip(demo, "giessen", "hg-giessen-worker-1")
    ping = demo.exec(NEW_CLOUD, f"hg-{NEW_SITE}-worker-1", f"ping -c 3 -W 2 {target}")
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # 5: a run that fails (every boot on tuebingen ends in ERROR), then Retry in the UI
    faults = demo.root / "faults-fail.yaml"
    faults.write_text(
        f'"*": {{boot_delay: 1}}\n{FAILING_CLOUD}: {{boot_delay: 1, boot_failure_rate: 1.0}}\n'
    )
    assert demo.localcloud("faults", str(faults)).returncode == 0
    before = {r["id"] for r in demo.runs("add-remote-site")}
    _custom_run(page, demo, FAILING_SITE, FAILING_CLOUD)
    failing = _new_run(demo, before)
    failed = demo.wait_final(failing["id"])
    assert failed["state_type"] == "FAILED", failed["state"]
    assert "ERROR" in (failed["state"]["message"] or ""), failed["state"]
    faults.write_text('"*": {boot_delay: 1}\n')
    assert demo.localcloud("faults", str(faults)).returncode == 0

    page.goto(f"{base}/runs/flow-run/{failing['id']}")
    page.get_by_text("Failed").first.wait_for()
    _shot(page, f"{FAILING_SITE}-failed")
    _retry(page)
    retried = demo.wait_final(failing["id"], after=failed["state"]["timestamp"])
    assert retried["state_type"] == "COMPLETED", retried["state"]
    assert retried["run_count"] >= 2 and retried["name"] == FAILING_SITE
    page.reload()
    page.get_by_text("Completed").first.wait_for()
    _shot(page, f"{FAILING_SITE}-retried")
