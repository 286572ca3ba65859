"""POST /api/v1/events, served around the whole ASGI middleware stack.

The hottest call's budget is a few milliseconds, and the framework's layers (Starlette's error
middleware, FastAPI's telemetry and body-limit middlewares, our BodyLimit and RequestLog, the
router, the Request and Response objects) cost more CPU than the decision itself. The app hands
this one path to `EventsEndpoint`, which does what those layers and the handler did, in one
place: the request id (echoed, on every log line), the body-size limit (413 before reading when
the length is declared, while reading otherwise), the key check and rate limit, the events'
validation, the same JSON error shape, and the access-log line. The route is still declared on
the router (the OpenAPI document lists it).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from clearance.api.auth import authenticate
from clearance.api.body import too_large
from clearance.api.errors import clearance_error_body, error_body, error_headers
from clearance.errors import ClearanceError, InvalidInput
from clearance.logs import log_access, request_id, request_id_from
from clearance.triggered.events import idempotency_key, parse_events

if TYPE_CHECKING:
    from clearance.runtime import Runtime

log = logging.getLogger("clearance.api")

PATH = "/api/v1/events"
METHOD = "POST"
_JSON = (b"content-type", b"application/json")
UNEXPECTED = error_body(500, "Internal Server Error", "unexpected error; nothing was applied")


class ClientGone(Exception):
    """The client disconnected before its body was read: nothing was decided."""


class EventsEndpoint:
    """The lean handler of POST /api/v1/events; `app` is the application (its `state` holds the
    key cache and rate limiter the other routes use)."""

    def __init__(self, app: Any, runtime: Runtime, access_log: bool) -> None:
        self.app = app
        self.runtime = runtime
        self.limit = runtime.settings.max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope["app"] = self.app
        state: dict[str, Any] = scope.setdefault("state", {})
        headers = Headers(scope=scope)
        rid = request_id_from(headers.get("x-request-id"))
        token = request_id.set(rid)
        status = 0
        try:
            try:
                status, body, extra = await self._handle(scope, receive, headers)
            except ClientGone:
                return
            except ClearanceError as exc:
                status, payload = clearance_error_body(exc)
                body = orjson.dumps(payload)
                extra = error_headers(exc)
            except Exception:
                log.exception("unexpected error on %s %s", METHOD, PATH)
                status = 500
                body = orjson.dumps(UNEXPECTED)
                extra = None
            # the order Starlette's Response and RequestLog gave them
            response_headers = [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
            response_headers += [
                (b"content-length", str(len(body)).encode()),
                _JSON,
                (b"x-request-id", rid.encode()),
            ]
            await send(
                {"type": "http.response.start", "status": status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            if self.access_log:
                log_access(METHOD, PATH, status, started, state.get("principal"))
            request_id.reset(token)

    async def _handle(
        self, scope: Scope, receive: Receive, headers: Headers
    ) -> tuple[int, bytes, dict[str, str] | None]:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise too_large(self.limit)  # refused before the key check, as BodyLimit did
        runtime = self.runtime
        await authenticate(Request(scope), runtime)
        key = idempotency_key(headers.get("idempotency-key"))
        raw = await self._body(receive)
        if not raw:
            raise InvalidInput("request body is empty; send JSON")
        try:
            parsed_json = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from exc
        events, single = parse_events(parsed_json)
        results = await runtime.realtime.handle(events, key)
        return 200, orjson.dumps(results[0] if single else {"results": results}), None

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                raise too_large(self.limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
