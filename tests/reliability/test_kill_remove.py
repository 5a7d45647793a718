"""Kill remove_remote_site at its step boundaries (``checkpoints.REMOVE_SITE_STEPS``):
`hybridgrid site remove` runs in a child process with
``HYBRIDGRID_KILL_AFTER=remove-remote-site:<step>`` (the process exits 137 right after the
step), then the removal runs again in this process. The rerun must succeed and leave none of
the site's tagged resources in either cloud, no key pair, no peer for the site on the master,
no registry entry and no lock held.

Sites: the ones test_kill.py converged (``k-*``, one per step) when they are registered — a
removal after a kill and a rerun is the realistic case and costs no extra build — else a fresh
site (0 workers) per step.

Default (``make test``): ``hub-applied`` (killed inside the hub lock, the peer already off
wg0: the lock's slot is left taken) and ``resources-removed`` (the site's servers and networks
gone, key pair, key block and registry entry still there). ``HYBRIDGRID_KILL_STEPS=all`` or
``HYBRIDGRID_KILL_REMOVE_STEPS=all`` (or a comma list) kills after every step.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reliab_support import (
    CLOUDS,
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
)

from hybridgrid.flows.checkpoints import KILL_EXIT_CODE, REMOVE_SITE_STEPS
from hybridgrid.model import RemoteSite

pytestmark = pytest.mark.dataplane

HYBRIDGRID = shutil.which("hybridgrid", path=str(Path(sys.executable).parent))
DEFAULT_STEPS = ("hub-applied", "resources-removed")
LOCKS = lock_names()


def _steps() -> list[str]:
    return kill_steps("HYBRIDGRID_KILL_REMOVE_STEPS", REMOVE_SITE_STEPS, DEFAULT_STEPS)


STEPS = _steps()


def _registry():
    from hybridgrid.blocks.registry import load_registry

    return asyncio.run(load_registry(REGISTRY))


def _sites(rel) -> dict[str, str]:
    """step -> a verified, registered site to remove."""
    data = _registry()
    spare = sorted(n for n, e in data.sites.items() if n.startswith("k-") and e.spoke_public_key)
    out = {}
    for i, step in enumerate(STEPS):
        if spare:
            out[step] = spare.pop(0)
            continue
        name = f"kr-{i}"
        rel.key_block(name)
        result = rel.add_site(RemoteSite(name=name, cloud=SITE_CLOUD, workers=0))
        assert result.verified, result.summary.layers
        out[step] = name
    return out


def _key_pairs(rel, site: str) -> list[str]:
    return [k.name for k in rel.conn(SITE_CLOUD).compute.keypairs() if k.name == f"hg-{site}-key"]


@pytest.fixture(scope="module")
def removed(rel):
    from hybridgrid.flows.remove_remote_site import remove_remote_site

    out = {}
    for step, site in _sites(rel).items():
        spoke = _registry().sites[site].spoke_public_key
        env = rel.env()
        env[KILL_ENV] = f"remove-remote-site:{step}"
        first = subprocess.run(
            [HYBRIDGRID, "site", "remove", site, "--registry", REGISTRY],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        rel.watch.text(first.stdout, first.stderr)
        held = held_slots(LOCKS)
        repossess([name for name, n in held.items() if n])
        registered_after_kill = site in _registry().sites
        try:
            rerun, error = asyncio.run(remove_remote_site(site, registry=REGISTRY)), None
        except Exception as exc:
            rerun, error = None, exc
            rel.watch.text(exc)
        left = {
            "tagged": sum(rel.tagged(cloud, site) for cloud in CLOUDS),
            "key pairs": _key_pairs(rel, site),
            "peer on the master": spoke in master_peers(rel),
            "registered": site in _registry().sites,
            "locks": held_slots(LOCKS),
        }
        out[step] = (site, first, held, registered_after_kill, rerun, error, left)
        SUMMARY.kills.append(
            {
                "flow": "remove",
                "step": step,
                "killed_rc": first.returncode,
                "held": sum(held.values()),
                "rerun_rc": 0 if error is None else 1,
                "verified": error is None,
                "problems": sum(
                    1 for k, v in left.items() if (any(v.values()) if k == "locks" else v)
                ),
            }
        )
    return out


@pytest.mark.parametrize("step", STEPS)
def test_killed_right_after_the_step(removed, step):
    _, first, held, registered_after_kill, *_ = removed[step]
    assert first.returncode == KILL_EXIT_CODE, first.stdout + first.stderr
    assert f"killed after step {step!r}" in first.stderr
    # every step before "released" leaves the entry for the rerun to resume from
    assert registered_after_kill == (step != "released")
    if step == "hub-applied":
        assert held[LOCKS[0]] == 1, held  # killed inside the hub lock: its slot is taken


@pytest.mark.parametrize("step", STEPS)
def test_rerun_succeeds(removed, step):
    site, _, _, registered_after_kill, rerun, error, _ = removed[step]
    assert error is None, repr(error)
    assert rerun.site == site and rerun.registered == registered_after_kill


@pytest.mark.parametrize("step", STEPS)
def test_nothing_of_the_site_is_left(removed, step):
    site, *_, left = removed[step]
    assert left == {
        "tagged": 0,
        "key pairs": [],
        "peer on the master": False,
        "registered": False,
        "locks": dict.fromkeys(LOCKS, 0),
    }, site


def test_master_holds_exactly_the_registered_peers(rel, removed):
    peers = master_peers(rel)
    assert sorted(peers) == sorted(registered_spokes(REGISTRY).values())
