"""Prefect automations from the project's config (deployments/automations.yaml), created or
updated idempotently by name: the alert when check-drift fails.

    python -m hybridgrid.deployments.automations [--config FILE]

An entry becomes one automation: an event trigger on ``prefect.flow-run.<State>`` of the named
flow (matched through the run's related flow resource, so runs from a deployment, the CLI or
``serve()`` all count) and a ``send-notification`` action through a notification block.
With HYBRIDGRID_ALERT_WEBHOOK_URL set, the loader also saves that block as a Custom Webhook
(the URL comes from the environment, never argv: webhook URLs often carry a token).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG = Path(__file__).with_name("automations.yaml")
WEBHOOK_ENV = "HYBRIDGRID_ALERT_WEBHOOK_URL"
FlowState = Literal["Failed", "Crashed", "Cancelled", "Completed", "TimedOut"]


class AutomationsConfigError(ValueError):
    """The config names something that does not exist or is malformed."""


class AlertSpec(BaseModel):
    """One alert: a flow's runs entering some states → a notification block."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="automation name (the idempotency key)")
    description: str = ""
    flow: str = Field(min_length=1, description="flow name, e.g. check-drift")
    states: list[FlowState] = Field(default_factory=lambda: ["Failed", "Crashed"], min_length=1)
    notify_block: str = Field(description="'<block type slug>/<block name>'")
    subject: str = "Prefect automated notification"
    body: str = Field(min_length=1)
    enabled: bool = True

    @field_validator("notify_block")
    @classmethod
    def _slug_and_name(cls, v: str) -> str:
        slug, _, name = v.partition("/")
        if not slug or not name:
            raise ValueError(
                f"notify_block {v!r} must be '<block type slug>/<block name>', "
                "e.g. custom-webhook/hybridgrid-alerts"
            )
        return v

    @property
    def block_type_slug(self) -> str:
        return self.notify_block.partition("/")[0]

    @property
    def block_name(self) -> str:
        return self.notify_block.partition("/")[2]


class AutomationsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    automations: list[AlertSpec] = Field(default_factory=list)


def load_config(path: Path = DEFAULT_CONFIG) -> AutomationsConfig:
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise AutomationsConfigError(
            f"{path}: no such file (see deployments/automations.yaml)"
        ) from None
    try:
        return AutomationsConfig.model_validate(doc)
    except ValidationError as exc:
        raise AutomationsConfigError(f"{path}: {exc}") from None


def automation_for(spec: AlertSpec, block_document_id):
    """The automation an entry stands for (pure)."""
    from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification

    return AutomationCore(
        name=spec.name,
        description=spec.description,
        enabled=spec.enabled,
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{s}" for s in spec.states},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": spec.flow},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id, subject=spec.subject, body=spec.body
            )
        ],
    )


async def _ensure_webhook_block(spec: AlertSpec, url: str) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if spec.block_type_slug != "custom-webhook":
        raise AutomationsConfigError(
            f"{WEBHOOK_ENV} is set but {spec.name}'s notify_block is {spec.notify_block!r}: "
            "it can only make a custom-webhook/… block; create other kinds in the UI"
        )
    block = CustomWebhookNotificationBlock(
        name=spec.block_name,
        url=url,
        json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "hybridgrid"},
    )
    await block.asave(spec.block_name, overwrite=True)


def _same(existing, want) -> bool:
    fields = ("name", "description", "enabled", "trigger", "actions")
    mine = _sorted_sets(want.model_dump(mode="json", include=set(fields)))
    theirs = _sorted_sets(existing.model_dump(mode="json", include=set(fields)))
    return mine == theirs


def _sorted_sets(doc: dict) -> dict:
    """The trigger's event sets dump as lists in hash order (it differs per process)."""
    trigger = doc.get("trigger") or {}
    for key in ("expect", "after"):
        if isinstance(trigger.get(key), list):
            trigger[key] = sorted(trigger[key])
    return doc


async def ensure_automations(
    config: AutomationsConfig, webhook_url: str | None = None
) -> dict[str, str]:
    """Create, update or leave each configured automation; returns {name: what happened}
    (created / updated / unchanged). Duplicates of a name (made by hand) are removed."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    outcome: dict[str, str] = {}
    async with get_client() as client:
        for spec in config.automations:
            if webhook_url:
                await _ensure_webhook_block(spec, webhook_url)
            try:
                doc = await client.read_block_document_by_name(
                    spec.block_name, spec.block_type_slug, include_secrets=False
                )
            except ObjectNotFound:
                raise AutomationsConfigError(
                    f"{spec.name}: notify_block {spec.notify_block!r} does not exist: create "
                    f"it in the UI (Blocks → +) or set {WEBHOOK_ENV} for a Custom Webhook"
                ) from None
            want = automation_for(spec, doc.id)
            found = await client.read_automations_by_name(spec.name)
            if not found:
                await client.create_automation(want)
                outcome[spec.name] = "created"
                continue
            keep, *extra = found
            for dup in extra:
                await client.delete_automation(dup.id)
            if _same(keep, want) and not extra:
                outcome[spec.name] = "unchanged"
            else:
                await client.update_automation(keep.id, want)
                outcome[spec.name] = "updated"
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        outcome = asyncio.run(ensure_automations(config, os.environ.get(WEBHOOK_ENV) or None))
    except AutomationsConfigError as exc:
        print(f"automations: {exc}", file=sys.stderr)
        return 1
    for name, what in outcome.items():
        print(f"automation {name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
