"""The benchmark's pure parts: ratios and verdicts, the critical-path arithmetic, the phase
mapping of the flows' task run names (a renamed task shows up here as "other")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from hgbench.addsite import TaskSpan, _gaps, covered, phase_of, phases
from hgbench.table import Row, render


def test_ratio_and_verdict():
    assert Row(figure="a", value=12, bound=15).met == "yes"
    assert Row(figure="a", value=16, bound=15).ratio == pytest.approx(16 / 15)
    assert Row(figure="a", value=16, bound=15).met == "NO"
    assert Row(figure="zero", value=0, unit="calls", bound=0).met == "yes"
    assert Row(figure="zero", value=1, unit="calls", bound=0).met == "NO"
    assert Row(figure="x", value=None, bound=2).met == "pending"
    assert Row(figure="info", value=3).met == "-"


def test_render_has_one_line_per_row():
    rows = [Row(figure="add-site", value=14.2, bound=15), Row(figure="calls", value=0, bound=0)]
    text = render(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and "0.95" in lines[2] and "yes" in lines[2]


def _span(name: str, a: float, b: float) -> TaskSpan:
    return TaskSpan(name=name, phase=phase_of(name), start=a, end=b)


def test_union_phases_and_gaps():
    spans = [
        _span("pre-flight giessen", 0.0, 2.0),
        _span("pre-flight bielefeld", 0.5, 1.0),
        _span("server hg-giessen-vpn", 3.0, 8.0),
        _span("server hg-giessen-worker-1", 3.5, 7.0),
        _span("verify mtu", 8.5, 10.0),
    ]
    assert covered(spans) == pytest.approx(2.0 + 5.0 + 1.5)
    ph = {p.phase: p for p in phases(spans)}
    assert ph["pre-flight"].window == pytest.approx(2.0) and ph["pre-flight"].tasks == 2
    assert ph["launch + boot wait"].busy == pytest.approx(8.5)
    gaps = _gaps(spans, 10.5)
    assert gaps[0] == (pytest.approx(1.0), "server hg-giessen-vpn")
    assert [g[1] for g in gaps[1:]] == ["verify mtu", "(flow end)"]


@pytest.mark.parametrize(
    ("name", "phase"),
    [
        ("pre-flight giessen", "pre-flight"),
        ("network, subnet and router of giessen", "network"),
        ("wait for ssh on ubuntu@198.51.100.11:22", "SSH ready"),
        ("configure wg0 on ubuntu@203.0.113.11:22", "WireGuard up"),
        ("read host keys of hg-giessen-vpn from its console", "console host keys"),
        ("verify wg0 and handshakes", "verify"),
        ("something new", "other"),
    ],
)
def test_phase_of_task_run_names(name, phase):
    assert phase_of(name) == phase


def test_critical_path_partitions_the_wall_time():
    from hgbench.addsite import OUTSIDE, critical_path

    spans = [
        _span("pre-flight giessen", 0.0, 2.0),
        _span("server hg-giessen-vpn", 3.0, 8.0),
        _span("wireguard key on master", 3.0, 4.0),  # parallel, ends earlier: not critical
        _span("verify mtu", 8.0, 9.0),
    ]
    path = dict(critical_path(spans, 10.0))
    assert sum(path.values()) == pytest.approx(10.0, abs=0.05)
    assert path["launch + boot wait"] == pytest.approx(5.0, abs=0.05)
    assert "WireGuard key" not in path
    assert path[OUTSIDE] == pytest.approx(2.0, abs=0.05)  # 2→3 and 9→10


def _drift(sizes: dict[int, float], built: int) -> dict:
    return {"sizes": sizes, "built": built, "servers": 32, "failures": {}, "problems": []}


def test_drift_rows_bound_10_and_20_sites():
    from drift_at_scale import rows_from

    rows = {r.figure: r for r in rows_from(_drift({1: 1.5, 5: 1.8, 10: 2.0, 20: 3.3}, 20), False)}
    assert rows["drift t(10)/t(1)"].ratio == pytest.approx(2.0 / 1.5 / 2)
    assert rows["drift t(10)/t(1)"].met == "yes"
    assert rows["drift t(20)/t(1)"].value == pytest.approx(2.2)
    assert rows["drift t(20)/t(1)"].met == "NO"  # 2.2 × > 2 ×
    assert [f for f in rows if f.startswith("drift check")] == [
        "drift check t(1)",
        "drift check t(5)",
        "drift check t(10)",
        "drift check t(20)",
    ]


def test_drift_rows_pending_when_fewer_sites_were_built():
    from drift_at_scale import rows_from

    rows = {r.figure: r for r in rows_from(_drift({1: 1.5, 5: 1.8, 9: 2.0}, 9), False)}
    assert rows["drift t(20)/t(1)"].met == "pending"
    assert rows["drift t(10)/t(1)"].met == "pending"
    assert rows["drift t(9)/t(1)"].bound is None  # shown, but no bound applies to 9


def test_api_trace_records_each_request_and_503s():
    """A real HTTP server on loopback: one 503, then 200 (each attempt is one record)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import httpx
    from hgbench import apitrace

    answers = [503, 200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answers.pop(0) if answers else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/flow_runs/0b7e0a51-6c0e-4f3e-9d2e-5d1c7d1b2a3c"
        with apitrace.trace() as tr, httpx.Client() as client:
            codes = [client.get(url).status_code for _ in range(2)]
        after = httpx.get(url).status_code  # the trace has ended: not recorded
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert codes == [503, 200] and after == 200
    assert [(c.method, c.path, c.status) for c in tr.calls] == [
        ("GET", "/api/flow_runs/{id}", 503),
        ("GET", "/api/flow_runs/{id}", 200),
    ]
    assert "2 requests (0 POST/PUT/PATCH/DELETE, 1 answered 503)" in apitrace.summary(tr.calls)


# ---------------------------------------------------------------- Run → first task


def _state(kind: str, at: str) -> dict:
    return {"type": kind, "timestamp": f"2026-12-04T04:00:{at}+00:00"}


def test_run_latency_phases_split_the_timeline():
    from hgbench.run_latency import phases as run_phases

    states = [
        _state("RUNNING", "05.000"),
        _state("SCHEDULED", "00.000"),
        _state("PENDING", "01.000"),
        _state("PENDING", "01.500"),  # a second Pending (a retry of the proposal) is ignored
        _state("COMPLETED", "09.000"),
    ]
    tasks = ["2026-12-04T04:00:06.000Z", "2026-12-04T04:00:05.250Z"]
    p = run_phases("2026-12-04T04:00:00.000000Z", states, tasks)
    assert (p.pickup, p.process, p.first_task, p.total) == (1.0, 4.0, 0.25, 5.25)


def test_run_latency_refuses_a_run_that_never_started_a_task():
    from hgbench.run_latency import phases as run_phases

    with pytest.raises(ValueError, match="RUNNING"):
        run_phases("2026-12-04T04:00:00Z", [_state("PENDING", "01.000")], [])
    with pytest.raises(ValueError, match="a task run"):
        states = [_state("PENDING", "01.000"), _state("RUNNING", "02.000")]
        run_phases("2026-12-04T04:00:00Z", states, [])


def test_run_latency_summary_median_and_worst():
    from hgbench.run_latency import BOUND, Phases, summary

    runs = [Phases(pickup=1, process=4, first_task=0.2, total=t) for t in (5.2, 4.9, 6.1)]
    s = summary(runs)
    assert s["total"] == 5.2 and s["worst_total"] == 6.1 and s["pickup"] == 1
    assert Row(figure="x", value=s["total"], bound=BOUND).met == "NO"
    with pytest.raises(ValueError):
        summary([])


# ---------------------------------------------------------------- the seed script baseline

SEED_OUT = """== 100.0 step 1: network, subnet, router
3f2c...
== 107.5 step 2: security group and rules
== 117.0 step 3: the VPN node and one worker
VPN node 198.18.0.11 (192.168.200.2), worker 192.168.200.3
== 160.0 step 4: the floating IP
== 168.25 done
"""


def test_seed_steps_last_until_the_next_mark_or_done():
    from hgbench.seedscript import parse_steps

    steps = parse_steps(SEED_OUT, end=999.0)
    assert [(s.number, s.name) for s in steps] == [
        (1, "network, subnet, router"),
        (2, "security group and rules"),
        (3, "the VPN node and one worker"),
        (4, "the floating IP"),
    ]
    assert [s.seconds for s in steps] == pytest.approx([7.5, 9.5, 43.0, 8.25])


def test_seed_steps_of_a_failed_run_end_at_exit():
    from hgbench.seedscript import parse_steps

    steps = parse_steps("== 50.0 step 1: network, subnet, router\nabc\n", end=52.5)
    assert len(steps) == 1 and steps[0].seconds == pytest.approx(2.5)
    assert parse_steps("no marks at all\n", end=1.0) == []


def _seed_run(rc: int, steps: list[tuple[int, str, float]], error: str = "", wall: float = 50.0):
    from hgbench.seedscript import SeedRun, SeedStep

    return SeedRun(
        wall=wall,
        returncode=rc,
        steps=[SeedStep(number=n, name=name, seconds=sec) for n, name, sec in steps],
        error=error,
        calls={"bielefeld": (20, 3), "marburg": (123, 17)},
    )


def test_seed_error_is_the_last_stderr_line_and_grown_counts_only_increases():
    from hgbench.seedscript import grown, last_error

    err = "warning: something\nMore than one Network exists with the name 'marburg-net'.\n\n"
    assert last_error(err) == "More than one Network exists with the name 'marburg-net'."
    assert last_error("") == ""
    before = {"networks": 1, "servers": 2, "home group rules": 9}
    after = {"networks": 2, "servers": 2, "home group rules": 7}
    assert grown(before, after) == {"networks": 1}


def test_seed_rerun_outcome_says_fails_or_duplicates():
    from hgbench.seedscript import rerun_outcome

    dup = "More than one Network exists with the name 'marburg-net'."
    failed = _seed_run(1, [(1, "network, subnet, router", 2.1)], error=dup)
    assert rerun_outcome(failed, {"networks": 1}) == (
        "fails at step 1 (network, subnet, router): More than one Network exists with the "
        "name 'marburg-net'; duplicated before that: networks +1"
    )
    assert rerun_outcome(failed, {}).endswith("; no duplicate left")
    assert rerun_outcome(_seed_run(2, []), {}).startswith("fails at before step 1: exit 2")
    done = _seed_run(0, [(1, "network, subnet, router", 2.0)])
    assert rerun_outcome(done, {"servers": 2, "floating IPs": 1}) == (
        "completes again and duplicates: servers +2, floating IPs +1"
    )
    assert rerun_outcome(done, {}) == "completes again, no duplicate"


def test_seed_rows_ratio_against_the_bound_and_the_rerun_note():
    from hgbench.seedscript import RATIO_BOUND, rows

    first = _seed_run(
        0,
        [
            (1, "network, subnet, router", 7.5),
            (3, "the VPN node and one worker", 45.0),
            (8, "the allowed-address pairs", 4.2),
        ],
        wall=80.0,
    )
    second = _seed_run(1, [(1, "network, subnet, router", 2.0)], error="boom", wall=2.0)
    wall, ratio, rerun = rows(first, second, {"networks": 1}, 32.0, 7.6, boot=20)
    assert wall.value == 80.0 and "143 API calls (20 mutating)" in wall.note
    assert "slowest non-boot step: 1 (network, subnet, router) 7.5 s" in wall.note
    assert ratio.bound == RATIO_BOUND and ratio.ratio == pytest.approx(0.4 / 0.6)
    assert ratio.met == "yes"
    assert rerun.value == pytest.approx(7.6 / 80) and rerun.met == "-"
    assert "fails at step 1 (network, subnet, router): boom" in rerun.note
    slow = rows(first, second, {}, 60.0, 7.6, boot=20)[1]
    assert slow.met == "NO"


def test_seed_rows_of_a_failed_first_run_leave_the_ratio_pending():
    from hgbench.seedscript import describe, rows

    failed = _seed_run(1, [(3, "the VPN node and one worker", 9.0)], error="quota exceeded")
    out = rows(failed, failed, {}, 32.0, 7.6, boot=20)
    assert [r.figure for r in out] == ["seed script wall", "add-site wall ÷ seed script wall"]
    assert out[0].value is None and out[1].met == "pending"
    assert "failed at step 3: quota exceeded" in out[1].note
    text = describe(failed, {"networks": 1}, {"networks": 0})
    assert "FAILED (exit 1): quota exceeded" in text and "made: networks +1" in text


def test_seed_script_parses_as_bash():
    import subprocess

    from hgbench.seedscript import SCRIPT

    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
