"""The flows' step boundaries: the kill-test hook (`checkpoint`) and the named steps of each
flow, in order (tests/reliability kills the process after each one and checks that a rerun
converges)."""

from __future__ import annotations

import contextlib
import os
import sys

from prefect import get_run_logger

KILL_ENV = "HYBRIDGRID_KILL_AFTER"
KILL_EXIT_CODE = 137  # what a SIGKILLed process reports

# The step boundaries of add_remote_site, in order (reliability tests kill after each one).
ADD_SITE_STEPS = (
    "validated",
    "preflight",
    "allocated",
    "network",
    "servers-launched",
    "rules",
    "ssh-ready",
    "spoke-key",
    "spoke",  # spoke, hub and routes run concurrently: killing after one may cut the others
    "hub-applied",  # inside the hub lock (flows.hub.hub_lock), the peer and pairs applied
    "hub",
    "routes",
    "verified",
    "recorded",
)
# remove_remote_site: inside the hub lock with the peer off wg0 and its pair off the master's
# port, then after the lock, the home rules/routes + the site's tagged resources, key pair +
# key block, the registry entry. ("hub-applied" fires in every flow that takes the hub lock.)
REMOVE_SITE_STEPS = ("hub-applied", "peer-removed", "resources-removed", "keys-removed", "released")
BOOTSTRAP_STEPS = ("preflight", "servers-launched", "master-ready", "recorded")


def checkpoint(step: str) -> None:
    """Mark a step boundary of a flow.

    Test hook: with ``HYBRIDGRID_KILL_AFTER=<step>`` (any flow) or ``<flow>:<step>`` (e.g.
    ``add-remote-site:servers-launched``) in the environment, the whole PROCESS exits at once
    (``os._exit(137)``, like SIGKILL: no cleanup, no final state reported to Prefect — the run
    stays "Running" — and locks left to expire) right after that step: what a crashed worker
    or a killed laptop leaves behind. A rerun must converge from there. Steps:
    ``ADD_SITE_STEPS``, ``REMOVE_SITE_STEPS``, ``BOOTSTRAP_STEPS``. Unset in normal use.
    """
    want = os.environ.get(KILL_ENV)
    if want and _is_hit(want, step):
        with contextlib.suppress(Exception):
            get_run_logger().warning("%s=%s: exiting the process now (test hook)", KILL_ENV, step)
        sys.stderr.write(f"hybridgrid: {KILL_ENV}={step}: killed after step {step!r}\n")
        sys.stderr.flush()
        os._exit(KILL_EXIT_CODE)


def _is_hit(want: str, step: str) -> bool:
    if ":" not in want:
        return want == step
    from prefect.runtime import flow_run

    want_flow, _, want_step = want.partition(":")
    return want_step == step and flow_run.flow_name == want_flow
