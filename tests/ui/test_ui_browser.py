"""The Prefect UI in a real browser (Debian's Chromium, driven by Playwright): a user adds a
site from the add-remote-site deployment's form and reads the verified link in the run's
artifact; the blocks page shows credentials masked; check-drift shows its schedule and runs
with repair from a custom run.

Everything is real: `prefect server` (SQLite, own home, free port), a process worker on the
pool prefect.yaml names, `prefect deploy --all` from the repo root, localcloud with the data
plane (home `bielefeld`, site `jena` on the giessen cloud, registry `ui`). Screenshots land in
test-artifacts/ui/.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hg_stack import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    PREFECT_FILE,
    REPO,
    PrefectStack,
    body_with,
    pick_block,
    pool_of,
    start_clouds,
    submit_form,
    yaml_deployment,
)

pytestmark = [pytest.mark.slow, pytest.mark.dataplane]

REGISTRY = "ui"
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
SITE, SITE_CLOUD = "jena", "giessen"
SHOTS = REPO / "test-artifacts" / "ui"


def _needs() -> str | None:
    if os.geteuid() != 0:
        return "needs root (localcloud's network namespaces)"
    if not Path(CHROMIUM).exists():
        return "Debian chromium not installed (scripts/ui_deps.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (PyPI) not installed (scripts/ui_deps.sh)"
    if not PREFECT_FILE.exists():
        return "prefect.yaml not there yet"
    return None


class UI:
    """What the tests share: the stack, the clouds and one Chromium."""

    def __init__(self, stack: PrefectStack, clouds: Any, browser: Any):
        self.stack = stack
        self.clouds = clouds
        self.browser = browser
        page = self.page()
        page.goto(stack.ui_url + "/")
        page.wait_for_url("**/dashboard**")
        # the start page redirects to the default UI (v2 lives under /v2 in Prefect 3.9)
        self.base = stack.ui_url + ("/v2" if "/v2/" in page.url else "")
        page.close()

    def url(self, path: str) -> str:
        return self.base + path

    def page(self):
        page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        return page


def _deploy(stack: PrefectStack) -> None:
    pools = set()
    doc = yaml.safe_load(PREFECT_FILE.read_text()) or {}
    for dep in doc.get("deployments") or []:
        name = (dep.get("work_pool") or {}).get("name")
        if name and "{{" not in str(name):
            pools.add(str(name))
    for pool in sorted(pools):
        if (REPO / "deployments" / "setup.py").exists():
            setup = ("-m", "hybridgrid.deployments.setup", "--pool", pool)
            stack.python(*setup, "--registry", REGISTRY)
            continue
        try:
            stack.prefect("work-pool", "inspect", pool)
        except RuntimeError:
            stack.prefect("work-pool", "create", pool, "--type", "process")
    stack.prefect("deploy", "--all", "--prefect-file", str(PREFECT_FILE))


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    reason = _needs()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    from localcloud import control as server

    root = tmp_path_factory.mktemp("ui-stack")
    SHOTS.mkdir(parents=True, exist_ok=True)
    stack = PrefectStack(root)
    clouds_dir = root / "clouds"
    pw = browser = None
    try:
        stack.start_server()
        clouds = start_clouds(clouds_dir, ["bielefeld", SITE_CLOUD], stack)
        _deploy(stack)
        stack.start_worker(pool_of("add-remote-site"), "ui-worker")
        home = stack.run_deployment("bootstrap-home", "bootstrap-home", HOME)
        run = stack.wait_runs([home], timeout=240)[home]
        assert run["state_type"] == "COMPLETED", stack.run_logs(home)
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield UI(stack, clouds, browser)
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        stack.stop()
        if clouds_dir.exists():
            server.down(clouds_dir)
        for log in stack.logs.glob("*.log"):  # kept next to the screenshots
            shutil.copy(log, SHOTS / f"stack-{log.name}")


def _shot(page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _open_deployment(page, ui: UI, name: str) -> None:
    """From the start page, the way a user goes: Deployments → the deployment."""
    page.goto(ui.stack.ui_url + "/")
    page.get_by_role("link", name="Deployments", exact=True).first.click()
    page.get_by_role("link", name=name, exact=True).first.click()
    page.wait_for_url("**/deployments/deployment/**")
    # client-side navigation: wait for what only the deployment's page has
    page.get_by_role("button", name="Run", exact=True).wait_for()


def test_add_remote_site_from_the_custom_run_form(ui: UI) -> None:
    page = ui.page()
    _open_deployment(page, ui, "add-remote-site")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    page.wait_for_url("**/run**")
    # the typed form rendered from the pydantic parameters: site.name, site.cloud, site.workers;
    # cloud is optional (empty = the site name), name is the one required field
    page.get_by_label("Name", exact=True).fill(SITE)
    pick_block(page, SITE_CLOUD)  # the cloud: a dropdown of the saved credentials blocks
    page.get_by_label("Workers (Optional)", exact=True).fill("1")
    _choose_options(page, "AddSiteOptions")
    page.get_by_label("Registry (Optional)", exact=True).fill(REGISTRY)
    _shot(page, "add-remote-site-form")
    dep = ui.stack.deployment("add-remote-site", "add-remote-site")
    submit_form(page)
    (run,) = _new_runs(ui, dep["id"], set())  # the form made exactly one run
    typed = {k: run["parameters"]["site"].get(k) for k in ("name", "cloud", "workers")}
    cloud_block = ui.stack.block_document(SITE_CLOUD, "hybridgrid-openstack-credentials")
    picked = {"$ref": {"block_document_id": cloud_block["id"]}}
    assert typed == {"name": SITE, "cloud": picked, "workers": 1}, run["parameters"]
    assert run["parameters"]["options"]["registry"] == REGISTRY
    done = ui.stack.wait_runs([run["id"]], timeout=240)[run["id"]]
    assert done["state_type"] == "COMPLETED", ui.stack.run_logs(run["id"])
    assert done["name"] == SITE

    # the run's markdown artifact, as the user reads it in the UI
    page.goto(ui.url(f"/runs/flow-run/{run['id']}?tab=Artifacts"))
    page.get_by_text(f"hybridgrid-{SITE}-summary").first.click()
    page.wait_for_url("**/artifacts/artifact/**")
    heading = page.get_by_role("heading", level=1).filter(has_text=f"Site {SITE}")
    heading.first.wait_for()
    title = heading.first.inner_text()
    assert title.rstrip(" ✅").endswith(": verified") and "NOT verified" not in title, title
    layers = ("api", "wireguard", "handshake", "overlay ping", "worker ping", "mtu")
    body = body_with(page, layers)  # the panes render in more than one pass
    for layer in layers:
        assert layer in body, (layer, body[:4000])
    _shot(page, "add-remote-site-artifact")
    page.goto(ui.url(f"/runs/flow-run/{run['id']}"))
    page.get_by_text("Completed").first.wait_for()
    _shot(page, "add-remote-site-run")


def test_site_form_accepts_an_empty_cloud(ui: UI) -> None:
    """Only the site's name is required: with Cloud left empty the form submits, and the site
    the flow will validate uses the site's name as its cloud. The pool is paused meanwhile so
    the run is only created, never executed, and deleted afterwards."""
    from hybridgrid.model import RemoteSite

    pool = pool_of("add-remote-site")
    dep = ui.stack.deployment("add-remote-site", "add-remote-site")
    before = {r["id"] for r in ui.stack.flow_runs(dep["id"])}
    made: list[dict[str, Any]] = []
    with ui.stack.client() as api:
        api.patch(f"/work_pools/{pool}", json={"is_paused": True}).raise_for_status()
        try:
            page = ui.page()
            _open_deployment(page, ui, "add-remote-site")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Custom run").click()
            page.wait_for_url("**/run**")
            picker = page.get_by_role("button", name="Select a block").first
            assert picker.inner_text().strip() == "Select a block...", picker.inner_text()
            page.get_by_label("Name", exact=True).fill("weimar")
            _shot(page, "add-remote-site-form-empty-cloud")
            submit_form(page)
            made = _new_runs(ui, dep["id"], before)
            assert len(made) == 1, made  # the form did not stop at a required field
            sent = made[0]["parameters"]["site"]
            assert sent.get("cloud") in (None, ""), sent  # left empty in the form
            assert RemoteSite.model_validate(sent).cloud == "weimar"
        finally:
            for run in made:
                api.delete(f"/flow_runs/{run['id']}")
            api.patch(f"/work_pools/{pool}", json={"is_paused": False}).raise_for_status()


def _new_runs(ui: UI, deployment_id: str, before: set[str]) -> list[dict[str, Any]]:
    """Runs the form created (not the schedule's), once the API has them."""
    import time

    deadline = time.monotonic() + 30
    while True:
        new = [
            r
            for r in ui.stack.flow_runs(deployment_id)
            if r["id"] not in before and not r["auto_scheduled"]
        ]
        if new or time.monotonic() > deadline:
            time.sleep(1)  # a second click would show up by now
            return [
                r
                for r in ui.stack.flow_runs(deployment_id)
                if r["id"] not in before and not r["auto_scheduled"]
            ]
        time.sleep(0.5)


def _choose_options(page, model_title: str) -> None:
    """`options: X | None` renders as a two-way toggle (model / None): pick the model."""
    tab = page.get_by_role("tab", name=model_title)
    if tab.count():
        tab.first.click()
    else:
        page.get_by_text(model_title, exact=True).first.click()


def _secrets_in_clouds_yaml(ui: UI) -> list[str]:
    doc = yaml.safe_load((ui.clouds.state_dir / "clouds.yaml").read_text())
    found = []
    for cloud in doc["clouds"].values():
        auth = cloud.get("auth", {})
        found += [auth[k] for k in ("password", "application_credential_secret") if auth.get(k)]
    return found


def test_blocks_page_masks_the_credentials_secret(ui: UI) -> None:
    secrets = _secrets_in_clouds_yaml(ui)
    assert secrets, "localcloud's clouds.yaml has no secret to look for"
    page = ui.page()
    page.goto(ui.stack.ui_url + "/")
    page.get_by_role("link", name="Blocks", exact=True).first.click()
    page.get_by_text("bielefeld", exact=True).first.click()
    page.wait_for_url("**/blocks/block/**")
    page.get_by_text("Auth Url", exact=True).first.wait_for()
    text = page.inner_text("body")
    html = page.content()
    shown = _field_values(text)
    masked = [k for k in ("Password", "Application Credential Secret") if shown.get(k) != "None"]
    assert masked, shown
    for label in masked:
        assert shown[label] == "********", (label, shown[label])
    for secret in secrets:
        assert secret not in html
    _shot(page, "blocks-openstack-credentials")


def _field_values(text: str) -> dict[str, str]:
    """The block page lists each field as a label line followed by its value line."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return dict(itertools.pairwise(lines))


def _schedule_pattern(crons: list[str]) -> re.Pattern[str]:
    """A cron as written, or `*/N * * * *` in words ("Every N minutes")."""
    alts = [re.escape(c) for c in crons]
    for c in crons:
        m = re.fullmatch(r"\*/(\d+) \* \* \* \*", c)
        if m:
            alts.append(rf"[Ee]very {m.group(1)} minutes")
    return re.compile("|".join(alts))


def _check_drift_deployed(ui: UI) -> dict[str, Any]:
    if yaml_deployment("check-drift") is None:
        pytest.skip("prefect.yaml has no check-drift deployment yet (day-two helper)")
    return ui.stack.deployment("check-drift", "check-drift")


def test_check_drift_schedule_is_visible(ui: UI) -> None:
    dep = _check_drift_deployed(ui)
    crons = [s["schedule"].get("cron") for s in dep["schedules"] if s.get("active", True)]
    assert crons, dep["schedules"]
    page = ui.page()
    _open_deployment(page, ui, "check-drift")
    # the deployment page's schedule card shows the cron as written or in words
    from playwright.sync_api import expect

    expect(page.locator("body")).to_contain_text(_schedule_pattern(crons), timeout=20_000)
    _shot(page, "check-drift-schedule")


def _site_udp_rules(ui: UI) -> tuple[list[Any], Any]:
    """The jena site group's WireGuard rules (UDP 51820) on the giessen cloud."""
    from localcloud.clientconf import connect

    conn = connect(ui.clouds.state_dir, SITE_CLOUD)
    sg = conn.network.find_security_group(f"hg-{SITE}-sg")
    assert sg is not None, "the site's security group is missing"
    return [
        r
        for r in conn.network.security_group_rules(security_group_id=sg.id)
        if r.protocol == "udp" and r.port_range_min == 51820
    ], conn


def _field(page, label: str):
    """The form group of a top-level parameter (its label says `name (Optional)`)."""
    text = re.compile(rf"^{re.escape(label)}( \(Optional\))?$", re.IGNORECASE)
    return page.locator("div.group").filter(has=page.get_by_text(text)).last


def test_check_drift_custom_run_with_repair(ui: UI) -> None:
    dep = _check_drift_deployed(ui)
    # drift: someone removed the site's WireGuard rule by hand
    rules, conn = _site_udp_rules(ui)
    assert len(rules) == 1, rules
    conn.network.delete_security_group_rule(rules[0])
    assert _site_udp_rules(ui)[0] == []

    page = ui.page()
    _open_deployment(page, ui, "check-drift")
    before = {r["id"] for r in ui.stack.flow_runs(dep["id"])}
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    page.wait_for_url("**/run**")
    switch = _field(page, "repair").get_by_role("switch")
    switch.click()
    assert switch.get_attribute("aria-checked") == "true"
    _field(page, "registry").locator("textarea, input").first.fill(REGISTRY)
    _shot(page, "check-drift-form")
    submit_form(page)
    (run,) = _new_runs(ui, dep["id"], before)
    assert run["parameters"].get("repair") is True, json.dumps(run["parameters"])
    assert run["parameters"].get("registry") == REGISTRY, json.dumps(run["parameters"])
    done = ui.stack.wait_runs([run["id"]], timeout=180)[run["id"]]
    assert done["state_type"] == "COMPLETED", ui.stack.run_logs(run["id"])
    assert len(_site_udp_rules(ui)[0]) == 1  # repaired
    page.goto(ui.url(f"/runs/flow-run/{run['id']}"))
    page.get_by_text("Completed").first.wait_for()
    _shot(page, "check-drift-repair-run")
