"""Errors in the shapes each OpenStack service uses, so clients raise their usual exceptions."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse

_NOVA_KEYS = {
    400: "badRequest",
    403: "forbidden",
    404: "itemNotFound",
    405: "HTTPMethodNotAllowed",
    409: "conflictingRequest",
    413: "overLimit",
    500: "computeFault",
    503: "serviceUnavailable",
}
_NEUTRON_TYPES = {
    400: "HTTPBadRequest",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    500: "HTTPInternalServerError",
    503: "HTTPServiceUnavailable",
}


class ApiError(Exception):
    """An error answer. `kind` is Neutron's error type (e.g. NetworkNotFound) where it has one."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def not_found(what: str, id_: str, kind: str | None = None) -> ApiError:
    return ApiError(404, f"{what} {id_} could not be found.", kind)


def bad_request(message: str, kind: str | None = None) -> ApiError:
    return ApiError(400, message, kind)


def conflict(message: str, kind: str | None = None) -> ApiError:
    return ApiError(409, message, kind)


def render(service: str, status: int, message: str, kind: str | None = None) -> JSONResponse:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    if status == 401 or service == "identity":
        body: dict = {"error": {"code": status, "title": title, "message": message}}
    elif service == "compute":
        body = {_NOVA_KEYS.get(status, "computeFault"): {"code": status, "message": message}}
    elif service == "network":
        body = {
            "NeutronError": {
                "type": kind or _NEUTRON_TYPES.get(status, "HTTPError"),
                "message": message,
                "detail": "",
            }
        }
    else:  # image (Glance answers with webob's plain shapes)
        body = {"code": status, "title": title, "message": message}
    headers = {"WWW-Authenticate": 'Keystone uri="localcloud"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)
