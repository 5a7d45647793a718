"""The topology model: seed values, validation errors, allocation, MTU, names (the wiring
that follows from a plan: tests/test_desired.py)."""

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hybridgrid import naming
from hybridgrid.model import (
    Allocation,
    Plan,
    Topology,
    TopologyError,
    plan,
    topology_error,
    tunnel_mtu,
)

HOME = {"cloud": "bielefeld", "subnet": "192.168.66.0/24", "master": {"name": "master-1"}}
SEED = {
    "wireguard": {"cidr": "10.0.0.0/24", "port": 51820, "keepalive": 25},
    "home": HOME,
    "sites": [{"name": "giessen", "cloud": "giessen", "subnet": "192.168.77.0/24", "workers": 1}],
}


def topo(*sites, **extra):
    return Topology.model_validate({"home": HOME, "sites": list(sites), **extra})


def error_of(data) -> TopologyError:
    with pytest.raises(ValidationError) as info:
        Topology.model_validate(data)
    return topology_error(info.value)


def test_seed_plan_has_the_seed_values():
    p = plan(Topology.model_validate(SEED))
    assert p.home.name == "bielefeld"
    assert p.home.subnet == IPv4Network("192.168.66.0/24")
    assert p.home.wg_address == IPv4Address("10.0.0.1")
    assert p.home.master.name == "master-1" and not p.home.master.create
    giessen = p.site("giessen")
    assert giessen.subnet == IPv4Network("192.168.77.0/24")
    assert giessen.wg_address == IPv4Address("10.0.0.2")
    assert (giessen.listen_port, p.wireguard.keepalive) == (51820, 25)
    assert (p.network_mtu, p.tunnel_mtu) == (1450, 1370)
    assert giessen.vpn_flavor == "de.NBI tiny" and giessen.image == "ubuntu-22.04"


def test_topology_and_plan_round_trip_through_json():
    t = topo({"name": "giessen", "subnet": "192.168.77.0/24"}, {"name": "heidelberg"})
    assert Topology.model_validate_json(t.model_dump_json()) == t
    p = plan(t)
    assert Plan.model_validate_json(p.model_dump_json()) == p


def test_defaults_cloud_is_site_name_and_home_name_is_cloud():
    t = topo({"name": "mainz"})
    assert t.sites[0].cloud == "mainz"
    assert t.home.name == "bielefeld"


@pytest.mark.parametrize(
    ("sites", "extra", "field", "words"),
    [
        ([{"name": "Gießen"}], {}, "sites[0].name", "not a valid site name"),
        ([{"name": "a" * 21}], {}, "sites[0].name", "not a valid site name"),
        ([{"name": "-x"}], {}, "sites[0].name", "not a valid site name"),
        ([{"name": "a"}, {"name": "a"}], {}, "sites[1].name", "already used"),
        ([{"name": "bielefeld"}], {}, "sites[0].name", "already used by home.name"),
        ([{"name": "a", "subnet": "10.0.0.128/25"}], {}, "sites[0].subnet", "WireGuard CIDR"),
        ([{"name": "a", "subnet": "192.168.66.0/25"}], {}, "sites[0].subnet", "home subnet"),
        (
            [
                {"name": "a", "subnet": "192.168.77.0/24"},
                {"name": "b", "subnet": "192.168.76.0/22"},
            ],
            {},
            "sites[1].subnet",
            "subnet of site 'a'",
        ),
        ([{"name": "a", "subnet": "192.168.77.1/24"}], {}, "sites[0].subnet", "IPv4 network"),
        (
            [{"name": "a", "wg_address": "10.0.0.9"}, {"name": "b", "wg_address": "10.0.0.9"}],
            {},
            "sites[1].wg_address",
            "already used by site 'a'",
        ),
        ([{"name": "a", "wg_address": "10.0.0.1"}], {}, "sites[0].wg_address", "the hub"),
        ([{"name": "a", "wg_address": "10.0.1.5"}], {}, "sites[0].wg_address", "outside"),
        ([{"name": "a", "wg_address": "10.0.0.255"}], {}, "sites[0].wg_address", "broadcast"),
        ([{"name": "a", "wg_address": "10.0.0.0"}], {}, "sites[0].wg_address", "network"),
        ([{"name": "a", "listen_port": 0}], {}, "sites[0].listen_port", "at least 1"),
        ([], {"wireguard": {"port": 70000}}, "wireguard.port", "at most 65535"),
        ([{"name": "a", "workers": 51}], {}, "sites[0].workers", "at most 50"),
        ([{"name": "a", "workers": -1}], {}, "sites[0].workers", "at least 0"),
        (
            [{"name": "a", "subnet": "192.168.77.0/29", "workers": 5}],
            {},
            "sites[0].subnet",
            "larger",
        ),
        ([{"name": "a", "wokers": 2}], {}, "sites[0].wokers", "unknown field"),
        ([{"name": "a", "cloud": "Giessen Cloud"}], {}, "sites[0].cloud", "block name"),
        ([], {"site_pool": "192.168.64.0/25"}, "site_pool", "/24"),
        ([], {"wireguard": {"cidr": "10.0.0.0/31"}}, "wireguard.cidr", "no room"),
    ],
)
def test_bad_input_names_the_field_and_the_fix(sites, extra, field, words):
    err = error_of({"home": HOME, "sites": sites, **extra})
    assert err.field == field
    assert words in str(err)
    assert err.fix and "Fix:" in str(err)


@pytest.mark.parametrize(
    ("home", "field", "words"),
    [
        ({**HOME, "subnet": "10.0.0.0/16"}, "home.subnet", "WireGuard CIDR"),
        ({**HOME, "master": {}}, "home.master", "either a server name"),
        ({**HOME, "master": {"name": "m", "create": True}}, "home.master", "not both"),
        ({**HOME, "wg_address": "10.9.0.1"}, "home.wg_address", "outside"),
        ({**HOME, "cloud": "UPPER"}, "home.name", "home name"),
        ({k: v for k, v in HOME.items() if k != "subnet"}, "home.subnet", "add this field"),
    ],
)
def test_bad_home_names_the_field(home, field, words):
    err = error_of({"home": home})
    assert err.field == field
    assert words in str(err)


def test_home_master_can_be_created():
    t = Topology.model_validate({"home": {**HOME, "master": {"create": True}}})
    assert t.home.master.create and t.home.master.name is None


def test_allocation_takes_lowest_free_subnet_and_next_address():
    t = topo(
        {"name": "giessen", "subnet": "192.168.64.0/24"},
        {"name": "heidelberg"},
        {"name": "mainz", "wg_address": "10.0.0.3"},
    )
    p = plan(t)
    # .64 is giessen's, .66 is home's: heidelberg gets .65, mainz .67
    assert str(p.site("heidelberg").subnet) == "192.168.65.0/24"
    assert str(p.site("mainz").subnet) == "192.168.67.0/24"
    assert str(p.site("giessen").wg_address) == "10.0.0.2"
    assert str(p.site("heidelberg").wg_address) == "10.0.0.4"
    assert p.site("heidelberg").subnet_from == "pool"
    assert p.site("mainz").wg_address_from == "spec"


def test_addresses_start_after_the_hub_and_wrap():
    t = topo({"name": "a"}, {"name": "b"}, wireguard={"cidr": "10.0.0.0/29"})
    t.home.wg_address = IPv4Address("10.0.0.5")
    p = plan(t)
    assert [str(s.wg_address) for s in p.sites] == ["10.0.0.6", "10.0.0.1"]


def test_existing_allocations_are_kept_and_avoided():
    existing = {
        "heidelberg": Allocation(subnet="192.168.90.0/24", wg_address="10.0.0.7"),
        "elsewhere": Allocation(subnet="192.168.64.0/24", wg_address="10.0.0.2"),
    }
    p = plan(topo({"name": "giessen"}, {"name": "heidelberg"}), existing)
    assert str(p.site("heidelberg").subnet) == "192.168.90.0/24"
    assert p.site("heidelberg").subnet_from == "registry"
    assert str(p.site("heidelberg").wg_address) == "10.0.0.7"
    assert str(p.site("giessen").subnet) == "192.168.65.0/24"
    assert str(p.site("giessen").wg_address) == "10.0.0.3"
    # re-planning with the new allocation registered moves nothing
    existing["giessen"] = Allocation(subnet="192.168.65.0/24", wg_address="10.0.0.3")
    again = plan(topo({"name": "heidelberg"}, {"name": "giessen"}), existing)
    assert again.site("giessen").subnet == p.site("giessen").subnet
    assert again.site("giessen").wg_address == p.site("giessen").wg_address


def test_spec_conflicting_with_registry_is_an_error():
    existing = {"giessen": Allocation(subnet="192.168.77.0/24", wg_address="10.0.0.2")}
    with pytest.raises(TopologyError) as moved:
        plan(topo({"name": "giessen", "subnet": "192.168.78.0/24"}), existing)
    assert moved.value.field == "sites[0].subnet" and "cannot move" in str(moved.value)
    with pytest.raises(TopologyError) as clash:
        plan(topo({"name": "mainz", "subnet": "192.168.77.0/25"}), existing)
    assert clash.value.field == "sites[0].subnet" and "'giessen'" in str(clash.value)
    with pytest.raises(TopologyError) as addr:
        plan(topo({"name": "mainz", "wg_address": "10.0.0.2"}), existing)
    assert addr.value.field == "sites[0].wg_address"


def test_pool_exhaustion_is_a_clear_error():
    t = topo({"name": "a"}, {"name": "b"}, {"name": "c"}, site_pool="192.168.64.0/23")
    with pytest.raises(TopologyError) as info:
        plan(t)
    assert info.value.field == "sites[2].subnet"
    assert "no free /24" in str(info.value) and "enlarge site_pool" in str(info.value)


def test_tunnel_mtu():
    assert tunnel_mtu(1450) == 1370
    assert tunnel_mtu(1500) == 1420
    assert tunnel_mtu(1360) == 1280
    with pytest.raises(TopologyError, match="network_mtu: underlay MTU 1359"):
        tunnel_mtu(1359)
    with pytest.raises(TopologyError):
        plan(topo(), network_mtu=1000)


# ---- property tests -------------------------------------------------------------------------

NAMES = [f"s{i}" for i in range(12)]


@st.composite
def registries(draw):
    """Valid registry contents: disjoint subnets of any size, distinct overlay addresses."""
    count = draw(st.integers(0, 10))
    taken = [IPv4Network("192.168.66.0/24"), IPv4Network("10.0.0.0/24")]
    addrs = {IPv4Address("10.0.0.1")}
    out = {}
    for name in draw(st.permutations(NAMES))[:count]:
        prefix = draw(st.integers(20, 28))
        base = draw(
            st.integers(int(IPv4Address("192.168.0.0")), int(IPv4Address("192.168.255.255")))
        )
        net = IPv4Network(f"{IPv4Address(base)}/{prefix}", strict=False)
        addr = IPv4Address(int(IPv4Address("10.0.0.0")) + draw(st.integers(2, 254)))
        if any(net.overlaps(t) for t in taken) or addr in addrs:
            continue
        taken.append(net)
        addrs.add(addr)
        out[name] = Allocation(subnet=net, wg_address=addr)
    return out


@settings(max_examples=150, deadline=None)
@given(existing=registries(), names=st.lists(st.sampled_from(NAMES), unique=True, max_size=8))
def test_allocation_never_overlaps_and_is_deterministic(existing, names):
    t = topo(*[{"name": n} for n in names])
    try:
        p = plan(t, existing)
    except TopologyError as err:  # only a full pool may stop it
        assert "no free /24" in str(err)
        return
    nets = [p.home.subnet, p.wireguard.cidr] + [s.subnet for s in p.sites]
    nets += [a.subnet for n, a in existing.items() if n not in names]
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    addrs = [p.home.wg_address] + [s.wg_address for s in p.sites]
    addrs += [a.wg_address for n, a in existing.items() if n not in names]
    assert len(set(addrs)) == len(addrs)
    for s in p.sites:
        assert s.wg_address in p.wireguard.cidr
        if s.name in existing:
            assert (s.subnet, s.wg_address) == (
                existing[s.name].subnet,
                existing[s.name].wg_address,
            )
        else:
            assert s.subnet.subnet_of(p.site_pool) and s.subnet.prefixlen == 24
    assert plan(t, existing) == p
    assert plan(t, dict(reversed(list(existing.items())))) == p


@settings(max_examples=50, deadline=None)
@given(existing=registries())
def test_tiny_pool_fails_cleanly_or_allocates_inside(existing):
    t = topo({"name": "new"}, site_pool="192.168.64.0/22")
    try:
        p = plan(t, existing)
    except TopologyError as err:
        assert err.field == "sites[0].subnet"
        return
    assert p.sites[0].subnet.subnet_of(IPv4Network("192.168.64.0/22"))


# ---- names -----------------------------------------------------------------------------------


def test_names_and_tags():
    assert naming.resource_name("giessen", naming.WORKER, 1) == "hg-giessen-worker-1"
    assert naming.resource_name("giessen", naming.SG) == "hg-giessen-sg"
    assert naming.tags("giessen") == ["hybridgrid", "hybridgrid-site=giessen"]
    assert naming.server_metadata("giessen") == {"hybridgrid": "true", "hybridgrid-site": "giessen"}
    assert naming.site_of_tags(["x", "hybridgrid", "hybridgrid-site=giessen"]) == "giessen"
    assert naming.site_of_tags(["hybridgrid-site=giessen"]) is None  # not ours without the tag
    assert naming.site_of_metadata({"hybridgrid": "true", "hybridgrid-site": "a"}) == "a"
    assert naming.site_of_metadata({}) is None
    assert naming.is_owned(naming.tags("a"), "a") and not naming.is_owned(naming.tags("a"), "b")
    assert len(naming.resource_name("a" * 20, naming.WORKER, 50)) <= 63
    with pytest.raises(ValueError, match="DNS label"):
        naming.resource_name("Bad_Site", naming.VPN)
    with pytest.raises(ValueError):
        naming.resource_name("a", naming.WORKER, 0)


def test_site_cloud_and_home_name_default_whether_omitted_null_or_empty():
    from hybridgrid.model import HomeSite, RemoteSite

    for given_cloud in ({}, {"cloud": None}, {"cloud": ""}):
        site = RemoteSite.model_validate({"name": "x", **given_cloud})
        assert site.cloud == "x" and isinstance(site.cloud, str), given_cloud
    assert RemoteSite(name="x", cloud="giessen").cloud == "giessen"
    for given_name in ({}, {"name": None}, {"name": ""}):
        home = HomeSite.model_validate({**HOME, **given_name})
        assert home.name == "bielefeld" and isinstance(home.name, str), given_name
    assert HomeSite.model_validate({**HOME, "name": "home"}).name == "home"
    # the name's own error comes first, not a confusing one about the copied cloud
    err = error_of({"home": HOME, "sites": [{"name": "Bad Site", "cloud": ""}]})
    assert err.field == "sites[0].name" and "not a valid site name" in str(err)


def test_empty_cloud_without_a_name_reports_only_the_missing_name():
    err = error_of({"home": HOME, "sites": [{"cloud": ""}]})
    assert err.field == "sites[0].name", str(err)
    err = error_of({"home": {**HOME, "name": "", "cloud": None}, "sites": []})
    assert err.field == "home.cloud", str(err)


def test_schema_does_not_require_site_cloud_or_home_name():
    """The UI form marks what the JSON schema requires; these two are filled by validators."""
    from hybridgrid.model import HomeSite, RemoteSite

    site, home = RemoteSite.model_json_schema(), HomeSite.model_json_schema()
    assert site["required"] == ["name"]
    assert "name" not in home["required"] and "cloud" in home["required"]
    # a plain string renders as a text box; `anyOf [string, null]` as a string/None toggle
    assert site["properties"]["cloud"]["type"] == "string"
    assert home["properties"]["name"]["type"] == "string"
