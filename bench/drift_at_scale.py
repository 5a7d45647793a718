"""Benchmark: check_drift wall time for 1, 5, 10, 20 sites; bounds t(20)/t(1) ≤ 2 and
t(10)/t(1) ≤ 2 (docs/architecture.md §11).

Builds its own fleet on a private localcloud: a home (bielefeld: master + 1 worker) and 20
sites in one remote cloud (giessen, quotas unlimited), each 1 VPN node, every other site
1 worker (≈ 32 servers with sshd and wireguard-go). Sites are added with add_remote_site
(4 at a time, verification off: the check itself verifies). Then check_drift runs over the
first N sites with the realistic API profile (~100 ± 20 ms per call); best of `rounds`.

    .venv/bin/python bench/drift_at_scale.py [--quick]     # standalone (own Prefect server)

From bench/run_all.py: `bench_rows(quick, notes)` (Prefect server already running).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hgbench.table import Row

BOUND = 2.0
SETTLE_S = 1.5
HOME_CLOUD, SITE_CLOUD = "bielefeld", "giessen"
REGISTRY = "bench-drift"
UNLIMITED = {
    "quotas": {
        k: -1
        for k in [
            "instances",
            "cores",
            "ram",
            "key_pairs",
            "network",
            "subnet",
            "port",
            "router",
            "floatingip",
            "security_group",
            "security_group_rule",
        ]
    }
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _site_names(n: int) -> list[str]:
    return [f"s{i:02d}" for i in range(1, n + 1)]


async def _build(
    handle, names: list[str], parallel: int
) -> tuple[float, list[str], dict[str, str]]:
    from hgbench.addsite import save_blocks

    from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
    from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
    from hybridgrid.model import HomeSite, MasterSpec, RemoteSite

    await save_blocks(handle)
    home = HomeSite(
        cloud=HOME_CLOUD,
        master=MasterSpec(create=True),
        subnet=ipaddress.IPv4Network("192.168.66.0/24"),
        workers=1,
    )
    await bootstrap_home(home, options=HomeOptions(registry=REGISTRY))
    gate = asyncio.Semaphore(parallel)
    opts = AddSiteOptions(registry=REGISTRY, verify=False)

    failures: dict[str, str] = {}
    built: list[str] = []

    async def one(i: int, name: str) -> None:
        async with gate:
            if failures:  # a limit was hit: later sites would hit it too
                return
            site = RemoteSite(name=name, cloud=SITE_CLOUD, workers=1 if i % 2 == 0 else 0)
            try:
                await add_remote_site(site, opts)
                built.append(name)
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"[:400]

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))
    return time.perf_counter() - t0, sorted(built), failures


async def _check(names: list[str]) -> tuple[float, bool, str, int]:
    """One check_drift run over `names`: wall time, clean?, the failure message. Waits for
    the Prefect server to settle first: on SQLite a flow run created while the server still
    writes the previous run's events often gets a 503 and a ~2 s client back-off (a
    scheduled check runs every 15 minutes, not back to back)."""
    from hgbench import apitrace

    from hybridgrid.flows.check_drift import check_drift

    await asyncio.sleep(SETTLE_S)
    t0 = time.perf_counter()
    with apitrace.trace() as tr:
        state = await check_drift(sites=names, registry=REGISTRY, return_state=True)
    wall = time.perf_counter() - t0
    ok = state.is_completed()
    msg = "" if ok else str(await state.result(raise_on_failure=False))[:300]
    return wall, ok, msg, sum(c.status == 503 for c in tr.calls)


def measure(sizes: list[int], rounds: int, parallel: int = 4) -> dict:
    from hgbench.addsite import realistic_faults

    from localcloud import control as server

    names = _site_names(max(sizes))
    out: dict = {"sizes": {}, "problems": []}
    with tempfile.TemporaryDirectory(prefix="hgbench-drift-") as tmp:
        state_dir = Path(tmp) / "localcloud"
        handle = server.start(
            state_dir,
            clouds=[HOME_CLOUD, SITE_CLOUD],
            port=_free_port(),
            dataplane=True,
            faults={},
            cloud_options={HOME_CLOUD: UNLIMITED, SITE_CLOUD: UNLIMITED},
        )
        try:
            out["build_s"], built, out["failures"] = asyncio.run(_build(handle, names, parallel))
            out["built"] = len(built)
            names = built
            if not names:
                raise RuntimeError(f"no site could be built: {out['failures']}")
            out["servers"] = sum(
                len(list(handle_conn(handle, c).compute.servers()))
                for c in (HOME_CLOUD, SITE_CLOUD)
            )
            handle.set_faults(realistic_faults(0, 0))
            asyncio.run(_check(names[:1]))  # warm-up: imports, connections, first flow run
            out["runs"] = {}
            for n in sorted({k for k in sizes if k < len(names)} | {len(names)}):
                runs = []
                for _ in range(rounds):
                    wall, ok, msg, n503 = asyncio.run(_check(names[:n]))
                    runs.append((wall, n503))
                    if not ok:
                        out["problems"].append(f"check of {n} site(s) not clean: {msg}")
                out["sizes"][n] = min(w for w, _ in runs)
                out["runs"][n] = runs
        finally:
            server.down(state_dir)
    return out


def handle_conn(handle, cloud: str):
    from localcloud.clientconf import connect

    return connect(handle.state_dir, cloud)


def bench_rows(quick: bool, notes: list[str]) -> list[Row]:
    """Full: 1, 5, 10, 20 sites, best of 2. Quick: 1 and 3 (informational: the bounds are
    about 10 and 20)."""
    sizes = [1, 3] if quick else [1, 5, 10, 20]
    m = measure(sizes, rounds=1 if quick else 2)
    notes.append(summary(m, max(sizes), 1 if quick else 2))
    return rows_from(m, quick)


def summary(m: dict, wanted: int, rounds: int) -> str:
    t = m["sizes"]
    return (
        f"drift at scale: {m['built']} of {wanted} sites built in {m['build_s']:.0f} s "
        f"({m['servers']} servers); check_drift wall (best of {rounds}): "
        + ", ".join(f"t({n})={v:.2f} s" for n, v in t.items())
        + (
            f"; sites {', '.join(sorted(m['failures']))} not built, first error: "
            + next(iter(m["failures"].values()))
            if m["failures"]
            else ""
        )
        + (("; problems: " + " | ".join(m["problems"])) if m["problems"] else "")
        + "; every run (s, Prefect API 503s): "
        + ", ".join(
            f"t({n}) " + " ".join(f"{w:.2f}/{k}" for w, k in runs)
            for n, runs in m.get("runs", {}).items()
        )
    )


def rows_from(m: dict, quick: bool) -> list[Row]:
    """Table rows from a measurement: t(N) for every N, t(10)/t(1) and t(20)/t(1) against
    the bound (pending when fewer sites could be built)."""
    t = m["sizes"]
    rows = [
        Row(figure=f"drift check t({n})", value=v, note="~100 ms/API call") for n, v in t.items()
    ]
    for want in sorted({10, 20, max(t)} if not quick else {max(t)}):
        if want in t and want > 1:
            rows.append(
                Row(
                    figure=f"drift t({want})/t(1)",
                    value=t[want] / t[1],
                    unit="×",
                    bound=BOUND if want in (10, 20) else None,
                    note=f"{m['servers']} servers on localcloud"
                    + (" (docs/architecture.md §11)" if want in (10, 20) else "")
                    + (" (quick: the bounds are for 10 and 20 sites)" if quick else ""),
                )
            )
        elif not quick:
            rows.append(
                Row(
                    figure=f"drift t({want})/t(1)",
                    value=None,
                    unit="×",
                    bound=BOUND,
                    note=f"only {m['built']} sites could be built (see notes)",
                )
            )
    return rows


def main() -> int:
    import argparse

    from hgbench.prefect_server import PrefectServer
    from hgbench.table import render

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 and 3 sites, one round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hgbench-prefect-") as tmp:
        prefect = PrefectServer(Path(tmp))
        try:
            prefect.start()
            notes: list[str] = []
            rows = bench_rows(args.quick, notes)
        finally:
            prefect.stop()
    print("\n".join(notes))
    print(render(rows))
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
