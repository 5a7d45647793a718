"""localcloud's life cycle: the console script, stop/up keeping state, separate clouds,
secrets kept out of argv and world-readable files."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import requests

from localcloud import control
from localcloud.clientconf import cloud_entry, connect

LOCALCLOUD = Path(sys.executable).parent / "localcloud"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCALCLOUD_DATAPLANE": "0"}
    return subprocess.run(
        [str(LOCALCLOUD), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_console_script_up_status_stats_stop_down(tmp_path, free_tcp_port):
    state = tmp_path / "lc"
    try:
        up = _run(
            "up",
            "--state-dir",
            str(state),
            "--cloud",
            "one",
            "--cloud",
            "two",
            "--port",
            str(free_tcp_port),
        )
        assert up.returncode == 0, up.stderr
        assert "203.0.113.0/24" in up.stdout and "198.51.100.0/24" in up.stdout
        info = json.loads(_run("status", "--state-dir", str(state), "--json").stdout)
        assert info["running"] and set(info["clouds"]) == {"one", "two"}

        conn = connect(state, "one")
        net = conn.network.create_network(name="cli-script-net")
        conn.network.create_subnet(network_id=net.id, cidr="10.9.0.0/24", ip_version=4)
        conn.create_server(
            "script-vm",
            image="ubuntu-22.04",
            flavor="de.NBI tiny",
            network=net.id,
            auto_ip=False,
            wait=True,
            timeout=60,
        )
        stats = json.loads(_run("stats", "--state-dir", str(state), "--json").stdout)
        assert stats["one"]["mutating"] == 3  # network, subnet, server (token issue excluded)
        assert stats["one"]["by_service"]["compute"]["POST"] == 1
        assert stats["two"]["mutating"] == 0  # only start-up's readiness probe reached it
        assert _run("stats", "--state-dir", str(state), "--reset").returncode == 0
        assert json.loads(_run("stats", "--state-dir", str(state), "--json").stdout) == {}

        (tmp_path / "f.yaml").write_text("one:\n  error_rate: 0.25\n")
        assert _run("faults", str(tmp_path / "f.yaml"), "--state-dir", str(state)).returncode == 0
        rules = control.handle(state).admin("GET", "/_localcloud/faults")["one"]["errors"]
        assert [r["rate"] for r in rules] == [0.25]
        assert _run("faults", "--off", "--state-dir", str(state)).returncode == 0
        assert control.handle(state).admin("GET", "/_localcloud/faults") == {}

        text = _run("status", "--state-dir", str(state)).stdout
        assert "script-vm" in text and "ACTIVE" in text and "10.9.0." in text
        assert "stopped" in _run("stop", "--state-dir", str(state)).stdout
        info = json.loads(_run("status", "--state-dir", str(state), "--json").stdout)
        assert not info["running"] and info["clouds"]["one"]["servers"][0]["name"] == "script-vm"
        down = _run("down", "--state-dir", str(state))
        assert down.returncode == 0, down.stderr
        assert not state.exists()
    finally:
        control.down(state)


def test_stop_then_up_keeps_every_resource(new_localcloud):
    handle = new_localcloud(["alpha"])
    conn = connect(handle.state_dir, "alpha")
    net = conn.network.create_network(name="keep-net", tags=["hybridgrid"])
    subnet = conn.network.create_subnet(network_id=net.id, cidr="192.168.66.0/24", ip_version=4)
    public = conn.network.find_network("public")
    router = conn.network.create_router(
        name="keep-router", external_gateway_info={"network_id": public.id}
    )
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    conn.compute.create_keypair(name="keep-key")
    vm = conn.create_server(
        "keep-vm",
        image="ubuntu-22.04",
        flavor="de.NBI tiny",
        network=net.id,
        wait=True,
        auto_ip=True,
        timeout=60,
    )
    fip = next(a["addr"] for a in vm.addresses["keep-net"] if a["OS-EXT-IPS:type"] == "floating")
    token = conn.session.get_token()
    old_ips = {p.fixed_ips[0]["ip_address"] for p in conn.network.ports(network_id=net.id)}

    assert control.stop(handle.state_dir)
    assert control.running_pid(handle.state_dir) is None
    again = control.start(handle.state_dir)  # same port, same clouds, from the state dir
    assert again.port == handle.port and again.pid != handle.pid

    # A token from before the restart still works (signed, not stored in memory).
    servers_url = again.clouds["alpha"].compute + "/servers/detail"
    resp = requests.get(servers_url, headers={"X-Auth-Token": token}, timeout=10)
    assert resp.status_code == 200
    (shown,) = resp.json()["servers"]
    assert (shown["id"], shown["status"]) == (vm.id, "ACTIVE")
    assert fip in json.dumps(shown["addresses"])
    conn = connect(handle.state_dir, "alpha")
    assert conn.network.find_network("keep-net").tags == ["hybridgrid"]
    assert conn.network.get_router(router.id).external_gateway_info["network_id"] == public.id
    assert conn.compute.get_keypair("keep-key").name == "keep-key"
    new_port = conn.network.create_port(network_id=net.id)
    assert new_port.fixed_ips[0]["ip_address"] not in old_ips


def test_two_clouds_have_separate_state_and_addresses(lc, conn, giessen):
    net = conn.network.create_network(name="only-in-bielefeld")
    assert giessen.network.find_network("only-in-bielefeld") is None
    assert conn.network.find_network(net.id) is not None
    b_public = conn.network.find_network("public")
    g_public = giessen.network.find_network("public")
    assert b_public.id != g_public.id
    (b_sub,) = conn.network.subnets(network_id=b_public.id)
    (g_sub,) = giessen.network.subnets(network_id=g_public.id)
    assert (b_sub.cidr, g_sub.cidr) == ("203.0.113.0/24", "198.51.100.0/24")
    assert (b_sub.gateway_ip, b_public.mtu, b_public.is_router_external) == (
        "203.0.113.1",
        1450,
        True,
    )
    assert b_sub.allocation_pools[0]["start"] == "203.0.113.10"
    fip = giessen.network.create_ip(floating_network_id=g_public.id)
    assert ipaddress.ip_address(fip.floating_ip_address) in ipaddress.ip_network("198.51.100.0/24")
    giessen.network.delete_ip(fip)
    assert conn.current_project_id != giessen.current_project_id
    assert (lc.state_dir / "bielefeld.db").exists() and (lc.state_dir / "giessen.db").exists()


def test_secrets_stay_private(lc):
    clouds_yaml = lc.state_dir / "clouds.yaml"
    assert stat.S_IMODE(clouds_yaml.stat().st_mode) == 0o600
    for name in ("secret.key", "admin.token", "bielefeld.db"):
        assert stat.S_IMODE((lc.state_dir / name).stat().st_mode) & 0o077 == 0
    password = cloud_entry(lc.state_dir, "bielefeld")["auth"]["password"]
    secret = cloud_entry(lc.state_dir, "bielefeld-appcred")["auth"]["application_credential_secret"]
    cmdline = Path(f"/proc/{lc.pid}/cmdline").read_bytes()
    assert password.encode() not in cmdline and secret.encode() not in cmdline
    log = (lc.state_dir / "server.log").read_text()
    assert password not in log and secret not in log
