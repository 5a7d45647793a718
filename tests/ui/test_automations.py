"""The drift alert: deployments/automations.yaml becomes a Prefect automation (created once,
then unchanged), and a real failing check-drift run makes the server POST the notification to
a webhook on 127.0.0.1. Own `prefect server` (SQLite) so its trigger and action services run.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from hg_stack import PrefectStack

pytestmark = pytest.mark.slow

ALERT = "hybridgrid-drift-alert"


class Hook:
    """A webhook endpoint on loopback that records every POST body."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict] = queue.Queue()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    hook.received.put(json.loads(raw))
                except ValueError:
                    hook.received.put({"raw": raw.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    s = PrefectStack(tmp_path_factory.mktemp("automations-stack"))
    try:
        s.start_server()
        yield s
    finally:
        s.stop()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    try:
        yield h
    finally:
        h.close()


def _automations(stack: PrefectStack) -> list[dict]:
    with stack.client() as c:
        r = c.post("/automations/filter", json={})
        r.raise_for_status()
        return [a for a in r.json() if a["name"] == ALERT]


def _load(stack: PrefectStack, hook_url: str | None) -> str:
    env = {"HYBRIDGRID_ALERT_WEBHOOK_URL": hook_url} if hook_url else {}
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "hybridgrid.deployments.automations"],
        capture_output=True,
        text=True,
        env=stack.env(**env),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_missing_block_is_a_clear_error(stack: PrefectStack) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "hybridgrid.deployments.automations"],
        capture_output=True,
        text=True,
        env=stack.env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "notify_block 'custom-webhook/hybridgrid-alerts' does not exist" in proc.stderr
    assert "HYBRIDGRID_ALERT_WEBHOOK_URL" in proc.stderr
    assert _automations(stack) == []


def test_config_becomes_one_automation_idempotently(stack: PrefectStack, hook: Hook) -> None:
    assert f"automation {ALERT}: created" in _load(stack, hook.url)
    assert f"automation {ALERT}: unchanged" in _load(stack, None)

    from hybridgrid.deployments.automations import load_config

    spec = load_config().automations[0]
    (auto,) = _automations(stack)  # read back from the server: exactly one
    trigger = auto["trigger"]
    assert trigger["type"] == "event"
    assert set(trigger["expect"]) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trigger["match_related"] == {
        "prefect.resource.role": "flow",
        "prefect.resource.name": "check-drift",
    }
    assert trigger["posture"] == "Reactive"
    (action,) = auto["actions"]
    assert action["type"] == "send-notification"
    assert action["subject"] == spec.subject
    with stack.client() as c:
        block = c.get(f"/block_documents/{action['block_document_id']}").json()
    assert block["name"] == "hybridgrid-alerts"
    assert block["block_type"]["slug"] == "custom-webhook"


def test_failed_check_drift_sends_the_alert(
    stack: PrefectStack, hook: Hook, tmp_path: Path
) -> None:
    _load(stack, hook.url)  # the block now points at this test's endpoint
    # A real check-drift run that fails: the registry it is given has no home.
    run = stack.python(
        "-c",
        "import asyncio, sys\n"
        "from hybridgrid.flows.check_drift import check_drift\n"
        "state = asyncio.run(check_drift(registry='ui-nohome', return_state=True))\n"
        "print(state.type.value)\n",
    )
    assert run.stdout.strip().splitlines()[-1] == "FAILED", run.stdout + run.stderr
    try:
        body = hook.received.get(timeout=90)
    except queue.Empty:
        pytest.fail("no notification reached the webhook within 90 s")
    assert body["source"] == "hybridgrid"
    assert "drift check" in body["subject"] and "Failed" in body["subject"], body
    assert "check-drift run" in body["body"], body
