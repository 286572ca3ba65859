"""CPU of POST /api/v1/events in the app itself, without sockets or a gateway (a steady figure on
a shared machine, where bench/gate.py's are not).

    .venv/bin/python bench/events_path.py [--requests 5000] [--passes 5]

An event that matches no campaign (so no gate call and no decision) goes through the app's ASGI
callable, as uvicorn would call it, with the access line formatted as the server does (to
/dev/null): the key check, body read, validation, matching, reply and log line, and whatever
middleware the path passes. Prints the best pass's process CPU per request.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import uvloop

from clearance.api import create_app
from clearance.api.app import tune_process
from clearance.cli import bootstrap
from clearance.clock import SystemClock
from clearance.config import Settings
from clearance.logs import configure_logging
from clearance.runtime import Runtime

KEY = "bench-events-path-key-0123456789"
BODY = b'{"customer_id": "u-1", "event": "nothing-matches"}'


async def measure(requests: int, passes: int) -> float:
    workdir = tempfile.mkdtemp(prefix="clearance-events-path-")
    settings = Settings(
        database_url=f"sqlite:///{workdir}/events.db",
        bootstrap_api_key=KEY,
        rate_limit_per_second=0,
    )
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 (the log's sink)
    configure_logging("json")
    runtime = Runtime.open(settings, SystemClock(), worker=False)
    bootstrap(runtime.store, settings)
    app = create_app(runtime)
    tune_process()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"x-api-key", KEY.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await runtime.start()
    try:
        best = float("inf")
        for _ in range(passes):
            started = time.process_time()
            for _ in range(requests):
                await app({**scope, "state": {}}, receive, send)
            best = min(best, (time.process_time() - started) / requests)
    finally:
        await runtime.stop()
        runtime.store.close()
        sys.stderr = stderr
    if set(statuses) != {200}:
        raise SystemExit(f"not every request answered 200: {sorted(set(statuses))}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    per_request = uvloop.run(measure(args.requests, args.passes))
    one, five, _ = os.getloadavg()
    print(
        f"events path, no campaign matched: {per_request * 1e6:.1f} us CPU a request "
        f"(best of {args.passes} x {args.requests}; load {one:.2f}/{five:.2f})"
    )


if __name__ == "__main__":
    main()
