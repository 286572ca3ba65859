"""The ASGI application: routers, one error shape, a body-size limit, and the in-process worker."""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from clearance import __version__
from clearance.api import errors
from clearance.api.admin import admin_router
from clearance.api.auth import KeyCache, authenticate
from clearance.api.fast import FastPath
from clearance.api.native import native_router
from clearance.api.responses import JSON
from clearance.api.triggered import events_router, handle_events, triggered_router
from clearance.api.wire import wire_router
from clearance.engine import Engine
from clearance.errors import ClearanceError, PayloadTooLarge
from clearance.logs import RequestLog, configure_logging, install_request_ids
from clearance.ratelimit import KeyRateLimiter, LoginThrottle
from clearance.triggered import RealTime

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
                await self._too_large(send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(f"body is larger than {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, send: Send) -> None:
        body = orjson.dumps(
            errors.error_body(413, "Payload Too Large", f"body is larger than {self.limit} bytes")
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(engine: Engine, worker: Any | None = None) -> FastAPI:
    """Build the API. With a `worker` (scheduler.Worker), it runs in a thread beside the API."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        await realtime.start()
        if worker is not None:
            thread = threading.Thread(
                target=worker.run, args=(stop,), name="clearance-worker", daemon=True
            )
            thread.start()
        try:
            yield
        finally:
            await realtime.close()  # drains the decision log
            stop.set()
            if thread is not None:
                thread.join(timeout=30)

    app = FastAPI(
        title="clearance",
        version=__version__,
        description="Conditional execution for customer campaigns. Native API (admin key in "
        "X-API-KEY); the wire-compatible calls live under /current/. This document itself "
        "needs a key too.",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    settings = engine.settings
    install_request_ids()
    app.state.engine = engine
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.rate_limiter = KeyRateLimiter(
        engine.clock, settings.rate_limit_per_second, settings.rate_limit_burst
    )
    app.state.login_throttle = LoginThrottle(engine.clock, settings.login_failures_allowed)
    realtime = RealTime(engine.store, engine.settings, engine.clock, engine.metrics)
    app.state.realtime = realtime
    app.add_exception_handler(ClearanceError, errors.on_clearance_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.add_exception_handler(HTTPException, errors.on_http_error)
    app.add_exception_handler(Exception, errors.on_unexpected)
    app.include_router(events_router())  # first: routes are matched in order
    app.include_router(wire_router())
    app.include_router(native_router())
    app.include_router(triggered_router())
    app.include_router(admin_router())

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        await authenticate(request, engine)
        return JSON(app.openapi())

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        await authenticate(request, engine)
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        """The one call that needs no key: answers 200 while the database answers."""
        return {"status": "ok", "schema_version": engine.store.db.schema_version()}

    app.add_middleware(FastPath, path="/api/v1/events", method="POST", handler=handle_events)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestLog, access_log=settings.access_log)
    return app


GC_THRESHOLDS = (20_000, 20, 20)


def tune_process() -> None:
    """For a serving process, once everything is imported and built: `gc.freeze` moves what
    exists now out of the collector's sight, and the young generation is collected less often.
    The decision path allocates many short-lived objects; with the defaults a collection ran every
    ~700 of them and, walking the whole heap of the app, took a sixth of the engine's CPU
    (bench/gate.py). (A shorter GIL switch interval was tried for timeout precision: it cost ~10%
    of the throughput and was left at the default.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def app_from_environment() -> FastAPI:
    """For `clearance serve --workers N`: each API process builds its own app from CLEARANCE_*."""
    from clearance.clock import SystemClock
    from clearance.config import Settings
    from clearance.store import open_store

    settings = Settings.from_env()
    configure_logging(settings.log_format)
    app = create_app(Engine(open_store(settings.database_url), settings, SystemClock()))
    tune_process()
    return app
