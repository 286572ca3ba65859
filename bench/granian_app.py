"""The engine's app for another HTTP server (`bench/gate.py --server granian`): what `clearance
serve --no-worker` builds, as an ASGI factory: settings from CLEARANCE_*, the bootstrap key, the
app, the process tuning. Granian is not a dependency: install it to compare."""

from __future__ import annotations

from fastapi import FastAPI

from clearance.api import create_app
from clearance.api.app import tune_process
from clearance.cli import bootstrap
from clearance.clock import SystemClock
from clearance.config import Settings
from clearance.logs import configure_logging
from clearance.runtime import Runtime


def app() -> FastAPI:
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    runtime = Runtime.open(settings, SystemClock(), worker=False)
    bootstrap(runtime.store, settings)
    built = create_app(runtime)
    tune_process()
    return built
