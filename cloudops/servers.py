"""Servers: launch (or find) one of ours, wait for ACTIVE, replace one that went to ERROR,
start one found SHUTOFF; its port and console."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from openstack import exceptions as osexc
from openstack.connection import Connection
from pydantic import BaseModel, Field

from hybridgrid import naming
from hybridgrid.cloudops.errors import (
    ServerBootFailed,
    ServerStuck,
)
from hybridgrid.cloudops.finder import only, read
from hybridgrid.records import (
    Action,
    ServerRecord,
)
from hybridgrid.retry.policy import progress_logger

ROLE_KEY = "hybridgrid-role"  # server metadata: vpn, worker, master


def find_server(conn: Connection, site: str, name: str) -> Any | None:
    # Nova's name filter is a regular expression: anchor it, then keep only exact names that
    # carry our metadata.
    servers = read(conn.compute.servers, name=f"^{re.escape(name)}$")
    ours = [s for s in servers if s.name == name and naming.site_of_metadata(s.metadata) == site]
    return only(ours, "server", name)


def server_port(conn: Connection, server_id: str, network_id: str | None = None) -> Any:
    ports = [
        p
        for p in read(conn.network.ports, device_id=server_id)
        if network_id is None or p.network_id == network_id
    ]
    if not ports:
        raise LookupError(
            f"server {server_id} has no port" + (f" on network {network_id}" if network_id else "")
        )
    return sorted(ports, key=lambda p: p.id)[0]


class ServerSpec(BaseModel):
    name: str
    site: str
    role: str
    image: str
    flavor: str
    network_id: str
    key_name: str | None = None
    security_groups: list[str] = Field(default_factory=list)
    user_data: str | None = None  # plain text (cloud-config); encoded for Nova here


# Seconds between progress lines while a server boots.
PROGRESS_EVERY = 15.0

# States a server does not leave by itself: waiting for ACTIVE would only time out.
_PARKED = {"SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED", "RESCUE", "SOFT_DELETED"}


def _wait_active(conn: Connection, server: Any, timeout: float, poll: float) -> Any:
    """Poll until ACTIVE, ERROR or SHUTOFF (returned), or a parked state (a clear error);
    a progress line goes to the run's log every ~15 s."""
    started = time.monotonic()
    deadline = started + timeout
    reported = started
    while True:
        server = read(conn.compute.get_server, server.id)
        if server.status in ("ACTIVE", "ERROR", "SHUTOFF"):
            return server
        now = time.monotonic()
        if now - reported >= PROGRESS_EVERY:
            reported = now
            progress_logger().info(
                "still waiting for server %s to be ACTIVE: %s (%.0f s so far, %.0f s left)",
                server.name,
                server.status,
                now - started,
                max(0.0, deadline - now),
            )
        if server.status in _PARKED:
            raise ServerStuck(
                f"server {server.name} ({server.id}) is {server.status}: hybridgrid will not "
                f"change that on its own — resume or unshelve it (openstack server resume/"
                f"unshelve {server.id}), or delete it to get a new one, then rerun"
            )
        if time.monotonic() > deadline:
            # Not a network timeout: retrying the task would only wait the same way again.
            raise ServerStuck(
                f"server {server.name} still {server.status} after {timeout:.0f} s: the cloud is "
                f"slow or stuck — check the server in the cloud, then rerun to keep waiting"
            )
        time.sleep(poll)


def wait_gone(conn: Connection, server_id: str, timeout: float, poll: float) -> None:
    """Until Nova says 404 for the server (polls retry transient errors in place)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            read(conn.compute.get_server, server_id)
        except osexc.NotFoundException:
            return
        if time.monotonic() > deadline:
            raise ServerStuck(
                f"server {server_id} is still there {timeout:.0f} s after its deletion: check "
                f"it in the cloud (openstack server show {server_id}), then rerun"
            )
        time.sleep(poll)


def launch_server(conn: Connection, spec: ServerSpec) -> Any:
    """Create the server unless ours exists; does not wait (so several boot together)."""
    server = find_server(conn, spec.site, spec.name)
    if server is not None:
        return server
    image = read(conn.image.find_image, spec.image, ignore_missing=False)
    flavor = read(conn.compute.find_flavor, spec.flavor, ignore_missing=False)
    return conn.compute.create_server(
        name=spec.name,
        image_id=image.id,
        flavor_id=flavor.id,
        networks=[{"uuid": spec.network_id}],
        key_name=spec.key_name,
        security_groups=[{"name": g} for g in spec.security_groups] or None,
        # The proxy layer sends user_data as given; Nova wants base64.
        user_data=base64.b64encode(spec.user_data.encode()).decode() if spec.user_data else None,
        metadata={**naming.server_metadata(spec.site), ROLE_KEY: spec.role},
    )


def ensure_server(
    conn: Connection,
    spec: ServerSpec,
    *,
    timeout: float = 600,
    poll: float = 1.0,
    max_replacements: int = 2,
) -> ServerRecord:
    """Launch (or find) the server and wait for ACTIVE; a server in ERROR is deleted and
    launched again, at most `max_replacements` times; one of ours found SHUTOFF is started."""
    existed = find_server(conn, spec.site, spec.name) is not None
    replaced = 0
    started = False
    while True:
        server = launch_server(conn, spec)
        server = _wait_active(conn, server, timeout, poll)
        if server.status == "SHUTOFF" and not started:  # ours, stopped: start it again
            conn.compute.start_server(server)
            started = True
            server = _wait_active(conn, server, timeout, poll)
        if server.status == "ACTIVE":
            break
        if server.status == "SHUTOFF":
            raise ServerStuck(
                f"server {spec.name} ({server.id}) stays SHUTOFF after a start: check it in "
                f"the cloud (openstack server show {server.id}), then rerun"
            )
        fault = (server.fault or {}).get("message", "no fault message")
        if replaced >= max_replacements:
            raise ServerBootFailed(
                f"server {spec.name} went to ERROR {replaced + 1} times (last: {fault}): the "
                f"cloud cannot boot it — check image {spec.image!r} and flavor {spec.flavor!r}"
            )
        conn.compute.delete_server(server, ignore_missing=True)
        wait_gone(conn, server.id, timeout, poll)
        replaced += 1
    port = server_port(conn, server.id, spec.network_id)
    action: Action = "reused" if existed and not replaced else "created"
    if action == "reused" and started:
        action = "updated"
    return ServerRecord(
        name=spec.name,
        id=server.id,
        action=action,
        status=server.status,
        port_id=port.id,
        fixed_ip=port.fixed_ips[0]["ip_address"],
        replaced=replaced,
    )


def console_output(conn: Connection, server_id: str) -> str:
    return read(conn.compute.get_server_console_output, server_id).get("output", "") or ""
