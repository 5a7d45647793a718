"""The flows' typed parts without a cloud: the registry update a run records, the home the
flows require, the forms' acceptance of core models, and the flows' function lengths."""

from __future__ import annotations

import ast
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from hybridgrid.flows.forms import HomeForm, SiteForm
from hybridgrid.flows.home import ReadyHome, require_home
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite, TopologyError
from hybridgrid.registry_data import HomeEntry, RegistryData, SiteEntry, SiteUpdate

ENTRY = SiteEntry(
    cloud="giessen",
    subnet="192.168.64.0/24",
    wg_address="10.0.0.2",
    spoke_public_key="old",
    hub_public_key="hub",
    public_ips={"vpn": "203.0.113.5"},
)


def test_an_update_sets_its_fields_and_keeps_the_others() -> None:
    site = SiteForm(name="giessen", workers=2)
    new = SiteUpdate(spoke_public_key="new", spec=site, fixed_ips={"vpn": "192.168.64.10"})
    entry = new.applied_to(ENTRY)
    assert entry.spoke_public_key == "new" and entry.hub_public_key == "hub"
    assert entry.public_ips == {"vpn": IPv4Address("203.0.113.5")}
    assert entry.fixed_ips == {"vpn": IPv4Address("192.168.64.10")}
    assert type(entry.spec) is RemoteSite and entry.spec.workers == 2
    assert ENTRY.spoke_public_key == "old"  # the entry it was applied to is unchanged


def test_an_update_that_sets_none_clears_the_field() -> None:
    assert SiteUpdate(spoke_public_key=None).applied_to(ENTRY).spoke_public_key is None


def test_an_update_names_only_entry_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        SiteUpdate(spoke_key="typo")  # type: ignore[call-arg]


def _home(**fields) -> HomeEntry:
    base = dict(
        name="bielefeld",
        cloud="bielefeld",
        subnet="192.168.66.0/24",
        wg_address="10.0.0.1",
        master="hg-bielefeld-master",
        ssh_key_block="hg-bielefeld-ssh",
        host_keys={"hg-bielefeld-master": ["ssh-ed25519 AAAA"]},
    )
    return HomeEntry(**{**base, **fields})


def test_a_ready_home_carries_what_was_checked() -> None:
    home = require_home(RegistryData(home=_home()), "reg")
    assert isinstance(home, ReadyHome)
    assert home.master_host_keys == ["ssh-ed25519 AAAA"]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"master": None}, "no home cluster"),
        ({"ssh_key_block": None}, "no home cluster"),
        ({"host_keys": {}}, "no pinned host key"),
    ],
)
def test_an_unready_home_says_what_to_run(fields, match) -> None:
    with pytest.raises(TopologyError, match=match):
        require_home(RegistryData(home=_home(**fields)), "reg")
    with pytest.raises(TopologyError, match="no home cluster"):
        require_home(RegistryData(), "reg")


def test_forms_accept_their_core_models() -> None:
    site = SiteForm.model_validate(RemoteSite(name="giessen", cloud="giessen"))
    assert isinstance(site, SiteForm) and site.cloud == "giessen"
    home = HomeSite(cloud="bielefeld", subnet="192.168.66.0/24", master=MasterSpec(create=True))
    assert HomeForm.model_validate(home).cloud == "bielefeld"


def test_no_flow_function_is_over_80_lines() -> None:
    flows = Path(__file__).resolve().parents[1] / "flows"
    long = [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(flows.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []
