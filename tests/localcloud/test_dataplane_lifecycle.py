"""Data-plane life cycle: build time, re-attach, delete/ERROR, cloud-init, port security
switches, the exec CLI, memory per server, and destroy() leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dataplane_fixtures import CloudBuilder, icmp_rule

from localcloud.backend import AddressPair
from localcloud.dataplane import make_backend, names
from localcloud.dataplane.netns import list_namespaces, pids_in_netns

pytestmark = [
    pytest.mark.dataplane,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nftables"
    ),
]

USER_DATA = """#cloud-config
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOz6XPqcvfXJ9a+HvWYzkLzI5n5aHwWpC9cW6IVexg7E extra@test
write_files:
  - path: /etc/hybridgrid/role
    content: master
    permissions: '0600'
  - path: /home/ubuntu/notes.txt
    content: aGVsbG8=
    encoding: b64
    owner: ubuntu:ubuntu
runcmd:
  - [sh, -c, "echo ran >> /root/runcmd.out"]
"""


def _root_view() -> dict:
    run = lambda *a: subprocess.run(a, capture_output=True, text=True).stdout  # noqa: E731
    return {
        "links": sorted(
            line.split(":")[1].strip() for line in run("ip", "-o", "link").splitlines()
        ),
        "tables": run("nft", "list", "tables"),
        "routes": run("ip", "route", "show"),
    }


def _pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _running(pid: int) -> bool:
    """Still running (a zombie waiting for init to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.fixture
def two_clouds(tmp_path):
    state_dir = tmp_path / "state"
    before = _root_view()
    backend = make_backend(state_dir)
    b = CloudBuilder("bielefeld", 0, "192.168.66.0/24")
    g = CloudBuilder("giessen", 1, "192.168.77.0/24")
    icmp = b.add_group("icmp", [icmp_rule()])
    m = b.add_server("master", "192.168.66.10", [], status="BUILD", user_data=USER_DATA)
    bad = "#cloud-config\nwrite_files:\n- {path: /etc/x, content: y, owner: 'nosuch:nosuch'}\n"
    w = b.add_server("worker", "192.168.66.11", [], status="BUILD", user_data=bad)
    for s in (m, w):
        b.port_of(s).security_group_ids.append(icmp.id)
    g.add_server("vpn", "192.168.77.10", [], status="BUILD")
    g.add_server("worker", "192.168.77.11", [], status="BUILD")
    b.add_floating_ip(m, "203.0.113.10")
    try:
        yield backend, b, g, state_dir, before
    finally:
        backend.destroy()


def test_topology_build_reattach_and_destroy(two_clouds):
    backend, b, g, state_dir, before = two_clouds
    t0 = time.monotonic()
    backend.apply(b.snapshot())
    backend.apply(g.snapshot())
    t_build = time.monotonic() - t0
    # BUILD: namespace and host keys, no sshd yet
    assert "BEGIN SSH HOST KEY" not in backend.console_log("bielefeld", b.servers[0].id)
    for builder in (b, g):
        for s in builder.servers:
            s.status = "ACTIVE"
    t1 = time.monotonic()
    backend.apply(b.snapshot())
    backend.apply(g.snapshot())
    t_active = time.monotonic() - t1
    print(f"\n2 clouds, 4 servers: BUILD {t_build:.2f} s, ACTIVE {t_active:.2f} s")

    tag = names.instance_tag(state_dir)
    ours = [ns for ns in list_namespaces() if ns.startswith(names.prefix(tag))]
    assert len(ours) == 1 + 2 + 2 + 4  # internet, 2 fabrics, 2 routers, 4 servers
    pss = {
        s.name + "@" + cloud: _pss_kb(pids_in_netns(names.server_ns(tag, s.id)))
        for cloud, builder in (("b", b), ("g", g))
        for s in builder.servers
    }
    print("PSS per server (kB):", pss)
    pids = [p for ns in ours for p in pids_in_netns(ns)]
    assert pids

    # a fresh process re-attaches: nothing is rebuilt, keys stay
    state = json.loads((state_dir / "dataplane" / "state.json").read_text())
    console = backend.console_log("bielefeld", b.servers[0].id)
    again = make_backend(state_dir)
    again.apply(b.snapshot())
    again.apply(g.snapshot())
    state2 = json.loads((state_dir / "dataplane" / "state.json").read_text())
    assert {k: v["pid"] for k, v in state["servers"].items()} == {
        k: v["pid"] for k, v in state2["servers"].items()
    }
    assert again.console_log("bielefeld", b.servers[0].id) == console

    # simulate a crash that lost the state file: destroy still finds everything by prefix
    (state_dir / "dataplane" / "state.json").unlink()
    t2 = time.monotonic()
    make_backend(state_dir).destroy()
    print(f"destroy: {time.monotonic() - t2:.2f} s")
    assert not [ns for ns in list_namespaces() if ns.startswith(names.prefix(tag))]
    assert not [p for p in pids if _running(p)]
    after = _root_view()
    assert after["links"] == before["links"]
    assert after["tables"] == before["tables"]
    others = [ns for ns in list_namespaces() if names.INSTANCE_NS_RE.match(ns)]
    unreachable = [r for r in after["routes"].splitlines() if r.startswith("unreachable")]
    if others:  # another localcloud (the demo's?) still needs the safety routes
        assert unreachable
    else:
        assert not unreachable
    assert not (state_dir / "dataplane").exists()


def test_cloud_init_exec_cli_and_server_removal(two_clouds):
    backend, b, _g, state_dir, _ = two_clouds
    for s in b.servers:
        s.status = "ACTIVE"
    backend.apply(b.snapshot())
    master, worker = b.servers
    sh = lambda srv, cmd: backend.exec(srv.id, ["sh", "-c", cmd])  # noqa: E731
    assert sh(
        master, "cat /etc/hybridgrid/role; echo; stat -c %a /etc/hybridgrid/role"
    ).stdout.split() == [
        "master",
        "600",
    ]
    assert sh(
        master, "stat -c %U /home/ubuntu/notes.txt; cat /home/ubuntu/notes.txt; echo"
    ).stdout.split() == [
        "ubuntu",
        "hello",
    ]
    assert "extra@test" in sh(master, "cat /home/ubuntu/.ssh/authorized_keys").stdout
    deadline = time.monotonic() + 5
    while (
        sh(master, "cat /root/runcmd.out").stdout.strip() != "ran" and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert sh(master, "cat /root/runcmd.out").stdout.strip() == "ran"
    # a bad write_files entry is reported on the console; the server boots anyway
    assert "cloud-init: write_files /etc/x" in backend.console_log("bielefeld", worker.id)
    assert "LISTEN" in sh(worker, "ss -Hltn 'sport = :22'").stdout
    # SHUTOFF stops sshd and the links; ACTIVE again starts sshd, runcmd does not run twice
    b.servers[0].status = "SHUTOFF"
    backend.apply(b.snapshot())
    assert sh(master, "ss -Hltn 'sport = :22'").stdout.strip() == ""
    assert sh(worker, "ping -c1 -W1 192.168.66.10").returncode != 0
    b.servers[0].status = "ACTIVE"
    backend.apply(b.snapshot())
    assert "LISTEN" in sh(master, "ss -Hltn 'sport = :22'").stdout
    assert sh(worker, "ping -c1 -W1 192.168.66.10").returncode == 0
    assert sh(master, "cat /root/runcmd.out").stdout.split() == ["ran"]
    # the operator's console: by name, exit code and output passed through
    cli = [sys.executable, "-m", "localcloud.dataplane.cli", "exec", "--state-dir", str(state_dir)]
    res = subprocess.run(
        [*cli, "--cloud", "bielefeld", "worker", "--", "sh", "-c", "hostname; exit 3"],
        capture_output=True,
        text=True,
    )
    assert (res.returncode, res.stdout.strip()) == (3, "worker")
    res = subprocess.run([*cli, "nosuch", "--", "true"], capture_output=True, text=True)
    assert res.returncode == 2 and "no server 'nosuch'" in res.stderr
    # ERROR tears a server down, a server missing from the snapshot is deleted
    tag = names.instance_tag(state_dir)
    worker.status = "ERROR"
    backend.apply(b.snapshot())
    assert names.server_ns(tag, worker.id) not in list_namespaces()
    b.servers.remove(master)
    backend.apply(b.snapshot())
    assert names.server_ns(tag, master.id) not in list_namespaces()
    assert backend.console_log("bielefeld", master.id) == ""


def test_port_security_spoofing_pairs_and_switch(two_clouds):
    backend, b, _g, state_dir, _ = two_clouds
    for s in b.servers:
        s.status = "ACTIVE"
    backend.apply(b.snapshot())
    master, worker = b.servers
    # the worker uses an address that is not its own
    backend.exec(worker.id, ["ip", "addr", "add", "192.168.66.200/24", "dev", "eth0"])

    def spoofed_ping() -> bool:
        backend.flush_conntrack()
        res = backend.exec(
            worker.id, ["ping", "-c", "1", "-W", "1", "-I", "192.168.66.200", "192.168.66.10"]
        )
        return res.returncode == 0

    assert backend.exec(worker.id, ["ping", "-c", "1", "-W", "1", "192.168.66.10"]).returncode == 0
    assert not spoofed_ping()
    b.port_of(worker).allowed_address_pairs = [AddressPair(ip_address="192.168.66.192/26")]
    backend.apply(b.snapshot())
    assert spoofed_ping()
    b.port_of(worker).allowed_address_pairs = []
    backend.apply(b.snapshot())
    assert not spoofed_ping()
    b.port_of(worker).port_security_enabled = False
    backend.apply(b.snapshot())
    assert spoofed_ping()
    # security group change reaches the running server at once: drop the ICMP group
    # from master, and ping from outside the default group fails
    b.port_of(worker).port_security_enabled = True
    b.port_of(master).security_group_ids = [b.default_sg.id]
    backend.apply(b.snapshot())
    backend.flush_conntrack()
    inet = ["ip", "netns", "exec", names.inet_ns(names.instance_tag(state_dir))]
    ok = backend.exec(master.id, ["ping", "-c", "1", "-W", "1", "203.0.113.1"]).returncode == 0
    assert ok  # egress allowed by the default group
    res = subprocess.run([*inet, "ping", "-c", "1", "-W", "1", "203.0.113.10"], capture_output=True)
    assert res.returncode != 0
    b.port_of(master).security_group_ids.append(b.security_groups[1].id)
    backend.apply(b.snapshot())
    res = subprocess.run([*inet, "ping", "-c", "1", "-W", "1", "203.0.113.10"], capture_output=True)
    assert res.returncode == 0
