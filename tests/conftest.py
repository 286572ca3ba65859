"""Shared fixtures: real SQLite files, a fresh PostgreSQL database per test, real HTTP servers."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import uvicorn

from clearance.api import create_app
from clearance.clock import FakeClock
from clearance.config import Settings
from clearance.loopback import free_port
from clearance.runtime import Runtime
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import Store, open_store

PG_URL = os.environ.get("CLEARANCE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_TEMPLATE = f"clearance_tpl_{os.getpid()}"
_template_ready = False


def _admin_url(dbname: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{dbname}"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _make_template() -> None:
    global _template_ready
    if _template_ready:
        return
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
        conn.execute(f"CREATE DATABASE {_TEMPLATE}")
    store = open_store(_admin_url(_TEMPLATE))
    store.close()
    _template_ready = True


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test (cloned from a template)."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL} and CI is set")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    _make_template()
    name = f"clearance_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    yield _admin_url(name)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _template_ready:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'clearance.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        file_channel_dir=str(tmp_path / "sends"),
        outbound_timeout_seconds=2.0,
        outbound_allow="127.0.0.0/8,ops.example",  # loopback test servers; a name in a test
    )


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url)
    yield s
    s.close()


@pytest.fixture
def engine(store: Store, settings: Settings, clock: FakeClock) -> ScheduledService:
    return ScheduledService(store, settings, clock)


@pytest.fixture
def worker(store: Store, settings: Settings, clock: FakeClock) -> Iterator[Worker]:
    w = Worker(store, settings, clock, worker_id="worker-test")
    yield w
    w.notifier.close()


def serve_api(engine: ScheduledService) -> AsgiServer:
    """The real app served by uvicorn on loopback, in a thread, with the test's fake clock."""
    return AsgiServer(create_app(Runtime.around(engine)))


@pytest.fixture
def admin_key(store: Store) -> str:
    return store.create_api_key("admin", "test", 0)[1]


@pytest.fixture
def integrations_key(store: Store) -> str:
    return store.create_api_key("integrations", "test", 0)[1]


@pytest.fixture
def api(engine: ScheduledService, admin_key: str) -> Iterator[httpx.Client]:
    server = serve_api(engine)
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": admin_key}, timeout=10) as c:
        c.app_state = server.app.state  # type: ignore[attr-defined]
        yield c
    server.stop()


@pytest.fixture
def anon(api: httpx.Client) -> Iterator[httpx.Client]:
    """A client for the same server that sends no credentials."""
    with httpx.Client(base_url=str(api.base_url), timeout=10) as c:
        yield c


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops SYNs under a burst of connections


@dataclass
class Listener:
    """A real HTTP listener on loopback that records what it receives; `status` makes it fail."""

    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    on_event: Callable[[dict[str, Any]], None] | None = None

    def start(self) -> Listener:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = orjson.loads(raw) if raw else None
                listener.received.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "raw": raw,
                        "body": body,
                    }
                )
                self.send_response(listener.status)
                self.send_header("content-length", "0")
                self.end_headers()
                # this request's body, not received[-1]: requests arrive on concurrent threads
                if listener.on_event and body is not None:
                    listener.on_event(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def bodies(self, event_type: int | None = None) -> list[dict[str, Any]]:
        return [
            r["body"]
            for r in self.received
            if event_type is None or r["body"].get("EventTypeID") == event_type
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener().start()
    yield lst
    lst.stop()


class FakeGateway:
    """A real HTTP gateway on loopback whose behaviour depends on the asked user's id prefix:
    ok- allow · no- deny · hang- never answers · slow- answers after 300 ms · close- drops the
    connection · e500- HTTP 500 · html- an HTML page · str- "allowed": "true" · other- answers for
    another user · huge- streams gigabytes · moved- redirects (307) to itself · anything else
    allows."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = orjson.loads(raw)
                gateway.calls.append(
                    {
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "raw": raw,
                        "body": body,
                    }
                )
                user = body["user"]["user_id"]
                kind = user.split("-", 1)[0]
                if kind == "hang":
                    gateway.stop_event.wait(30)
                    return
                if kind == "slow":
                    time.sleep(0.3)
                if kind == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind == "moved":  # a client that follows it asks again, and again
                    self.send_response(307)
                    self.send_header("location", self.path)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if kind == "huge":
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(4 * 1024**3))
                    self.end_headers()
                    chunk = b'{"user_id": "' + b"x" * 65536
                    try:
                        for _ in range(65536):  # up to 4 GiB unless the client hangs up
                            if gateway.stop_event.is_set():
                                break
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                    return
                status, out = 200, orjson.dumps({"user_id": user, "allowed": kind != "no"})
                if kind == "e500":
                    status, out = 500, b'{"error": "boom"}'
                elif kind == "html":
                    out = b"<html><body>Service Unavailable</body></html>"
                elif kind == "str":
                    out = orjson.dumps({"user_id": user, "allowed": "true"})
                elif kind == "other":
                    out = orjson.dumps({"user_id": "someone-else", "allowed": True})
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/gate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    g = FakeGateway()
    yield g
    g.stop()


class AsgiServer:
    """Any ASGI app served by uvicorn on loopback, in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
