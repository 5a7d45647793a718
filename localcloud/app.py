# ruff: noqa: E501 - OpenStack error messages are kept verbatim, on one line each
"""The ASGI application: routing by ``/<cloud>/<service>/…``, then per request accounting,
fault injection and token validation, then the service routers.

All clouds share one uvicorn process and port; a cloud is the first path segment, e.g.
``http://127.0.0.1:8780/bielefeld/compute/v2.1``. Admin endpoints live under ``/_localcloud``
and need the admin token from ``<state-dir>/admin.token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from localcloud import compute, identity, image, network
from localcloud.errors import ApiError, render
from localcloud.runtime import SERVICES, Cloud, Runtime, log

_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
_INJECTED = {
    500: "An unexpected error prevented the server from fulfilling your request (injected by localcloud).",
    503: "The service is temporarily unavailable (injected by localcloud).",
    409: "There was a conflict when trying to complete your request (injected by localcloud).",
}


def _drop_connection(send: Any) -> bool:
    """Close the client's connection without an answer (uvicorn: the cycle owns the transport)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    cycle.disconnected = True  # type: ignore[union-attr]  # no "500" from uvicorn afterwards
    transport.abort()
    return True


async def _inject(
    error: int | str, service: str, scope: dict, receive: Any, send: Any, answer: Any
) -> None:
    """An injected fault: `send` is uvicorn's own (to drop the connection), `answer` the one
    that adds the request's headers."""
    if error == "drop" and _drop_connection(send):
        return
    code = 500 if error == "drop" else int(error)
    message = _INJECTED.get(code, "Injected fault (localcloud).")
    await render(service, code, message)(scope, receive, answer)


def _adding_headers(send: Any, extra: list[tuple[bytes, bytes]]) -> Any:
    """`send` with headers added to the response start (request id, microversion)."""

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *extra])
        await send(message)

    return wrapped


def _request_id_headers(rid: str, service: str) -> list[tuple[bytes, bytes]]:
    """Every OpenStack service answers with a request id; Tempest's compute helpers read it
    (e.g. to find a server's `create` action), Nova also sends its own spelling."""
    out = [(b"x-openstack-request-id", rid.encode())]
    if service == "compute":
        out.append((b"x-compute-request-id", rid.encode()))
    return out


async def _guarded(app: Any, service: str, scope: dict, receive: Any, send: Any) -> None:
    """Run `app`; an exception that escapes it (the routers' own handler answers first and
    Starlette re-raises) ends as the service's shaped 500, never as a bare traceback page."""
    started = False

    async def tracking(message: Any) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracking)
    except Exception as exc:
        if started:  # already answered (by the exception handler): only keep it out of uvicorn
            return
        log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
        message = f"Unexpected API Error: {type(exc).__name__}"
        await render(service, 500, message)(scope, receive, send)


# Body bytes the gateway reads to classify a server action; actions are small JSON objects.
_ACTION_PEEK_LIMIT = 64 * 1024


async def _peek_body(receive: Any) -> tuple[bytes, bool, Any]:
    """Read the request body (up to the peek limit) and give a `receive` that replays it:
    (body read, whether it is complete, receive for the app)."""
    chunks: list[bytes] = []
    size, more, first = 0, True, None
    while more and size <= _ACTION_PEEK_LIMIT:
        message = await receive()
        if message["type"] != "http.request":  # the client left: hand that on as it came
            first = message
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = bool(message.get("more_body"))
    body = b"".join(chunks)
    replay = [first or {"type": "http.request", "body": body, "more_body": more}]

    async def replaying() -> Any:
        return replay.pop() if replay else await receive()

    return body, not more and first is None, replaying


async def _is_read(service: str, method: str, rest: str, receive: Any) -> tuple[bool, Any]:
    """Whether a POST only reads (a read-only server action), and the `receive` to go on with."""
    if not (service == "compute" and method == "POST" and compute.is_action_path(rest)):
        return False, receive
    body, complete, receive = await _peek_body(receive)
    return complete and compute.is_read_only_action(body), receive


def _without_trailing_slash(scope: dict) -> dict:
    path = scope["path"]
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
        scope = dict(scope, path=path, raw_path=path.encode())
    return scope


class Gateway:
    """Outermost ASGI layer: what every OpenStack request goes through before its router."""

    def __init__(self, api: FastAPI, runtime: Runtime) -> None:
        self.api = api
        self.runtime = runtime

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        scope = _without_trailing_slash(scope)
        parts = scope["path"].split("/")
        if len(parts) < 3 or parts[1] == "_localcloud":
            await self.api(scope, receive, send)
            return
        cloud = self.runtime.clouds.get(parts[1])
        if cloud is None or parts[2] not in SERVICES:
            await JSONResponse(
                {"error": {"code": 404, "message": f"No cloud or service at {scope['path']}"}},
                status_code=404,
            )(scope, receive, send)
            return
        await self._serve(cloud, parts, scope, receive, send)

    async def _serve(
        self, cloud: Cloud, parts: list[str], scope: dict, receive: Any, send: Any
    ) -> None:
        """Count, delay or fail (faults), authenticate, negotiate, then the service's router."""
        rt, service, method = self.runtime, parts[2], scope["method"]
        request_id = f"req-{uuid.uuid4()}"
        scope["lc.request_id"] = request_id  # Nova records it with an instance action
        answer = _adding_headers(send, _request_id_headers(request_id, service))
        rest = "/" + "/".join(parts[3:])
        token_issue = service == "identity" and method == "POST" and rest == "/v3/auth/tokens"
        discovery = method in ("GET", "HEAD") and len(parts) <= 4
        read, receive = await _is_read(service, method, rest, receive)
        decision = rt.faults.decide(cloud.name, service, method, rest, token_issue, discovery)
        mutating = method in _MUTATING and not token_issue and not read
        injected = decision.error is not None
        rt.stats.count(cloud.name, service, method, mutating=mutating, injected=injected)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.error is not None and not decision.after:
            await _inject(decision.error, service, scope, receive, send, answer)
            return
        needs_token = not (discovery or token_issue)
        if needs_token and not await self._authenticated(cloud, service, scope, receive, answer):
            return
        scope["lc.cloud"] = cloud
        scope["lc.service"] = service
        if service == "compute" and len(parts) > 3 and parts[3] == "v2.1":
            answer = await _negotiated(scope, receive, answer)
            if answer is None:
                return
        if decision.error is not None:  # carried out, then the answer is lost

            async def discard(message: Any) -> None:
                return None

            await self.api(scope, receive, discard)
            await _inject(decision.error, service, scope, receive, send, answer)
            return
        await _guarded(self.api, service, scope, receive, answer)

    async def _authenticated(
        self, cloud: Cloud, service: str, scope: dict, receive: Any, answer: Any
    ) -> bool:
        """Put the token's claims in the scope, or answer 401."""
        headers = dict(scope["headers"])
        token = headers.get(b"x-auth-token", b"").decode() or None
        claims = identity.read_token(self.runtime.token_key, token, cloud.name)
        if claims is None:
            message = "The request you have made requires authentication."
            await render(service, 401, message)(scope, receive, answer)
            return False
        scope["lc.auth"] = claims
        return True


async def _negotiated(scope: dict, receive: Any, answer: Any) -> Any:
    """Nova's microversion in the scope and `answer` adding its headers; None once a 4xx for a
    bad version has been sent."""
    try:
        mv = compute.negotiate(dict(scope["headers"]))
    except ApiError as exc:
        await render("compute", exc.status, exc.message)(scope, receive, answer)
        return None
    scope["lc.mv"] = mv
    return _adding_headers(answer, compute.version_headers(mv))


def _check_admin(request: Request) -> None:
    rt: Runtime = request.app.state.runtime
    given = request.headers.get("x-localcloud-admin", "")
    if not hmac.compare_digest(given.encode(), rt.admin_token.encode()):
        raise ApiError(
            403, "admin token required (X-Localcloud-Admin, see <state-dir>/admin.token)"
        )


def _add_error_handlers(api: FastAPI) -> None:
    """Every error in the shape of the service that was asked (Keystone's by default)."""

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return render(
            request.scope.get("lc.service", "identity"), exc.status, exc.message, exc.kind
        )

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # e.g. 405 for a method no route takes: in the service's own error shape
        return render(request.scope.get("lc.service", "identity"), exc.status_code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return render(request.scope.get("lc.service", "identity"), 400, f"Invalid request: {exc}")

    @api.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return render(
            request.scope.get("lc.service", "identity"),
            500,
            f"Unexpected API Error: {type(exc).__name__}",
        )


def _add_admin_routes(api: FastAPI, runtime: Runtime) -> None:
    """/_localcloud/*: health (open), stats, faults and settle (admin token)."""

    @api.get("/_localcloud/health")
    async def health() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "port": runtime.port,
            "clouds": {name: c.base_url for name, c in runtime.clouds.items()},
            "backend": type(runtime.backend).__name__,
        }

    @api.get("/_localcloud/stats")
    async def get_stats(request: Request) -> dict[str, Any]:
        _check_admin(request)
        return runtime.stats.snapshot()

    @api.delete("/_localcloud/stats")
    async def reset_stats(request: Request) -> Response:
        _check_admin(request)
        runtime.stats.reset()
        return Response(status_code=204)

    @api.get("/_localcloud/faults")
    async def get_faults(request: Request) -> dict[str, Any]:
        _check_admin(request)
        runtime.faults.reload()
        return runtime.faults.config.model_dump()["clouds"]

    @api.post("/_localcloud/settle")
    async def settle(request: Request) -> dict[str, Any]:
        """Wait until every cloud's backend has applied the current state."""
        _check_admin(request)
        out = {}
        for name, cloud in runtime.clouds.items():
            with contextlib.suppress(Exception):
                await cloud.applier.apply()
            out[name] = {"applied": cloud.applier.applied, "last_error": cloud.applier.last_error}
        return out


def _add_service_routers(api: FastAPI) -> None:
    """The four services, then a catch-all that answers 404 for what none of them has."""

    @api.api_route(
        "/{cloud}/{service}/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
    )
    async def unknown(request: Request, cloud: str, service: str, rest: str) -> Response:
        log.warning("not implemented: %s %s", request.method, request.url.path)
        raise ApiError(404, f"The resource could not be found: {request.method} /{rest}")

    for module in (identity, compute, network, image):
        # Registered before the catch-all above is consulted: move the catch-all last.
        api.include_router(module.router)
    routes = api.router.routes
    catch_all = next(r for r in routes if getattr(r, "name", "") == "unknown")
    routes.remove(catch_all)
    routes.append(catch_all)


def create_app(runtime: Runtime) -> Gateway:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await startup(runtime)
        try:
            yield
        finally:
            await shutdown(runtime)

    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    api.state.runtime = runtime
    _add_error_handlers(api)
    _add_admin_routes(api, runtime)
    _add_service_routers(api)
    return Gateway(api, runtime)


async def startup(runtime: Runtime) -> None:
    """Re-attach the backend to every cloud, then resume interrupted boots."""
    for cloud in runtime.clouds.values():
        try:
            await cloud.applier.apply()
        except Exception:
            log.exception("start-up apply failed for cloud %s", cloud.name)
        for server in cloud.store.all("servers"):
            if server["status"] == "BUILD":
                runtime.spawn(compute.boot(cloud, server["id"]))
    log.info("localcloud serving %s on port %s", ", ".join(runtime.clouds), runtime.port)


async def shutdown(runtime: Runtime) -> None:
    for task in list(runtime.tasks):
        task.cancel()
    if runtime.apply_tasks:  # let running applies finish: a thread cannot be cancelled
        await asyncio.wait(list(runtime.apply_tasks), timeout=30)
    await asyncio.to_thread(runtime.backend.close)
    for cloud in runtime.clouds.values():
        cloud.store.close()
    logging.getLogger("localcloud").info("localcloud stopped")
