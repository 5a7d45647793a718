"""Read-only checks of one cloud before anything is created, so a doomed run fails first.

Each problem becomes one line that names the cause and the fix; all problems of a cloud are
reported together (a user fixes them in one go, not one rerun each).
"""

from __future__ import annotations

import contextvars
import re
from concurrent.futures import Future, ThreadPoolExecutor
from ipaddress import ip_network
from typing import Any

from keystoneauth1 import exceptions as ksexc
from openstack import exceptions as osexc
from openstack.connection import Connection
from pydantic import BaseModel, Field

from hybridgrid.cloudops.finder import find_or_none, read
from hybridgrid.retry.classify import PermanentError, is_transient
from hybridgrid.retry.messages import friendly_error

REQUIRED_EXTENSIONS = {
    "allowed-address-pairs": "cross-site packets carry foreign source addresses",
    "port-security": "anti-spoofing must be adjustable per port",
}


class Needs(BaseModel):
    """What the run will create on this cloud (for the quota check)."""

    instances: int = 0
    cores: int = 0
    ram_mb: int = 0
    floating_ips: int = 0
    networks: int = 0
    routers: int = 0
    security_groups: int = 0


class PreflightRequest(BaseModel):
    cloud: str = ""  # the credentials block's name, for messages (the task fills it in)
    image: str | None = None
    flavors: list[str] = Field(default_factory=list)
    external_network: str | None = None
    network: str | None = None  # an existing network (e.g. the master's) whose MTU to read
    # Servers to launch per flavor: adds cores and RAM to `needs`; instances = the larger of
    # needs.instances and their count (the same servers, never counted twice).
    instances_by_flavor: dict[str, int] = Field(default_factory=dict)
    needs: Needs = Field(default_factory=Needs)


class PreflightReport(BaseModel):
    cloud: str
    ok: bool
    problems: list[str] = Field(default_factory=list)
    network_mtu: int | None = None
    external_network_id: str | None = None
    image_id: str | None = None
    flavor_ids: dict[str, str] = Field(default_factory=dict)


class PreflightError(PermanentError):
    def __init__(self, report: PreflightReport):
        self.report = report
        lines = "\n".join(f"  - {p}" for p in report.problems)
        super().__init__(f"pre-flight on cloud {report.cloud!r} failed:\n{lines}")


def preflight(conn: Connection, req: PreflightRequest) -> PreflightReport:
    """Check everything, collect every problem; raises only for transient errors (retry)."""
    rep = PreflightReport(cloud=req.cloud, ok=True)
    refused = _credentials_problem(conn, req)
    if refused is not None:
        return PreflightReport(cloud=req.cloud, ok=False, problems=[refused])
    with ThreadPoolExecutor(8, thread_name_prefix="preflight") as pool:
        reads = _Reads(pool, conn, req)
        problems = _image_problems(conn, req, reads, rep)
        problems += _flavor_problems(conn, reads, rep)
        problems += _network_problems(conn, req, reads, rep)
        problems += _extension_problems(reads.aliases.result())
        if reads.quota is not None:
            problems += _quota_problems(req, reads.found_flavors(), *reads.quota.result())
    rep.problems = problems
    rep.ok = not problems
    return rep


def _credentials_problem(conn: Connection, req: PreflightRequest) -> str | None:
    """Why the cloud refuses the credentials, or None when it accepts them."""
    try:
        conn.session.get_token()  # keystoneauth's own errors (conn.authorize() flattens them)
    except (ksexc.ClientException, osexc.SDKException) as exc:
        if is_transient(exc):
            raise
        return (
            friendly_error(exc, credentials_block=req.cloud or None)
            + " — nothing else on this cloud can be checked until the credentials work"
        )
    return None


class _Reads:
    """The pre-flight reads, all started at once: they are independent (~100 ms each on a real
    cloud, a dozen of them were a second of every add-site's critical path). Each thread runs
    in a copy of this context, so the API call counting of the flow run sees them."""

    def __init__(self, pool: ThreadPoolExecutor, conn: Connection, req: PreflightRequest):
        def submit(fn: Any, *args: Any) -> Future:
            return pool.submit(contextvars.copy_context().run, fn, *args)

        def find(finder: Any, name: str | None) -> Future | None:
            return submit(find_or_none, finder, name) if name else None

        self.image = find(conn.image.find_image, req.image)
        self.flavors = {
            name: submit(find_or_none, conn.compute.find_flavor, name)
            for name in dict.fromkeys(req.flavors)
        }
        self.external = find(conn.network.find_network, req.external_network)
        self.network = find(conn.network.find_network, req.network)
        self.aliases = submit(lambda: {e.alias for e in read(conn.network.extensions)})
        self.quota = submit(_quota_reads, conn) if _needs_quota(req) else None

    def found_flavors(self) -> dict[str, Any]:
        return {name: f.result() for name, f in self.flavors.items() if f.result() is not None}


def _image_problems(
    conn: Connection, req: PreflightRequest, reads: _Reads, rep: PreflightReport
) -> list[str]:
    if reads.image is None:
        return []
    img = reads.image.result()
    if img is None:
        names = sorted(i.name for i in read(conn.image.images))
        return [f"image {req.image!r} does not exist: use one of {names}"]
    rep.image_id = img.id
    return []


def _flavor_problems(conn: Connection, reads: _Reads, rep: PreflightReport) -> list[str]:
    problems = []
    for name, fut in reads.flavors.items():
        fl = fut.result()
        if fl is None:
            names = sorted(f.name for f in read(conn.compute.flavors))
            problems.append(f"flavor {name!r} does not exist: use one of {names}")
        else:
            rep.flavor_ids[name] = fl.id
    return problems


def _network_problems(
    conn: Connection, req: PreflightRequest, reads: _Reads, rep: PreflightReport
) -> list[str]:
    """The external network (it must be one), and the master's network (for its MTU)."""
    problems = []
    if reads.external is not None:
        net = reads.external.result()
        if net is None or not net.is_router_external:
            names = sorted(n.name for n in read(conn.network.networks, is_router_external=True))
            problems.append(
                f"external network {req.external_network!r} does not exist: use one of {names}"
            )
        else:
            rep.external_network_id = net.id
    if reads.network is not None:
        net = reads.network.result()
        if net is None:
            problems.append(
                f"network {req.network!r} does not exist: give the name or id of the network "
                f"the master's port is on (openstack network list)"
            )
        else:
            rep.network_mtu = net.mtu
    return problems


def _extension_problems(aliases: set[str]) -> list[str]:
    return [
        f"Neutron on this cloud lacks the {alias!r} extension ({why}): ask the "
        f"cloud's operators to enable it; hybridgrid cannot work around it"
        for alias, why in REQUIRED_EXTENSIONS.items()
        if alias not in aliases
    ]


def _needs_quota(req: PreflightRequest) -> bool:
    return any(vars(req.needs).values()) or any(req.instances_by_flavor.values())


def _quota_reads(conn: Connection) -> tuple[Any, Any]:
    """Nova's absolute limits and Neutron's quota details (None without that extension)."""
    limits = read(conn.compute.get_limits).absolute
    try:
        q = read(conn.network.get_quota, conn.current_project_id, details=True)
    except osexc.NotFoundException:  # no quota_details extension: Neutron quotas unknown
        q = None
    return limits, q


def _quota_problems(
    req: PreflightRequest, flavors: dict[str, Any], limits: Any, q: Any
) -> list[str]:
    out: list[str] = []
    needs = req.needs.model_copy()
    # Servers listed by flavor ARE instances: `needs.instances` may already count them (the
    # add-site flow gives both), so the larger total counts, never the sum of the two.
    needs.instances = max(needs.instances, sum(req.instances_by_flavor.values()))
    for name, count in req.instances_by_flavor.items():
        fl = flavors.get(name)
        if fl is not None:
            needs.cores += fl.vcpus * count
            needs.ram_mb += fl.ram * count
    if not any(vars(needs).values()):
        return out
    checks = [
        ("instances", needs.instances, limits.instances, limits.instances_used),
        ("cores", needs.cores, limits.total_cores, limits.total_cores_used),
        ("RAM (MB)", needs.ram_mb, limits.total_ram, limits.total_ram_used),
    ]
    for label, attr, need in [
        ("floating IPs", "floating_ips", needs.floating_ips),
        ("networks", "networks", needs.networks),
        ("routers", "routers", needs.routers),
        ("security groups", "security_groups", needs.security_groups),
    ]:
        detail = getattr(q, attr, None) or {}
        if isinstance(detail, dict):
            checks.append((label, need, detail.get("limit", -1), detail.get("used", 0)))
    for label, need, limit, used in checks:
        if need and limit is not None and limit >= 0 and used + need > limit:
            out.append(
                f"quota for {label} would be exceeded: {used} used + {need} needed > limit "
                f"{limit}; free {used + need - limit} {label} in the project or ask the cloud "
                f"operator for a higher quota"
            )
    return out


def pair_limit_problems(
    node: str, port_id: str, have: list[str], want: list[str], limit: int
) -> list[str]:
    """Pure: would merging `want` into a port's allowed-address pairs exceed Neutron's limit?"""
    have_n = {str(ip_network(p, strict=False)) for p in have}
    missing = [w for w in want if str(ip_network(w, strict=False)) not in have_n]
    total = len(have_n) + len(missing)
    if not missing or total <= limit:
        return []
    return [
        f"the port {port_id} of {node} would carry {total} allowed-address pairs, more than "
        f"Neutron's default limit of {limit} (it holds {len(have_n)}, this site adds "
        f"{', '.join(missing)}). Fix: give the site a subnet inside site_pool (one pair "
        f"covers the whole pool), or remove pairs nobody needs from that port"
    ]


# ---------------------------------------------------------------- the hub's UDP port


class UdpPortState(BaseModel):
    """Who holds a UDP port on a host: read by `hub_port_command` (read-only, one call)."""

    port: int
    wg0_port: int | None = None  # wg0's listen port; None when wg0 is down (or wg is missing)
    holders: list[str] = Field(default_factory=list)  # programs with a socket bound to `port`
    bound: bool = False  # some socket is bound to `port` (a kernel socket has no program)
    checked: bool = True  # False: the host has no `ss`, nothing could be read


def hub_port_command(port: int) -> str:
    """Shell (root) that prints every socket bound to UDP `port` and wg0's listen port.

    `ss -p` names the owning program: wireguard-go for a userspace wg0, none for a kernel
    socket. wg0 is read AFTER ss, so a wg0 that came up in between still counts as wg0's."""
    return f"""if command -v ss >/dev/null 2>&1; then
  ss -Hulpn 'sport = :{int(port)}' | sed 's/^/ss: /'
else
  echo 'no-ss'
fi
printf 'wg0: %s\\n' "$(wg show wg0 listen-port 2>/dev/null)"
"""


_PROGRAM = re.compile(r'\("([^"]+)",pid=(\d+)')


def parse_hub_port(port: int, stdout: str) -> UdpPortState:
    """Pure: `hub_port_command`'s output as a `UdpPortState`."""
    state = UdpPortState(port=port)
    for line in stdout.splitlines():
        if line == "no-ss":
            state.checked = False
        elif line.startswith("ss: ") and line[4:].strip():
            state.bound = True
            for prog, pid in _PROGRAM.findall(line):
                holder = f"{prog} (pid {pid})"
                if holder not in state.holders:
                    state.holders.append(holder)
        elif line.startswith("wg0: ") and line[5:].strip().isdigit():
            state.wg0_port = int(line[5:].strip())
    return state


def hub_port_problems(node: str, state: UdpPortState) -> list[str]:
    """Pure: a problem when the hub's WireGuard port is bound by anything but wg0."""
    if not state.checked or not state.bound or state.wg0_port == state.port:
        return []
    by = ", ".join(state.holders) or "a socket without a program (a kernel WireGuard interface?)"
    wg0 = "wg0 is down" if state.wg0_port is None else f"wg0 listens on {state.wg0_port}"
    return [
        f"UDP {state.port} on {node} is in use by {by}, not by wg0 ({wg0}), so the hub's "
        f"WireGuard cannot listen there. Fix: stop that program (or move it to another port) "
        f"on the master, then run add-remote-site again (see: ss -ulpn 'sport = :{state.port}')"
    ]
