"""Security: keys on every call, access types, salted and revocable keys, rate limits, the outbound
allowlist, secret rotation, no secrets in logs or replies, request ids, and the audit trail."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from clearance.api.wire import ROUTES
from clearance.clock import FakeClock
from clearance.config import Settings
from clearance.integrator.verify import Rejected, Verifier
from clearance.runtime import Runtime
from clearance.scheduled.notifier import Notifier
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import GatewayConfig, Store
from tests.conftest import AsgiServer, serve_api
from tests.helpers import new_campaign

BODY = {
    "campaign_id": 810,
    "name": "Sec",
    "execute_at": "2026-01-02 12:00:00",
    "conditional": True,
    "action": {"id": 1, "name": "a"},
    "channels": [{"id": 504, "name": "Email"}],
    "target_group": [{"customer_id": "c1"}],
}
TRIGGERED = {
    "id": "S-1",
    "action": {"id": 5, "name": "Bonus", "channels": [{"id": 506}]},
    "conditional": True,
    "trigger": {"event": "deposit"},
}


def secret(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed * 32).decode()


@pytest.fixture
def serve(store: Store, settings: Settings, clock: FakeClock) -> Iterator[object]:
    """serve(**settings) -> (base url, engine): the real app with changed settings, on loopback."""
    servers: list[AsgiServer] = []

    def start(**changes: object) -> tuple[str, ScheduledService]:
        engine = ScheduledService(store, settings.with_(**changes), clock)
        server = serve_api(engine)
        servers.append(server)
        return server.url, engine

    yield start
    for server in servers:
        server.stop()


# --- every endpoint but the health check needs a key; access types per endpoint ------------------
def _routes(routes: list[object]) -> Iterator[object]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included router (FastAPI >= 0.16x)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def _every_route(app: object) -> list[tuple[str, str]]:
    calls = []
    for route in _routes(app.routes):  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        if path == "/current/{area}/{function}":
            calls.extend(
                (method, f"/current/{name}") for method, name in ROUTES
            )  # every wire call, and one that does not exist
            calls.append(("GET", "/current/general/NoSuchCall"))
            continue
        for method in getattr(route, "methods", None) or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            concrete = path
            for name in ("campaign_id", "channel_id", "key_id"):
                concrete = concrete.replace("{" + name + "}", "1")
            calls.append((method, concrete))
    return calls


@pytest.fixture
def app(api):
    from clearance.api import create_app

    return create_app(Runtime.around(api.app_state.runtime.scheduled))


def test_every_endpoint_but_the_health_check_refuses_a_call_without_a_key(app, anon):
    calls = _every_route(app)
    assert ("POST", "/api/v1/events") in calls and ("GET", "/openapi.json") in calls
    assert ("GET", "/metrics") in calls and ("POST", "/api/v1/keys") in calls
    console = [(m, p) for m, p in calls if p == "/" or p.startswith("/console")]
    assert ("GET", "/console/campaigns") in console and ("POST", "/console/keys") in console
    for method, path in calls:
        r = anon.request(method, path, json={})
        if path == "/healthz":
            assert r.status_code == 200
            continue
        if (method, path) in console:  # the browser console: its own session, or sign in
            if path == "/console/sign-in":
                # the page is public; posting it needs the form's own token (CSRF): refused
                assert r.status_code == (200 if method == "GET" else 403), (method, path)
            elif path.startswith("/console/static"):
                continue
            else:
                assert r.status_code in (303, 307), (method, path, r.status_code, r.text)
                where = "/console/campaigns" if path == "/" else "/console/sign-in"
                assert r.headers["location"] == where, (method, path)
            continue
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["error"] == "Unauthorized"
        wrong = anon.request(method, path, json={}, headers={"X-API-KEY": "clr_" + "0" * 40})
        assert wrong.status_code == 401, (method, path)


def test_metrics_take_the_key_as_a_bearer_token_too(api, anon, integrations_key):
    """Prometheus sends `authorization: credentials` as `Authorization: Bearer …`."""
    r = anon.get("/metrics", headers={"Authorization": f"Bearer {integrations_key}"})
    assert r.status_code == 200 and "clearance_" in r.text
    assert (
        anon.get("/metrics", headers={"Authorization": "Bearer nope" + "x" * 30}).status_code == 401
    )
    assert (
        anon.get("/metrics", headers={"Authorization": f"Basic {integrations_key}"}).status_code
        == 401
    )


def test_an_integrations_key_cannot_administer(app, anon, integrations_key):
    admin_only = [
        (m, p)
        for m, p in _every_route(app)
        if (p.startswith("/api/v1") and p != "/api/v1/events")
        or p == "/triggered_conditional_execution_gateway"
    ]
    assert ("POST", "/api/v1/campaigns") in admin_only
    assert ("PUT", "/triggered_conditional_execution_gateway") in admin_only
    headers = {"X-API-KEY": integrations_key}
    for method, path in admin_only:
        r = anon.request(method, path, json={}, headers=headers)
        assert r.status_code == 403, (method, path, r.status_code)
    # and what it is for works
    r = anon.post("/api/v1/events", json={"customer_id": "c", "event": "x"}, headers=headers)
    assert r.status_code == 200
    r = anon.get("/current/integrations/GetPromotions", headers=headers)
    assert r.status_code == 200


# --- keys: salted hashes, shown once, revocable -------------------------------------------
def test_keys_are_stored_only_as_salted_hashes(api, store):
    made = [api.post("/api/v1/keys", json={"type": "integrations"}).json() for _ in range(2)]
    with store.db.reader() as tx:
        rows = {r[0]: r[1] for r in tx.fetchall("SELECT key_id, key_hash FROM api_keys")}
    for k in made:
        stored = rows[k["key_id"]]
        assert stored.startswith("sha256$")
        assert k["key"] not in stored
        assert hashlib.sha256(k["key"].encode()).hexdigest() not in stored
    # the same key made twice would not share a hash: the salt differs per key
    salts = {rows[k["key_id"]].split("$")[1] for k in made}
    assert len(salts) == 2
    listed = api.get("/api/v1/keys").json()
    assert {k["key_id"] for k in made} <= {k["key_id"] for k in listed}
    for k in made:
        assert k["key"] not in str(listed)


def test_a_chosen_key_must_be_long_and_is_found_by_its_salted_hash(store):
    with pytest.raises(Exception, match="24 to 256"):
        store.create_api_key("admin", "short", 0, key="short-key")
    chosen = "bootstrap-" + "x" * 30
    first = store.create_api_key("admin", "b", 0, key=chosen)
    again = store.create_api_key("admin", "b", 0, key=chosen)
    assert first[0] == again[0]
    assert store.principal_for_key(chosen).name == first[0]
    assert store.principal_for_key(chosen + "y") is None


def test_a_key_from_before_salting_still_works_and_is_salted_on_first_use(store):
    old = "clr_" + "legacy" * 8
    with store.db.transaction() as tx:
        tx.execute(
            "INSERT INTO api_keys (key_id, key_hash, access_type, name, created_at, by_scan) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            ("key_old", hashlib.sha256(old.encode()).hexdigest(), "admin", "old", 0),
        )
    assert store.principal_for_key(old).name == "key_old"
    with store.db.reader() as tx:
        assert tx.fetchone("SELECT key_hash FROM api_keys WHERE key_id = 'key_old'")[0].startswith(
            "sha256$"
        )
    assert store.principal_for_key(old).name == "key_old"


def test_a_revoked_key_is_refused_at_once(api, anon):
    made = api.post("/api/v1/keys", json={"type": "admin", "name": "temp"}).json()
    headers = {"X-API-KEY": made["key"]}
    assert anon.get("/api/v1/keys", headers=headers).status_code == 200  # now cached
    assert api.delete(f"/api/v1/keys/{made['key_id']}").status_code == 200
    assert anon.get("/api/v1/keys", headers=headers).status_code == 401
    assert api.delete(f"/api/v1/keys/{made['key_id']}").status_code == 404


# --- rate limits ------------------------------------------------------------------------------
def test_per_key_rate_limit_answers_429_with_the_wire_body(serve, store, clock):
    url, _ = serve(rate_limit_per_second=2.0, rate_limit_burst=3)
    key = store.create_api_key("integrations", "t", 0)[1]
    slow_key = store.create_api_key("integrations", "slow", 0, rate_limit_per_second=0.5)[1]
    with httpx.Client(base_url=url, headers={"X-API-KEY": key}, timeout=10) as c:
        codes = [c.get("/current/integrations/GetPromotions").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = c.get("/current/integrations/GetPromotions")
        body = r.json()
        assert set(body) == {"status", "error", "message"}
        assert (body["status"], body["error"]) == (429, "Too Many Requests")
        assert int(r.headers["retry-after"]) >= 1
        # another key has its own bucket
        other = c.get("/current/integrations/GetPromotions", headers={"X-API-KEY": slow_key})
        assert other.status_code == 200
        assert c.get("/current/integrations/GetPromotions", headers={"X-API-KEY": slow_key}).json()
        clock.advance(1)  # two more tokens
        assert c.get("/current/integrations/GetPromotions").status_code == 200
        assert c.get("/current/integrations/GetPromotions").status_code == 200
        assert c.get("/current/integrations/GetPromotions").status_code == 429
        # the per-key limit of 0.5/s: burst of one, then 429 until two seconds pass
        assert (
            c.get("/current/integrations/GetPromotions", headers={"X-API-KEY": slow_key})
        ).status_code == 429
        clock.advance(2)
        assert (
            c.get("/current/integrations/GetPromotions", headers={"X-API-KEY": slow_key})
        ).status_code == 200
        # the hot path too
        for _ in range(3):
            c.post("/api/v1/events", json={"customer_id": "c", "event": "x"})
        assert c.post("/api/v1/events", json={"customer_id": "c", "event": "x"}).status_code == 429


def test_login_is_rate_limited_per_user_and_address(api, anon, store, clock):
    store.upsert_user("ops", "right-password", "admin", 0)
    login = "/current/general/login"
    for _ in range(5):
        assert anon.post(login, json={"Username": "ops", "Password": "nope"}).status_code == 401
    r = anon.post(login, json={"Username": "ops", "Password": "right-password"})
    assert r.status_code == 429 and r.json()["error"] == "Too Many Requests"
    # another user from the same address is not held back by one user's failures...
    store.upsert_user("other", "other-password", "admin", 0)
    assert anon.post(login, json={"Username": "other", "Password": "other-password"}).json()
    # ...until the address itself has failed 20 times (4 x the per-user allowance)
    for i in range(15):
        assert anon.post(login, json={"Username": f"u{i}", "Password": "x"}).status_code == 401
    r = anon.post(login, json={"Username": "other", "Password": "other-password"})
    assert r.status_code == 429
    clock.advance(301)
    r = anon.post(login, json={"Username": "ops", "Password": "right-password"})
    assert r.status_code == 200
    token = r.json()
    headers = {"Authorization-Token": token}
    assert anon.get("/current/integrations/GetPromotions", headers=headers).status_code == 200
    clock.advance(19 * 60)  # used within 20 minutes: still valid, and its life starts again
    assert anon.get("/current/integrations/GetPromotions", headers=headers).status_code == 200
    clock.advance(20 * 60 + 1)
    r = anon.get("/current/integrations/GetPromotions", headers=headers)
    assert r.status_code == 403 and "Authorization-Token expired" in r.text


# --- outbound allowlist -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://[::1]:9/hook",
        "file:///etc/passwd",
        "ftp://example.com/x",
    ],
)
def test_the_default_allowlist_refuses_internal_destinations(serve, admin_key, url):
    base, _ = serve(outbound_allow="")
    with httpx.Client(base_url=base, headers={"X-API-KEY": admin_key}, timeout=10) as c:
        r = c.post(
            "/current/general/RegisterEventListener", json={"EventTypeID": 5, "ListenerURL": url}
        )
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "ListenerURL"
        r = c.put("/triggered_conditional_execution_gateway", json={"url": url})
        assert r.status_code == 400 and r.json()["field"] == "url"
        r = c.put("/api/v1/channels/504", json={"delivery": {"type": "webhook", "url": url}})
        assert r.status_code == 400 and r.json()["field"] == "delivery.url"
        assert c.get("/current/general/GetRegisteredEventListeners").json() == []


def test_a_listed_network_is_allowed_and_others_still_refused(serve, admin_key):
    base, _ = serve(outbound_allow="127.0.0.0/8, hooks.internal.example")
    with httpx.Client(base_url=base, headers={"X-API-KEY": admin_key}, timeout=10) as c:
        ok = c.post(
            "/current/general/RegisterEventListener",
            json={"EventTypeID": 5, "ListenerURL": "http://127.0.0.1:9/hook"},
        )
        assert ok.status_code == 200
        named = c.put(
            "/triggered_conditional_execution_gateway",
            json={"url": "https://hooks.internal.example/gate"},
        )
        assert named.status_code == 200
        refused = c.put(
            "/api/v1/channels/504", json={"delivery": {"type": "webhook", "url": "http://10.0.0.1"}}
        )
        assert refused.status_code == 400
        assert "CLEARANCE_OUTBOUND_ALLOW" in refused.json()["message"]


def test_destinations_are_checked_again_when_called(store, settings, clock, listener, gateway):
    """A listener or gateway saved before the rule changed (or written straight to the database)
    is not called: the notifier and the gate check again, names as they resolve."""
    strict = settings.with_(outbound_allow="")
    store.register_listener(5, None, listener.url, 0)
    notifier = Notifier(store, strict, clock)
    engine = ScheduledService(store, strict, clock)
    new_campaign(engine, campaign_id=5, customer_ids=["c1"])
    worker = Worker(store, strict, clock, worker_id="w")
    worker.drain()
    notifier.deliver_due()
    assert listener.received == []
    attempts = engine.store.campaign_notifications(5)[0]["attempt_log"]
    assert attempts and "not sent" in attempts[0]["error"]
    worker.notifier.close()
    notifier.close()

    # the gate: by address, and by name as it resolves (localhost -> 127.0.0.1)
    for url in (gateway.url, gateway.url.replace("127.0.0.1", "localhost")):
        store.put_gateway(GatewayConfig(url, 500, None, {}), 0)
        strict_engine = ScheduledService(store, strict, clock)
        server = serve_api(strict_engine)
        try:
            key = store.create_api_key("admin", "g", 0)[1]
            with httpx.Client(base_url=server.url, headers={"X-API-KEY": key}) as c:
                if c.get("/api/v1/triggered-campaigns/S-1").status_code == 404:
                    c.post("/api/v1/triggered-campaigns", json=TRIGGERED)
                got = c.post("/api/v1/events", json={"customer_id": "ok-1", "event": "deposit"})
                match = got.json()["matched"][0]
                assert (match["outcome"], match["sent"]) == ("error", False), match
                assert "CLEARANCE_OUTBOUND_ALLOW" in match["reason"]
        finally:
            server.stop()
    assert gateway.calls == []


def test_gateway_headers_cannot_inject_lines(api, gateway):
    for headers in ({"x-a": "v\r\nX-Injected: 1"}, {"x-a": "v\n"}, {"bad name": "v"}, {"": "v"}):
        r = api.put(
            "/triggered_conditional_execution_gateway",
            json={"url": gateway.url, "headers": headers},
        )
        assert r.status_code == 400, headers
    ok = {"X-Tenant": "acme", "Authorization": "Bearer t"}
    r = api.put(
        "/triggered_conditional_execution_gateway", json={"url": gateway.url, "headers": ok}
    )
    assert r.status_code == 200


# --- secret rotation ----------------------------------------------------------------------------
def test_gateway_secret_rotation_signs_with_both(api, gateway, clock):
    clock.set(datetime.now(UTC))
    new, old = secret(b"n"), secret(b"o")
    api.post("/api/v1/triggered-campaigns", json=TRIGGERED)
    r = api.put(
        "/triggered_conditional_execution_gateway",
        json={"url": gateway.url, "secret": new, "previous_secret": old},
    )
    assert r.status_code == 200
    shown = api.get("/triggered_conditional_execution_gateway").json()
    assert (shown["secret"], shown["previous_secret"]) == ("whsec_****", "whsec_****")
    assert new not in str(shown) and old not in str(shown)
    api.post("/api/v1/events", json={"customer_id": "ok-1", "event": "deposit"})
    call = gateway.calls[-1]
    assert len(call["headers"]["webhook-signature"].split(" ")) == 2
    for one in (new, old):  # a gateway holding either secret accepts the call
        Verifier(one, clock).verify(call["raw"], call["headers"])
    with pytest.raises(Rejected):
        Verifier(secret(b"x"), clock).verify(call["raw"], call["headers"])
    # rotation done: only the new secret signs
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url, "secret": new})
    api.post("/api/v1/events", json={"customer_id": "ok-2", "event": "deposit"})
    call = gateway.calls[-1]
    Verifier(new, clock).verify(call["raw"], call["headers"])
    with pytest.raises(Rejected):
        Verifier(old, clock).verify(call["raw"], call["headers"])
    assert (
        api.put(
            "/triggered_conditional_execution_gateway",
            json={"url": gateway.url, "previous_secret": old},
        ).status_code
        == 400
    )


def test_notifications_carry_a_signature_per_active_secret(store, settings, clock, listener):
    clock.set(datetime.now(UTC))
    new, old = secret(b"N"), secret(b"O")
    rotating = settings.with_(signing_secret=f"{new} {old}")
    store.register_listener(5, None, listener.url, 0)
    engine = ScheduledService(store, rotating, clock)
    new_campaign(engine, campaign_id=6, customer_ids=["c1"])
    worker = Worker(store, rotating, clock, worker_id="w")
    worker.drain()
    worker.notifier.close()
    got = listener.received[0]
    for one in (new, old, f"{old} {secret(b'z')}"):
        Verifier(one, clock).verify(got["raw"], got["headers"])


# --- no secrets in logs or replies; request ids; the audit trail ----------------------------------
def test_no_key_password_or_secret_reaches_the_logs_or_later_replies(
    api, anon, store, gateway, caplog
):
    caplog.set_level(logging.DEBUG)
    gw_secret = secret(b"q")
    store.upsert_user("ops", "pa55-w0rd-xyz", "admin", 0)
    made = api.post("/api/v1/keys", json={"type": "integrations"}).json()
    token = anon.post(
        "/current/general/login", json={"Username": "ops", "Password": "pa55-w0rd-xyz"}
    ).json()
    anon.get("/current/integrations/GetPromotions", headers={"Authorization-Token": token})
    anon.get("/current/integrations/GetPromotions", headers={"X-API-KEY": made["key"]})
    anon.get("/current/integrations/GetPromotions", headers={"X-API-KEY": made["key"] + "bad"})
    api.put(
        "/triggered_conditional_execution_gateway",
        json={"url": gateway.url, "secret": gw_secret, "headers": {"Authorization": "Bearer t0k"}},
    )
    api.post("/api/v1/triggered-campaigns", json=TRIGGERED)
    api.post("/api/v1/events", json={"customer_id": "ok-1", "event": "deposit"})
    replies = [
        api.get("/api/v1/keys").text,
        api.get("/triggered_conditional_execution_gateway").text,
        api.get("/api/v1/audit").text,
    ]
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "clearance.access" in {r.name for r in caplog.records}  # the logs were captured
    for needle in (made["key"], "pa55-w0rd-xyz", token, gw_secret, "t0k", api.headers["x-api-key"]):
        assert needle not in logged, needle
        for reply in replies:
            assert needle not in reply, needle


def test_every_reply_carries_a_request_id_and_log_lines_do_too(api, caplog):
    caplog.set_level(logging.INFO, logger="clearance.access")
    r = api.get("/api/v1/keys", headers={"X-Request-ID": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    generated = api.get("/api/v1/keys").headers["x-request-id"]
    assert generated and generated != "trace-42"
    hostile = api.get("/api/v1/keys", headers={"X-Request-ID": "x" * 500})
    assert len(hostile.headers["x-request-id"]) <= 64
    lines = [rec for rec in caplog.records if rec.name == "clearance.access"]
    mine = [rec for rec in lines if getattr(rec, "request_id", None) == "trace-42"]
    assert mine and mine[0].status == 200 and mine[0].path == "/api/v1/keys"
    assert mine[0].caller.startswith("key_")


def test_the_audit_trail_records_who_changed_what(api, store, integrations_key, gateway, listener):
    me = store.principal_for_key(api.headers["x-api-key"]).name
    api.post("/api/v1/campaigns", json=BODY)
    api.post("/api/v1/campaigns/810/cancel")
    api.put("/api/v1/channels/504", json={"name": "Email", "clearance_lead_seconds": 60})
    api.post(
        "/current/general/RegisterEventListener",
        json={"EventTypeID": 5, "ListenerURL": listener.url},
    )
    api.put(
        "/triggered_conditional_execution_gateway",
        json={"url": gateway.url, "secret": secret(b"a")},
    )
    api.delete("/triggered_conditional_execution_gateway")
    api.post("/api/v1/triggered-campaigns", json=TRIGGERED)
    made = api.post("/api/v1/keys", json={"type": "integrations"}).json()
    api.delete(f"/api/v1/keys/{made['key_id']}")
    integ = store.principal_for_key(integrations_key).name
    api.post(
        "/current/integrations/AddPromotions",
        json=[{"PromoCode": "P1", "PromotionName": "p"}],
        headers={"X-API-KEY": integrations_key},
    ).raise_for_status()
    entries = api.get("/api/v1/audit").json()["entries"]
    got = [(e["actor"], e["action"], e["target"]) for e in entries]
    assert got == [
        (me, "campaign.create", "campaign:810"),
        (me, "campaign.cancel", "campaign:810"),
        (me, "channel.put", "channel:504"),
        (me, "listener.register", "listener:5:0"),
        (me, "gateway.put", "gateway"),
        (me, "gateway.delete", "gateway"),
        (me, "triggered.create", "triggered:S-1"),
        (me, "key.create", made["key_id"]),
        (me, "key.revoke", made["key_id"]),
        (integ, "promotions.add", "promotions"),
    ]
    assert entries[4]["detail"]["signed"] is True and "s1" not in orjson.dumps(entries).decode()
    page = api.get("/api/v1/audit", params={"limit": 3}).json()
    assert len(page["entries"]) == 3
    rest = api.get("/api/v1/audit", params={"after": page["next_after"]}).json()["entries"]
    assert [e["audit_id"] for e in page["entries"] + rest] == [e["audit_id"] for e in entries]
    assert api.get("/api/v1/audit", headers={"X-API-KEY": integrations_key}).status_code == 403
