"""Fault and latency injection, per cloud, reproducible from a seed. Off by default.

Configured by ``<state-dir>/faults.yaml`` (or the file named by ``LOCALCLOUD_FAULTS_FILE``),
re-read whenever the file changes, so tests and benchmarks switch faults on and off while the
server runs (``localcloud.control.set_faults`` writes it atomically). The file maps a cloud
name, or ``"*"`` for every cloud, to a `CloudFaults`::

    bielefeld:
      seed: 7
      latency: {ms: 40, jitter_ms: 10}     # per call: normal(ms, jitter), never below 0
      errors:                              # each rule is tried in order; first hit answers
        - rate: 0.2
          codes: [500, 503, 409, drop]     # drop = close the connection without an answer
          service: network                 # optional: identity | compute | network | image
          method: POST                     # optional
          path: floatingips                # optional regex, searched in the path
          after: false                     # true: do the work, then lose the answer
      boot_delay: 5                        # seconds from create until ACTIVE
      boot_failure_rate: 0.1               # share of servers that end in ERROR
      boot_failures: 1                     # the next N boots end in ERROR (then the rate)
      console_delay: 3                     # seconds after ACTIVE until the console shows keys

The environment variable ``LOCALCLOUD_FAULTS`` (inline YAML or JSON, same format) is written to
that file when the server starts, replacing what was there.

Token issue and version discovery are never failed unless ``include_token_issue`` /
``include_discovery`` is true, so clients can always authenticate; latency applies to them.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

FAULTS_FILE = "faults.yaml"


class Latency(BaseModel):
    ms: float = 0.0
    jitter_ms: float = 0.0


class ErrorRule(BaseModel):
    rate: float = Field(ge=0.0, le=1.0)
    codes: list[int | Literal["drop"]] = Field(default_factory=lambda: [500, 503])
    service: Literal["identity", "compute", "network", "image"] | None = None
    method: str | None = None
    path: str | None = None
    # after: the request is carried out, then its answer is replaced by the error (or the
    # connection dropped) - the "did my create happen?" case that makes clients duplicate.
    after: bool = False

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: list) -> list:
        if not v:
            raise ValueError("codes: give at least one of 500, 503, 409, ... or 'drop'")
        bad = [c for c in v if c != "drop" and not 400 <= int(c) <= 599]
        if bad:
            raise ValueError(f"codes: {bad} are not HTTP error codes (use 400..599 or 'drop')")
        return v

    def matches(self, service: str, method: str, path: str) -> bool:
        return (
            (self.service is None or self.service == service)
            and (self.method is None or self.method.upper() == method)
            and (self.path is None or re.search(self.path, path) is not None)
        )


class CloudFaults(BaseModel):
    seed: int = 0
    latency: Latency = Field(default_factory=Latency)
    errors: list[ErrorRule] = Field(default_factory=list)
    include_token_issue: bool = False
    include_discovery: bool = False
    boot_delay: float = Field(default=0.0, ge=0)
    boot_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # "Fail exactly once" for replace-on-ERROR tests: counted from when this file is loaded.
    boot_failures: int = Field(default=0, ge=0)
    console_delay: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: object) -> object:
        # `latency_ms: 40` and `error_rate: 0.2` as short forms.
        if isinstance(data, dict):
            data = dict(data)
            if "latency_ms" in data:
                data["latency"] = {"ms": data.pop("latency_ms")}
            if "error_rate" in data:
                rule = {"rate": data.pop("error_rate")}
                if "error_codes" in data:
                    rule["codes"] = data.pop("error_codes")
                data["errors"] = [rule, *data.get("errors", [])]
        return data


class FaultsConfig(BaseModel):
    clouds: dict[str, CloudFaults] = Field(default_factory=dict)

    def for_cloud(self, name: str) -> CloudFaults:
        return self.clouds.get(name) or self.clouds.get("*") or CloudFaults()


def parse_faults(data: object) -> FaultsConfig:
    return FaultsConfig(clouds=data or {})  # type: ignore[arg-type]


def faults_path(state_dir: Path) -> Path:
    return Path(os.environ.get("LOCALCLOUD_FAULTS_FILE") or Path(state_dir) / FAULTS_FILE)


def write_faults(state_dir: Path, data: dict) -> None:
    """Validate and write the faults file atomically (the running server picks it up)."""
    parse_faults(data)
    path = faults_path(state_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def faults_from_env(state_dir: Path) -> None:
    """Start-up: ``LOCALCLOUD_FAULTS`` (inline YAML/JSON) becomes the faults file."""
    raw = os.environ.get("LOCALCLOUD_FAULTS")
    if raw:
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"LOCALCLOUD_FAULTS is not valid YAML/JSON: {exc}") from exc
        write_faults(state_dir, data or {})


class Decision(BaseModel):
    delay: float = 0.0  # seconds
    error: int | Literal["drop"] | None = None
    after: bool = False  # error only after the request was carried out


class FaultInjector:
    """Reads the faults file when it changes and draws decisions from seeded generators."""

    def __init__(self, state_dir: Path) -> None:
        self.path = faults_path(state_dir)
        self._stamp: tuple[int, int] | None = None
        self.config = FaultsConfig()
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self._boots_failed: dict[str, int] = {}
        self.reload()

    def reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None:
                self._stamp, self.config, self._rngs = None, FaultsConfig(), {}
                self._boots_failed = {}
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._stamp:
            return
        self.config = parse_faults(yaml.safe_load(self.path.read_text()))
        self._stamp = stamp
        self._rngs = {}  # a new configuration restarts every stream from its seed
        self._boots_failed = {}  # ... and every `boot_failures` count

    def _rng(self, cloud: str, stream: str) -> random.Random:
        key = (cloud, stream)
        if key not in self._rngs:
            seed = self.for_cloud(cloud).seed
            self._rngs[key] = random.Random(f"{seed}/{cloud}/{stream}")  # noqa: S311
        return self._rngs[key]

    def for_cloud(self, cloud: str) -> CloudFaults:
        return self.config.for_cloud(cloud)

    def decide(
        self, cloud: str, service: str, method: str, path: str, token_issue: bool, discovery: bool
    ) -> Decision:
        self.reload()
        f = self.for_cloud(cloud)
        delay = 0.0
        if f.latency.ms or f.latency.jitter_ms:
            ms = self._rng(cloud, "latency").gauss(f.latency.ms, f.latency.jitter_ms)
            delay = max(0.0, ms) / 1000.0
        exempt = (token_issue and not f.include_token_issue) or (
            discovery and not f.include_discovery
        )
        if not exempt:
            rng = self._rng(cloud, "errors")
            for rule in f.errors:
                if rule.matches(service, method, path) and rng.random() < rule.rate:
                    code = rng.choice(rule.codes)
                    return Decision(delay=delay, error=code, after=rule.after)
        return Decision(delay=delay)

    def boot_fails(self, cloud: str) -> bool:
        self.reload()
        f = self.for_cloud(cloud)
        if self._boots_failed.get(cloud, 0) < f.boot_failures:
            self._boots_failed[cloud] = self._boots_failed.get(cloud, 0) + 1
            return True
        rate = f.boot_failure_rate
        return rate > 0 and self._rng(cloud, "boot").random() < rate
