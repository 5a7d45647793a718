"""Benchmark: a drift check over N registered sites against one (issue 8: ≤ 2× for 10;
default N = 9, the most add-site can register today: see --sites).

Starts a private localcloud with the data plane (home cloud `bhome`, all sites on `bsites`),
a throw-away Prefect server, bootstraps a home with one worker and adds N sites with one
worker each (real WireGuard, real SSH), then times `check_drift` over one site and over all
N, each several rounds, and prints the medians and their ratio. Not a test: nothing is
asserted. Needs root (network namespaces).

    .venv/bin/python bench/drift_scale.py [--sites 9] [--rounds 3]
"""

from __future__ import annotations

import os

for _k, _v in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "ERROR",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}.items():
    os.environ.setdefault(_k, _v)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import ipaddress  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from localcloud import server  # noqa: E402

REGISTRY = "drift-bench"
HOME_CLOUD, SITE_CLOUD = "bhome", "bsites"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _setup(state_dir: Path, n: int) -> list[str]:
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from hybridgrid.blocks.ssh import SSHKey
    from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
    from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
    from hybridgrid.model import HomeSite, MasterSpec, RemoteSite
    from localcloud.dataplane.cli import proxy_command

    for cloud in (HOME_CLOUD, SITE_CLOUD):
        creds = OpenStackCredentials.from_clouds_yaml(cloud, state_dir / "clouds.yaml")
        await creds.asave(cloud, overwrite=True)
    names = [f"bench{i:02d}" for i in range(1, n + 1)]
    proxy = proxy_command(state_dir)
    for block in ["hg-bhome-ssh", *(f"hg-{s}-ssh" for s in names)]:
        await SSHKey.generate(comment=block, proxy_command=proxy).asave(block, overwrite=True)
    home = HomeSite(
        name=HOME_CLOUD,
        cloud=HOME_CLOUD,
        master=MasterSpec(create=True),
        subnet=ipaddress.IPv4Network("192.168.10.0/24"),
        workers=1,
    )
    await bootstrap_home(home, options=HomeOptions(registry=REGISTRY))
    opts = AddSiteOptions(registry=REGISTRY)
    for i in range(0, n, 5):  # a few at a time: two cores, SQLite
        batch = names[i : i + 5]
        await asyncio.gather(
            *(add_remote_site(RemoteSite(name=s, cloud=SITE_CLOUD, workers=1), opts) for s in batch)
        )
        print(f"  added {', '.join(batch)}", flush=True)
    return names


async def _time_check(sites: list[str] | None) -> float:
    from hybridgrid.flows.check_drift import check_drift

    t0 = time.perf_counter()
    state = await check_drift(sites=sites, registry=REGISTRY, return_state=True)
    elapsed = time.perf_counter() - t0
    if not state.is_completed():
        print(f"  (check reported: {state.message})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    # 9: the master's port takes one allowed-address pair per site plus the overlay, and
    # Neutron (localcloud too) allows 10 pairs per port -- see the issue-8 report.
    parser.add_argument("--sites", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    from prefect.testing.utilities import prefect_test_harness

    many = args.sites
    unlimited = ("instances", "cores", "ram", "router", "floatingip", "security_group")
    quotas = {q: -1 for q in (*unlimited, "security_group_rule", "port", "network", "subnet")}
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        state_dir = Path(tmp)
        server.start(
            state_dir,
            clouds=[HOME_CLOUD, SITE_CLOUD],
            port=_free_port(),
            dataplane=True,
            cloud_options={SITE_CLOUD: {"quotas": quotas}},
        )
        try:
            with prefect_test_harness(server_startup_timeout=60):
                t0 = time.perf_counter()
                names = asyncio.run(_setup(state_dir, many))
                print(f"set-up of home + {many} sites: {time.perf_counter() - t0:.0f} s")

                async def rounds() -> tuple[list[float], list[float]]:
                    await _time_check(names[:1])  # warm-up: imports, connections, blocks
                    one, all_ = [], []
                    for _ in range(args.rounds):
                        one.append(await _time_check(names[:1]))
                        all_.append(await _time_check(None))
                    return one, all_

                results = {"localcloud proxy": asyncio.run(rounds())}
                asyncio.run(
                    _light_proxy(state_dir, ["hg-bhome-ssh", *(f"hg-{s}-ssh" for s in names)])
                )
                results["nsenter + nc proxy"] = asyncio.run(rounds())
        finally:
            server.down(state_dir)
    for how, (one, all_) in results.items():
        m1, mn = statistics.median(one), statistics.median(all_)
        print(f"[{how}]")
        print(f"  drift check, 1 site:  median {m1:.2f} s ({_list(one)})")
        print(f"  drift check, {many} sites: median {mn:.2f} s ({_list(all_)})")
        print(f"  ratio {many} sites / 1 site: {mn / m1:.2f} (target ≤ 2.0)")


def _list(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


async def _light_proxy(state_dir: Path, blocks: list[str]) -> None:
    """Reach the simulated internet with nsenter + nc instead of a Python process per SSH
    connection (localcloud's proxy costs ~0.2 s CPU each; a real cloud needs no proxy)."""
    from hybridgrid.blocks.ssh import SSHKey
    from hybridgrid.tasks.credentials import use_ssh_key
    from localcloud.dataplane import names

    inet = names.inet_ns(names.instance_tag(state_dir))
    command = f"nsenter --net=/run/netns/{inet} nc -N %h %p"
    for block in blocks:
        key = await SSHKey.aload(block)
        use_ssh_key(block, key.model_copy(update={"proxy_command": command}))


if __name__ == "__main__":
    main()
