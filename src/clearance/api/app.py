"""The ASGI application over a Runtime: routers, one error shape, a body-size limit, and the
runtime's start and stop in the app's lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from clearance import __version__
from clearance.api import errors
from clearance.api.admin import admin_router
from clearance.api.auth import KeyCache, authenticate
from clearance.api.body import BodyLimit
from clearance.api.fast import METHOD, PATH, EventsEndpoint
from clearance.api.native import native_router
from clearance.api.ratelimit import KeyRateLimiter, LoginThrottle
from clearance.api.responses import JSON
from clearance.api.triggered import events_router, triggered_router
from clearance.api.wire import wire_router
from clearance.clock import SystemClock
from clearance.config import Settings
from clearance.console import install as install_console
from clearance.errors import ClearanceError
from clearance.logs import RequestLog, configure_logging, install_request_ids
from clearance.runtime import Runtime


class ClearanceApp(FastAPI):
    """The FastAPI app, with POST /api/v1/events dispatched before its middleware stack (see
    clearance.api.fast); every other request goes through the stack as usual."""

    events: EventsEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.events is not None
            and scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == METHOD
        ):
            await self.events(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(runtime: Runtime) -> FastAPI:
    """Build the API over a runtime; the app's lifespan starts and stops it (the real-time
    side, and the worker if the runtime has one)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()  # drains the decision log, then stops the worker

    app = ClearanceApp(
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
    settings = runtime.settings
    install_request_ids()
    app.state.runtime = runtime
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.rate_limiter = KeyRateLimiter(
        runtime.clock, settings.rate_limit_per_second, settings.rate_limit_burst
    )
    app.state.login_throttle = LoginThrottle(runtime.clock, settings.login_failures_allowed)
    app.add_exception_handler(ClearanceError, errors.on_clearance_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.add_exception_handler(HTTPException, errors.on_http_error)
    app.add_exception_handler(Exception, errors.on_unexpected)
    app.include_router(events_router())  # first: routes are matched in order
    app.include_router(wire_router())
    app.include_router(native_router())
    app.include_router(triggered_router())
    app.include_router(admin_router())
    install_console(app)  # the browser console at / (its own session cookie and CSRF)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        await authenticate(request, runtime)
        return JSON(app.openapi())

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        await authenticate(request, runtime)
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        """The one call that needs no key: answers 200 while the database answers."""
        return {"status": "ok", "schema_version": runtime.store.db.schema_version()}

    app.events = EventsEndpoint(app, runtime, settings.access_log)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestLog, access_log=settings.access_log)
    return app


GC_THRESHOLDS = (20_000, 20, 20)


def tune_process() -> None:
    """For a serving process, once everything is imported and built: `gc.freeze` moves what
    exists now out of the collector's sight, and the young generation is collected less often.
    The decision path allocates many short-lived objects; with the defaults a collection ran every
    ~700 of them and, walking the whole heap of the app, took a large share of the engine's CPU
    (bench/gate.py; the figures are in README.md). (A shorter GIL switch interval was tried for
    timeout precision: it cost throughput and was left at the default.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def app_from_environment() -> FastAPI:
    """For `clearance serve --workers N`: each API process builds its own app from CLEARANCE_*."""
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    app = create_app(Runtime.open(settings, SystemClock()))
    tune_process()
    return app
