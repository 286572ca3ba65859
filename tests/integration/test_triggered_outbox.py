"""Triggered decisions that are truthful and durable (issue 11, items 1 to 5), on SQLite and
PostgreSQL, against the real app on loopback and a real gateway."""

from __future__ import annotations

import time

import pytest

from clearance.store import GatewayConfig
from tests.integration.test_triggered import CAMPAIGN, event

# A secret that passed no check (written straight to the store): signing with it raises after
# the breaker has let the call through, which is the unexpected failure these tests need.
BROKEN_SECRET = "whsec_not-base64!"


def wait_for(what, check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def decisions(api, **params):
    return api.get("/api/v1/decisions", params=params).json()["decisions"]


def break_the_gateway(api, store, gateway):
    store.put_gateway(GatewayConfig(gateway.url, 2000, BROKEN_SECRET, {}), 0)
    api.app_state.runtime.realtime.index.invalidate()


def test_a_probe_that_raises_still_reports_to_the_breaker(api, gateway, store):
    """Item 4: an unexpected exception after allow() used to leave the breaker half-open with
    its probe out for good, so every later decision was circuit_open."""
    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    breaker = api.app_state.runtime.realtime.gate.breaker
    now = [1000.0]
    breaker.monotonic = lambda: now[0]
    api.post("/api/v1/events", json=[event(f"e500-{i}") for i in range(50)])
    assert api.post("/api/v1/events", json=event("ok-1")).json()["matched"][0]["outcome"] == (
        "circuit_open"
    )
    now[0] += 5.0  # half-open: the next call is the probe, and it raises
    break_the_gateway(api, store, gateway)
    r = api.post("/api/v1/events", json=event("ok-2"))
    assert r.status_code == 200, r.text
    [m] = r.json()["matched"]
    assert (m["outcome"], m["sent"]) == ("error", False)
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    now[0] += 5.0  # the failed probe opened it again; after the pause the next probe goes
    [m] = api.post("/api/v1/events", json=event("ok-3")).json()["matched"]
    assert m["outcome"] == "allowed", m
    assert breaker.state == 0


def test_one_failing_decision_does_not_fail_its_batch(api, gateway, store):
    """Item 3: a decision that fails unexpectedly is an `error` decision (logged, not sent);
    the reply is a 200 that is truthful about each sibling."""
    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    api.post("/api/v1/triggered-campaigns", json={**CAMPAIGN, "id": "T-2", "conditional": False})
    break_the_gateway(api, store, gateway)
    r = api.post("/api/v1/events", json=[event("ok-1"), event("ok-2")])
    assert r.status_code == 200, r.text
    for result in r.json()["results"]:
        got = {m["campaign_id"]: (m["outcome"], m["sent"]) for m in result["matched"]}
        assert got == {"T-1": ("error", False), "T-2": ("not_conditional", True)}
        assert "unexpected failure" in result["matched"][0]["reason"]
    rows = wait_for("four logged decisions", lambda: len(decisions(api)) == 4 and decisions(api))
    assert sorted((d["campaign_id"], d["outcome"], d["sent"]) for d in rows) == [
        ("T-1", "error", False),
        ("T-1", "error", False),
        ("T-2", "not_conditional", True),
        ("T-2", "not_conditional", True),
    ]


def test_the_gate_records_a_probe_that_raises(gateway, clock):
    """Item 4 at the gate itself: the probe raises; the breaker is open again (not half-open
    with the probe still out), and after the pause the next probe goes through."""
    import asyncio
    import binascii

    from clearance.metrics import Metrics
    from clearance.triggered.breaker import OPEN, BreakerSettings, CircuitBreaker
    from clearance.triggered.gate import Gate
    from clearance.triggered.matching import TriggeredCampaign

    now = [1000.0]
    breaker = CircuitBreaker(BreakerSettings(min_calls=1, failure_ratio=0.5), lambda: now[0])
    breaker.record(True)
    assert breaker.state == OPEN
    now[0] += breaker.settings.pause_seconds
    campaign = TriggeredCampaign.from_body(CAMPAIGN)

    async def run() -> str:
        gate = Gate(Metrics(), clock, breaker)
        try:
            with pytest.raises(binascii.Error):
                await gate.decide(
                    GatewayConfig(gateway.url, 2000, BROKEN_SECRET, {}),
                    campaign,
                    "ok-1",
                    False,
                    time.monotonic(),
                )
            assert breaker.state == OPEN
            now[0] += breaker.settings.pause_seconds
            good = GatewayConfig(gateway.url, 2000, None, {})
            result = await gate.decide(good, campaign, "ok-2", False, time.monotonic())
            return result.outcome.value
        finally:
            await gate.close()

    assert asyncio.run(run()) == "allowed"
