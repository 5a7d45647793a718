"""The hook for part 2: every change reaches the backend as a full `CloudSnapshot`; the server
life cycle (BUILD → ACTIVE / ERROR) and the console come from it; stop closes it.

The API runs in this process (real uvicorn on a loopback port) so the test can hand it a
backend that records what it is given — the only way to observe the seam itself."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from openstack import exceptions

from localcloud.api_main import build_runtime
from localcloud.app import create_app
from localcloud.backend import CloudSnapshot
from localcloud.clientconf import connect
from localcloud.config import CloudConfig, LocalcloudConfig, save_config


class RecordingBackend:
    def __init__(self) -> None:
        self.snapshots: list[CloudSnapshot] = []
        self.fail = False
        self.closed = False

    def apply(self, snapshot: CloudSnapshot) -> None:
        if self.fail:
            raise RuntimeError("namespace could not be made")
        self.snapshots.append(snapshot)

    def console_log(self, cloud: str, server_id: str) -> str:
        return f"console of {server_id} from the backend\n"

    def close(self) -> None:
        self.closed = True

    def destroy(self) -> None:
        pass

    def server_states(self, server_id: str) -> list[str]:
        states = []
        for snap in self.snapshots:
            for s in snap.servers:
                if s.id == server_id and (not states or states[-1] != s.status):
                    states.append(s.status)
        return states


@pytest.fixture
def seam(tmp_path: Path, free_tcp_port: int) -> Iterator[tuple[RecordingBackend, object]]:
    config = LocalcloudConfig(port=free_tcp_port, clouds=[CloudConfig(name="seam", index=0)])
    save_config(tmp_path, config)
    backend = RecordingBackend()
    runtime = build_runtime(tmp_path, config, backend)
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=free_tcp_port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "API did not start"
        time.sleep(0.02)
    try:
        yield backend, connect(tmp_path, "seam")
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
    assert backend.closed


def test_start_up_applies_the_seeded_cloud(seam):
    backend, _ = seam
    first = backend.snapshots[0]
    assert (first.cloud, first.index) == ("seam", 0)
    (public,) = first.networks
    assert public.external and public.mtu == 1450 and public.subnets[0].cidr == "203.0.113.0/24"
    assert [g.name for g in first.security_groups] == ["default"]


def test_changes_and_server_life_cycle_reach_the_backend(seam):
    backend, conn = seam
    public = conn.network.find_network("public")
    net = conn.network.create_network(name="n")
    subnet = conn.network.create_subnet(network_id=net.id, cidr="192.168.66.0/24", ip_version=4)
    assert {n.id for n in backend.snapshots[-1].networks} == {public.id, net.id}
    router = conn.network.create_router(name="r", external_gateway_info={"network_id": public.id})
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    conn.network.update_router(
        router, routes=[{"destination": "10.0.0.0/24", "nexthop": "192.168.66.5"}]
    )
    key = conn.compute.create_keypair(name="k")
    sg = conn.network.create_security_group(name="wg")
    conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", protocol="udp", port_range_min=51820,
        port_range_max=51820, remote_ip_prefix="198.51.100.9/32",
    )  # fmt: skip
    server = conn.compute.create_server(
        name="vm", image_id=conn.image.find_image("ubuntu-22.04").id,
        flavor_id=conn.compute.find_flavor("de.NBI tiny").id, networks=[{"uuid": net.id}],
        key_name="k", security_groups=[{"name": "wg"}],
        user_data=base64.b64encode(b"#cloud-config\nhostname: vm\n").decode(),
    )  # fmt: skip
    server = conn.compute.wait_for_server(server, wait=20, interval=0.05)
    (nova_port,) = conn.network.ports(device_id=server.id)
    conn.network.create_ip(floating_network_id=public.id, port_id=nova_port.id)
    assert backend.server_states(server.id) == ["BUILD", "ACTIVE"]
    snap = backend.snapshots[-1]
    (vm,) = snap.servers
    assert (
        vm.authorized_keys == [key.public_key] and vm.user_data == "#cloud-config\nhostname: vm\n"
    )
    (port,) = [p for p in snap.ports if p.id in vm.port_ids]
    assert port.device_owner == "compute:nova" and port.security_group_ids == [sg.id]
    (rtr,) = snap.routers
    assert rtr.gateway_port_id and len(rtr.interface_port_ids) == 1
    assert [(r.destination, r.nexthop) for r in rtr.routes] == [("10.0.0.0/24", "192.168.66.5")]
    (fip,) = snap.floating_ips
    assert fip.port_id == port.id and fip.router_id == router.id
    wg = next(g for g in snap.security_groups if g.id == sg.id)
    assert any(r.protocol == "udp" and r.port_range_min == 51820 for r in wg.rules)

    assert conn.get_server_console(server.id) == f"console of {server.id} from the backend\n"
    conn.network.update_port(port.id, allowed_address_pairs=[{"ip_address": "10.0.0.0/24"}])
    pairs = next(p for p in backend.snapshots[-1].ports if p.id == port.id).allowed_address_pairs
    assert [a.ip_address for a in pairs] == ["10.0.0.0/24"]

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=20, interval=0.05)
    assert backend.snapshots[-1].servers == []
    assert port.id not in {p.id for p in backend.snapshots[-1].ports}


def test_backend_failure_puts_the_server_in_error(seam):
    backend, conn = seam
    net = conn.network.create_network(name="n")
    conn.network.create_subnet(network_id=net.id, cidr="192.168.67.0/24", ip_version=4)
    backend.fail = True
    server = conn.compute.create_server(
        name="doomed",
        image_id=conn.image.find_image("ubuntu-22.04").id,
        flavor_id=conn.compute.find_flavor("de.NBI tiny").id,
        networks=[{"uuid": net.id}],
    )  # the API state is committed even though the backend failed
    with pytest.raises(exceptions.ResourceFailure):
        conn.compute.wait_for_server(server, wait=20, interval=0.1)
    failed = conn.compute.get_server(server.id)
    assert failed.status == "ERROR" and "data plane" in failed.fault["message"]
    backend.fail = False
