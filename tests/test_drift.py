"""The pure half of the drift check: desired state from the registry, comparison with
observations, parsers of node output, the report's table and lines."""

from __future__ import annotations

import base64
import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from hybridgrid.changes import compare, findings, stale_rules
from hybridgrid.cli_plan import exit_code
from hybridgrid.desired import plan as resolve
from hybridgrid.drift import (
    CHECKS,
    DriftReport,
    HomeObs,
    NodeObs,
    RouteObs,
    RuleObs,
    ServerObs,
    SiteApiObs,
    SiteNodesObs,
    WorkerObs,
    desired_site,
    parse_pings,
    parse_routes,
    ping_command,
    ping_many_command,
)
from hybridgrid.live_plan import LivePlan, judge, registry_as_planned
from hybridgrid.model import RemoteSite, Topology
from hybridgrid.registry_data import HomeEntry, RegistryData, SiteEntry
from hybridgrid.rules import RuleSpec
from hybridgrid.wgstate import WgInterfaceState, WgPeerState, WgState


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


HUB, SPOKE, BOGUS = key(1), key(2), key(3)
MASTER_FIP, VPN_FIP, NEW_FIP = "203.0.113.10", "198.51.100.20", "198.51.100.21"
SUBNET = IPv4Network("192.168.77.0/24")
SPOKE_ALLOWED = [
    IPv4Network("10.0.0.0/24"),
    IPv4Network("192.168.66.0/24"),
    IPv4Network("192.168.64.0/18"),
]


def registry() -> RegistryData:
    return RegistryData(
        home=HomeEntry(
            name="bielefeld",
            cloud="bielefeld",
            subnet=IPv4Network("192.168.66.0/24"),
            wg_address=IPv4Address("10.0.0.1"),
            public_key=HUB,
            master="hg-bielefeld-master",
            workers=["hg-bielefeld-worker-1"],
            ssh_key_block="hg-bielefeld-ssh",
            public_ips={"master": IPv4Address(MASTER_FIP)},
        ),
        sites={
            "giessen": SiteEntry(
                cloud="giessen",
                subnet=SUBNET,
                wg_address=IPv4Address("10.0.0.2"),
                spoke_public_key=SPOKE,
                hub_public_key=HUB,
                spec=RemoteSite(name="giessen", cloud="giessen", subnet=SUBNET, workers=1),
                public_ips={"vpn": IPv4Address(VPN_FIP)},
                fixed_ips={"vpn": IPv4Address("192.168.77.2"), "worker-1": "192.168.77.3"},
                resource_ids={"net": "n1", "vpn": "s-vpn", "worker-1": "s-w1"},
            )
        },
    )


def rules_from(specs: list[RuleSpec], owner: str, prefix: str = "r") -> list[RuleObs]:
    return [
        RuleObs(
            id=f"{prefix}{i}",
            direction=s.direction,
            protocol=s.protocol,
            port_min=s.port_min,
            port_max=s.port_max,
            remote_ip_prefix=s.remote_ip_prefix,
            description=f"hybridgrid-site={owner}",
        )
        for i, s in enumerate(specs)
    ]


def peer(pub: str, endpoint: str, allowed: list[str], age: float = 10) -> WgPeerState:
    return WgPeerState(
        public_key=pub,
        has_preshared_key=False,
        endpoint=endpoint,
        allowed_ips=[IPv4Network(a) for a in allowed],
        latest_handshake=int(time.time() - age),
        rx_bytes=1,
        tx_bytes=1,
        keepalive=25,
    )


def wg(own: str, peers: list[WgPeerState]) -> WgState:
    return WgState(
        iface="wg0",
        interface=WgInterfaceState(
            public_key=own, listen_port=51820, fwmark=None, has_private_key=True
        ),
        peers=peers,
    )


def healthy() -> tuple[HomeObs, SiteApiObs, SiteNodesObs]:
    now = time.time()
    # the rules add-site makes (written out: the test pins them, hybridgrid.desired states them)
    site_rules = [
        RuleSpec(protocol="tcp", port_min=22, port_max=22, remote_ip_prefix="0.0.0.0/0"),
        *(
            RuleSpec(remote_ip_prefix=n)
            for n in (str(SUBNET), "192.168.66.0/24", "10.0.0.0/24", "192.168.64.0/18")
        ),
        RuleSpec(
            protocol="udp", port_min=51820, port_max=51820, remote_ip_prefix=f"{MASTER_FIP}/32"
        ),
    ]
    home_rules = [
        RuleSpec(remote_ip_prefix=str(SUBNET)),
        RuleSpec(protocol="udp", port_min=51820, port_max=51820, remote_ip_prefix=f"{VPN_FIP}/32"),
    ]
    home = HomeObs(
        master_port_id="p-master",
        master_fixed_ip="192.168.66.2",
        master_fip=MASTER_FIP,
        master_pairs=[str(SUBNET), "10.0.0.0/24"],
        home_sg_id="sg-home",
        home_rules=rules_from(home_rules, "giessen", "h"),
        hub=NodeObs(
            name="hg-bielefeld-master",
            wg=wg(HUB, [peer(SPOKE, f"{VPN_FIP}:51820", ["10.0.0.2/32", str(SUBNET)])]),
            observed_at=now,
        ),
        workers=[
            WorkerObs(
                name="hg-bielefeld-worker-1",
                fixed_ip="192.168.66.3",
                routes=[
                    RouteObs(destination=IPv4Network("10.0.0.0/24"), via="192.168.66.2"),
                    RouteObs(destination=IPv4Network("192.168.64.0/18"), via="192.168.66.2"),
                ],
                pings={"192.168.77.3": True},
            )
        ],
    )
    api = SiteApiObs(
        network_id="n1",
        subnet_id="sub1",
        subnet_cidr=str(SUBNET),
        router_id="r1",
        router_gateway=True,
        router_on_subnet=True,
        servers={
            "hg-giessen-vpn": ServerObs(name="hg-giessen-vpn", id="s-vpn", status="ACTIVE"),
            "hg-giessen-worker-1": ServerObs(
                name="hg-giessen-worker-1", id="s-w1", status="ACTIVE"
            ),
        },
        vpn_port_id="p-vpn",
        vpn_fixed_ip="192.168.77.2",
        vpn_fips=[VPN_FIP],
        vpn_pairs=[str(n) for n in SPOKE_ALLOWED],
        site_sg_id="sg-site",
        site_rules=rules_from(site_rules, "giessen"),
    )
    nodes = SiteNodesObs(
        spoke=NodeObs(
            name="hg-giessen-vpn",
            wg=wg(SPOKE, [peer(HUB, f"{MASTER_FIP}:51820", [str(n) for n in SPOKE_ALLOWED])]),
            observed_at=now,
        ),
        workers=[
            WorkerObs(
                name="hg-giessen-worker-1",
                fixed_ip="192.168.77.3",
                routes=[RouteObs(destination=n, via="192.168.77.2") for n in SPOKE_ALLOWED],
                pings={"192.168.66.3": True},
            )
        ],
    )
    return home, api, nodes


def judge_site(home: HomeObs, api: SiteApiObs, nodes: SiteNodesObs):
    want = desired_site(registry(), "giessen", home=home, api=api)
    return compare(want, home, api, nodes)


SEED_SPEC = Topology(
    home={"cloud": "bielefeld", "subnet": "192.168.66.0/24", "master": {"create": True}},
    sites=[{"name": "giessen", "subnet": "192.168.77.0/24", "workers": 1}],
)


def live_plan(
    home: HomeObs, observed: dict[str, tuple[SiteApiObs, SiteNodesObs]], spec: Topology = SEED_SPEC
) -> LivePlan:
    """What `plan --live` makes of the observations, for `spec` against `registry()`."""
    data = registry()
    planned = registry_as_planned(data, spec, resolve(spec, data.allocations()))
    return judge("hybridgrid", planned, spec, home, observed)


def test_healthy_site_has_no_drift():
    verdict = judge_site(*healthy())
    assert not verdict.drifted, verdict.line()
    assert [r.check for r in verdict.results] == list(CHECKS)
    assert verdict.line() == "giessen: ok"


def test_deleted_udp_rule_is_named():
    home, api, nodes = healthy()
    api.site_rules = [r for r in api.site_rules if r.protocol != "udp"]
    v = judge_site(home, api, nodes)
    assert v.drifted_checks == ["rules"]
    assert v.result("rules").differs == [
        f"hg-giessen-sg lacks ingress udp 51820-51820 from {MASTER_FIP}/32"
    ]


def test_removed_pair_is_named():
    home, api, nodes = healthy()
    home.master_pairs = ["10.0.0.0/24"]
    v = judge_site(home, api, nodes)
    assert v.drifted_checks == ["pairs"]
    assert "master port lacks pair 192.168.77.0/24" in v.result("pairs").cell


def test_wg0_down_on_the_spoke():
    home, api, nodes = healthy()
    nodes.spoke.wg = None
    v = judge_site(home, api, nodes)
    assert "wg0" in v.drifted_checks and "wg0 is down on VPN node hg-giessen-vpn" in v.line()
    assert v.result("peers").ok is True  # the hub side still has the right peer


def test_wrong_peer_key_on_the_master():
    home, api, nodes = healthy()
    assert home.hub.wg is not None
    home.hub.wg = wg(HUB, [peer(BOGUS, f"{VPN_FIP}:51820", ["10.0.0.2/32", str(SUBNET)])])
    v = judge_site(home, api, nodes)
    cell = v.result("peers").cell
    assert f"no peer with giessen's key {SPOKE}" in cell and f"foreign peer {BOGUS}" in cell


def test_replaced_floating_ip_follows_the_port():
    home, api, nodes = healthy()
    api.vpn_fips = [NEW_FIP]
    v = judge_site(home, api, nodes)
    assert f"floating IP is {NEW_FIP}, the registry has {VPN_FIP}" in v.result("floating ip").cell
    rules = v.result("rules").cell
    assert f"home group lacks ingress udp 51820-51820 from {NEW_FIP}/32" in rules
    assert f"stale ingress udp 51820-51820 from {VPN_FIP}/32 in the home group" in rules
    assert f"its floating IP is {NEW_FIP}:51820" in v.result("endpoint").cell


def test_worker_route_deleted_or_wrong():
    home, api, nodes = healthy()
    nodes.workers[0].routes = nodes.workers[0].routes[1:]
    v = judge_site(home, api, nodes)
    assert v.result("routes").differs == ["hg-giessen-worker-1 has no route to 10.0.0.0/24"]
    nodes.workers[0].routes.append(RouteObs(destination=IPv4Network("10.0.0.0/24"), via="10.9.9.9"))
    v = judge_site(home, api, nodes)
    assert "routes 10.0.0.0/24 via 10.9.9.9 (10.0.0.0/24), expected via 192.168.77.2" in (
        v.result("routes").cell
    )


def test_pool_route_covers_a_site_subnet():
    home, api, nodes = healthy()  # the home worker has only the pool route: enough
    assert judge_site(home, api, nodes).result("routes").ok is True
    home.workers[0].routes = [
        RouteObs(destination=IPv4Network("192.168.64.0/18"), via="192.168.66.2"),
        RouteObs(destination=IPv4Network("192.168.77.0/24"), via="192.168.66.1"),
        RouteObs(destination=IPv4Network("10.0.0.0/24"), via="192.168.66.2"),
    ]
    assert "expected via 192.168.66.2" in judge_site(home, api, nodes).result("routes").cell


def test_unreachable_spoke_and_stale_handshake():
    home, api, nodes = healthy()
    nodes.spoke = NodeObs(name="hg-giessen-vpn", error="SSHUnreachable: refused")
    nodes.workers = []
    v = judge_site(home, api, nodes)
    assert "VPN node hg-giessen-vpn not reachable (SSHUnreachable: refused)" in v.result("wg0").cell
    assert v.result("reachability").ok is False
    home, api, nodes = healthy()
    assert home.hub.wg is not None
    home.hub.wg = wg(HUB, [peer(SPOKE, f"{VPN_FIP}:51820", ["10.0.0.2/32", str(SUBNET)], 400)])
    assert "last handshake" in judge_site(home, api, nodes).result("handshake").cell


def test_missing_objects_and_unreadable_cloud():
    home, api, nodes = healthy()
    api.network_id, api.router_id = None, None
    api.servers.pop("hg-giessen-worker-1")
    api.servers["hg-giessen-vpn"] = ServerObs(name="hg-giessen-vpn", id="s-vpn", status="ERROR")
    v = judge_site(home, api, nodes)
    assert v.result("network").differs == ["hg-giessen-net missing"]
    assert v.result("router").differs == ["hg-giessen-router missing"]
    assert v.result("servers").differs == ["hg-giessen-vpn is ERROR", "hg-giessen-worker-1 missing"]
    v = judge_site(home, SiteApiObs(error="ConnectTimeout"), nodes)
    assert v.result("subnet").cell == "drift: cannot read the site's cloud (ConnectTimeout)"


def test_stale_rules_only_the_sites_own():
    desired = [RuleSpec(remote_ip_prefix="192.168.77.0/24")]
    rules = [
        RuleObs(id="a", remote_ip_prefix="192.168.77.0/24", description="hybridgrid-site=giessen"),
        RuleObs(
            id="b",
            protocol="udp",
            port_min=51820,
            port_max=51820,
            remote_ip_prefix="198.51.100.20/32",
            description="hybridgrid-site=giessen",
        ),
        RuleObs(id="c", remote_ip_prefix="10.1.0.0/16", description="someone else"),
        RuleObs(id="d", remote_ip_prefix="10.2.0.0/16", description="hybridgrid-site=marburg"),
    ]
    assert [r.id for r in stale_rules(rules, "giessen", desired)] == ["b"]


def test_rule_keys_match_the_specs():
    for spec in [
        RuleSpec(protocol="udp", port_min=51820, port_max=51820, remote_ip_prefix="1.2.3.4/32"),
        RuleSpec(protocol="tcp", port_min=22, remote_ip_prefix="0.0.0.0/0"),
        RuleSpec(remote_ip_prefix="10.0.0.0/24"),
    ]:
        obs = RuleObs(
            id="x",
            protocol=spec.protocol,
            port_min=spec.port_min,
            port_max=spec.port_max if spec.port_max is not None else spec.port_min,
            remote_ip_prefix=None
            if spec.remote_ip_prefix == "0.0.0.0/0"
            else spec.remote_ip_prefix,
        )
        assert obs.key() == spec.key()


def test_parse_routes():
    text = (
        "default via 192.168.77.1 dev eth0 \n"
        "10.0.0.0/24 via 192.168.77.2 dev eth0 \n"
        "192.168.77.0/24 dev eth0 proto kernel scope link src 192.168.77.3 \n"
        "unicast 192.168.66.0/24 via 192.168.77.2 dev eth0 proto static\n"
        "garbage line\n"
    )
    assert parse_routes(text) == [
        RouteObs(destination=IPv4Network("10.0.0.0/24"), via=IPv4Address("192.168.77.2")),
        RouteObs(destination=IPv4Network("192.168.77.0/24"), via=None),
        RouteObs(destination=IPv4Network("192.168.66.0/24"), via=IPv4Address("192.168.77.2")),
    ]


def test_ping_command_and_parser():
    cmd = ping_many_command(["192.168.66.3", "192.168.77.3"])
    assert cmd.count("ping -n -q -c 2 ") == 2 and cmd.rstrip().endswith("wait")
    with pytest.raises(ValueError):
        ping_many_command(["192.168.66.3; reboot"])
    # verification's full-size probe: the payload that makes a 1370-byte packet, DF set
    full = ping_command("10.0.0.2", count=3, size=1370 - 28)
    assert full == "ping -n -q -c 3 -i 0.2 -W 2 -M do -s 1342 10.0.0.2"
    with pytest.raises(ValueError):
        ping_command("10.0.0.2 -f")
    assert parse_pings("ok 192.168.66.3\nfail 192.168.77.3\nnoise\n") == {
        "192.168.66.3": True,
        "192.168.77.3": False,
    }


def test_report_rows_lines_and_markdown():
    good = judge_site(*healthy())
    home, api, nodes = healthy()
    api.vpn_fips = [NEW_FIP]
    bad = judge_site(home, api, nodes).model_copy(update={"site": "marburg"})
    report = DriftReport(registry="hybridgrid", sites=[good, bad])
    rows = report.rows()
    assert [r["site"] for r in rows] == ["giessen", "marburg"]
    assert set(rows[0]) == {"site", "status", *CHECKS}
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "drift"
    assert rows[1]["floating ip"].startswith("drift: ")
    assert report.drifted and len(report.lines()) == 1
    assert report.lines()[0].startswith("marburg: drift in floating ip (")
    md = report.markdown()
    assert "1 of 2 site(s) drifted" in md and "| marburg | drift |" in md


# ---------------------------------------------------------------- the changes (plan --live)


def changes_of(home: HomeObs, api: SiteApiObs, nodes: SiteNodesObs) -> list[str]:
    want = desired_site(registry(), "giessen", home=home, api=api)
    return [f.change.line() for f in findings(want, home, api, nodes) if f.change is not None]


def test_converged_site_has_no_changes():
    home, api, nodes = healthy()
    want = desired_site(registry(), "giessen", home=home, api=api)
    assert findings(want, home, api, nodes) == []
    plan = live_plan(home, {"giessen": (api, nodes)})
    assert plan.lines()[-1] == "Plan: 0 to add, 0 to change, 0 to destroy."
    assert exit_code(plan) == 0


def test_missing_rule_is_exactly_one_add():
    home, api, nodes = healthy()
    api.site_rules = [r for r in api.site_rules if r.protocol != "udp"]
    assert changes_of(home, api, nodes) == [
        f"+ rule hg-giessen-sg ingress udp 51820-51820 from {MASTER_FIP}/32"
    ]
    plan = live_plan(home, {"giessen": (api, nodes)})
    assert (plan.to_add, plan.to_change, plan.to_destroy) == (1, 0, 0)
    assert plan.summary() == "Plan: 1 to add, 0 to change, 0 to destroy."
    assert exit_code(plan) == 3


def test_extra_rule_of_the_site_is_a_destroy():
    home, api, nodes = healthy()
    extra = RuleSpec(protocol="tcp", port_min=8080, port_max=8080, remote_ip_prefix="0.0.0.0/0")
    api.site_rules += rules_from([extra], "giessen", "x")
    api.site_rules += [RuleObs(id="y", remote_ip_prefix="10.9.0.0/16", description="not ours")]
    assert changes_of(home, api, nodes) == [
        "- rule hg-giessen-sg ingress tcp 8080-8080 from 0.0.0.0/0"
    ]


def test_missing_pair_is_a_port_change():
    home, api, nodes = healthy()
    api.vpn_pairs = [p for p in api.vpn_pairs if p != "10.0.0.0/24"]
    home.master_pairs = ["10.0.0.0/24"]
    # the master gets the pair a run applies: the pool, which covers the site's subnet
    assert changes_of(home, api, nodes) == [
        "~ port hg-bielefeld-master allowed-address pairs: + 192.168.64.0/18",
        "~ port hg-giessen-vpn allowed-address pairs: + 10.0.0.0/24",
    ]


def test_drift_and_plan_read_the_same_findings():
    """Each drift message is one finding; each change a finding the drift report shows."""
    home, api, nodes = healthy()
    api.vpn_fips = [NEW_FIP]
    nodes.workers[0].routes = nodes.workers[0].routes[1:]
    home.hub.wg = None
    want = desired_site(registry(), "giessen", home=home, api=api)
    found = findings(want, home, api, nodes)
    verdict = compare(want, home, api, nodes)
    assert [m for r in verdict.results for m in r.differs] == [f.message for f in found]
    assert {f.change.line() for f in found if f.change} == {
        f"~ floating-ip hg-giessen-vpn recorded: {VPN_FIP} → {NEW_FIP}",
        f"+ rule hg-bielefeld-sg ingress udp 51820-51820 from {NEW_FIP}/32",
        f"- rule hg-bielefeld-sg ingress udp 51820-51820 from {VPN_FIP}/32",
        "+ wg0 hg-bielefeld-master",
        "+ route hg-giessen-worker-1 10.0.0.0/24 via 192.168.77.2",
    }


def test_unreachable_node_is_a_note_not_a_change():
    home, api, nodes = healthy()
    nodes.spoke = NodeObs(name="hg-giessen-vpn", error="SSHUnreachable: refused")
    nodes.workers = []
    plan = live_plan(home, {"giessen": (api, nodes)})
    assert not plan.pending and plan.summary().startswith("Plan: 0 to add")
    assert "! VPN node hg-giessen-vpn not reachable (SSHUnreachable: refused)" in plan.lines()
    assert exit_code(plan) == 1


def test_a_new_site_is_built_from_nothing():
    """A spec site not registered yet: every object of it is an add; the home side it needs
    is compared with what the hub shows: the master's pairs (giessen's own, as older runs
    made them) do not cover mainz, so the pool's pair is added; the workers' pool route does."""
    home, api, nodes = healthy()
    topology = Topology(
        home={"cloud": "bielefeld", "subnet": "192.168.66.0/24", "master": {"create": True}},
        sites=[
            {"name": "giessen", "subnet": "192.168.77.0/24", "workers": 1},
            {"name": "mainz", "workers": 2},
        ],
    )
    plan = live_plan(home, {"giessen": (api, nodes)}, topology)
    mainz = plan.sites[1]
    assert (mainz.site, mainz.registered, mainz.notes) == ("mainz", False, [])
    assert [c.line() for c in mainz.changes] == [
        "+ network hg-mainz-net",
        "+ subnet hg-mainz-subnet 192.168.64.0/24",
        "+ router hg-mainz-router",
        "+ server hg-mainz-vpn",
        "+ server hg-mainz-worker-1",
        "+ server hg-mainz-worker-2",
        "+ floating-ip hg-mainz-vpn",
        "+ security-group hg-mainz-sg with its 6 rules",
        "+ rule hg-bielefeld-sg ingress any from 192.168.64.0/24",
        "~ port hg-bielefeld-master allowed-address pairs: + 192.168.64.0/18",
        "+ wg0 hg-mainz-vpn",
        "+ peer hg-bielefeld-master mainz",
    ]
    assert plan.sites[0].changes == [] and plan.lines()[0] == "# giessen: no changes"
    assert "# mainz (not registered: a run builds it)" in plan.lines()
    assert plan.summary() == "Plan: 11 to add, 1 to change, 0 to destroy."
