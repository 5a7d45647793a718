"""Which errors are worth retrying: transient ones pass (HTTP 5xx, 408/409/429 except quota,
refused/reset/timed-out connections, SSH not yet up), everything else — auth, quota, validation,
not found, a changed host key — is permanent. `TransientError`/`PermanentError` let our own
code say so explicitly; causes chained with `raise … from` are followed.
"""

from __future__ import annotations

import errno
import re
import socket

import asyncssh
import keystoneauth1.exceptions as ksa
import openstack.exceptions as osx
import requests.exceptions as rqx

TRANSIENT_HTTP = {408, 409, 429}
TRANSIENT_ERRNO = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.EHOSTDOWN,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.ETIMEDOUT,
    errno.EPIPE,
}
_QUOTA = re.compile(r"quota|over ?limit|OverQuota", re.IGNORECASE)


class TransientError(Exception):
    """Raise (or subclass) for a condition that will likely pass: 'not ready yet'."""


class PermanentError(Exception):
    """Raise (or subclass) to stop retries at once, whatever the cause chain says."""


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, osx.HttpException):
        return exc.status_code
    if isinstance(exc, ksa.HttpError):
        return exc.http_status or None
    return None


def http_text(exc: BaseException) -> str:
    parts = [str(exc), str(getattr(exc, "details", "") or "")]
    return " ".join(parts)


def is_quota_error(exc: BaseException) -> bool:
    status = http_status(exc)
    return status in (403, 409, 413) and bool(_QUOTA.search(http_text(exc)))


def _classify(exc: BaseException) -> bool | None:
    """True transient, False permanent, None: no opinion (look at the cause)."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PermanentError):
        return False
    status = http_status(exc)
    if status is not None:
        if is_quota_error(exc):
            return False
        return status >= 500 or status in TRANSIENT_HTTP
    if isinstance(exc, osx.ResourceTimeout):  # waiting for ACTIVE timed out: look again
        return True
    if isinstance(exc, ksa.SSLError):
        return False
    if isinstance(exc, ksa.RetriableConnectionFailure | ksa.ConnectionError):
        return True
    if isinstance(exc, rqx.SSLError):
        return False
    if isinstance(exc, rqx.ConnectionError | rqx.Timeout):
        return True
    if isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
        return False
    if isinstance(exc, asyncssh.ConnectionLost):
        return True
    if isinstance(exc, asyncssh.ChannelOpenError):
        # the jump host could not reach the worker's sshd (yet)
        return exc.code == asyncssh.OPEN_CONNECT_FAILED
    if isinstance(exc, asyncssh.DisconnectError):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in TRANSIENT_ERRNO
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could help. Follows explicit `raise … from` causes; default: no."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        verdict = _classify(cur)
        if verdict is not None:
            return verdict
        cur = cur.__cause__
        seen += 1
    return False
