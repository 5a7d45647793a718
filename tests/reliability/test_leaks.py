"""Secret leak scan over everything the suite did (bootstrap, the fault soak, killed and rerun
runs, bad input, host-key refusals, 4 concurrent sites): the distinctive secrets are every
cloud's password and application-credential secret (random, from localcloud's clouds.yaml),
the wrong password of the bad-credentials block, the private keys of every SSHKey block the
suite made, and every WireGuard private key read from the servers' /etc/wireguard.

Scanned, each place counted apart (every count must be 0):
- Python log records of every logger at DEBUG (Prefect's own at INFO), formatted with tracebacks;
- Prefect run logs (read_logs), flow and task run parameters and states (messages, result
  references), artifacts, block documents as the API shows them;
- exception texts and child process output the tests saw;
- process argument lists sampled from /proc every 0.2 s during the whole suite;
- files written during the suite on this machine (the Prefect home, database and result
  storage, the localcloud state dir, /tmp) except the two that must hold secrets
  (clouds.yaml and localcloud's own database, both 0600);
- on every server: its private file systems (/run with the /etc and /var overlays, /root,
  /home, /tmp) outside /etc/wireguard; files in /etc/wireguard are 0600.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from reliab_support import SUMMARY

pytestmark = pytest.mark.dataplane

WRONG_PASSWORD = "not-the-password-0"  # conftest: the giessen-wrong block
MAX_FILE = 64 * 1024 * 1024
# files that must hold secrets (checked for mode 0600 instead of counted)
MUST_HOLD = re.compile(r"(^|/)(clouds\.yaml|[^/]*\.(db|sqlite)(-wal|-shm)?)$")


def _key_needles(private_key: str) -> list[str]:
    """The lines of a private key's base64 body that carry private bytes (the first two lines
    of an OpenSSH key are a fixed header and the public key)."""
    body = [ln for ln in private_key.strip().splitlines() if not ln.startswith("-----")]
    return [ln for ln in body[2:] if len(ln) >= 24] + [private_key.strip()]


def _servers(rel) -> list:
    from localcloud.dataplane.netns import is_alive
    from localcloud.dataplane.state import load_state

    state = load_state(rel.state_dir, "")
    return [r for r in state.servers.values() if r.pid and is_alive(r.pid, r.ns)]


def _in_server(rec, cmd: str, stdin: str = "") -> tuple[int, str]:
    from localcloud.dataplane import vm as server_mod

    proc = subprocess.run(
        [*server_mod.enter_argv(rec.pid), "sh", "-c", cmd],
        env=server_mod.guest_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


async def _every(read, page: int = 200) -> list:
    """Every item of a paged Prefect client read (`read(limit=, offset=)`)."""
    items: list = []
    while True:
        got = await read(limit=page, offset=len(items))
        items += got
        if len(got) < page:
            return items


def _prefect_texts() -> dict[str, list[str]]:
    from prefect.client.orchestration import get_client

    async def collect() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"logs": [], "runs": [], "artifacts": [], "blocks": []}
        async with get_client() as client:
            out["logs"] += [log.message for log in await _every(client.read_logs)]
            for read in (client.read_flow_runs, client.read_task_runs):
                out["runs"] += [r.model_dump_json() for r in await _every(read)]
            out["artifacts"] += [a.model_dump_json() for a in await _every(client.read_artifacts)]
            docs = await client.read_block_documents(include_secrets=False)
            out["blocks"] += [d.model_dump_json() for d in docs]
        return out

    return asyncio.run(collect())


def _prefect_paths() -> list[Path]:
    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
    )

    paths = [Path(PREFECT_HOME.value()), Path(PREFECT_LOCAL_STORAGE_PATH.value())]
    url = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
    if url.startswith("sqlite"):
        paths.append(Path(url.split(":///", 1)[1]).parent)
    return paths


def _files_since(roots: list[Path], since: float) -> list[Path]:
    seen, out = set(), []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "__pycache__")]
            for f in filenames:
                p = Path(dirpath) / f
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
                    continue
                if st.st_mtime < since or p in seen:
                    continue
                seen.add(p)
                out.append(p)
    return out


@pytest.fixture(scope="module")
def scan(rel, watch):
    # --- the secrets
    clouds = yaml.safe_load((rel.state_dir / "clouds.yaml").read_text())["clouds"]
    secrets = {WRONG_PASSWORD}
    for entry in clouds.values():
        auth = entry["auth"]
        secrets |= {auth.get("password"), auth.get("application_credential_secret")} - {None}
    cloud_secrets = len(secrets)
    for key in rel.ssh_private_keys:
        secrets |= set(_key_needles(key))
    servers = _servers(rel)
    wg_keys = set()
    for rec in servers:
        rc, out = _in_server(rec, "cat /etc/wireguard/privatekey 2>/dev/null")
        if rc == 0 and out.strip():
            wg_keys.add(out.strip())
    secrets |= wg_keys
    needles = sorted(secrets)
    bneedles = [n.encode() for n in needles]

    def hits(text: str) -> int:
        return sum(text.count(n) for n in needles)

    counts: dict[str, int] = {}
    where: dict[str, list[str]] = {}

    def count(place: str, texts, label=lambda t: t[:80]) -> None:
        n, bad = 0, []
        for t in texts:
            h = hits(t)
            if h:
                n += h
                bad.append(label(t))
        counts[place] = n
        where[place] = bad[:5]

    # --- what the run emitted
    count(f"Python log records ({len(watch.records)})", watch.records)
    prefect = _prefect_texts()
    count(f"Prefect run logs via the API ({len(prefect['logs'])})", prefect["logs"])
    count(f"flow/task runs: parameters, states ({len(prefect['runs'])})", prefect["runs"])
    count(f"artifacts ({len(prefect['artifacts'])})", prefect["artifacts"])
    count(f"block documents via the API ({len(prefect['blocks'])})", prefect["blocks"])
    count(f"exception texts, child output ({len(watch.texts)})", watch.texts)
    cmdlines = [c.replace(b"\0", b" ").decode(errors="replace") for c in watch.cmdlines]
    count(f"process argv ({len(cmdlines)} distinct, {watch.samples} sweeps)", cmdlines)

    # --- files on this machine written during the suite
    roots = [*_prefect_paths(), rel.state_dir, Path("/tmp")]
    files = _files_since(roots, watch.started - 1)
    leaked, holders, loose = [], [], []
    for p in files:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        n = sum(data.count(b) for b in bneedles)
        if not n:
            continue
        if MUST_HOLD.search(str(p)) and str(p).startswith(str(rel.state_dir)):
            holders.append(p)
            if p.stat().st_mode & 0o077:
                loose.append(f"{p} {oct(p.stat().st_mode & 0o777)}")
        else:
            leaked.append(f"{p} ({n})")
    counts[f"files written on this machine ({len(files)})"] = len(leaked)
    where["files"] = leaked[:10]
    counts["files holding secrets that others can read"] = len(loose)
    where["loose"] = loose

    # --- files on the servers
    server_hits, wg_modes = [], []
    for rec in servers:
        rc, out = _in_server(
            rec,
            "grep -rlsF -D skip -f /dev/stdin /run /root /home /tmp 2>/dev/null; true",
            # grep -f takes one pattern per line: multi-line needles (a whole key) go as
            # their lines, which _key_needles lists already
            stdin="\n".join(n for n in needles if "\n" not in n) + "\n",
        )
        server_hits += [f"{rec.name}:{line}" for line in out.split() if line]
        rc, out = _in_server(rec, "stat -c '%a %U %n' /etc/wireguard/* 2>/dev/null; true")
        wg_modes += [
            f"{rec.name}: {line}"
            for line in out.splitlines()
            if line.strip() and not line.startswith("600 root ")
        ]
    counts[f"files on {len(servers)} servers outside /etc/wireguard"] = len(server_hits)
    where["servers"] = server_hits[:10]
    counts["files in servers' /etc/wireguard not 0600 root"] = len(wg_modes)
    where["wg modes"] = wg_modes

    # positive controls: the same scanners find a secret where it is meant to be
    controls = {
        "log scanner": hits(f"x {min(wg_keys)} y") == 1,
        "file scanner": any(p.name == "clouds.yaml" for p in holders),
    }
    vpn = next((r for r in servers if r.name.endswith("-vpn")), None)
    if vpn is not None:
        rc, out = _in_server(
            vpn,
            "grep -rlsF -D skip -f /dev/stdin /etc/wireguard; true",
            stdin="\n".join(n for n in needles if "\n" not in n) + "\n",
        )
        controls["server scanner"] = "/etc/wireguard/privatekey" in out.split()
    SUMMARY.leaks = counts
    SUMMARY.leak_notes = [
        f"{len(needles)} needles: {cloud_secrets} cloud passwords/app-credential secrets, "
        f"{len(rel.ssh_private_keys)} SSH private keys, {len(wg_keys)} WireGuard private keys",
        f"{len(holders)} files hold secrets by design (clouds.yaml, localcloud's database), "
        f"all 0600 in a 0700 state dir"
        if not loose
        else f"loose: {loose}",
    ]
    return counts, where, len(wg_keys), len(rel.ssh_private_keys), controls


def test_the_scan_had_something_to_find(scan, rel):
    """A scan without needles or haystack proves nothing."""
    counts, _, wg_keys, ssh_keys, controls = scan
    assert wg_keys >= 2 and ssh_keys >= 2
    assert controls == dict.fromkeys(controls, True) and len(controls) == 3, controls
    assert any(
        k.startswith("Python log records") and int(k.split("(")[1][:-1]) > 100 for k in counts
    )


def test_zero_secrets_anywhere(scan):
    counts, where, *_ = scan
    assert {k: v for k, v in counts.items() if v} == {}, {k: v for k, v in where.items() if v}
