"""add_remote_site on localcloud with a realistic fault profile: wall time, critical path
(from the flow run's Prefect task runs, no flow edits), API calls per cloud, and the no-op
rerun (mutating calls, wall time)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from localcloud import control as server

HOME_CLOUD, SITE_CLOUD = "bielefeld", "giessen"
REGISTRY = "bench"


def realistic_faults(boot_delay: float, console_delay: float, seed: int = 7) -> dict:
    """Every cloud: ~100 ms ± 20 ms per API call, a slow boot, a console that lags ACTIVE."""
    return {
        "*": {
            "seed": seed,
            "latency": {"ms": 100, "jitter_ms": 20},
            "boot_delay": boot_delay,
            "console_delay": console_delay,
        }
    }


class TaskSpan(BaseModel):
    name: str
    phase: str
    start: float  # seconds after the flow run started
    end: float


class Phase(BaseModel):
    phase: str
    start: float
    end: float
    tasks: int
    busy: float  # sum of the phase's task durations (> window: they ran in parallel)

    @property
    def window(self) -> float:
        return self.end - self.start


class AddSiteRun(BaseModel):
    wall: float
    flow_wall: float  # the flow run's own start → end, from Prefect
    verified: bool
    stats: dict[str, Any]
    spans: list[TaskSpan]
    flow_run_id: str
    nodes: list[dict] = []  # the summary's node lines (addresses for the tunnel test)
    error: str = ""
    api: str = ""  # the Prefect API requests the run made (hgbench.apitrace.summary)
    slow_api: list[str] = []  # single requests ≥ 0.3 s: "offset s, method path, status"

    def calls(self, cloud: str) -> tuple[int, int]:
        c = self.stats.get(cloud, {})
        return int(c.get("total", 0)), int(c.get("mutating", 0))


# Task run names (task_run_name templates in hybridgrid.tasks) → phase of the critical path.
PHASES = [
    ("pre-flight", "pre-flight"),
    ("network, subnet and router", "network"),
    ("security group", "network"),
    ("key pair", "network"),
    ("look up", "network"),
    ("server ", "launch + boot wait"),
    ("wireguard key on", "WireGuard key"),
    ("floating IP", "floating IP"),
    ("rules for", "rules + ports"),
    ("port ", "rules + ports"),
    ("read host keys", "console host keys"),
    ("wait for ssh", "SSH ready"),
    ("configure wg0", "WireGuard up"),
    ("routes on", "routes"),
    ("verify", "verify"),
    ("read wg0", "verify"),
]


def phase_of(name: str) -> str:
    return next((p for prefix, p in PHASES if name.startswith(prefix)), "other")


def phases(spans: list[TaskSpan]) -> list[Phase]:
    out: dict[str, Phase] = {}
    for s in spans:
        p = out.get(s.phase)
        if p is None:
            out[s.phase] = Phase(
                phase=s.phase, start=s.start, end=s.end, tasks=1, busy=s.end - s.start
            )
        else:
            p.start, p.end = min(p.start, s.start), max(p.end, s.end)
            p.tasks += 1
            p.busy += s.end - s.start
    return sorted(out.values(), key=lambda p: p.start)


OUTSIDE = "flow code (outside tasks)"


def critical_path(spans: list[TaskSpan], flow_wall: float, step: float = 0.01) -> list[tuple]:
    """Split the flow's wall time into serial segments: each instant goes to the running task
    that ends last (the one the flow's current await waits for), or to the flow's own code
    when no task runs. Returns [(phase, seconds)] in order of first appearance; the seconds
    add up to the flow's wall time."""
    order: list[str] = []
    total: dict[str, float] = {}
    t = 0.0
    while t < flow_wall:
        running = [s for s in spans if s.start <= t < s.end]
        phase = max(running, key=lambda s: s.end).phase if running else OUTSIDE
        if phase not in total:
            order.append(phase)
            total[phase] = 0.0
        total[phase] += step
        t += step
    return [(p, total[p]) for p in order]


def covered(spans: list[TaskSpan]) -> float:
    """Length of the union of task intervals: flow time minus this is time outside tasks."""
    total, cur_s, cur_e = 0.0, None, None
    for s in sorted(spans, key=lambda x: x.start):
        if cur_e is None or s.start > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s.start, s.end
        else:
            cur_e = max(cur_e, s.end)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


async def _task_spans(flow_run_id: UUID, settle: float = 30.0) -> tuple[list[TaskSpan], float]:
    """Task runs reach the API through events (asynchronously): poll until every one has an
    end time and the count is stable."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + settle
    last = -1
    async with get_client() as client:
        fr = await client.read_flow_run(flow_run_id)
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = all(r.end_time and r.start_time for r in runs)
            if (done and len(runs) == last) or time.monotonic() > deadline:
                break
            last = len(runs)
            await asyncio.sleep(1.0)
        fr = await client.read_flow_run(flow_run_id)
    t0: datetime = fr.start_time
    flow_wall = ((fr.end_time or t0) - t0).total_seconds()
    spans = [
        TaskSpan(
            name=r.name,
            phase=phase_of(r.name),
            start=(r.start_time - t0).total_seconds(),
            end=(r.end_time - t0).total_seconds(),
        )
        for r in runs
        if r.start_time and r.end_time
    ]
    return sorted(spans, key=lambda s: s.start), flow_wall


def home_spec():
    from hybridgrid.model import HomeSite, MasterSpec

    return HomeSite(
        cloud=HOME_CLOUD,
        master=MasterSpec(create=True),
        subnet=ipaddress.IPv4Network("192.168.66.0/24"),
        workers=1,
    )


def site_spec(name: str = SITE_CLOUD, workers: int = 1):
    from hybridgrid.model import RemoteSite

    return RemoteSite(name=name, cloud=SITE_CLOUD, workers=workers)


async def save_blocks(handle: server.Handle) -> None:
    """Credentials blocks from this localcloud's clouds.yaml, access through its proxy (the
    flows make the SSH key blocks); the process-wide caches of connections and keys are
    dropped (an earlier part's clouds)."""
    from hybridgrid.access import CloudAccess
    from hybridgrid.blocks import loading
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from localcloud.dataplane.cli import proxy_command

    loading.forget()
    loading.forget_all_ssh_keys()
    access = CloudAccess(proxy_command=proxy_command(handle.state_dir))
    for cloud in handle.clouds:
        creds = OpenStackCredentials.from_clouds_yaml(cloud, handle.clouds_yaml, access)
        await creds.asave(cloud, overwrite=True)


def proxy_startup(handle: server.Handle, address: str, rounds: int = 7) -> list[float]:
    """Seconds for localcloud's ProxyCommand to start, connect to `address`:22 inside the
    internet namespace and pass on sshd's banner — what every SSH connection pays on top of
    SSH itself. Runs the command exactly as the clouds' access settings have it."""
    import shlex
    import subprocess

    from localcloud.dataplane.cli import proxy_command

    argv = [
        a.replace("%h", address).replace("%p", "22")
        for a in shlex.split(proxy_command(handle.state_dir))
    ]
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            banner = proc.stdout.readline() if proc.stdout else b""  # "SSH-2.0-OpenSSH_…"
            out.append(time.perf_counter() - t0)
            if not banner.startswith(b"SSH-"):
                raise RuntimeError(f"proxy to {address}:22 gave no SSH banner: {banner[:60]!r}")
        finally:
            proc.kill()
            proc.wait(timeout=10)
    return out


async def bootstrap() -> Any:
    from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home

    return await bootstrap_home(home_spec(), options=HomeOptions(registry=REGISTRY))


async def add_site(handle: server.Handle, site) -> AddSiteRun:
    from hgbench import apitrace
    from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site

    handle.reset_stats()
    t0 = time.perf_counter()
    m0 = time.monotonic()
    with apitrace.trace() as tr:
        state = await add_remote_site(site, AddSiteOptions(registry=REGISTRY), return_state=True)
    wall = time.perf_counter() - t0
    calls = tr.between(m0, time.monotonic())
    slow = [
        f"{c.start - m0:.1f} s {c.method} {c.path} {c.status} ({c.seconds:.2f} s)"
        for c in calls
        if c.seconds >= 0.3 or c.status == 503
    ]
    stats = handle.stats()
    result = await state.result(raise_on_failure=False)
    verified = bool(getattr(result, "verified", False))
    error = f"{type(result).__name__}: {result}"[:300] if isinstance(result, BaseException) else ""
    summary = getattr(result, "summary", None)
    nodes = [n.model_dump() for n in summary.nodes] if summary else []
    fr_id = state.state_details.flow_run_id
    spans, flow_wall = await _task_spans(fr_id)
    return AddSiteRun(
        wall=wall,
        flow_wall=flow_wall,
        verified=verified,
        stats=stats,
        spans=spans,
        flow_run_id=str(fr_id),
        nodes=nodes,
        error=error,
        api=apitrace.summary(calls),
        slow_api=slow,
    )


def breakdown(run: AddSiteRun, boot_delay: float, console_delay: float) -> str:
    """The critical path, phase by phase, as offsets into the flow run."""
    lines = [
        f"add_remote_site critical path (flow run {run.flow_run_id}; injected boot "
        f"{boot_delay:.0f} s, console +{console_delay:.0f} s):",
        f"  {'phase':<30} {'start':>7} {'end':>7} {'window':>7} {'tasks':>5} {'busy':>7}",
    ]
    for p in phases(run.spans):
        lines.append(
            f"  {p.phase:<30} {p.start:7.2f} {p.end:7.2f} {p.window:7.2f}"
            f" {p.tasks:5d} {p.busy:7.2f}"
        )
    inside = covered(run.spans)
    path = critical_path(run.spans, run.flow_wall)
    lines.append(
        "  critical path (serial): "
        + " → ".join(f"{p} {sec:.1f}" for p, sec in path if p != OUTSIDE and sec >= 0.05)
        + f"; {OUTSIDE} {dict(path).get(OUTSIDE, 0.0):.1f} s"
    )
    lines.append(
        f"  flow run {run.flow_wall:.2f} s (caller saw {run.wall:.2f} s); inside tasks "
        f"{inside:.2f} s; outside any task {run.flow_wall - inside:.2f} s "
        "(flow code: registry/block I/O, locks, task submission)"
    )
    gaps = _gaps(run.spans, run.flow_wall)
    if gaps:
        lines.append(
            "  largest gaps between tasks: "
            + ", ".join(f"{g:.2f} s before '{n}'" for g, n in gaps[:4])
        )
    if run.api:
        lines.append(f"  {run.api}")
    if run.slow_api:
        lines.append("  slow or 503 requests (offset from the call): " + "; ".join(run.slow_api))
    return "\n".join(lines)


def _gaps(spans: list[TaskSpan], flow_wall: float) -> list[tuple[float, str]]:
    out, end = [], 0.0
    for s in sorted(spans, key=lambda x: x.start):
        if s.start > end + 0.05:
            out.append((s.start - end, s.name))
        end = max(end, s.end)
    if flow_wall > end + 0.05:
        out.append((flow_wall - end, "(flow end)"))
    return sorted(out, reverse=True)


async def ssh_costs(address: str, rounds: int = 5) -> tuple[list[float], list[float]]:
    """Seconds to open an SSH connection to the VPN node (the cloud's ProxyCommand + key
    exchange + auth, host key pinned from the registry) and to run `true` on an open one."""
    from hybridgrid.access import front_door
    from hybridgrid.blocks.loading import ssh_key
    from hybridgrid.blocks.openstack import OpenStackCredentials
    from hybridgrid.blocks.registry import load_registry
    from hybridgrid.sshclient.client import close_connection, open_connection
    from hybridgrid.sshclient.keys import load_private_key

    data = await load_registry(REGISTRY)
    entry = data.sites[SITE_CLOUD]
    key = await ssh_key(entry.ssh_key_block or f"hg-{SITE_CLOUD}-ssh")
    client_key = load_private_key(key.private_key)
    # the cloud's way in (its credentials block), as the flows reach it
    creds = await OpenStackCredentials.aload(SITE_CLOUD)
    target = front_door(
        address, entry.host_keys[f"hg-{SITE_CLOUD}-vpn"], key, creds.access, SITE_CLOUD
    )
    opens, runs = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        conn = await open_connection(target, client_key)
        opens.append(time.perf_counter() - t0)
        try:
            from hybridgrid.sshclient.client import RemoteHost

            host = RemoteHost(target, conn)
            t0 = time.perf_counter()
            await host.run("true", name="true", timeout=30)
            runs.append(time.perf_counter() - t0)
        finally:
            await close_connection(conn)
    return opens, runs
