"""Log lines: one JSON object each (or plain text), carrying the id of the request they belong to.

Every HTTP request gets an id: the caller's `X-Request-ID` when it is a short token, otherwise a
fresh one. It is echoed in the reply's `X-Request-ID` header and added to every line logged while
the request is handled, threads included. Secrets and keys are never passed to a logger.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
access = logging.getLogger("clearance.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


_plain_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _plain_factory(*args, **kwargs)
    record.request_id = request_id.get()
    return record


def install_request_ids() -> None:
    """Every log record, whichever handler gets it, carries the current request id."""
    logging.setLogRecordFactory(_record_with_request_id)


def request_id_from(value: str | None) -> str:
    """The caller's `X-Request-ID` when it is a short token, otherwise a fresh id."""
    return value if value is not None and _VALID_ID.match(value) else secrets.token_hex(8)


class JsonLines(JsonFormatter):
    """python-json-logger's JSON lines, the same bytes, built without its general machinery for
    the lines that make up nearly all of a server's log: a text message with plain extras and no
    exception or stack (the access line is one per request). Anything else goes the general way."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
        assert self.json_encoder is not None  # python-json-logger's JsonEncoder by default
        self._encode = self.json_encoder(
            default=self.json_default, ensure_ascii=self.json_ensure_ascii
        ).encode

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict) or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        fields = record.__dict__
        data: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.message,
            "request_id": fields.get("request_id"),
        }
        skip, rename = self._skip_fields, self.rename_fields
        for key, value in fields.items():
            if key not in skip and not key.startswith("_"):
                data[rename.get(key, key)] = value
        data["time"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat()
        return str(self._encode(data))


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    install_request_ids()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestLog:
    """ASGI middleware: the request id, and (when `access_log`) one line per request with method,
    path, status, duration and the caller's key id or user name (never the key)."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                break
        rid = request_id_from(rid)
        token = request_id.set(rid)
        state: dict[str, Any] = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                log_access(scope["method"], scope["path"], status, started, state.get("principal"))
            request_id.reset(token)


def log_access(method: str, path: str, status: int, started: float, caller: str | None) -> None:
    """The access line of a request that began at `started` (time.perf_counter())."""
    if access.isEnabledFor(logging.INFO):
        # made and handled directly: Logger.info would also walk the stack for a caller's file
        # and line, which the lines do not show
        record = access.makeRecord(
            access.name,
            logging.INFO,
            __file__,
            0,
            "%s %s %s",
            (method, path, status),
            None,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "caller": caller,
            },
        )
        access.handle(record)
