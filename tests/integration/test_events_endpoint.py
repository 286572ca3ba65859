"""POST /api/v1/events is served around the ASGI middleware stack (clearance.api.fast): what the
stack did for it is pinned here, over real HTTP (uvicorn on loopback): the error shape, the body
limit (declared and streamed), the key check and rate limit, the request id and the access line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clearance.api.app import ClearanceApp
from clearance.scheduled.service import ScheduledService
from clearance.store import Store
from tests.conftest import serve_api

EVENT = {"customer_id": "u-1", "event": "nothing-matches-this"}
EVENTS = "/api/v1/events"


def error_of(r: httpx.Response, status: int, title: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    assert (body["status"], body["error"]) == (status, title)
    assert r.headers["x-request-id"]  # errors carry the request id too
    return body


def test_an_event_with_no_campaign_is_answered_with_the_request_id(api: httpx.Client) -> None:
    r = api.post(EVENTS, json=EVENT, headers={"X-Request-ID": "ev-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "event": "nothing-matches-this",
        "user_id": "u-1",
        "is_visitor": False,
        "matched": [],
    }
    assert r.headers["x-request-id"] == "ev-1"
    assert r.headers["content-length"] == str(len(r.content))
    batch = api.post(EVENTS, json=[EVENT, EVENT], headers={"X-Request-ID": "x" * 500})
    assert len(batch.json()["results"]) == 2
    assert 0 < len(batch.headers["x-request-id"]) <= 64  # a hostile id is replaced


def test_keys_are_checked_as_on_every_other_call(
    api: httpx.Client, anon: httpx.Client, store: Store
) -> None:
    assert "X-API-KEY" in error_of(anon.post(EVENTS, json=EVENT), 401, "Unauthorized")["message"]
    bad = anon.post(EVENTS, json=EVENT, headers={"X-API-KEY": "not-a-key"})
    assert error_of(bad, 401, "Unauthorized")["message"] == "unknown or revoked API key"
    _, key = store.create_api_key("integrations", "bearer", 0)
    assert anon.post(EVENTS, json=EVENT, headers={"Authorization": f"Bearer {key}"}).is_success


def test_the_rate_limit_answers_429_with_retry_after(anon: httpx.Client, store: Store) -> None:
    _, key = store.create_api_key("integrations", "slow", 0, rate_limit_per_second=1)
    codes = [
        anon.post(EVENTS, json=EVENT, headers={"X-API-KEY": key}).status_code for _ in range(2)
    ]
    assert codes == [200, 200]  # a burst of twice the rate
    r = anon.post(EVENTS, json=EVENT, headers={"X-API-KEY": key})
    assert "rate limit" in error_of(r, 429, "Too Many Requests")["message"]
    assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    "body,message",
    [
        (b"", "request body is empty; send JSON"),
        (b"{not json", "body is not valid JSON"),
        (b"[]", "non-empty array"),
        (b'{"event": "x"}', "exactly one of customer_id or visitor_id"),
    ],
)
def test_malformed_bodies_get_the_one_error_shape(
    api: httpx.Client, body: bytes, message: str
) -> None:
    r = api.post(EVENTS, content=body, headers={"content-type": "application/json"})
    assert message in error_of(r, 400, "Bad Request")["message"]


def test_bad_idempotency_key_is_refused(api: httpx.Client) -> None:
    r = api.post(EVENTS, json=EVENT, headers={"Idempotency-Key": "x" * 201})
    assert error_of(r, 400, "Bad Request")["field"] == "Idempotency-Key"


def test_bodies_over_the_limit_are_refused_declared_or_streamed(
    api: httpx.Client, anon: httpx.Client
) -> None:
    limit = api.app_state.runtime.settings.max_body_bytes  # type: ignore[attr-defined]
    huge = b'{"customer_id": "' + b"x" * limit + b'", "event": "e"}'
    declared = anon.post(EVENTS, content=huge)  # refused before the key is even looked at
    assert "larger than" in error_of(declared, 413, "Payload Too Large")["message"]

    def chunks() -> Iterator[bytes]:  # no content-length: the limit applies while reading
        for i in range(0, len(huge), 1 << 20):
            yield huge[i : i + (1 << 20)]

    streamed = api.post(EVENTS, content=chunks())
    assert "transfer-encoding" in streamed.request.headers
    assert "larger than" in error_of(streamed, 413, "Payload Too Large")["message"]


def test_every_request_gets_one_access_line(
    api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearance.access")
    api.post(EVENTS, json=EVENT, headers={"X-Request-ID": "line-1"})
    api.post(EVENTS, content=b"nope", headers={"X-Request-ID": "line-2"})
    lines = {
        rec.request_id: rec  # type: ignore[attr-defined]
        for rec in caplog.records
        if rec.name == "clearance.access"
    }
    ok, bad = lines["line-1"], lines["line-2"]
    assert ok.getMessage() == "POST /api/v1/events 200"
    assert (ok.method, ok.path, ok.status) == ("POST", EVENTS, 200)  # type: ignore[attr-defined]
    assert ok.caller.startswith("key_") and ok.duration_ms >= 0  # type: ignore[attr-defined]
    assert bad.status == 400  # type: ignore[attr-defined]


def test_the_events_path_does_not_run_the_middleware_stack(
    engine: ScheduledService, admin_key: str
) -> None:
    """The point of the direct route: the stack (error, telemetry, body-limit and log
    middlewares, the router) is not on this path; every other path still goes through it."""
    server = serve_api(engine)
    try:
        app = server.app
        assert isinstance(app, ClearanceApp)
        with httpx.Client(base_url=server.url, headers={"X-API-KEY": admin_key}) as c:
            assert c.get("/healthz").status_code == 200  # builds the stack
            calls: list[str] = []
            stack = app.middleware_stack
            assert stack is not None

            async def watched(scope: Any, receive: Any, send: Any) -> None:
                calls.append(scope["path"])
                await stack(scope, receive, send)

            app.middleware_stack = watched
            assert c.post(EVENTS, json=EVENT).status_code == 200
            assert c.get("/healthz").status_code == 200
            assert calls == ["/healthz"]
    finally:
        server.stop()
