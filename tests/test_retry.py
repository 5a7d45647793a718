"""The retry policy: classification with real exception objects, Prefect retries, messages."""

from __future__ import annotations

import asyncio
import json
import socket

import asyncssh
import keystoneauth1.exceptions as ksa
import openstack.exceptions as osx
import pytest
import requests
from keystoneauth1 import session as ks_session

from hybridgrid.retry.classify import PermanentError, TransientError, is_transient
from hybridgrid.retry.messages import friendly_error
from hybridgrid.retry.policy import transient_options, with_retries


def http_error(status: int, body: dict | None = None, url: str = "http://cloud/v2.1/servers"):
    """The exception openstacksdk raises for a response, built by openstacksdk itself."""
    resp = requests.Response()
    resp.status_code = status
    resp.reason = requests.status_codes._codes[status][0].upper().replace("_", " ")
    resp.url = url
    resp.headers["content-type"] = "application/json"
    resp._content = json.dumps(body or {}).encode()
    resp.request = requests.Request("POST", url).prepare()
    try:
        osx.raise_from_response(resp)
    except osx.HttpException as exc:
        return exc
    raise AssertionError("no exception raised")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def real_refused() -> ConnectionRefusedError:
    try:
        socket.create_connection(("127.0.0.1", free_port()), timeout=2)
    except ConnectionRefusedError as exc:
        return exc
    raise AssertionError("port unexpectedly open")


def real_keystone_connect_failure() -> ksa.ConnectFailure:
    try:
        ks_session.Session().get(f"http://127.0.0.1:{free_port()}/v3", connect_retries=0)
    except ksa.ConnectFailure as exc:
        return exc
    raise AssertionError("no ConnectFailure")


NEUTRON_QUOTA = {
    "NeutronError": {
        "type": "OverQuota",
        "message": "Quota exceeded for resources: ['floatingip'].",
        "detail": "",
    }
}
NOVA_QUOTA = {
    "forbidden": {
        "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
        "code": 403,
    }
}


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda: http_error(500, {"computeFault": {"message": "boom"}}), True),
        (lambda: http_error(503), True),
        (lambda: http_error(504), True),
        (lambda: http_error(409, {"conflictingRequest": {"message": "in task_state"}}), True),
        (lambda: http_error(429), True),
        (lambda: http_error(400, {"badRequest": {"message": "Invalid flavorRef"}}), False),
        (lambda: http_error(401), False),
        (lambda: http_error(403, {"forbidden": {"message": "Policy doesn't allow"}}), False),
        (lambda: http_error(404, {"itemNotFound": {"message": "Image not found"}}), False),
        (lambda: http_error(409, NEUTRON_QUOTA, "http://cloud/v2.0/floatingips"), False),
        (lambda: http_error(403, NOVA_QUOTA), False),
        (lambda: http_error(413, {"overLimit": {"message": "Quota exceeded for cores"}}), False),
        (real_keystone_connect_failure, True),
        (lambda: ksa.ConnectTimeout("timed out"), True),
        (lambda: ksa.ServiceUnavailable(), True),
        (lambda: ksa.Unauthorized(), False),
        (lambda: ksa.SSLError("certificate verify failed"), False),
        (lambda: osx.ResourceTimeout("Timeout waiting for the server to come up."), True),
        (lambda: osx.ResourceFailure("Server hg-giessen-vpn went to ERROR"), False),
        (real_refused, True),
        (lambda: ConnectionResetError(104, "Connection reset by peer"), True),
        (lambda: TimeoutError(), True),
        (lambda: TimeoutError(), True),
        (lambda: OSError(113, "No route to host"), True),
        (lambda: OSError(13, "Permission denied"), False),
        (lambda: asyncssh.ConnectionLost("Connection lost"), True),
        (lambda: asyncssh.HostKeyNotVerifiable("Host key is not trusted"), False),
        (lambda: asyncssh.PermissionDenied("Permission denied"), False),
        (lambda: asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "refused"), True),
        (lambda: ValueError("bad cidr"), False),
        (lambda: KeyError("x"), False),
        (lambda: TransientError("not yet"), True),
        (lambda: ExceptionGroup("g", [ConnectionResetError(), TimeoutError()]), True),
        (lambda: ExceptionGroup("g", [ConnectionResetError(), ValueError()]), False),
    ],
)
def test_classification(make, transient):
    exc = make()
    assert is_transient(exc) is transient, repr(exc)


def test_explicit_cause_is_followed_but_permanent_marker_wins():
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError as inner:
            raise PermanentError("gave up") from inner
    except PermanentError as outer:
        assert not is_transient(outer)
    # an implicit context (an error while handling another) is not a cause
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError:
            raise ValueError("bad input")  # noqa: B904
    except ValueError as outer:
        assert not is_transient(outer)


# ---------------------------------------------------------------- messages


def test_friendly_auth_names_the_block():
    msg = friendly_error(ksa.Unauthorized(), credentials_block="giessen-cloud", cloud="giessen")
    assert "'giessen-cloud'" in msg and "giessen" in msg and "authentication" in msg
    assert "credentials block" in friendly_error(http_error(401))


def test_friendly_quota_names_resource_and_numbers():
    nova = friendly_error(http_error(403, NOVA_QUOTA))
    assert "quota for instances exceeded" in nova
    assert "used 10 of 10" in nova and "free 1 instances" in nova
    neutron = friendly_error(http_error(409, NEUTRON_QUOTA, "http://cloud/v2.0/floatingips"))
    assert "quota for floatingip exceeded" in neutron and "raise the quota" in neutron


def test_friendly_not_found_names_the_kind():
    img = http_error(
        404,
        {"itemNotFound": {"message": "Image ubuntu-24.04 could not be found."}},
        "http://cloud/v2/images/ubuntu-24.04",
    )
    msg = friendly_error(img, cloud="giessen")
    assert msg.startswith("image not found by cloud giessen")
    assert "ubuntu-24.04" in msg
    flavor = osx.NotFoundException("No Flavor found for m1.tiny")
    assert friendly_error(flavor).startswith("flavor not found")


# ---------------------------------------------------------------- in-process retries


def test_with_retries_retries_transient_then_succeeds():
    calls = []

    async def op():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return "up"

    assert asyncio.run(with_retries(op, attempts=5, base=0.001, what="ssh")) == "up"
    assert len(calls) == 3


def test_with_retries_stops_at_once_on_permanent_and_after_attempts():
    calls = []

    async def denied():
        calls.append(1)
        raise asyncssh.PermissionDenied("Permission denied")

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(with_retries(denied, attempts=5, base=0.001))
    assert len(calls) == 1

    calls.clear()

    async def refused():
        calls.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(with_retries(refused, attempts=4, base=0.001))
    assert len(calls) == 4

    calls.clear()
    with pytest.raises(ConnectionRefusedError):  # the next delay would pass the deadline
        asyncio.run(with_retries(refused, attempts=50, base=5, deadline=1))
    assert len(calls) == 1


# ---------------------------------------------------------------- Prefect


@pytest.fixture(scope="module")
def harness(prefect_harness):
    return prefect_harness


def test_prefect_task_retries_transient_and_not_permanent(harness):
    from prefect import flow, task

    calls = {"flaky": 0, "auth": 0, "async": 0}
    fast = transient_options(retries=4, backoff=0.01, jitter=0)

    @task(**fast)
    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise http_error(503)
        return "ok"

    @task(**fast)
    def auth_fails():
        calls["auth"] += 1
        raise ksa.Unauthorized()

    @task(**fast)
    async def async_flaky():
        calls["async"] += 1
        if calls["async"] <= 2:
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"

    @flow
    def run_flaky():
        return flaky()

    @flow
    def run_auth():
        return auth_fails()

    @flow
    async def run_async():
        return await async_flaky()

    assert run_flaky() == "ok"
    assert calls["flaky"] == 3
    state = run_auth(return_state=True)
    assert state.is_failed()
    assert calls["auth"] == 1
    assert asyncio.run(run_async()) == "ok"
    assert calls["async"] == 3
