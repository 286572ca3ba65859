"""One JSON error shape for every failure: `{"status", "error", "message", "field"?}`."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from clearance.api.responses import JSON
from clearance.errors import (
    ClearanceError,
    Conflict,
    DeadlinePassed,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    TooManyRequests,
)

log = logging.getLogger("clearance.api")

# Each domain error's HTTP status and title; a subclass not listed takes its nearest base's.
STATUS: dict[type[ClearanceError], tuple[int, str]] = {
    ClearanceError: (500, "Internal Server Error"),
    InvalidInput: (400, "Bad Request"),
    PayloadTooLarge: (413, "Payload Too Large"),
    NotAuthenticated: (401, "Unauthorized"),
    Forbidden: (403, "Forbidden"),
    NotFound: (404, "Not Found"),
    Conflict: (409, "Conflict"),
    StoreUnavailable: (503, "Service Unavailable"),
    TooManyRequests: (429, "Too Many Requests"),
}


def status_of(exc: ClearanceError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return STATUS[ClearanceError]


def clearance_error_body(exc: ClearanceError, **extra: Any) -> tuple[int, dict[str, Any]]:
    status, title = status_of(exc)
    return status, error_body(status, title, exc.message, field=exc.field, **extra)


def error_headers(exc: ClearanceError) -> dict[str, str] | None:
    if isinstance(exc, TooManyRequests):
        return {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
    return None


def error_body(status: int, title: str, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": title, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


async def on_clearance_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, ClearanceError)
    extra = dict(exc.extra)
    if isinstance(exc, DeadlinePassed) and "clearance_required_by_text" in extra:
        extra = {"ClearanceRequiredBy": extra["clearance_required_by_text"]}
    else:
        extra = {}
    status, body = clearance_error_body(exc, **extra)
    return JSON(body, status_code=status, headers=error_headers(exc))


async def on_validation_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg', 'invalid')}" if field else first.get("msg", "invalid")
    return JSON(error_body(400, "Bad Request", message, field=field), status_code=400)


async def on_http_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, HTTPException)
    return JSON(
        error_body(exc.status_code, str(exc.detail), str(exc.detail)), status_code=exc.status_code
    )


async def on_unexpected(request: Request, exc: Exception) -> JSON:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSON(
        error_body(500, "Internal Server Error", "unexpected error; nothing was applied"),
        status_code=500,
    )
