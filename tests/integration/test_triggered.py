"""Triggered campaigns and the real-time gate, against a real (misbehaving) gateway on loopback."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from standardwebhooks.webhooks import Webhook

CAMPAIGN = {
    "id": "T-1",
    "series_id": 77,
    "notes": "deposit bonus",
    "tags": ["vip"],
    "action": {
        "id": 5,
        "name": "Bonus",
        "promo_codes": ["DEP50"],
        "channels": [
            {"id": 506, "name": "Push", "brand_id": None, "templates": [{"id": 1, "name": "t"}]}
        ],
    },
    "conditional": True,
    "active": True,
    "trigger": {
        "event": "deposit",
        "condition": 'deposit_amount >= 100 && country in ["UK", "IE"]',
    },
}


def event(user, amount=150, country="UK", **kw):
    return {
        "customer_id": user,
        "event": "deposit",
        "params": {"deposit_amount": amount},
        "attributes": {"country": country},
        **kw,
    }


@pytest.fixture
def gated(api, gateway):
    assert api.post("/api/v1/triggered-campaigns", json=CAMPAIGN).status_code == 201
    assert (
        api.put(
            "/triggered_conditional_execution_gateway", json={"url": gateway.url, "timeout_ms": 400}
        ).status_code
        == 200
    )
    return api


def decide(api, ev):
    r = api.post("/api/v1/events", json=ev)
    assert r.status_code == 200, r.text
    return r.json()


def logged(api, n, **params):
    """The log, read once: a reply comes only after its decisions are committed."""
    rows = api.get("/api/v1/decisions", params=params).json()["decisions"]
    assert len(rows) == n, f"decision log has {len(rows)} rows, expected {n}"
    return rows


def test_allowed_sends_and_the_gateway_gets_the_wire_payload(gated, gateway, tmp_path, worker):
    reply = decide(gated, event("ok-1"))
    [m] = reply["matched"]
    assert (m["campaign_id"], m["outcome"], m["sent"], m["shadow"]) == (
        "T-1",
        "allowed",
        True,
        False,
    )
    assert gateway.calls[0]["body"] == {
        "user": {"user_id": "ok-1", "is_visitor": False},
        "campaign": {
            "id": "T-1",
            "series_id": 77,
            "notes": "deposit bonus",
            "tags": ["vip"],
            "action": CAMPAIGN["action"],
        },
    }
    [row] = logged(gated, 1)
    assert row["decision_id"] == m["decision_id"]
    assert (row["outcome"], row["sent"], row["user_id"]) == ("allowed", True, "ok-1")
    assert (row["delivery"], row["deliveries"][0]["state"]) == ("pending", "pending")
    assert not list((tmp_path / "sends").rglob("*.ndjson"))  # the worker delivers the outbox
    worker.drain()
    [sent_file] = list((tmp_path / "sends").rglob("*.ndjson"))
    assert b'"CustomerID":"ok-1"' in sent_file.read_bytes()
    [row] = logged(gated, 1)
    assert row["delivery"] == "delivered"
    assert gated.get(f"/api/v1/decisions/{m['decision_id']}").json()["delivery"] == "delivered"


@pytest.mark.parametrize(
    "user,outcome,reason",
    [
        ("no-1", "denied", "allowed: false"),
        ("hang-1", "timeout", "within 400 ms"),
        ("close-1", "error", ""),
        ("e500-1", "error", "HTTP 500"),
        ("html-1", "invalid", "not JSON"),
        ("str-1", "invalid", "not a JSON boolean"),
        ("other-1", "invalid", "for user 'someone-else'"),
        ("huge-1", "invalid", "larger than"),
    ],
)
def test_every_bad_answer_fails_closed(gated, user, outcome, reason):
    [m] = decide(gated, event(user))["matched"]
    assert m["outcome"] == outcome
    assert m["sent"] is (outcome == "allowed")
    if reason:
        assert reason in m["reason"]
    if outcome == "timeout":
        assert 400 <= m["latency_ms"] < 2000  # never before the budget


def test_a_slow_answer_within_the_budget_allows(gated, gateway):
    """300 ms against the full 2500 ms budget: in time by a wide margin on a loaded machine."""
    gated.put(
        "/triggered_conditional_execution_gateway", json={"url": gateway.url, "timeout_ms": 2500}
    )
    [m] = decide(gated, event("slow-1"))["matched"]
    assert (m["outcome"], m["sent"]) == ("allowed", True)
    assert m["latency_ms"] >= 300


def test_a_hanging_gateway_does_not_hold_up_other_decisions(gated, api):
    results = []
    hung = [
        threading.Thread(target=lambda i=i: results.append(decide(api, event(f"hang-{i}"))))
        for i in range(20)
    ]
    for t in hung:
        t.start()
    time.sleep(0.05)
    [m] = decide(gated, event("ok-during-hang"))["matched"]
    assert m["outcome"] == "allowed"
    assert any(t.is_alive() for t in hung)  # answered while the hung ones still wait
    for t in hung:
        t.join()
    assert {r["matched"][0]["outcome"] for r in results} == {"timeout"}


def test_zero_budget_never_calls_and_never_sends(gated, api, gateway):
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url, "timeout_ms": 0})
    [m] = decide(api, event("ok-2"))["matched"]
    assert (m["outcome"], m["sent"]) == ("timeout", False)
    assert gateway.calls == []


def test_no_gateway_means_nobody_gets_conditional_campaigns(api):
    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    [m] = decide(api, event("ok-3"))["matched"]
    assert (m["outcome"], m["sent"]) == ("no_gateway", False)


def test_not_conditional_campaigns_send_without_asking(api, gateway):
    api.post("/api/v1/triggered-campaigns", json={**CAMPAIGN, "conditional": False})
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    [m] = decide(api, event("no-4"))["matched"]
    assert (m["outcome"], m["sent"]) == ("not_conditional", True)
    assert gateway.calls == []


def test_shadow_mode_logs_the_answer_and_sends_regardless(api, gateway):
    api.post("/api/v1/triggered-campaigns", json={**CAMPAIGN, "shadow": True})
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    [m] = decide(api, event("no-5"))["matched"]
    assert (m["outcome"], m["sent"], m["shadow"]) == ("denied", True, True)
    assert m["reason"].startswith("shadow mode: sent regardless")
    [row] = logged(api, 1)
    assert row["shadow"] is True and row["outcome"] == "denied"


def test_conditions_match_and_explain(gated):
    assert decide(gated, event("ok-6", amount=50))["matched"] == []
    assert decide(gated, event("ok-6", country="FR"))["matched"] == []
    reply = decide(gated, {"customer_id": "ok-6", "event": "deposit", "params": {}})
    assert reply["matched"] == []
    assert "Undefined variable" in reply["skipped"][0]["reason"]
    assert decide(gated, {"visitor_id": "ok-v", "event": "login"})["matched"] == []
    [m] = decide(
        gated,
        {
            "visitor_id": "ok-v",
            "event": "deposit",
            "params": {"deposit_amount": 100, "country": "IE"},
        },
    )["matched"]
    assert m["outcome"] == "allowed"


def test_batches_of_events(gated, gateway):
    gated.put(
        "/triggered_conditional_execution_gateway", json={"url": gateway.url, "timeout_ms": 2500}
    )
    batch = [event(f"ok-{i}") for i in range(50)] + [event("no-x"), event("e500-x")]
    results = gated.post("/api/v1/events", json=batch).json()["results"]
    assert [r["matched"][0]["outcome"] for r in results] == ["allowed"] * 50 + ["denied", "error"]
    assert len(logged(gated, 52)) == 52


def test_bad_events_are_4xx_and_nothing_is_decided(gated, gateway):
    for bad, status in [
        ({"event": "deposit"}, 400),
        ({"customer_id": "a", "visitor_id": "b", "event": "deposit"}, 400),
        ({"customer_id": "a"}, 400),
        ({"customer_id": "a", "event": "deposit", "params": []}, 400),
        ([event("ok-7"), {"event": "deposit"}], 400),
        ([], 400),
        ({"customer_id": "a", "event": "deposit", "campaign_id": "nope"}, 404),
    ]:
        r = gated.post("/api/v1/events", json=bad)
        assert r.status_code == status, bad
        assert r.json()["status"] == status
    assert gateway.calls == []
    assert gated.get("/api/v1/decisions").json()["decisions"] == []


def test_triggered_campaign_crud_and_validation(api):
    bad_condition = {**CAMPAIGN, "trigger": {"event": "deposit", "condition": "amount >= "}}
    r = api.post("/api/v1/triggered-campaigns", json=bad_condition)
    assert r.status_code == 400 and r.json()["field"] == "trigger.condition"
    assert (
        api.post("/api/v1/triggered-campaigns", json={**CAMPAIGN, "conditional": "yes"}).status_code
        == 400
    )
    assert api.get("/api/v1/triggered-campaigns").json() == []
    assert api.post("/api/v1/triggered-campaigns", json=CAMPAIGN).status_code == 201
    assert api.post("/api/v1/triggered-campaigns", json=CAMPAIGN).status_code == 409
    numeric = {**CAMPAIGN, "id": 12345}
    assert api.put("/api/v1/triggered-campaigns/12345", json=numeric).status_code == 201
    assert api.get("/api/v1/triggered-campaigns/12345").json()["id"] == 12345
    assert (
        api.put("/api/v1/triggered-campaigns/12345", json={**numeric, "active": False}).status_code
        == 200
    )
    assert api.put("/api/v1/triggered-campaigns/999", json=numeric).status_code == 400
    assert [c["id"] for c in api.get("/api/v1/triggered-campaigns").json()] == [12345, "T-1"]
    assert api.delete("/api/v1/triggered-campaigns/12345").status_code == 200
    assert api.delete("/api/v1/triggered-campaigns/12345").status_code == 404


def test_gateway_setting(api, integrations_key):
    for body in [
        {"url": "http://127.0.0.1:1/g", "timeout_ms": 2501},
        {"url": "http://127.0.0.1:1/g", "timeout_ms": -1},
        {"url": "gopher://x", "timeout_ms": 100},
    ]:
        assert api.put("/triggered_conditional_execution_gateway", json=body).status_code == 400
    assert api.get("/triggered_conditional_execution_gateway").status_code == 404
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    r = api.put(
        "/triggered_conditional_execution_gateway",
        json={"url": "http://127.0.0.1:1/g", "secret": secret, "headers": {"X-Tenant": "acme"}},
    )
    assert r.json()["timeout_ms"] == 2000
    shown = api.get("/triggered_conditional_execution_gateway").json()
    assert secret not in str(shown) and shown["secret"].startswith("whsec_")
    assert (
        api.put(
            "/triggered_conditional_execution_gateway",
            json={"url": "http://127.0.0.1:1/g"},
            headers={"X-API-KEY": integrations_key},
        ).status_code
        == 403
    )
    assert api.delete("/triggered_conditional_execution_gateway").status_code == 200


def test_gateway_calls_are_signed_when_a_secret_is_set(api, gateway, clock):
    from datetime import UTC, datetime

    clock.set(datetime.now(UTC))  # the reference verifier checks the timestamp against now
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    api.put(
        "/triggered_conditional_execution_gateway",
        json={"url": gateway.url, "secret": secret, "headers": {"X-Tenant": "acme"}},
    )
    decide(api, event("ok-8"))
    call = gateway.calls[0]
    assert Webhook(secret).verify(call["raw"], call["headers"])["user"]["user_id"] == "ok-8"
    assert call["headers"]["x-tenant"] == "acme"


def test_circuit_breaker_opens_and_probes_again(api, gateway, engine):
    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    breaker = api.app_state.runtime.realtime.gate.breaker
    now = [1000.0]
    breaker.monotonic = lambda: now[0]
    batch = [event(f"e500-{i}") for i in range(50)]
    outcomes = [
        r["matched"][0]["outcome"] for r in api.post("/api/v1/events", json=batch).json()["results"]
    ]
    assert outcomes == ["error"] * 50
    calls = len(gateway.calls)
    [m] = decide(api, event("ok-9"))["matched"]
    assert (m["outcome"], m["sent"]) == ("circuit_open", False)
    assert len(gateway.calls) == calls  # not called while open
    now[0] += 5.0
    [m] = decide(api, event("ok-10"))["matched"]
    assert m["outcome"] == "allowed"  # the probe succeeded: closed again
    [m] = decide(api, event("ok-11"))["matched"]
    assert m["outcome"] == "allowed"
    metrics = api.get("/metrics").text
    assert 'clearance_decisions_total{campaign="T-1",outcome="circuit_open"} 1.0' in metrics
    assert "clearance_gate_circuit_state 0.0" in metrics


def test_decision_log_filters_pages_and_exports_csv(gated, clock):
    for user in ["ok-a", "no-b", "ok-c", "ok-a"]:
        decide(gated, event(user))
    rows = logged(gated, 4)
    assert [r["user_id"] for r in rows] == ["ok-a", "no-b", "ok-c", "ok-a"]
    assert len(gated.get("/api/v1/decisions", params={"user_id": "ok-a"}).json()["decisions"]) == 2
    assert [
        r["user_id"]
        for r in gated.get("/api/v1/decisions", params={"outcome": "denied"}).json()["decisions"]
    ] == ["no-b"]
    assert gated.get("/api/v1/decisions", params={"campaign_id": "zzz"}).json()["decisions"] == []
    page1 = gated.get("/api/v1/decisions", params={"limit": 3}).json()
    page2 = gated.get("/api/v1/decisions", params={"limit": 3, "after": page1["next_after"]}).json()
    assert [r["decision_id"] for r in page1["decisions"] + page2["decisions"]] == [
        r["decision_id"] for r in rows
    ]
    assert page2["next_after"] is None
    assert (
        gated.get("/api/v1/decisions", params={"from": "2026-01-01 12:00:01"}).json()["decisions"]
        == []
    )
    assert (
        len(
            gated.get("/api/v1/decisions", params={"to": "2026-01-01 12:00:01"}).json()["decisions"]
        )
        == 4
    )
    csv_text = gated.get("/api/v1/decisions", params={"format": "csv"}).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("decision_id,at,campaign_id,user_id")
    assert len(lines) == 5


def test_metrics_cover_both_halves(gated, engine, worker):
    decide(gated, event("ok-m"))
    decide(gated, event("no-m"))
    text = gated.get("/metrics").text
    assert 'clearance_decisions_total{campaign="T-1",outcome="allowed"} 1.0' in text
    assert 'clearance_decisions_total{campaign="T-1",outcome="denied"} 1.0' in text
    assert "clearance_gateway_latency_seconds_bucket" in text
    assert "clearance_gate_in_flight 0.0" in text
    from tests.helpers import new_campaign

    c = new_campaign(engine, 3)
    worker.drain()
    engine.approve(c.campaign_id, [("c0", True), ("zz", True)])
    text = gated.get("/metrics").text
    assert 'clearance_approvals_total{result="accepted"} 1.0' in text
    assert 'clearance_approvals_total{result="not_in_target_group"} 1.0' in text


@pytest.mark.parametrize("client", ["pyreqwest"])
def test_the_gate_client_fails_closed(gateway, client, clock):
    import asyncio

    from clearance.metrics import Metrics
    from clearance.store import GatewayConfig
    from clearance.triggered.gate import Gate
    from clearance.triggered.matching import TriggeredCampaign

    campaign = TriggeredCampaign.from_body(CAMPAIGN)
    config = GatewayConfig(gateway.url, 400, None, {})
    expected = {
        "ok": "allowed",
        "no": "denied",
        "hang": "timeout",
        "close": "error",
        "e500": "error",
        "html": "invalid",
        "str": "invalid",
        "other": "invalid",
        "huge": "invalid",
        "moved": "error",
    }

    async def run():
        gate = Gate(Metrics(), clock, client=client)
        try:
            got = {}
            for kind in expected:
                result = await gate.decide(config, campaign, f"{kind}-1", False, time.monotonic())
                got[kind] = result.outcome.value
                if kind == "hang":
                    assert result.latency_ms >= 400
                if kind == "moved":  # not followed
                    assert result.reason == "gateway answered HTTP 307", result.reason
            return got
        finally:
            await gate.close()

    assert asyncio.run(run()) == expected
    assert sum(1 for c in gateway.calls if c["body"]["user"]["user_id"] == "moved-1") == 1


@pytest.mark.parametrize("client", ["pyreqwest"])
def test_a_header_the_client_cannot_send_is_an_error_not_a_crash(gateway, client, clock):
    import asyncio

    from clearance.metrics import Metrics
    from clearance.store import GatewayConfig
    from clearance.triggered.gate import Gate
    from clearance.triggered.matching import TriggeredCampaign

    campaign = TriggeredCampaign.from_body(CAMPAIGN)
    config = GatewayConfig(gateway.url, 2000, None, {"x-split": "a\r\nx-injected: 1"})

    async def run() -> str:
        gate = Gate(Metrics(), clock, client=client)
        try:
            result = await gate.decide(config, campaign, "ok-1", False, time.monotonic())
            return result.outcome.value
        finally:
            await gate.close()

    assert asyncio.run(run()) == "error"
    assert all("x-injected" not in c["headers"] for c in gateway.calls)


@pytest.mark.parametrize("client", ["pyreqwest"])
def test_the_gate_client_checks_a_gateway_name_as_it_resolves(gateway, client, clock):
    """A name is resolved through the outbound policy: localhost reaches the gateway when
    loopback is allowed, and is refused, without a call, when it is not."""
    import asyncio

    from clearance.metrics import Metrics
    from clearance.outbound.policy import OutboundPolicy
    from clearance.store import GatewayConfig
    from clearance.triggered.gate import Gate
    from clearance.triggered.matching import TriggeredCampaign

    campaign = TriggeredCampaign.from_body(CAMPAIGN)
    config = GatewayConfig(gateway.url.replace("127.0.0.1", "localhost"), 2000, None, {})

    async def run(allow: str) -> tuple[str, str | None]:
        gate = Gate(Metrics(), clock, client=client, outbound=OutboundPolicy(allow))
        try:
            result = await gate.decide(config, campaign, "ok-1", False, time.monotonic())
            return result.outcome.value, result.reason
        finally:
            await gate.close()

    assert asyncio.run(run("127.0.0.0/8")) == ("allowed", None)
    assert len(gateway.calls) == 1
    outcome, reason = asyncio.run(run(""))
    assert outcome == "error"
    assert reason is not None and "CLEARANCE_OUTBOUND_ALLOW" in reason
    assert len(gateway.calls) == 1


def test_the_gate_client_is_ready_before_the_first_event(api, gateway):
    """Saving the gateway builds its client at once (pyreqwest, the default), so the first
    events after a start or a change do not spend their budget waiting for it."""
    realtime = api.app_state.runtime.realtime
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    deadline = time.monotonic() + 10
    pinned = None
    while time.monotonic() < deadline:
        poster = realtime.gate._poster
        pinned = poster._hosts.get("127.0.0.1") if poster is not None else None
        if pinned is not None and pinned.client is not None:
            break
        time.sleep(0.02)
    assert pinned is not None and pinned.client is not None and pinned.refused is None
    assert gateway.calls == []  # ready, and nobody was asked anything
