"""`hybridgrid plan`: the real console script on real spec files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybridgrid.desired import WiredPlan
from hybridgrid.model import TopologyError
from hybridgrid.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed.yaml"
THREE = ROOT / "examples" / "three-sites.yaml"
HYBRIDGRID = shutil.which("hybridgrid", path=str(Path(sys.executable).parent))

HEAD = """\
wireguard: {cidr: 10.0.0.0/24, port: 51820, keepalive: 25}
home: {cloud: bielefeld, subnet: 192.168.66.0/24, master: {name: master-1}}
sites:
"""


def run(*args: str) -> subprocess.CompletedProcess:
    assert HYBRIDGRID, "the hybridgrid console script is not installed in the venv"
    return subprocess.run(
        [HYBRIDGRID, *args], capture_output=True, text=True, timeout=60, check=False
    )


def write_spec(tmp_path: Path, sites: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + sites)
    return str(path)


def test_plan_table_shows_the_seed_values():
    out = run("plan", str(SEED))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for value in (
        "bielefeld",
        "192.168.66.0/24",
        "master-1",
        "giessen",
        "192.168.77.0/24",
        "10.0.0.0/24",
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.2/32",
        "51820",
        "keepalive 25",
        "1370",
        "1450",
    ):
        assert value in text, value


def test_plan_json_is_the_resolved_plan():
    out = run("plan", str(SEED), "--json")
    assert out.returncode == 0, out.stderr
    p = WiredPlan.model_validate_json(out.stdout)
    g = p.site("giessen")
    assert (str(p.home.subnet), str(p.home.wg_address)) == ("192.168.66.0/24", "10.0.0.1")
    assert (str(g.subnet), str(g.wg_address), g.listen_port) == (
        "192.168.77.0/24",
        "10.0.0.2",
        51820,
    )
    assert (p.wireguard.keepalive, p.tunnel_mtu, p.network_mtu) == (25, 1370, 1450)
    # what the flow applies (tests/e2e/test_seed.py): the site pool too, so later sites are
    # reachable without touching this one. The plan used to leave the pool out.
    assert [str(n) for n in g.wiring.spoke_allowed_ips] == [
        "10.0.0.0/24",
        "192.168.66.0/24",
        "192.168.64.0/18",
    ]
    assert [str(n) for n in g.wiring.hub_allowed_ips] == ["10.0.0.2/32", "192.168.77.0/24"]


def test_plan_allocates_heidelberg_and_honours_network_mtu():
    out = run("plan", str(THREE), "--json", "--network-mtu", "1500")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    h = next(s for s in data["sites"] if s["name"] == "heidelberg")
    assert h["subnet"] == "192.168.64.0/24" and h["subnet_from"] == "pool"
    assert h["wg_address"] == "10.0.0.3"
    assert data["tunnel_mtu"] == 1420


@pytest.mark.parametrize(
    ("sites", "field", "words"),
    [
        (
            "  - {name: giessen, subnet: 192.168.77.0/24}\n"
            "  - {name: mainz, subnet: 192.168.77.128/25}\n",
            "sites[1].subnet",
            "overlaps the subnet of site 'giessen'",
        ),
        ("  - {name: giessen, subnet: 10.0.0.0/16}\n", "sites[0].subnet", "WireGuard CIDR"),
        ("  - {name: Giessen_1}\n", "sites[0].name", "not a valid site name"),
        (
            "  - {name: giessen, wg_address: 10.0.0.2}\n  - {name: mainz, wg_address: 10.0.0.2}\n",
            "sites[1].wg_address",
            "10.0.0.2 is already used",
        ),
        ("  - {name: giessen, workers: 99}\n", "sites[0].workers", "at most 50"),
        ("  - {name: giessen, subnett: 192.168.1.0/24}\n", "sites[0].subnett", "unknown field"),
        ("  - {name: giessen\n", "spec.yaml:", "not valid YAML"),
    ],
)
def test_invalid_spec_exits_2_with_one_clear_error(tmp_path, sites, field, words):
    out = run("plan", write_spec(tmp_path, sites))
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and field in lines[0] and words in lines[0]
    assert "Fix:" in lines[0]
    assert "Traceback" not in out.stderr


def test_missing_file_and_low_mtu_exit_2(tmp_path):
    missing = run("plan", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    low = run("plan", str(SEED), "--network-mtu", "1300")
    assert low.returncode == 2 and "network_mtu" in low.stderr and "1220" in low.stderr


def test_plan_does_not_import_prefect_or_openstack():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from hybridgrid.cli import app\n"
        f"r = CliRunner().invoke(app, ['plan', {str(SEED)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('prefect', 'openstack') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_spec_loader_errors():
    assert load_spec(SEED).sites[0].name == "giessen"
    with pytest.raises(TopologyError, match="must be a mapping"):
        parse_spec("- a\n- b\n")
    with pytest.raises(TopologyError) as info:
        parse_spec("home: {cloud: bielefeld, subnet: 192.168.66.0/24}\n")
    assert info.value.field == "home.master"


def test_plan_keeps_registered_allocations(prefect_harness):
    import asyncio
    import os

    from prefect.settings import PREFECT_API_URL

    from hybridgrid.blocks.registry import update_registry
    from hybridgrid.registry_data import SiteEntry

    def register(data):
        data.sites["heidelberg"] = SiteEntry(
            cloud="heidelberg", subnet="192.168.90.0/24", wg_address="10.0.0.9"
        )
        data.sites["mainz"] = SiteEntry(
            cloud="mainz", subnet="192.168.64.0/24", wg_address="10.0.0.3"
        )

    asyncio.run(update_registry(register, "plan-cli"))
    out = subprocess.run(
        [HYBRIDGRID, "plan", str(THREE), "--json", "--registry", "plan-cli"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    assert out.returncode == 0, out.stderr
    p = WiredPlan.model_validate_json(out.stdout)
    h = p.site("heidelberg")
    assert (str(h.subnet), str(h.wg_address), h.subnet_from) == (
        "192.168.90.0/24",
        "10.0.0.9",
        "registry",
    )
    # giessen keeps its spec values; nothing collides with mainz, registered elsewhere
    assert str(p.site("giessen").subnet) == "192.168.77.0/24"
    assert str(p.site("giessen").wg_address) == "10.0.0.2"


def test_plan_help_documents_live_and_its_exit_codes():
    out = run("plan", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--live" in text and "3 changes pending" in text and "2 bad input" in text


def test_plan_live_needs_a_server(tmp_path):
    import os

    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(tmp_path)}
    out = subprocess.run(
        [HYBRIDGRID, "plan", str(SEED), "--live"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert out.returncode == 2 and "does not answer" in out.stderr, out.stderr
    assert out.stdout == ""


def test_plan_live_needs_the_specs_home(prefect_harness):
    """No home in the registry: exit 1 and the command that makes one; another home's
    registry: exit 2 (bad input), as `site add` says it. Neither reads a cloud."""
    import asyncio
    import os

    from prefect.settings import PREFECT_API_URL

    from hybridgrid.blocks.registry import update_registry
    from hybridgrid.registry_data import HomeEntry

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

    def plan_live(registry: str) -> subprocess.CompletedProcess:
        argv = [HYBRIDGRID, "plan", str(SEED), "--live", "--registry", registry]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, check=False, env=env
        )

    empty = plan_live("plan-live-none")
    assert empty.returncode == 1 and "has no home cluster" in empty.stderr, empty.stderr
    assert "hybridgrid home bootstrap" in empty.stderr

    def other_home(data):
        data.home = HomeEntry(
            name="bielefeld",
            cloud="bielefeld",
            subnet="192.168.99.0/24",
            wg_address="10.0.0.1",
            master="hg-bielefeld-master",
        )

    asyncio.run(update_registry(other_home, "plan-live-other"))
    other = plan_live("plan-live-other")
    assert other.returncode == 2, other.stderr
    assert other.stderr.startswith("error: home.subnet: the spec says 192.168.66.0/24")
