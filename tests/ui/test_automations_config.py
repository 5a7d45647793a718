"""deployments/automations.yaml and its loader, without a server: the shipped config is valid,
an entry maps to the intended trigger and action, bad entries are clear early errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hybridgrid.deployments.automations import (
    DEFAULT_CONFIG,
    AutomationsConfigError,
    automation_for,
    load_config,
)


def test_shipped_config_has_the_drift_alert() -> None:
    config = load_config(DEFAULT_CONFIG)
    (alert,) = config.automations
    assert alert.flow == "check-drift"
    assert alert.states == ["Failed", "Crashed"]
    assert (alert.block_type_slug, alert.block_name) == ("custom-webhook", "hybridgrid-alerts")


def test_entry_becomes_trigger_and_notification() -> None:
    alert = load_config(DEFAULT_CONFIG).automations[0]
    block_id = uuid.uuid4()
    auto = automation_for(alert, block_id)
    assert auto.name == "hybridgrid-drift-alert"
    assert auto.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert auto.trigger.match_related.root == {
        "prefect.resource.role": "flow",
        "prefect.resource.name": "check-drift",
    }
    (action,) = auto.actions
    assert action.type == "send-notification"
    assert action.block_document_id == block_id
    assert "{{ flow_run.name }}" in action.subject


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"notify_block": "hybridgrid-alerts"}, "notify_block"),
        ({"states": ["Exploded"]}, "states"),
        ({"flow": ""}, "flow"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_entries_name_the_field(tmp_path: Path, entry: dict, needle: str) -> None:
    import yaml

    base = {
        "name": "x",
        "flow": "check-drift",
        "notify_block": "custom-webhook/alerts",
        "body": "b",
    }
    path = tmp_path / "automations.yaml"
    path.write_text(yaml.safe_dump({"automations": [{**base, **entry}]}))
    with pytest.raises(AutomationsConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AutomationsConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
