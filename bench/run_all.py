"""hybridgrid benchmarks: one command, one table (figure, bound, ratio, met?): the
targets of docs/architecture.md §11.

    .venv/bin/python bench/run_all.py            # full: boot delay 20 s, more repetitions
    .venv/bin/python bench/run_all.py --quick    # < 3 min: boot delay 3 s, fewer repetitions

Runs as root (localcloud's data plane needs network namespaces). Everything it starts — a
Prefect server (SQLite, temp PREFECT_HOME), a localcloud with two clouds — lives in a temp
directory and is ended by PID at the end, also on failure. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hgbench.prefect_server import PrefectServer
from hgbench.table import Row, render

ADD_SITE_BOUND = 15.0  # s of everything but the injected boot delay
RERUN_BOUND = 10.0  # s for a no-op rerun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} cores"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prefect_rows(n: int, rounds: int) -> tuple[list[Row], dict]:
    from hgbench import prefect_overhead

    m = asyncio.run(prefect_overhead.measure(n, rounds))
    rows = [
        Row(figure=f"Prefect per-task overhead, {n} gathered", value=m["gathered_ms"], unit="ms"),
        Row(
            figure=f"Prefect per-task overhead, {n} sequential",
            value=m["sequential_ms"],
            unit="ms",
        ),
        Row(figure="Prefect empty async flow run", value=m["empty_flow_s"]),
    ]
    return rows, m


def addsite_rows(args, tmp: Path, prefect_m: dict, notes: list[str]) -> list[Row]:
    from hgbench import addsite, seedscript

    from localcloud import control as server

    boot, console = (3.0, 1.0) if args.quick else (20.0, 3.0)
    state_dir = tmp / "localcloud"
    rows: list[Row] = []
    clouds = [addsite.HOME_CLOUD, addsite.SITE_CLOUD]
    clouds += [] if args.skip_seed else [seedscript.SEED_CLOUD]  # the seed script's own cloud
    _say(f"localcloud: starting {' + '.join(clouds)} with the data plane")
    handle = server.start(
        state_dir,
        clouds=clouds,
        port=_free_port(),
        dataplane=True,
        faults={},
    )
    try:
        asyncio.run(addsite.save_blocks(handle))
        _say("bootstrap_home (no faults: not measured)")
        asyncio.run(addsite.bootstrap())
        handle.set_faults(addsite.realistic_faults(boot, console))
        _say(
            f"add_remote_site with ~100±20 ms per call, boot {boot:.0f} s, console +{console:.0f} s"
        )
        site = addsite.site_spec()
        first = asyncio.run(addsite.add_site(handle, site))
        if first.error or not first.verified:
            notes.append(f"add-site not verified: {first.error or 'see layers'}")
        notes.append(addsite.breakdown(first, boot, console))
        overhead = first.wall - boot
        rows.append(
            Row(
                figure="add-site wall − injected boot",
                value=overhead,
                bound=ADD_SITE_BOUND,
                note=f"wall {first.wall:.1f} s, boot {boot:.0f} s (of the rest, {console:.0f} s "
                f"is the injected console delay), verified={first.verified}",
            )
        )
        for cloud in (addsite.HOME_CLOUD, addsite.SITE_CLOUD):
            total, mut = first.calls(cloud)
            rows.append(
                Row(
                    figure=f"add-site API calls on {cloud}",
                    value=total,
                    unit="calls",
                    note=f"{mut} mutating",
                )
            )
        n_tasks = len(first.spans)
        share = n_tasks * prefect_m["sequential_ms"] / 1000 / first.wall * 100
        rows.append(
            Row(
                figure="Prefect share of add-site time",
                value=share,
                unit="%",
                note=f"{n_tasks} task runs × {prefect_m['sequential_ms']:.0f} ms ÷ "
                f"{first.wall:.1f} s (upper estimate: sequential overhead)",
            )
        )

        _say("no-op rerun (same faults)")
        rerun_walls, rerun_mut = [], []
        for _ in range(1 if args.quick else 2):
            again = asyncio.run(addsite.add_site(handle, site))
            rerun_walls.append(again.wall)
            rerun_mut.append(sum(again.calls(c)[1] for c in handle.clouds))
            if again.error:
                notes.append(f"rerun failed: {again.error}")
        rows.append(
            Row(
                figure="no-op rerun mutating calls",
                value=max(rerun_mut),
                unit="calls",
                bound=0,
                note=f"runs: {rerun_mut}",
            )
        )
        rows.append(
            Row(
                figure="no-op rerun wall time",
                value=max(rerun_walls),
                bound=RERUN_BOUND,
                note="runs: " + ", ".join(f"{w:.1f}" for w in rerun_walls),
            )
        )
        notes.append(
            "no-op rerun critical path:\n" + addsite.breakdown(again, 0, 0).split("\n", 1)[1]
        )
        if not args.skip_seed:
            try:
                rows += seed_rows(handle, tmp, first.wall, max(rerun_walls), boot, notes)
            except Exception:
                notes.append("seed script part failed:\n" + traceback.format_exc(limit=6))
                rows.append(seedscript.unmeasured("seed script part failed (see the notes)"))

        rows += ssh_rows(handle, first, notes)

        if not args.skip_tunnel:
            handle.set_faults({})
            rows += tunnel_rows(args, handle, first, notes)
    finally:
        _say("localcloud: down")
        server.down(state_dir)
    return rows


def seed_rows(
    handle, tmp: Path, addsite_wall: float, rerun_wall: float, boot: float, notes: list[str]
) -> list[Row]:
    """bench/seed_script.sh on the third cloud, same faults: a first run, then a second one
    (what happens), then everything it made is removed (also when it failed)."""
    from hgbench import addsite, seedscript

    _say(f"seed script (openstack CLI + ssh) on {seedscript.SEED_CLOUD}: first run")
    env = asyncio.run(seedscript.prepare(handle, addsite.REGISTRY, tmp / "seed-script"))
    before = seedscript.count(handle, env)
    try:
        first = seedscript.run(handle, env)
        made = seedscript.count(handle, env)
        _say("seed script: second run (the same script again)")
        second = seedscript.run(handle, env)
        extra = seedscript.grown(made, seedscript.count(handle, env))
    finally:
        _say("seed script: removing what it made")
        problems = seedscript.cleanup(handle, env)
        left = seedscript.grown(before, seedscript.count(handle, env))
    notes.append(seedscript.describe(first, made, before))
    if problems or left:
        notes.append(f"seed script cleanup: problems {problems}, left {left}")
    return seedscript.rows(first, second, extra, addsite_wall, rerun_wall, boot)


def tunnel_rows(args, handle, run, notes: list[str]) -> list[Row]:
    from hgbench import addsite, tunnel

    from localcloud.clientconf import connect

    by_role = {n["role"]: n for n in run.nodes}
    master, vpn = by_role.get("master (hub)"), by_role.get("VPN node (spoke)")
    if not master or not vpn:
        notes.append("tunnel: skipped (add-site returned no node lines)")
        return []
    _say("tunnel vs underlay (master ⇄ VPN node)")
    conn = connect(handle.state_dir, addsite.SITE_CLOUD)
    sg = next(conn.network.security_groups(name=f"hg-{addsite.SITE_CLOUD}-sg"))
    hole = tunnel.open_bench_hole(conn, sg.id, master["floating_ip"])
    try:
        res = tunnel.measure(
            handle.state_dir,
            (master["name"], master["cloud"]),
            (vpn["name"], vpn["cloud"]),
            underlay_ip=vpn["floating_ip"],
            tunnel_ip=vpn["wg_address"],
            seconds=2.0 if args.quick else 4.0,
            pings=10 if args.quick else 30,
        )
    finally:
        tunnel.close_bench_hole(conn, hole)
    u, t = res.underlay, res.tunnel
    mtu = res.tunnel_mtu or 0
    notes.append(
        "tunnel detail: "
        + "; ".join(
            f"{p.label} {p.address}: {p.mbit_s:.0f} Mbit/s, rtt {p.rtt_ms} ms, loss {p.loss_pct}%, "
            f"MSS {p.mss}, retrans {p.retrans}, fragments {p.fragments}, UDP drops {p.udp_drops}, "
            f"longest gap {p.longest_gap_s:.1f} s"
            for p in (u, t)
        )
        + f"; wg0 MTU {mtu}"
    )
    return [
        Row(
            figure="underlay TCP throughput",
            value=u.mbit_s,
            unit="Mbit/s",
            note=f"rtt {u.rtt_ms} ms, MSS {u.mss}",
        ),
        Row(
            figure="tunnel TCP throughput",
            value=t.mbit_s,
            unit="Mbit/s",
            note=f"rtt {t.rtt_ms} ms, {t.mbit_s / u.mbit_s:.0%} of underlay "
            "(userspace wireguard-go)",
        ),
        Row(
            figure="tunnel MSS (≤ wg0 MTU − 40)",
            value=t.mss,
            unit="count",
            bound=mtu - 40,
            note=f"wg0 MTU {mtu}",
        ),
        Row(
            figure="IP fragments on the path (tunnel)",
            value=t.fragments,
            unit="count",
            bound=0,
            note=f"underlay: {u.fragments}",
        ),
        Row(
            figure="tunnel stalls (≥ 0.5 s no data)",
            value=t.stalls,
            unit="count",
            bound=0,
            note=f"longest gap {t.longest_gap_s:.1f} s; {t.retrans} TCP retransmits vs "
            f"{t.udp_drops} UDP receive drops on the path (wireguard-go not keeping up)",
        ),
    ]


def ssh_rows(handle, run, notes: list[str]) -> list[Row]:
    """What each SSH connection costs: localcloud's ProxyCommand alone (start, connect to the
    VPN node's sshd, read its banner), a whole connection (proxy + key exchange + auth), and
    a command on an open connection (medians)."""
    from hgbench import addsite

    vpn = next((n for n in run.nodes if n["role"] == "VPN node (spoke)"), None)
    if vpn is None:
        notes.append("SSH costs: skipped (add-site returned no node lines)")
        return []
    proxy = addsite.proxy_startup(handle, vpn["floating_ip"], rounds=7)
    opens, runs = asyncio.run(addsite.ssh_costs(vpn["floating_ip"], rounds=5))
    notes.append(
        "SSH costs (s): proxy "
        + ", ".join(f"{x:.3f}" for x in proxy)
        + "; open "
        + ", ".join(f"{x:.3f}" for x in opens)
        + "; command "
        + ", ".join(f"{x:.3f}" for x in runs)
    )
    med = statistics.median
    return [
        Row(
            figure="localcloud SSH proxy: start + connect",
            value=med(proxy) * 1000,
            unit="ms",
            note="python -m localcloud.dataplane.cli proxy → sshd banner",
        ),
        Row(
            figure="SSH connection open (proxy + kex + auth)",
            value=med(opens) * 1000,
            unit="ms",
            note="asyncssh, host key pinned",
        ),
        Row(
            figure="SSH command on an open connection",
            value=med(runs) * 1000,
            unit="ms",
            note="`true` as root (sh -c)",
        ),
    ]


def drift_rows(args, notes: list[str]) -> list[Row]:
    """check_drift over 1, 5, 10, 20 sites on its own localcloud (bench/drift_at_scale.py)."""
    import drift_at_scale

    return drift_at_scale.bench_rows(quick=args.quick, notes=notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="boot delay 3 s, fewer repetitions")
    parser.add_argument("--skip-tunnel", action="store_true")
    parser.add_argument("--skip-drift", action="store_true")
    parser.add_argument("--skip-seed", action="store_true", help="no seed-script baseline")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (localcloud's data plane uses network namespaces)")
        return 2
    started = time.monotonic()
    load_start = _load()
    tmp = Path(tempfile.mkdtemp(prefix="hgbench-"))
    rows: list[Row] = []
    notes: list[str] = []
    failed = False
    prefect = PrefectServer(tmp / "prefect")
    try:
        _say(f"start ({'quick' if args.quick else 'full'}); {load_start}; temp {tmp}")
        prefect.start()
        _say("Prefect per-task overhead")
        p_rows, prefect_m = prefect_rows(20 if args.quick else 50, 2 if args.quick else 3)
        rows += p_rows
        try:
            rows += addsite_rows(args, tmp, prefect_m, notes)
        except Exception:
            failed = True
            notes.append("add-site part failed:\n" + traceback.format_exc(limit=6))
        if not args.skip_drift:
            try:
                rows += drift_rows(args, notes)
            except Exception:
                failed = True
                notes.append("drift part failed:\n" + traceback.format_exc(limit=6))
    finally:
        prefect.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    for n in notes:
        print(n)
        print()
    print(
        f"hybridgrid bench ({'quick' if args.quick else 'full'}), "
        f"{time.monotonic() - started:.0f} s; "
        f"start: {load_start}; end: {_load()}"
    )
    print(render(rows))
    # a bound that could not be measured (pending) is not met either
    return 1 if failed or any(r.met in ("NO", "pending") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
