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
from localcloud.runtime import SERVICES, Runtime, log

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


class Gateway:
    """Outermost ASGI layer: what every OpenStack request goes through before its router."""

    def __init__(self, api: FastAPI, runtime: Runtime) -> None:
        self.api = api
        self.runtime = runtime

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
            scope = dict(scope, path=path, raw_path=path.encode())
        parts = path.split("/")
        if len(parts) < 3 or parts[1] == "_localcloud":
            await self.api(scope, receive, send)
            return
        rt = self.runtime
        cloud = rt.clouds.get(parts[1])
        service = parts[2]
        if cloud is None or service not in SERVICES:
            await JSONResponse(
                {"error": {"code": 404, "message": f"No cloud or service at {path}"}},
                status_code=404,
            )(scope, receive, send)
            return
        method = scope["method"]
        request_id = f"req-{uuid.uuid4()}"
        scope["lc.request_id"] = request_id  # Nova records it with an instance action
        answer = _adding_headers(send, _request_id_headers(request_id, service))
        rest = "/" + "/".join(parts[3:])
        token_issue = service == "identity" and method == "POST" and rest == "/v3/auth/tokens"
        discovery = method in ("GET", "HEAD") and len(parts) <= 4
        decision = rt.faults.decide(cloud.name, service, method, rest, token_issue, discovery)
        rt.stats.count(
            cloud.name,
            service,
            method,
            mutating=method in _MUTATING and not token_issue,
            injected=decision.error is not None,
        )
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.error is not None and not decision.after:
            await _inject(decision.error, service, scope, receive, send, answer)
            return
        if not (discovery or token_issue):
            headers = dict(scope["headers"])
            token = headers.get(b"x-auth-token", b"").decode() or None
            claims = identity.read_token(rt.token_key, token, cloud.name)
            if claims is None:
                await render(service, 401, "The request you have made requires authentication.")(
                    scope, receive, answer
                )
                return
            scope["lc.auth"] = claims
        scope["lc.cloud"] = cloud
        scope["lc.service"] = service
        if service == "compute" and len(parts) > 3 and parts[3] == "v2.1":
            try:
                mv = compute.negotiate(dict(scope["headers"]))
            except ApiError as exc:
                await render(service, exc.status, exc.message)(scope, receive, answer)
                return
            scope["lc.mv"] = mv
            answer = _adding_headers(answer, compute.version_headers(mv))
        if decision.error is not None:  # carried out, then the answer is lost

            async def discard(message: Any) -> None:
                return None

            await self.api(scope, receive, discard)
            await _inject(decision.error, service, scope, receive, send, answer)
            return
        await _guarded(self.api, service, scope, receive, answer)


def _check_admin(request: Request) -> None:
    rt: Runtime = request.app.state.runtime
    given = request.headers.get("x-localcloud-admin", "")
    if not hmac.compare_digest(given.encode(), rt.admin_token.encode()):
        raise ApiError(
            403, "admin token required (X-Localcloud-Admin, see <state-dir>/admin.token)"
        )


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
