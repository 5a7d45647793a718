"""The OpenStack task library against localcloud over real HTTP with unmodified openstacksdk.

Every mutating call is counted twice: by localcloud's own stats endpoint (the ground truth) and
by the response hook of `hybridgrid.blocks.loading`; the two must agree.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridgrid import naming
from hybridgrid.blocks import loading
from hybridgrid.cloudops import (
    finder,
    floating_ips,
    keypairs,
    networks,
    ports,
    removal,
    security_groups,
)
from hybridgrid.cloudops import servers as cloudops_servers
from hybridgrid.cloudops.errors import OwnershipError, ResourceConflict, ServerBootFailed
from hybridgrid.cloudops.servers import ROLE_KEY, ServerSpec
from hybridgrid.retry.policy import transient_options
from hybridgrid.rules import RuleSpec
from localcloud import control as server
from localcloud.clientconf import connect

CLOUD = "giessen"  # the credentials "block" name the tasks get
PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhWAsYd8m3oQ9o1b3m7nqE1C6kF3xq4b1Jm2n4D5x6y hybridgrid"
)
OTHER_PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0x2p0V0HhZxq8uSx8JkqZl3wq8dC9o0xqH8tq1Jv8 someone"
)
ROOMY = {
    "instances": 40,
    "cores": 80,
    "ram": 163840,
    "network": 50,
    "router": 20,
    "floatingip": 40,
    "security_group": 40,
    "security_group_rule": 400,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cloud:
    """A private localcloud plus the connections registered under block names."""

    def __init__(self, handle: server.Handle) -> None:
        self.handle = handle
        self.conn = loading.use_connection(CLOUD, connect(handle.state_dir, CLOUD))
        self.public = self.conn.network.find_network("public")

    def mutating(self) -> int:
        """Mutating calls since `reset()`, asserting localcloud and our counter agree."""
        truth = self.handle.stats().get(CLOUD, {}).get("mutating", 0)
        assert loading.mutating_calls(CLOUD) == truth, (loading.api_calls(), self.handle.stats())
        return truth

    def reset(self) -> None:
        self.handle.reset_stats()
        loading.reset_counts()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    state_dir: Path = tmp_path_factory.mktemp("lc-tasks")
    handle = server.start(
        state_dir,
        clouds=["bielefeld", CLOUD, "tiny"],
        port=free_port(),
        dataplane=False,
        cloud_options={
            CLOUD: {"quotas": ROOMY},
            "tiny": {"quotas": {"network": 2, "instances": 0}},  # public counts
        },
    )
    try:
        yield Cloud(handle)
    finally:
        loading.forget()
        server.down(state_dir)


@pytest.fixture
def faults(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(finder, "READ_BACKOFF", 0.01)
    try:
        yield cloud.handle.set_faults
    finally:
        cloud.handle.set_faults(None)


def twice(cloud: Cloud, fn: Any) -> tuple[Any, Any, int]:
    """Run `fn` twice; return both results and the first run's mutating calls. The second
    run must make no mutating call at all."""
    cloud.reset()
    first = fn()
    made = cloud.mutating()
    cloud.reset()
    second = fn()
    assert cloud.mutating() == 0, f"second run of {fn} changed something"
    return first, second, made


def owned(items: Any, site: str) -> list[Any]:
    return [x for x in items if set(naming.tags(site)) <= set(x.tags or [])]


# ---- run twice: create once, then change nothing ------------------------------------------


def test_each_ensure_creates_once_and_the_rerun_makes_no_mutating_call(cloud: Cloud) -> None:
    c, site = cloud.conn, "twice"
    net, net2, made = twice(cloud, lambda: networks.ensure_network(c, site, "hg-twice-net"))
    assert (net.action, net2.action, made) == ("created", "reused", 1)
    assert net2.id == net.id and net.mtu == 1450

    sub, sub2, made = twice(
        cloud, lambda: networks.ensure_subnet(c, site, "hg-twice-subnet", net.id, "192.168.77.0/24")
    )
    assert (sub.action, sub2.action, made) == ("created", "reused", 1)
    assert sub.gateway_ip == "192.168.77.1" and sub2.id == sub.id

    router, router2, made = twice(
        cloud, lambda: networks.ensure_router(c, site, "hg-twice-router", cloud.public.id, sub.id)
    )
    assert (router.action, router2.action, made) == ("created", "reused", 2)  # + interface
    assert router.external_ip and router2.external_ip == router.external_ip

    sg, sg2, made = twice(
        cloud, lambda: security_groups.ensure_security_group(c, site, "hg-twice-sg")
    )
    assert (sg.action, sg2.action, made) == ("created", "reused", 1)

    wanted = [
        RuleSpec(protocol="udp", port_min=51820, port_max=51820, remote_ip_prefix="203.0.113.7/32"),
        RuleSpec(protocol="tcp", port_min=22, port_max=22),
        RuleSpec(remote_ip_prefix="192.168.66.0/24"),
        RuleSpec(protocol="icmp", remote_ip_prefix="10.0.0.0/24"),
    ]
    rules, rules2, made = twice(cloud, lambda: security_groups.ensure_rules(c, sg.id, site, wanted))
    assert [r.action for r in rules] == ["created"] * 4 and made == 4
    assert [r.action for r in rules2] == ["reused"] * 4
    assert [r.id for r in rules2] == [r.id for r in rules]

    kp, kp2, made = twice(cloud, lambda: keypairs.ensure_keypair(c, "hg-twice-key", PUBKEY))
    assert (kp.action, kp2.action, made) == ("created", "reused", 1)

    spec = ServerSpec(
        name="hg-twice-vpn",
        site=site,
        role="vpn",
        image="ubuntu-22.04",
        flavor="de.NBI tiny",
        network_id=net.id,
        key_name="hg-twice-key",
        security_groups=["hg-twice-sg"],
        user_data="#cloud-config\nruncmd: [[echo, hi]]\n",
    )
    vm, vm2, made = twice(cloud, lambda: cloudops_servers.ensure_server(c, spec, poll=0.1))
    assert (vm.action, vm2.action, made) == ("created", "reused", 1)
    assert vm.status == "ACTIVE" and vm2.id == vm.id and vm.fixed_ip.startswith("192.168.77.")
    assert c.compute.get_server(vm.id).metadata[ROLE_KEY] == "vpn"

    fip, fip2, made = twice(
        cloud, lambda: floating_ips.ensure_floating_ip(c, site, vm.port_id, cloud.public.id)
    )
    assert (fip.action, fip2.action, made) == ("created", "reused", 1)
    assert fip2.address == fip.address and fip.address.startswith("198.51.100.")

    pairs = ["10.0.0.0/24", "192.168.66.0/24"]
    port, port2, made = twice(
        cloud, lambda: ports.ensure_allowed_address_pairs(c, vm.port_id, pairs)
    )
    assert (port.action, port2.action, made) == ("updated", "reused", 1)
    assert port2.allowed_address_pairs == pairs

    extra = security_groups.ensure_security_group(c, site, "hg-twice-extra-sg")
    psg, psg2, made = twice(
        cloud, lambda: ports.ensure_port_security_groups(c, vm.port_id, [extra.id])
    )
    assert (psg.action, psg2.action, made) == ("updated", "reused", 1)
    assert set(psg2.security_group_ids) == {sg.id, extra.id}

    gone, gone2, made = twice(cloud, lambda: removal.remove_site_resources(c, site, timeout=30))
    kinds = sorted(r.kind for r in gone)
    assert kinds == sorted(
        ["server", "floating_ip", "router", "subnet", "network"] + ["security_group"] * 2
    )
    assert gone2 == [] and made >= len(gone)
    assert keypairs.remove_keypair(c, "hg-twice-key", PUBKEY).action == "deleted"
    assert c.compute.find_keypair("hg-twice-key", ignore_missing=True) is None


def test_subnet_with_another_cidr_is_a_clear_conflict(cloud: Cloud) -> None:
    c, site = cloud.conn, "cidr"
    net = networks.ensure_network(c, site, "hg-cidr-net")
    networks.ensure_subnet(c, site, "hg-cidr-subnet", net.id, "192.168.80.0/24")
    with pytest.raises(ResourceConflict, match=r"192\.168\.80\.0/24.*192\.168\.81\.0/24"):
        networks.ensure_subnet(c, site, "hg-cidr-subnet", net.id, "192.168.81.0/24")
    with pytest.raises(ResourceConflict, match="different public key"):
        keypairs.ensure_keypair(c, "hg-cidr-key", PUBKEY) and keypairs.ensure_keypair(
            c, "hg-cidr-key", OTHER_PUBKEY
        )
    removal.remove_site_resources(c, site, timeout=30)
    c.compute.delete_keypair("hg-cidr-key")


# ---- merging: what someone else set stays -------------------------------------------------


def test_allowed_address_pairs_keep_foreign_pairs_and_remove_only_ours(cloud: Cloud) -> None:
    c = cloud.conn
    net = c.network.create_network(name="user-net")
    c.network.create_subnet(network_id=net.id, cidr="172.16.5.0/24", ip_version=4)
    port = c.network.create_port(network_id=net.id, name="user-port")
    foreign = [{"ip_address": "172.16.99.0/24", "mac_address": "fa:16:3e:00:00:99"}]
    c.network.update_port(port, allowed_address_pairs=foreign)

    rec = ports.ensure_allowed_address_pairs(c, port.id, ["10.0.0.0/24", "192.168.77.0/24"])
    assert rec.action == "updated"
    have = c.network.get_port(port.id).allowed_address_pairs
    assert {p["ip_address"] for p in have} == {"172.16.99.0/24", "10.0.0.0/24", "192.168.77.0/24"}
    assert {"ip_address": "172.16.99.0/24", "mac_address": "fa:16:3e:00:00:99"} in have

    cloud.reset()
    rec = ports.remove_allowed_address_pairs(c, port.id, ["10.0.0.0/24", "192.168.77.0/24"])
    assert rec.action == "updated" and cloud.mutating() == 1
    have = c.network.get_port(port.id).allowed_address_pairs
    assert have == [{"ip_address": "172.16.99.0/24", "mac_address": "fa:16:3e:00:00:99"}]
    cloud.reset()
    assert ports.remove_allowed_address_pairs(c, port.id, ["10.0.0.0/24"]).action == "reused"
    assert cloud.mutating() == 0

    # A port without port security needs no pairs, and Neutron would refuse them (409).
    open_port = c.network.create_port(
        network_id=net.id, port_security_enabled=False, security_groups=[]
    )
    cloud.reset()
    rec = ports.ensure_allowed_address_pairs(c, open_port.id, ["10.0.0.0/24"])
    assert (rec.action, rec.port_security_enabled, cloud.mutating()) == ("reused", False, 0)

    # Rules: remove_rules takes only the rules this site added to a shared group.
    sg = c.network.create_security_group(name="shared-sg")
    c.network.create_security_group_rule(
        security_group_id=sg.id,
        direction="ingress",
        protocol="tcp",
        port_range_min=80,
        port_range_max=80,
        ethertype="IPv4",
    )
    security_groups.ensure_rules(c, sg.id, "site-a", [RuleSpec(protocol="udp", port_min=51820)])
    removed = security_groups.remove_rules(c, sg.id, "site-a")
    assert len(removed) == 1
    left = {
        (r.protocol, r.port_range_min)
        for r in c.network.security_group_rules(security_group_id=sg.id, direction="ingress")
    }
    assert left == {("tcp", 80)}


# ---- ownership ----------------------------------------------------------------------------


def test_remove_leaves_untagged_and_other_sites_alone_and_reruns_cleanly(cloud: Cloud) -> None:
    c, site = cloud.conn, "rm"
    user_net = c.network.create_network(name="hg-rm-net")  # a user's, same name, no tags
    other = networks.ensure_network(c, "rmother", "hg-rm-net")  # another site's
    net = networks.ensure_network(c, site, "hg-rm-net")
    assert len({user_net.id, other.id, net.id}) == 3
    sub = networks.ensure_subnet(c, site, "hg-rm-subnet", net.id, "192.168.90.0/24")
    networks.ensure_router(c, site, "hg-rm-router", cloud.public.id, sub.id)
    # an extra route set by hand: Neutron keeps the interface its nexthop needs, so removal
    # must clear the routes before it can delete the router
    c.network.add_extra_routes_to_router(
        finder.find_owned(c, "router", site, "hg-rm-router"),
        body={"router": {"routes": [{"destination": "10.0.0.0/24", "nexthop": "192.168.90.2"}]}},
    )
    security_groups.ensure_security_group(c, site, "hg-rm-sg")

    gone = removal.remove_site_resources(c, site, timeout=30)
    assert sorted(r.kind for r in gone) == ["network", "router", "security_group", "subnet"]
    names = {n.id for n in c.network.networks(name="hg-rm-net")}
    assert names == {user_net.id, other.id}
    assert not owned(c.network.routers(name="hg-rm-router"), site)

    cloud.reset()
    assert removal.remove_site_resources(c, site, timeout=30) == []
    assert cloud.mutating() == 0
    removal.remove_site_resources(c, "rmother", timeout=30)
    c.network.delete_network(user_net)


def test_several_tagged_resources_with_one_name_are_refused(cloud: Cloud) -> None:
    c, site = cloud.conn, "dup"
    a = c.network.create_network(name="hg-dup-net", tags=naming.tags(site))
    b = c.network.create_network(name="hg-dup-net", tags=naming.tags(site))
    cloud.reset()
    with pytest.raises(OwnershipError) as err:
        networks.ensure_network(c, site, "hg-dup-net")
    assert cloud.mutating() == 0
    msg = str(err.value)
    assert "2 networks named 'hg-dup-net'" in msg and a.id in msg and b.id in msg
    assert "delete the extra ones" in msg
    removal.remove_site_resources(c, site, timeout=30)


def test_reads_retry_in_place_and_writes_never_do(cloud: Cloud, faults: Any) -> None:
    import openstack.exceptions as osx

    c, site = cloud.conn, "inplace"
    faults({CLOUD: {"seed": 3, "errors": [{"rate": 0.4, "codes": [500, 503], "method": "GET"}]}})
    cloud.reset()
    net = networks.ensure_network(c, site, "hg-inplace-net")  # no task retry: reads retried inside
    again = networks.ensure_network(c, site, "hg-inplace-net")
    assert (net.action, again.action, again.id) == ("created", "reused", net.id)
    assert cloud.handle.stats()[CLOUD]["injected_errors"] > 0

    faults({CLOUD: {"errors": [{"rate": 1.0, "codes": [503], "method": "POST"}]}})
    cloud.reset()
    with pytest.raises(osx.HttpException, match="503"):
        security_groups.ensure_security_group(c, site, "hg-inplace-sg")
    assert calls(cloud, CLOUD, "network", "POST") == 1  # the task's retry decides, not us
    faults(None)
    removal.remove_site_resources(c, site, timeout=30)


# ---- servers ------------------------------------------------------------------------------


def test_server_in_error_is_replaced_once_and_the_run_goes_on(cloud: Cloud, faults: Any) -> None:
    c, site = cloud.conn, "err"
    net = networks.ensure_network(c, site, "hg-err-net")
    networks.ensure_subnet(c, site, "hg-err-subnet", net.id, "192.168.91.0/24")
    spec = ServerSpec(
        name="hg-err-worker-1",
        site=site,
        role="worker",
        image="ubuntu-22.04",
        flavor="de.NBI tiny",
        network_id=net.id,
    )
    faults({CLOUD: {"boot_failures": 1}})
    rec = cloudops_servers.ensure_server(c, spec, poll=0.1)
    assert (rec.status, rec.replaced, rec.action) == ("ACTIVE", 1, "created")
    servers = [s for s in c.compute.servers(name="hg-err-worker-1")]
    assert [s.id for s in servers] == [rec.id]  # the broken one is gone

    c.compute.stop_server(rec.id)  # someone stopped it: the rerun starts it again
    cloud.reset()
    again = cloudops_servers.ensure_server(c, spec, poll=0.1)
    assert (again.id, again.action, again.status, cloud.mutating()) == (
        rec.id,
        "updated",
        "ACTIVE",
        1,
    )

    faults({CLOUD: {"boot_failure_rate": 1.0}})  # never boots: bounded, then a clear error
    spec2 = spec.model_copy(update={"name": "hg-err-worker-2"})
    with pytest.raises(ServerBootFailed, match="went to ERROR 2 times"):
        cloudops_servers.ensure_server(c, spec2, poll=0.1, max_replacements=1)
    faults(None)
    removal.remove_site_resources(c, site, timeout=30)


# ---- through the Prefect tasks: retries for what is transient, nothing else ---------------

# Tests: the policy's default number of retries and its classification, shorter waits.
FAST = {**transient_options(backoff=0.01), "retry_delay_seconds": [0.01, 0.02, 0.04, 0.08] * 2}


def calls(cloud: Cloud, name: str, service: str, method: str) -> int:
    """Requests localcloud received (its stats: the ground truth for "attempts")."""
    by_service = cloud.handle.stats().get(name, {}).get("by_service", {})
    return by_service.get(service, {}).get(method, 0)


def run_task(task: Any, **kwargs: Any) -> Any:
    """One step task of `tasks.site_tasks`, outside a flow, with fast retries."""
    return asyncio.run(task.with_options(**FAST)(**kwargs))


def test_with_20_percent_transient_errors_every_task_succeeds_without_duplicates(
    cloud: Cloud, faults: Any, prefect_harness: Any
) -> None:
    from hybridgrid.tasks import site_tasks as st

    def run(task: Any, **kwargs: Any) -> Any:
        return run_task(task, cloud=CLOUD, **kwargs)

    site = "flaky"
    cloud.reset()
    faults({CLOUD: {"seed": 20, "error_rate": 0.2, "error_codes": [500, 503, 409, "drop"]}})
    net = run(st.ensure_site_network, site=site, cidr="192.168.92.0/24", external_network="public")
    wanted = [
        RuleSpec(protocol="udp", port_min=51820, remote_ip_prefix="203.0.113.9/32"),
        RuleSpec(protocol="tcp", port_min=22),
    ]
    sg = run(st.ensure_group, site=site, name="hg-flaky-sg", rules=wanted).group
    run(st.ensure_keypair, name="hg-flaky-key", public_key=PUBKEY)
    spec = ServerSpec(
        name="hg-flaky-vpn",
        site=site,
        role="vpn",
        image="ubuntu-22.04",
        flavor="de.NBI tiny",
        network_id=net.network.id,
        key_name="hg-flaky-key",
        security_groups=["hg-flaky-sg"],
    )
    vm = run(st.ensure_server, spec=spec, poll=0.05)
    fip = run(st.ensure_floating_ip, site=site, port_id=vm.port_id, external_network="public")
    run(st.ensure_port, port_id=vm.port_id, pairs=["10.0.0.0/24"], group_ids=[])
    info = run(st.lookup_node, name="hg-flaky-vpn", site=site)
    injected = cloud.handle.stats()[CLOUD]["injected_errors"]
    faults(None)

    assert injected >= 5, "the faults did not bite: the test proves nothing"
    c = cloud.conn
    assert str(info.floating_ip) == str(fip.address) and info.port_id == vm.port_id
    for items in (
        c.network.networks(name="hg-flaky-net"),
        c.network.subnets(name="hg-flaky-subnet"),
        c.network.routers(name="hg-flaky-router"),
        c.network.security_groups(name="hg-flaky-sg"),
    ):
        assert len(owned(items, site)) == 1
    assert len(list(c.compute.servers(name="^hg-flaky-vpn$"))) == 1
    assert len(owned(c.network.ips(), site)) == 1
    keys = [
        security_groups.rule_key(r) for r in c.network.security_group_rules(security_group_id=sg.id)
    ]
    assert len(keys) == len(set(keys)) == 2 + 2  # ours + the two default egress rules
    pairs = c.network.get_port(vm.port_id).allowed_address_pairs
    assert [p["ip_address"] for p in pairs] == ["10.0.0.0/24"]

    faults({CLOUD: {"seed": 21, "error_rate": 0.2, "error_codes": [500, 503, 409, "drop"]}})
    run(st.remove_site_resources, site=site, timeout=30)  # the record: the last attempt's
    faults(None)
    assert not list(c.compute.servers(name="^hg-flaky-vpn$"))
    for items in (c.network.networks(), c.network.routers(), c.network.security_groups()):
        assert not owned(items, site)
    assert not owned(c.network.ips(), site) and not owned(c.network.subnets(), site)


def test_wrong_credentials_fail_at_once_naming_the_cause(
    cloud: Cloud, prefect_harness: Any
) -> None:
    from pydantic import SecretStr

    from hybridgrid.blocks.openstack import OpenStackCredentials
    from hybridgrid.tasks import site_tasks as st

    good = OpenStackCredentials.from_clouds_yaml(CLOUD, cloud.handle.clouds_yaml)
    bad = good.model_copy(update={"password": SecretStr("not-the-password")})
    loading.use_connection("wrong-password", bad.connect())
    cloud.reset()
    state = run_task(
        st.ensure_keypair,
        cloud="wrong-password",
        name="hg-x-key",
        public_key=PUBKEY,
        return_state=True,
    )
    assert state.is_failed()
    assert calls(cloud, CLOUD, "identity", "POST") == 1  # one attempt: one token request
    message = str(state.result(raise_on_failure=False))
    assert "authentication rejected" in message and "'wrong-password'" in message
    assert "not-the-password" not in message
    assert good.password.get_secret_value() not in message
    loading.forget("wrong-password")


def test_exceeded_quota_fails_at_once_naming_the_quota(cloud: Cloud, prefect_harness: Any) -> None:
    from hybridgrid.tasks import site_tasks as st

    tiny = loading.use_connection("tiny", connect(cloud.handle.state_dir, "tiny"))
    net = networks.ensure_network(tiny, "q", "hg-q-net")
    cloud.reset()
    state = run_task(
        st.ensure_site_network,
        cloud="tiny",
        site="q2",
        cidr="192.168.93.0/24",
        external_network="public",
        return_state=True,
    )
    assert state.is_failed() and calls(cloud, "tiny", "network", "POST") == 1
    assert "quota for network exceeded" in str(state.result(raise_on_failure=False))

    spec = ServerSpec(
        name="hg-q-vpn",
        site="q",
        role="vpn",
        image="ubuntu-22.04",
        flavor="de.NBI tiny",
        network_id=net.id,
    )
    state = run_task(st.ensure_server, cloud="tiny", spec=spec, return_state=True)
    assert state.is_failed() and calls(cloud, "tiny", "compute", "POST") == 1
    message = str(state.result(raise_on_failure=False))
    assert "quota for instances exceeded (used 0 of 0, requested 1)" in message
    assert not list(tiny.compute.servers())


def test_ownership_error_is_not_retried(cloud: Cloud, prefect_harness: Any) -> None:
    from hybridgrid.tasks import site_tasks as st

    c = cloud.conn
    for _ in range(2):
        c.network.create_security_group(name="hg-dup2-sg", tags=naming.tags("dup2"))
    cloud.reset()
    state = run_task(
        st.ensure_group, cloud=CLOUD, site="dup2", name="hg-dup2-sg", rules=[], return_state=True
    )
    assert state.is_failed() and calls(cloud, CLOUD, "network", "GET") == 1
    assert "will not guess" in str(state.result(raise_on_failure=False))
    removal.remove_site_resources(c, "dup2", timeout=30)


def test_block_connection_is_loaded_once_and_a_flow_run_counts_its_changes(
    cloud: Cloud, prefect_harness: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from prefect import flow

    from hybridgrid.blocks.openstack import OpenStackCredentials
    from hybridgrid.tasks import site_tasks as st

    creds = OpenStackCredentials.from_clouds_yaml(CLOUD, cloud.handle.clouds_yaml)
    creds.save("lc-giessen", overwrite=True)
    password = creds.password.get_secret_value()
    with ThreadPoolExecutor(4) as pool:
        conns = list(pool.map(lambda _: loading.connection("lc-giessen"), range(4)))
    assert all(c is conns[0] for c in conns) and conns[0] is not cloud.conn
    with pytest.raises(LookupError, match="no OpenStack credentials block named 'nope'"):
        loading.connection("nope")

    @flow
    async def make_site_basics(site: str) -> tuple[list[str], int]:
        with loading.track() as calls:  # this run's calls only, task threads included
            results = await asyncio.gather(
                st.ensure_site_network(
                    cloud="lc-giessen",
                    site=site,
                    cidr=f"192.168.{94 if site == 'flowa' else 95}.0/24",
                    external_network="public",
                ),
                st.ensure_group(cloud="lc-giessen", site=site, name=f"hg-{site}-sg", rules=[]),
                st.ensure_keypair(cloud="lc-giessen", name=f"hg-{site}-key", public_key=PUBKEY),
            )
        assert password not in repr(results)
        net, group, key = results
        actions = [r.action for r in (*net.records, group.group, key)]
        return actions, calls.mutating("lc-giessen")

    import io
    import logging

    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    ks_log = logging.getLogger("keystoneauth")
    ks_log.addHandler(handler)
    ks_log.setLevel(logging.DEBUG)  # every request, with headers and bodies
    try:
        # network, subnet, router (+ its interface), group, key pair
        for expected, changes in (("created", 6), ("reused", 0)):
            cloud.reset()
            with ThreadPoolExecutor(2) as pool:  # two flow runs at once, counted apart
                runs = list(
                    pool.map(lambda s: asyncio.run(make_site_basics(s)), ["flowa", "flowb"])
                )
            assert runs == [([expected] * 5, changes)] * 2
            assert loading.mutating_calls("lc-giessen") == 2 * changes
            assert cloud.handle.stats()[CLOUD]["mutating"] == 2 * changes
    finally:
        ks_log.removeHandler(handler)
        ks_log.setLevel(logging.NOTSET)
    assert loading.api_calls()["lc-giessen"].by_method.get("GET", 0) > 0
    assert "REQ: curl" in logged.getvalue() and password not in logged.getvalue()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = {r.name for r in client.read_task_runs(limit=200)}
    assert "network, subnet and router of flowa" in names  # run names say what they do
    assert "key pair hg-flowb-key" in names
    for site in ("flowa", "flowb"):
        removal.remove_site_resources(cloud.conn, site, timeout=30)
        keypairs.remove_keypair(cloud.conn, f"hg-{site}-key", PUBKEY)
    loading.forget("lc-giessen")
