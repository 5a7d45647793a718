"""`hybridgrid plan SPEC --live` on a built seed link (localcloud, real WireGuard): 0 changes
on the converged site; after one security-group rule is deleted by hand, exactly that rule as
one add. The plan touches nothing: localcloud counts 0 mutating API calls while it runs.

Its own registry (`plan-live`), the seed's names and examples/seed.yaml as the spec (the plan
compares the home by its subnet; the master is the registry's).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite

pytestmark = pytest.mark.dataplane

REGISTRY = "plan-live"
SPEC = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
HOME = HomeSite(
    cloud="bielefeld",
    master=MasterSpec(create=True),
    subnet=ipaddress.IPv4Network("192.168.66.0/24"),
    workers=1,
)
GIESSEN = RemoteSite(name="giessen", subnet=ipaddress.IPv4Network("192.168.77.0/24"), workers=1)


@pytest.fixture(scope="module")
def built(seed_clouds):
    asyncio.run(bootstrap_home(HOME, options=HomeOptions(registry=REGISTRY)))
    result = asyncio.run(add_remote_site(GIESSEN, AddSiteOptions(registry=REGISTRY)))
    assert result.verified, result.summary.layers
    return seed_clouds


def plan_live(clouds, *extra: str) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    """The console script, as a user runs it; and the mutating calls localcloud saw meanwhile."""
    exe = Path(sys.executable).parent / "hybridgrid"
    argv = [str(exe), "plan", str(SPEC), "--live", "--registry", REGISTRY, *extra]
    clouds.reset_stats()
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, check=False, env=clouds.env()
    )
    return out, {c: s["mutating"] for c, s in clouds.stats().items()}


def test_converged_site_plans_no_change(built):
    out, mutating = plan_live(built)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "Plan: 0 to add, 0 to change, 0 to destroy."
    assert "# giessen: no changes" in out.stdout
    assert mutating == {"bielefeld": 0, "giessen": 0}


def test_deleted_rule_is_the_one_add(built):
    data = asyncio.run(load_registry(REGISTRY))
    master_fip = data.home.public_ips["master"]
    conn = built.conn("giessen")
    sg = data.sites["giessen"].resource_ids["sg"]
    udp = [
        r for r in conn.network.security_group_rules(security_group_id=sg) if r.protocol == "udp"
    ]
    assert [r.remote_ip_prefix for r in udp] == [f"{master_fip}/32"]
    conn.network.delete_security_group_rule(udp[0].id)

    out, mutating = plan_live(built, "--json")
    assert out.returncode == 3, out.stdout + out.stderr
    plan = json.loads(out.stdout)
    changes = [c for s in plan["sites"] for c in s["changes"]]
    assert changes == [
        {
            "action": "add",
            "kind": "rule",
            "name": "hg-giessen-sg",
            "detail": f"ingress udp 51820-51820 from {master_fip}/32",
        }
    ]
    assert (plan["to_add"], plan["to_change"], plan["to_destroy"]) == (1, 0, 0)
    assert mutating == {"bielefeld": 0, "giessen": 0}

    out, mutating = plan_live(built)
    assert out.returncode == 3, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert f"+ rule hg-giessen-sg ingress udp 51820-51820 from {master_fip}/32" in lines
    assert [x for x in lines if x[:2] in ("+ ", "~ ", "- ", "! ")] == [
        f"+ rule hg-giessen-sg ingress udp 51820-51820 from {master_fip}/32"
    ]
    assert lines[-1] == "Plan: 1 to add, 0 to change, 0 to destroy."
    assert mutating == {"bielefeld": 0, "giessen": 0}
