"""A port already in use: the hub's WireGuard port (UDP 51820 on the master) is held by another
program while wg0 is down, e.g. a second VPN daemon on the master or a wg0 stopped for
maintenance with something else started meanwhile.

"A doomed run fails before it creates anything" (docs/architecture.md §4, pre-flight):
add-remote-site's pre-flight reads, over one SSH command on the master, who holds the hub's
port (`ss -ulpn`) and wg0's listen port (`wg show`), and stops with one error naming the
port, the host, the program and the fix, with 0 mutating API calls and nothing registered.
A normal rerun (wg0 itself holds the port — through wireguard-go, a userspace process, on
these hosts) is not refused.

The hub is restored afterwards (listener stopped, wg0 up), and remove-remote-site (a no-op
when nothing was registered) cleans up whatever a regression would have built.
"""

from __future__ import annotations

import asyncio

import pytest
from reliab_support import HOME_CLOUD, REGISTRY, SITE_CLOUD, SUMMARY

from hybridgrid.model import RemoteSite

pytestmark = pytest.mark.dataplane

SITE = "hagen"
MASTER = "hg-bielefeld-master"
BLOCK = """set -e
wg-quick down wg0 >/dev/null 2>&1 || true
python3 -c 'import socket,time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 51820)); time.sleep(900)' \
  </dev/null >/dev/null 2>&1 &
echo $! > /run/portblock.pid; sleep 0.5
ss -Hulpn 'sport = :51820'
"""
UNBLOCK = """kill "$(cat /run/portblock.pid)" 2>/dev/null; rm -f /run/portblock.pid; sleep 0.3
# wg0 back up from its persisted config (none when no site was ever added: it stays down)
if [ -f /etc/wireguard/wg0.conf ]; then
  wg-quick down wg0 >/dev/null 2>&1; wg-quick up wg0 >/dev/null 2>&1
  wg show wg0 listen-port
else
  echo no-wg0
fi
"""


def _registered(name: str) -> bool:
    from hybridgrid.blocks.registry import load_registry

    return name in asyncio.run(load_registry(REGISTRY)).sites


@pytest.fixture(scope="module")
def port_in_use(rel):
    from hybridgrid.flows.remove_remote_site import remove_remote_site

    rel.key_block(SITE)
    rc, out = rel.exec(MASTER, BLOCK, HOME_CLOUD)
    assert rc == 0 and "python3" in out, out
    try:
        rel.handle.reset_stats()
        try:
            rel.add_site(RemoteSite(name=SITE, cloud=SITE_CLOUD, workers=0), timeout=300)
            message = "NO ERROR"
        except Exception as exc:
            message = str(exc)
            rel.watch.text(message)
        mutating = sum(rel.mutating().values())
        registered = _registered(SITE)
    finally:
        rc, out = rel.exec(MASTER, UNBLOCK, HOME_CLOUD)
        assert rc == 0 and out.strip() in ("51820", "no-wg0"), out
        removed = asyncio.run(remove_remote_site(SITE, registry=REGISTRY))
    tagged = rel.tagged(SITE_CLOUD, SITE) + rel.tagged(HOME_CLOUD, SITE)
    SUMMARY.bad_input.append(("hub UDP port in use", " ".join(message.split()), mutating, tagged))
    SUMMARY.other.append("Pre-flight tasks of the refused run (s): " + _step2_seconds(SITE))
    return message, mutating, registered, removed


def _step2_seconds(run_name: str) -> str:
    """Measured, not asserted: how long each pre-flight task of the run took, from the task
    runs' start/end times (the port check follows the master lookup; both run next to the
    two cloud pre-flights)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async def read() -> str:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name]))
            )
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [runs[0].id]})
            )
        parts = [
            f"{t.name} {(t.end_time - t.start_time).total_seconds():.2f}"
            for t in sorted(tasks, key=lambda t: t.start_time or t.expected_start_time)
            if t.start_time and t.end_time
        ]
        return "; ".join(parts)

    return asyncio.run(read())


def test_port_in_use_is_one_early_error(port_in_use):
    message, mutating, registered, removed = port_in_use
    assert "pre-flight on cloud 'bielefeld' failed" in message, message
    assert f"UDP 51820 on the master {MASTER}" in message, message
    assert "is in use by python3 (pid " in message and "not by wg0 (wg0 is down)" in message
    assert "Fix: stop that program" in message, message
    assert mutating == 0
    assert not registered and not removed.registered  # nothing reserved in the registry


def test_nothing_tagged_after_the_error(rel, port_in_use):
    assert rel.tagged(SITE_CLOUD, SITE) == 0
    assert rel.tagged(HOME_CLOUD, SITE) == 0


def test_wg0_holding_its_own_port_is_not_refused(rel, port_in_use):
    """With wg0 up on 51820 (after the restore; its socket owned by wireguard-go) the same
    check the pre-flight runs finds the port bound and reports no problem."""
    from hybridgrid.blocks.loading import ssh_key
    from hybridgrid.blocks.registry import load_registry
    from hybridgrid.cloudops.preflight import hub_port_problems
    from hybridgrid.flows.ssh_access import door
    from hybridgrid.tasks.node_tasks import udp_port_state

    data = asyncio.run(load_registry(REGISTRY))
    if not any(e.spoke_public_key for e in data.sites.values()):
        # this module alone: no site was ever added, so wg0 never ran; a site brings it up
        rel.key_block(f"{SITE}-2")
        assert rel.add_site(RemoteSite(name=f"{SITE}-2", cloud=SITE_CLOUD, workers=0)).verified
    home = data.home
    conn = rel.conn(HOME_CLOUD)
    server = next(conn.compute.servers(name=MASTER))
    port = next(conn.network.ports(device_id=server.id))
    fip = next(conn.network.ips(port_id=port.id)).floating_ip_address
    key = asyncio.run(ssh_key(home.ssh_key_block))
    target = door(home.cloud, fip, home.host_keys[MASTER], key)
    state = asyncio.run(udp_port_state(target, home.ssh_key_block, home.listen_port))
    assert state.bound and state.wg0_port == 51820, state
    assert any(h.startswith("wireguard-go (pid ") for h in state.holders), state
    assert hub_port_problems(MASTER, state) == []
