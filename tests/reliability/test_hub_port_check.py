"""The hub-port pre-flight check's pure half: `ss`/`wg` output → who holds the port → problem.

The outputs are what these hosts print (wireguard-go is the userspace WireGuard here, so wg0's
own socket has a program; a kernel wg0's has none)."""

from __future__ import annotations

from hybridgrid.cloudops.preflight import hub_port_command, hub_port_problems, parse_hub_port

WG_GO = (
    'ss: UNCONN 0      0      0.0.0.0:51820 0.0.0.0:* users:(("wireguard-go",pid=11963,fd=18))\n'
    'ss: UNCONN 0      0         [::]:51820    [::]:* users:(("wireguard-go",pid=11963,fd=17))\n'
)
PY = 'ss: UNCONN 0      0      0.0.0.0:51820 0.0.0.0:* users:(("python3",pid=77,fd=3))\n'
KERNEL = "ss: UNCONN 0      0      0.0.0.0:51820 0.0.0.0:*\n"


def test_the_command_reads_ss_then_wg0_and_changes_nothing():
    cmd = hub_port_command(51820)
    assert "ss -Hulpn 'sport = :51820'" in cmd and "wg show wg0 listen-port" in cmd
    assert cmd.index("ss -Hulpn") < cmd.index("wg show")
    for verb in ("wg set", "wg-quick", "ip link", "kill", "rm ", ">"):
        assert verb not in cmd.replace(">/dev/null", "").replace("2>", ""), verb


def test_wg0_holding_its_port_through_wireguard_go_is_fine():
    state = parse_hub_port(51820, WG_GO + "wg0: 51820\n")
    assert state.bound and state.wg0_port == 51820
    assert state.holders == ["wireguard-go (pid 11963)"]
    assert hub_port_problems("master m", state) == []


def test_a_free_port_with_wg0_down_is_fine():
    state = parse_hub_port(51820, "wg0: \n")
    assert not state.bound and state.wg0_port is None
    assert hub_port_problems("master m", state) == []


def test_another_program_on_the_port_is_one_problem_naming_it_and_the_fix():
    state = parse_hub_port(51820, PY + "wg0: \n")
    (problem,) = hub_port_problems("the master m (ubuntu@203.0.113.5:22)", state)
    assert problem.startswith("UDP 51820 on the master m (ubuntu@203.0.113.5:22) is in use by")
    assert "python3 (pid 77), not by wg0 (wg0 is down)" in problem
    assert "Fix: stop that program" in problem


def test_wg0_on_another_port_and_a_kernel_socket_on_ours():
    state = parse_hub_port(51820, KERNEL + "wg0: 51821\n")
    (problem,) = hub_port_problems("master m", state)
    assert "a socket without a program" in problem and "wg0 listens on 51821" in problem


def test_a_host_without_ss_is_not_refused():
    state = parse_hub_port(51820, "no-ss\nwg0: \n")
    assert not state.checked and hub_port_problems("master m", state) == []
