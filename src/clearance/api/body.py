"""Request bodies: one size limit (refused with 413 before it is read) and one JSON reader."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.requests import Request

from clearance.api.errors import clearance_error_body
from clearance.errors import InvalidInput, PayloadTooLarge


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    body = await request.body()
    if len(body) > limit:
        raise too_large(limit)
    return body


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    if not body:
        raise InvalidInput("request body is empty; send JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from exc


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._too_large(send, scope)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large(self.limit)
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, send: Send, scope: Scope) -> None:
        status, payload = clearance_error_body(too_large(self.limit))
        body, kind = orjson.dumps(payload), b"application/json"
        accept = dict(scope.get("headers", ())).get(b"accept", b"")
        if scope.get("path", "").startswith("/console/") and b"application/json" not in accept:
            # a console form (a target group file): a page a person can read, not JSON
            body = (
                "<!doctype html><title>Too large</title><h1>Too large</h1><p>The upload is "
                f"larger than {self.limit:,} bytes; nothing was saved. Go back and choose a "
                "smaller file.</p>"
            ).encode()
            kind = b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", kind),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
