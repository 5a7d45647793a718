"""Tunnel vs bare underlay between the same two namespaces: the home master and a site's VPN
node. The underlay is the VPN node's floating IP (the path WireGuard's UDP takes), the tunnel
its overlay address. A bounded Python TCP transfer (receiver on the VPN node samples bytes per
100 ms: a stall is ≥ 0.5 s without bytes) and ping; fragment and retransmit counters of every
namespace on the path (/proc/net/snmp) before and after; the MSS the kernel chose.

A temporary rule (TCP 5201 and ICMP from the master's floating IP, description
`hybridgrid-bench`) lets the underlay test in; it is removed at the end.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel

from localcloud.dataplane.netns import NETNS_DIR
from localcloud.dataplane.state import find_server, load_state
from localcloud.dataplane.vm import enter_argv, guest_env

PORT = 5201

RECEIVER = r"""
import json, socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(4); srv.settimeout(60)
print("listening", flush=True)
for _ in range(n):
    c, peer = srv.accept(); c.settimeout(10)
    t0 = time.monotonic(); got = 0; bins = {}
    try:
        while True:
            b = c.recv(1 << 18)
            if not b:
                break
            got += len(b); k = int((time.monotonic() - t0) * 10); bins[k] = bins.get(k, 0) + len(b)
    except socket.timeout:
        pass
    dt = time.monotonic() - t0
    last = max(bins) if bins else 0
    empty = [k for k in range(last + 1) if k not in bins]
    run = best = 0
    for k in range(last + 1):
        run = run + 1 if k not in bins else 0; best = max(best, run)
    print(json.dumps({"peer": peer[0], "bytes": got, "seconds": dt,
                      "empty_bins": len(empty), "longest_gap_s": best / 10}), flush=True)
    c.close()
"""

SENDER = r"""
import json, socket, sys, time
host, port, secs, cap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, port), timeout=10)
mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
buf = b"\0" * (1 << 16); sent = 0; t0 = time.monotonic()
while time.monotonic() - t0 < secs and sent < cap:
    s.sendall(buf); sent += len(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(json.dumps({"mss": mss, "sent": sent, "seconds": time.monotonic() - t0}))
"""


class PathResult(BaseModel):
    label: str
    address: str
    mbit_s: float
    rtt_ms: float | None
    loss_pct: float | None
    mss: int
    stalls: int  # receiver intervals of ≥ 0.5 s without bytes
    longest_gap_s: float
    retrans: int  # TCP retransmitted segments on the sender during the transfer
    fragments: int  # IP fragments created or reassembled anywhere on the path
    udp_drops: int = 0  # UDP receive-buffer/in errors on the path (wireguard-go not keeping up)


class TunnelResult(BaseModel):
    underlay: PathResult
    tunnel: PathResult
    tunnel_mtu: int | None


def _server_argv(state_dir: Path, name: str, cloud: str) -> list[str]:
    rec = find_server(load_state(state_dir, ""), name, cloud)
    if not rec.pid:
        raise RuntimeError(f"server {name} is not running")
    return enter_argv(rec.pid)


def _path_namespaces(state_dir: Path) -> list[str]:
    st = load_state(state_dir, "")
    return [s.ns for s in st.servers.values()] + [r.ns for r in st.routers.values()]


def _snmp(ns: str) -> dict[str, int]:
    text = subprocess.run(
        ["nsenter", f"--net={NETNS_DIR / ns}", "cat", "/proc/net/snmp"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        proto, names = head.split(":", 1)
        for k, v in zip(names.split(), vals.split(":", 1)[1].split(), strict=False):
            out[f"{proto}{k}"] = int(v)
    return out


def _counters(nss: list[str]) -> dict[str, dict[str, int]]:
    return {ns: _snmp(ns) for ns in nss}


def _delta(before: dict, after: dict, keys: tuple[str, ...], nss: list[str] | None = None) -> int:
    return sum(
        after[ns].get(k, 0) - before[ns].get(k, 0)
        for ns in (nss or after)
        if ns in before
        for k in keys
    )


def _ping(argv: list[str], address: str, count: int) -> tuple[float | None, float | None]:
    p = subprocess.run(
        [*argv, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2", address],
        capture_output=True,
        text=True,
        timeout=count * 0.2 + 15,
        env=guest_env(),
        check=False,
    )
    loss = re.search(r"([\d.]+)% packet loss", p.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", p.stdout)
    return (float(rtt.group(1)) if rtt else None, float(loss.group(1)) if loss else None)


def _mtu(argv: list[str]) -> int | None:
    p = subprocess.run(
        [*argv, "ip", "-o", "link", "show", "wg0"],
        capture_output=True,
        text=True,
        timeout=10,
        env=guest_env(),
        check=False,
    )
    m = re.search(r"mtu (\d+)", p.stdout)
    return int(m.group(1)) if m else None


def measure(
    state_dir: Path,
    master: tuple[str, str],
    vpn: tuple[str, str],
    underlay_ip: str,
    tunnel_ip: str,
    seconds: float = 3.0,
    pings: int = 20,
) -> TunnelResult:
    """`master`/`vpn` are (server name, cloud). Sender on the master, receiver on the VPN node."""
    m_argv = _server_argv(state_dir, *master)
    v_argv = _server_argv(state_dir, *vpn)
    st = load_state(state_dir, "")
    m_ns = find_server(st, *master).ns
    nss = _path_namespaces(state_dir)
    cap = 2 << 30  # bytes: a bound even if the link is far faster than expected
    receiver = subprocess.Popen(
        [*v_argv, "python3", "-c", RECEIVER, "2", str(PORT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=guest_env(),
    )
    results = []
    try:
        assert receiver.stdout is not None
        line = receiver.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"receiver did not start: {line} {receiver.stderr.read()}")
        for label, addr in (("underlay", underlay_ip), ("tunnel", tunnel_ip)):
            rtt, loss = _ping(m_argv, addr, pings)
            before = _counters(nss)
            snd = subprocess.run(
                [*m_argv, "python3", "-c", SENDER, addr, str(PORT), str(seconds), str(cap)],
                capture_output=True,
                text=True,
                timeout=seconds + 30,
                env=guest_env(),
                check=False,
            )
            if snd.returncode != 0:
                raise RuntimeError(f"{label} transfer failed: {snd.stderr.strip()[-300:]}")
            sent = json.loads(snd.stdout.strip().splitlines()[-1])
            got = json.loads(receiver.stdout.readline())
            after = _counters(nss)
            results.append(
                PathResult(
                    label=label,
                    address=addr,
                    mbit_s=got["bytes"] * 8 / got["seconds"] / 1e6,
                    rtt_ms=rtt,
                    loss_pct=loss,
                    mss=sent["mss"],
                    stalls=1 if got["longest_gap_s"] >= 0.5 else 0,
                    longest_gap_s=got["longest_gap_s"],
                    retrans=_delta(before, after, ("TcpRetransSegs",), [m_ns]),
                    fragments=_delta(before, after, ("IpFragCreates", "IpReasmReqds")),
                    udp_drops=_delta(before, after, ("UdpInErrors",)),
                )
            )
    finally:
        try:
            receiver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait(timeout=5)
    return TunnelResult(underlay=results[0], tunnel=results[1], tunnel_mtu=_mtu(m_argv))


def open_bench_hole(conn, group_id: str, source_ip: str) -> list[str]:
    """TCP 5201 + ICMP from one /32 into a group, for the underlay test only; returns rule ids."""
    ids = []
    for proto, lo, hi in (("tcp", PORT, PORT), ("icmp", None, None)):
        r = conn.network.create_security_group_rule(
            security_group_id=group_id,
            direction="ingress",
            ethertype="IPv4",
            protocol=proto,
            port_range_min=lo,
            port_range_max=hi,
            remote_ip_prefix=f"{source_ip}/32",
            description="hybridgrid-bench",
        )
        ids.append(r.id)
    time.sleep(0.5)  # the data plane applies rules after the call returns
    return ids


def close_bench_hole(conn, ids: list[str]) -> None:
    for rid in ids:
        conn.network.delete_security_group_rule(rid, ignore_missing=True)
