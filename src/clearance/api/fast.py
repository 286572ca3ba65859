"""A direct route for the hottest call, POST /api/v1/events, ahead of the framework's routing.

FastAPI matches routes one by one and builds its dependency machinery per request; for a call
whose whole budget is a few milliseconds that is a measurable share. This middleware hands the
request straight to the same handler (which is still declared on the router, so the OpenAPI
document lists it) and renders errors in the same JSON shape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from clearance.api.errors import clearance_error_body, error_body, error_headers
from clearance.api.responses import JSON
from clearance.errors import ClearanceError

log = logging.getLogger("clearance.api")

Handler = Callable[[Request], Awaitable[Response]]


class FastPath:
    def __init__(self, app: ASGIApp, path: str, method: str, handler: Handler) -> None:
        self.app = app
        self.path = path
        self.method = method
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.handler(request)
        except ClearanceError as exc:
            status, body = clearance_error_body(exc)
            response = JSON(body, status_code=status, headers=error_headers(exc))
        except Exception:
            log.exception("unexpected error on %s %s", self.method, self.path)
            response = JSON(
                error_body(500, "Internal Server Error", "unexpected error; nothing was applied"),
                status_code=500,
            )
        await response(scope, receive, send)
