"""Tempest (OpenStack's own API tests) against an API-only localcloud: the conformance step.

Run by scripts/conformance.sh with the product's .venv (it starts localcloud through
`localcloud.control`); Tempest itself runs from .venv-tempest (scripts/tempest_venv.sh).

1. Starts localcloud on its own state directory and a free loopback port, API only, one cloud.
2. Writes a Tempest workspace: tempest.conf (`use_dynamic_credentials = false`) and a
   pre-provisioned accounts file (mode 0600) naming the cloud's one admin user.
3. Runs the subsets (one `tempest run`, concurrency 2), skip-listed tests excluded.
4. Prints passed/failed/skipped per subset; exits 1 on any failure (every skip-listed test is
   excluded, so any failure is one not on the list), 2 when it could not run at all.
5. Stops localcloud and removes the workspace (kept with --keep for a look at the logs).

The skip list is scripts/conformance_skips.yaml: each entry names the documented omission
(localcloud/README.md, "OpenStack behaviour left out") it stems from.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from localcloud import control as server
from localcloud.clientconf import cloud_entry, connect

ROOT = Path(__file__).resolve().parent.parent
TEMPEST_VENV = ROOT / ".venv-tempest"
SKIPS_FILE = ROOT / "scripts" / "conformance_skips.yaml"
CLOUD = "conformance"
RUN_TIMEOUT = 600  # seconds for the whole tempest run; a hung test ends it with a named cause

# Each subset: (name, regex over test ids). Run together, counted apart.
SUBSETS: list[tuple[str, str]] = [
    (
        "network",
        r"tempest\.api\.network\.(test_networks|test_networks_negative|test_ports|test_security_groups"
        r"|test_security_groups_negative|test_allowed_address_pair|test_routers"
        r"|test_routers_negative|test_floating_ips|test_floating_ips_negative"
        r"|test_extensions)\.",
    ),
    (
        "compute",
        r"tempest\.api\.compute\.(servers\.test_(create_server|servers|list_servers|"
        r"server_actions|servers_negative|list_server_filters|server_addresses|"
        r"server_metadata|server_metadata_negative|instance_actions|attach_interfaces|"
        r"servers_microversions|server_personality|multiple_create|server_password|"
        r"server_group|server_tags|availability_zone|create_server_multi_nic|"
        r"disk_config|virtual_interfaces|delete_server|server_rescue|"
        r"server_rescue_negative|device_tagging|novnc|list_servers_negative|"
        r"server_addresses_negative|instance_actions_negative)"
        r"|keypairs\.|flavors\.)",
    ),
    ("image", r"tempest\.api\.image\.v2\.(test_versions|test_images\.ListUserImagesTest)\."),
]

CONCURRENCY = 2
PROJECT_NETWORK = "private"
MAX_RERUN = 5  # more failures than this are no race: no rerun


class ConformanceError(RuntimeError):
    """The run could not be carried out (not a test failure)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_skips() -> list[dict[str, str]]:
    """The skip list; every entry needs a test id, an omission named in localcloud/README.md
    and a reason."""
    data = yaml.safe_load(SKIPS_FILE.read_text()) or {}
    omissions = data.get("omissions") or {}
    readme = (ROOT / "localcloud" / "README.md").read_text()
    for key, text in omissions.items():
        if f"[{key}]" not in readme:
            raise ConformanceError(
                f"{SKIPS_FILE.name}: omission {key!r} is not listed in localcloud/README.md "
                f"(add '[{key}]' to its entry there): {text}"
            )
    skips = data.get("skips") or []
    for entry in skips:
        missing = [k for k in ("test", "omission", "why") if not entry.get(k)]
        if missing or entry["omission"] not in omissions:
            raise ConformanceError(
                f"{SKIPS_FILE.name}: entry {entry} needs test, why and an omission of "
                f"{list(omissions)}"
            )
    return skips


def cloud_facts(state_dir: Path) -> dict[str, Any]:
    """What tempest.conf must name: ids of the user, project, images, flavors, networks."""
    conn = connect(state_dir, CLOUD)
    try:
        images = sorted(conn.image.images(), key=lambda i: i.name)
        flavors = sorted(conn.compute.flavors(), key=lambda f: f.ram)
        public = conn.network.find_network("public")
        # A project network, as real clouds have one: Tempest boots its servers on it.
        private = conn.network.create_network(name=PROJECT_NETWORK)
        conn.network.create_subnet(
            network_id=private.id, cidr="10.99.0.0/24", ip_version=4, name="private-subnet"
        )
        extensions = sorted(e.alias for e in conn.network.extensions())
        return {
            "user_id": conn.current_user_id,
            "project_id": conn.current_project_id,
            "image": images[0].id,
            "image_alt": images[1].id if len(images) > 1 else images[0].id,
            "flavor": flavors[0].id,
            "flavor_alt": flavors[1].id if len(flavors) > 1 else flavors[0].id,
            "public_network": public.id,
            "extensions": extensions,
        }
    finally:
        conn.close()


def accounts(facts: dict[str, Any], password: str) -> list[dict[str, Any]]:
    """Pre-provisioned accounts: the one user, named in different ways.

    Tempest locks one account per test class and identifies an account by the hash of its
    user/project fields, so the same user spelled by name or id counts as distinct accounts:
    two with the admin type (one per worker), six without (primary and alt for each worker)."""
    user_ways = [
        {"username": "admin", "user_domain_name": "Default"},
        {"user_id": facts["user_id"]},
        {"username": "admin", "user_id": facts["user_id"], "user_domain_name": "Default"},
    ]
    project_ways = [
        {"project_name": "admin", "project_domain_name": "Default"},
        {"project_id": facts["project_id"]},
        {"project_name": "admin", "project_id": facts["project_id"]},
    ]
    combos = [u | p for u in user_ways for p in project_ways]
    out = []
    for i, creds in enumerate(combos[:8]):
        entry: dict[str, Any] = {**creds, "password": password, "domain_name": "Default"}
        if i < 2:
            entry |= {"types": ["admin"], "roles": ["admin"]}
        else:
            entry |= {"roles": ["member", "reader", "manager"]}
        out.append(entry)
    return out


def tempest_conf(workspace: Path, handle: server.Handle, facts: dict[str, Any]) -> str:
    ep = handle.clouds[CLOUD]
    region = cloud_entry(handle.state_dir, CLOUD)["region_name"]
    return f"""[DEFAULT]
log_dir = {workspace}/logs
log_file = tempest.log

[oslo_concurrency]
lock_path = {workspace}/locks

[auth]
use_dynamic_credentials = false
test_accounts_file = {workspace}/etc/accounts.yaml
default_credentials_domain_name = Default
admin_domain_name = Default
create_isolated_networks = false

[identity]
uri_v3 = {ep.auth_url}
auth_version = v3
region = {region}
v3_endpoint_type = public
disable_ssl_certificate_validation = true

[identity-feature-enabled]
api_v2 = false
api_v3 = true
trust = false
access_rules = false
application_credentials = false

[compute]
image_ref = {facts["image"]}
image_ref_alt = {facts["image_alt"]}
flavor_ref = {facts["flavor"]}
flavor_ref_alt = {facts["flavor_alt"]}
region = {region}
endpoint_type = publicURL
min_microversion = 2.1
max_microversion = 2.96
build_timeout = 60
build_interval = 1
fixed_network_name = {PROJECT_NETWORK}
min_compute_nodes = 1

[compute-feature-enabled]
console_output = true
resize = false
pause = false
shelve = false
shelve_migrate = false
suspend = false
cold_migration = false
live_migration = false
metadata_service = false
vnc_console = false
spice_console = false
serial_console = false
rescue = false
stable_rescue = false
enable_instance_password = false
interface_attach = false
snapshot = false
personality = false
attach_encrypted_volume = false
config_drive = false
swap_volume = false
volume_multiattach = false
change_password = false
disk_config = false
unified_limits = false

[image]
region = {region}
endpoint_type = publicURL
build_timeout = 60

[image-feature-enabled]
import_image = false
os_glance_reserved = false
manage_locations = false

[network]
region = {region}
endpoint_type = publicURL
public_network_id = {facts["public_network"]}
floating_network_name = public
project_network_cidr = 10.100.0.0/16
project_network_mask_bits = 28
project_networks_reachable = false
shared_physical_network = false
build_timeout = 60
build_interval = 1

[network-feature-enabled]
ipv6 = false
ipv6_subnet_attributes = false
api_extensions = {",".join(facts["extensions"])}
port_admin_state_change = true
port_security = true
floating_ips = true

[validation]
run_validation = false

[service_available]
nova = true
neutron = true
glance = true
cinder = false
swift = false
horizon = false
placement = false
keystone = true

[volume-feature-enabled]
backup = false
snapshot = false
"""


def write_workspace(workspace: Path, handle: server.Handle, skips: list[dict[str, str]]) -> Path:
    facts = cloud_facts(handle.state_dir)
    password = cloud_entry(handle.state_dir, CLOUD)["auth"]["password"]
    etc = workspace / "etc"
    etc.mkdir(parents=True, mode=0o700)
    (workspace / "logs").mkdir()
    (workspace / "locks").mkdir()
    fd = os.open(etc / "accounts.yaml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(accounts(facts, password), f, sort_keys=False)
    (etc / "tempest.conf").write_text(tempest_conf(workspace, handle, facts))
    exclude = etc / "exclude.txt"
    exclude.write_text("".join(f"^{re.escape(s['test'])}\n" for s in skips))
    return exclude


def stestr_dir(workspace: Path) -> Path:
    """A bare stestr directory rather than `tempest init`, which would register the workspace
    in ~/.tempest for good."""
    ws = workspace / "ws"
    ws.mkdir()
    site = next((TEMPEST_VENV / "lib").glob("python3*/site-packages"))
    (ws / ".stestr.conf").write_text(
        f"[DEFAULT]\ntest_path={site / 'tempest' / 'test_discover'}\ntop_dir={site}\n"
        "group_regex=([^\\.]*\\.)*\n"
    )
    return ws


def run_tempest(workspace: Path, exclude: Path, regex: str, concurrency: int) -> str:
    """One `tempest run`; returns its results as CSV (test,status,…)."""
    tempest = TEMPEST_VENV / "bin" / "tempest"
    if not tempest.exists():
        raise ConformanceError(f"{tempest} is missing: run scripts/tempest_venv.sh")
    ws = workspace / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PATH"] = f"{TEMPEST_VENV / 'bin'}:{env.get('PATH', '')}"
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                str(tempest), "run", "--config-file", str(workspace / "etc" / "tempest.conf"),
                "--regex", regex, "--exclude-list", str(exclude),
                "--concurrency", str(concurrency),
            ],
            cwd=ws, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ConformanceError(f"tempest run did not end within {RUN_TIMEOUT} s") from exc
    with (workspace / "tempest-run.log").open("a") as log:
        log.write(proc.stdout + proc.stderr)
    took = time.monotonic() - started
    print(f"conformance: tempest run (concurrency {concurrency}) took {took:.0f} s", flush=True)
    last = subprocess.run(
        [str(TEMPEST_VENV / "bin" / "stestr"), "last", "--subunit"],
        cwd=ws, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    if last.returncode != 0 or not last.stdout:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise ConformanceError(f"tempest run left no results (rc {proc.returncode}):\n{tail}")
    csv_out = subprocess.run(  # exits 1 when a test failed: the CSV is what counts
        [str(TEMPEST_VENV / "bin" / "subunit2csv")],
        input=last.stdout, capture_output=True, timeout=120,
    )  # fmt: skip
    if not csv_out.stdout.strip():
        raise ConformanceError(f"subunit2csv gave no results: {csv_out.stderr[-2000:]!r}")
    return csv_out.stdout.decode()


def tally(results_csv: str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Counts per subset and the ids of failed tests (class-level setUp errors included)."""
    counts = {name: {"passed": 0, "failed": 0, "skipped": 0} for name, _ in SUBSETS}
    failed = []
    for row in csv.DictReader(io.StringIO(results_csv)):
        test_id = row["test"].split("[", 1)[0]
        status = row["status"]
        name = next((n for n, r in SUBSETS if re.match(r, test_id)), None)
        if name is None and "setUpClass" in row["test"]:  # "setUpClass (tempest.api.…Test)"
            inner = row["test"].split("(", 1)[-1].rstrip(")")
            name = next((n for n, r in SUBSETS if re.match(r, inner + ".")), None)
        if name is None:
            continue
        key = {"success": "passed", "skip": "skipped", "xfail": "passed"}.get(status, "failed")
        counts[name][key] += 1
        if key == "failed":
            failed.append(row["test"])
    return counts, failed


def _test_regex(test: str) -> str:
    """The regex that reruns one failed entry: a test id, or a class whose set-up failed."""
    if test.startswith("setUpClass ("):
        return "^" + re.escape(test.split("(", 1)[1].rstrip(")")) + r"\."
    return "^" + re.escape(test.split("[", 1)[0]) + r"(\[|$)"


def rerun_alone(
    workspace: Path, exclude: Path, failed: list[str], counts: dict[str, dict[str, int]]
) -> list[str]:
    """Rerun the failures one at a time. All workers share the cloud's one project, so a test
    that compares two listings can see the other worker's servers come and go in between;
    a failure that passes alone is such a race ([one-project]) and is reported as flaky.
    What fails again stays a failure."""
    if not failed or len(failed) > MAX_RERUN:
        return []
    regex = "|".join(f"({_test_regex(t)})" for t in failed)
    rows = list(csv.DictReader(io.StringIO(run_tempest(workspace, exclude, regex, 1))))
    passed = {r["test"].split("[", 1)[0] for r in rows if r["status"] == "success"}
    again = {_subject(r["test"]).split("[", 1)[0] for r in rows if r["status"] == "fail"}
    again |= {_subject(r["test"]).split("[", 1)[0] for r in rows if r["status"] == "failure"}

    def passed_alone(test: str) -> bool:  # it ran again, and nothing of it failed
        base = _subject(test).split("[", 1)[0]
        if test.startswith("setUpClass ("):
            return any(p.startswith(base) for p in passed) and not any(
                a.startswith(base) for a in again
            )
        return base in passed

    flaky = [t for t in failed if passed_alone(t)]
    for test in flaky:
        name = next(n for n, r in SUBSETS if re.match(r, _subject(test)))
        counts[name]["failed"] -= 1
        counts[name]["passed"] += 1
    return flaky


def _subject(test: str) -> str:
    return test.split("(", 1)[1].rstrip(")") + "." if test.startswith("setUpClass (") else test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the workspace (logs)")
    args = parser.parse_args()
    started = time.monotonic()
    workspace = Path(tempfile.mkdtemp(prefix="lc-conformance-"))
    state_dir = workspace / "state"
    options = {
        CLOUD: {
            "quotas": {
                "instances": 100, "cores": 400, "ram": 1024000, "key_pairs": 500,
                "network": 500, "subnet": 500, "port": 2000, "router": 200,
                "floatingip": 200, "security_group": 500, "security_group_rule": 5000,
            }
        }
    }  # fmt: skip
    try:
        skips = load_skips()
        handle = server.start(
            state_dir, clouds=[CLOUD], port=free_port(), dataplane=False, cloud_options=options
        )
        exclude = write_workspace(workspace, handle, skips)
        stestr_dir(workspace)
        everything = "|".join(f"(^{r})" for _, r in SUBSETS)
        counts, failed = tally(run_tempest(workspace, exclude, everything, CONCURRENCY))
        flaky = rerun_alone(workspace, exclude, failed, counts)
        failed = [t for t in failed if t not in flaky]
    except (ConformanceError, server.LocalcloudError, subprocess.CalledProcessError) as exc:
        print(f"conformance: could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        server.down(state_dir)
        if not args.keep:
            shutil.rmtree(workspace, ignore_errors=True)
    print(f"{'subset':<10}{'passed':>8}{'failed':>8}{'skipped':>9}")
    for name, c in counts.items():
        print(f"{name:<10}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    print(f"skip-listed (documented omissions, not run): {len(skips)}")
    for test in flaky:
        print(f"FLAKY (failed at concurrency {CONCURRENCY}, passed when rerun alone) {test}")
    for test in failed:
        print(f"FAILED {test}")
    if args.keep:
        print(f"workspace kept: {workspace}")
    total = {k: sum(c[k] for c in counts.values()) for k in ("passed", "failed", "skipped")}
    print(f"conformance: {time.monotonic() - started:.0f} s in all")
    passed, failed_n, skipped = total["passed"], total["failed"], total["skipped"]
    print(f"tempest: {passed} passed, {failed_n} failed, {skipped} skipped")
    return 1 if failed or total["passed"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
