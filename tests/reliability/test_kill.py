"""Kill at step boundaries: `hybridgrid site add` runs in a child process with
``HYBRIDGRID_KILL_AFTER=<step>`` (the flows' test hook exits the PROCESS with 137 right after
that step: no cleanup, no final state sent to Prefect), then the site is added again; the rerun
must converge to a verified site with no duplicate and no orphan in either cloud, and the
master must hold exactly the registered peers.

A kill inside the hub lock (``hub-applied``: the peer is on the master, the lock not yet
given back) leaves the lock's slot taken: asserted through the Prefect API. On a real server
the repossessor frees it once the 60 s lease expires; the harness has no repossessor, so the
test does what it would (``reliab_support.repossess``) before the rerun. After every rerun no
lock is held.

Default (``make test``): 4 boundaries — ``network`` (site network only), ``spoke`` and
``routes`` (spoke, hub and routes run concurrently: the kill can cut the hub branch anywhere,
the hub or registry lock held or not) and ``hub-applied`` (inside the hub lock).
``HYBRIDGRID_KILL_STEPS=all`` kills after every step of add_remote_site
(``checkpoints.ADD_SITE_STEPS``), or give a comma list of step names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reliab_support import (
    HOME_SUBNET,
    KILL_ENV,
    REGISTRY,
    SITE_CLOUD,
    SUMMARY,
    held_slots,
    kill_steps,
    lock_names,
    master_peers,
    registered_spokes,
    repossess,
    site_problems,
)

from hybridgrid.flows.checkpoints import ADD_SITE_STEPS, KILL_EXIT_CODE
from hybridgrid.model import RemoteSite

pytestmark = pytest.mark.dataplane

HYBRIDGRID = shutil.which("hybridgrid", path=str(Path(sys.executable).parent))
DEFAULT_STEPS = ("network", "spoke", "hub-applied", "routes")
LOCKS = lock_names()


def _steps() -> list[str]:
    return kill_steps("HYBRIDGRID_KILL_STEPS", ADD_SITE_STEPS, DEFAULT_STEPS)


STEPS = _steps()


def _site(step: str) -> str:
    return f"k-{step}"


def _spec(step: str) -> str:
    return (
        "wireguard: {cidr: 10.0.0.0/24, port: 51820, keepalive: 25}\n"
        f"home: {{cloud: bielefeld, subnet: {HOME_SUBNET}, master: {{create: true}}, "
        "workers: 1}\n"
        f"sites:\n  - {{name: {_site(step)}, cloud: {SITE_CLOUD}, workers: 1}}\n"
    )


@pytest.fixture(scope="module")
def killed(rel, tmp_path_factory):
    out = {}
    for step in STEPS:
        site = _site(step)
        rel.key_block(site)
        spec = tmp_path_factory.mktemp("kill") / "spec.yaml"
        spec.write_text(_spec(step))
        env = rel.env()
        env[KILL_ENV] = step
        first = subprocess.run(
            [HYBRIDGRID, "site", "add", str(spec), "--site", site, "--registry", REGISTRY],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        rel.watch.text(first.stdout, first.stderr)
        held = held_slots(LOCKS)
        repossess([name for name, n in held.items() if n])
        try:
            rerun, error = rel.add_site(RemoteSite(name=site, cloud=SITE_CLOUD, workers=1)), None
        except Exception as exc:
            rerun, error = None, exc
            rel.watch.text(exc)
        problems = site_problems(rel, site, SITE_CLOUD, workers=1) if rerun else ["rerun failed"]
        out[step] = (first, rerun, error, problems, held, held_slots(LOCKS))
        SUMMARY.kills.append(
            {
                "step": step,
                "killed_rc": first.returncode,
                "rerun_rc": 0 if error is None else 1,
                "verified": bool(rerun and rerun.verified),
                "problems": len(problems),
                "held": sum(held.values()),
            }
        )
    return out


@pytest.mark.parametrize("step", STEPS)
def test_killed_right_after_the_step(killed, step):
    first, *_ = killed[step]
    assert first.returncode == KILL_EXIT_CODE, first.stdout + first.stderr
    assert f"killed after step {step!r}" in first.stderr


@pytest.mark.parametrize("step", STEPS)
def test_rerun_converges_verified(killed, step):
    _, rerun, error, *_ = killed[step]
    assert error is None, repr(error)
    assert rerun.verified, rerun.summary.layers


@pytest.mark.parametrize("step", STEPS)
def test_no_duplicate_and_no_orphan(killed, step):
    problems = killed[step][3]
    assert problems == []


@pytest.mark.parametrize("step", STEPS)
def test_locks_held_by_the_killed_run_and_free_after_the_rerun(killed, step):
    *_, held, after = killed[step]
    hub_lock = LOCKS[0]
    if step == "hub-applied":
        assert held[hub_lock] == 1, held  # killed inside the hub lock: its slot is taken
    elif ADD_SITE_STEPS.index(step) < ADD_SITE_STEPS.index("spoke-key"):
        assert held == dict.fromkeys(LOCKS, 0), held  # the hub was never touched
    assert after == dict.fromkeys(LOCKS, 0), after


def test_master_holds_exactly_the_registered_peers(rel, killed):
    peers = master_peers(rel)
    assert sorted(peers) == sorted(registered_spokes(REGISTRY).values())
    assert len(peers) == len(set(peers))
