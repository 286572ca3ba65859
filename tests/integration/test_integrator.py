"""The integrator kit against the real engine over HTTP on loopback (both flows)."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import timedelta

import httpx
import pytest

from clearance.integrator import (
    ApiError,
    AuthError,
    ClearanceDeadlinePassed,
    Client,
    Decision,
    GateDecision,
    GatewayApp,
    Listener,
    Rules,
    TransportError,
    rules_review,
)
from clearance.integrator.customers import CallableCustomers
from clearance.outbound.signing import webhook_headers
from tests.conftest import AsgiServer, Server
from tests.helpers import new_campaign

SECRET = "whsec_" + base64.b64encode(b"integrator-secret-0123456789abcd").decode()


def wait_report(url: str, campaign_id: int, seconds: float = 15) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/reports/{campaign_id}")
        if r.status_code == 200 and r.json()["state"] != "running":
            return r.json()
        time.sleep(0.05)
    raise AssertionError("review did not finish")


@pytest.fixture
def kit_listener(api, engine, store, clock, settings):
    """Returns a factory: serve a Listener for the engine (same fake clock) and register it."""
    servers = []

    def make(review, **kw):
        client = Client(str(api.base_url), api_key=api.headers["X-API-KEY"])
        listener = Listener(client, review, clock=clock, **kw)
        server = AsgiServer(listener.app)
        servers.append(server)
        store.register_listener(5, None, server.url + "/", 0)
        return listener, server

    yield make
    for s in servers:
        s.stop()


def test_review_that_would_overrun_the_deadline(kit_listener, engine, worker, clock, store):
    async def slow_review(batch):
        await asyncio.sleep(0.2)  # let the previous page's push land before time jumps
        clock.advance(minutes=30)  # each page takes half an hour of the operator's time
        return [Decision(c.customer_id, True) for c in batch]

    _listener, server = kit_listener(slow_review, page_size=10)
    c = new_campaign(engine, 50)
    worker.drain()
    report = wait_report(server.url, c.campaign_id)
    assert report["state"] == "stopped_at_deadline", report
    assert (report["reviewed"], report["approved"], report["missed"]) == (20, 20, 30)
    clock.advance(hours=2)
    worker.drain()
    assert store.counts(c.campaign_id) == {
        "target": 50,
        "approved": 20,
        "sent": 20,
        "undelivered": 0,
        "excluded": 30,
    }


def test_rules_and_promo_activation_decide_who_is_approved(
    kit_listener, engine, worker, clock, store
):
    data = {f"c{i}": {"deposit": 10 * i, "status": "active"} for i in range(10)}
    rules = Rules.from_dict(
        {
            "rule": [
                {"name": "minimum deposit", "type": "min_deposit", "min": 30},
                {"name": "active", "type": "status_in", "values": ["active"]},
            ]
        }
    )
    activated = []

    def activate(customer_id, promo_code):
        if customer_id == "c7":
            raise RuntimeError("bonus wallet locked")
        activated.append((customer_id, promo_code))

    review = rules_review(
        rules, CallableCustomers(lambda ids: {i: data[i] for i in ids if i in data}), activate
    )
    _listener, server = kit_listener(review)
    c = new_campaign(engine, 12)  # c10 and c11 have no customer data
    worker.drain()
    report = wait_report(server.url, c.campaign_id)
    assert report["state"] == "done"
    assert report["approved"] == 6  # c3..c9 minus c7
    refusals = {r["customer_id"]: r["reason"] for r in report["refusals"]}
    assert refusals["c7"] == "promo activation failed: bonus wallet locked"
    assert refusals["c1"].startswith("minimum deposit")
    assert refusals["c11"] == "no customer data"
    assert ("c3", "P2") in activated and all(cid != "c7" for cid, _ in activated)
    clock.advance(hours=2)
    worker.drain()
    sent = {o.customer_id for o in store.customer_outcomes(c.campaign_id, "sent", 0, 100)}
    assert sent == {"c3", "c4", "c5", "c6", "c8", "c9"}
    reasons = {
        o.customer_id: o.reason for o in store.customer_outcomes(c.campaign_id, "excluded", 0, 100)
    }
    assert reasons["c7"] == "refused"


def test_signed_notifications_forged_replayed_and_stale_are_refused(kit_listener, clock):
    async def review(batch):
        return []

    listener, server = kit_listener(review, secret=SECRET)
    body = b'{"EventTypeID": 4, "TimeStamp": "2026-01-01 12:00:00", "CampaignID": 1}'
    good = webhook_headers(SECRET, "msg_1", clock.now(), body)
    assert httpx.post(server.url + "/", content=body, headers=good).status_code == 200
    replay = httpx.post(server.url + "/", content=body, headers=good)
    assert replay.status_code == 409
    forged = webhook_headers(
        "whsec_" + base64.b64encode(b"x" * 32).decode(), "msg_2", clock.now(), body
    )
    assert httpx.post(server.url + "/", content=body, headers=forged).status_code == 401
    tampered = webhook_headers(SECRET, "msg_3", clock.now(), body)
    assert (
        httpx.post(
            server.url + "/", content=body.replace(b"1}", b"2}"), headers=tampered
        ).status_code
        == 401
    )
    stale = webhook_headers(SECRET, "msg_4", clock.now() - timedelta(minutes=10), body)
    assert httpx.post(server.url + "/", content=body, headers=stale).status_code == 400
    assert httpx.post(server.url + "/", content=body).status_code == 401  # unsigned
    assert [e["EventTypeID"] for e in listener.events] == [4]


def test_signed_engine_notifications_are_accepted(
    kit_listener, engine, worker, store, clock, settings
):
    worker.notifier.settings = settings.with_(signing_secret=SECRET)

    async def review(batch):
        return [Decision(c.customer_id, True) for c in batch]

    _listener, server = kit_listener(review, secret=SECRET)
    c = new_campaign(engine, 3)
    worker.drain()
    assert wait_report(server.url, c.campaign_id)["approved"] == 3


def test_duplicate_notifications_do_not_review_twice_at_once(kit_listener, engine, worker, store):
    started = []
    release = asyncio.Event()

    async def review(batch):
        started.append(len(batch))
        await release.wait()
        return [Decision(c.customer_id, True) for c in batch]

    listener, server = kit_listener(review)
    c = new_campaign(engine, 3)
    worker.drain()
    note = {
        "EventTypeID": 5,
        "TimeStamp": "2026-01-01 12:00:00",
        "CampaignID": c.campaign_id,
        "CampaignDuration": 1,
        "ClearanceRequiredBy": "2026-01-01 13:30:00",
    }
    for _ in range(3):
        assert httpx.post(server.url + "/", json=note).status_code == 200
    time.sleep(0.3)
    assert started == [3]
    loop = listener._running[c.campaign_id].get_loop()
    loop.call_soon_threadsafe(release.set)
    assert wait_report(server.url, c.campaign_id)["approved"] == 3


def test_gateway_app_answers_false_in_time_when_decide_hangs_or_fails(api, store):
    async def decide(user, campaign):
        if user.user_id.startswith("hang"):
            await asyncio.sleep(30)
        if user.user_id.startswith("boom"):
            raise RuntimeError("compliance service down")
        return GateDecision(user.user_id.startswith("ok"), "not on the list")

    gateway = GatewayApp(decide, budget_ms=200)
    server = AsgiServer(gateway.app)
    try:
        api.post(
            "/api/v1/triggered-campaigns",
            json={
                "id": "K-1",
                "action": {"id": 1, "channels": [{"id": 506}]},
                "trigger": {"event": "deposit"},
            },
        )
        api.put(
            "/triggered_conditional_execution_gateway",
            json={"url": server.url + "/", "timeout_ms": 1000},
        )
        outcomes = {}
        for user in ["ok-1", "no-1", "hang-1", "boom-1"]:
            [m] = api.post("/api/v1/events", json={"customer_id": user, "event": "deposit"}).json()[
                "matched"
            ]
            # answered inside the engine's budget: an answer, not the engine's own `timeout`
            # (judged by the engine's clock, not by how long this loaded machine took to reply)
            outcomes[user] = (m["outcome"], m["sent"])
            assert m["latency_ms"] < 1000, m
        assert outcomes == {
            "ok-1": ("allowed", True),
            "no-1": ("denied", False),
            "hang-1": ("denied", False),
            "boom-1": ("denied", False),
        }
        assert httpx.post(server.url + "/", content=b"not json").status_code == 400
        stats = httpx.get(server.url + "/stats").json()
        assert stats["timeout"] == 1 and stats["error"] == 1 and stats["malformed"] == 1
    finally:
        server.stop()


def test_client_pages_lazily_and_approves_in_chunks(api, engine, worker, store):
    c = new_campaign(engine, 25_050)
    worker.drain()

    async def run():
        async with Client(str(api.base_url), api_key=api.headers["X-API-KEY"]) as client:
            sizes = [len(p) async for p in client.iter_customer_pages(c.campaign_id)]
            ids = [
                cu.customer_id
                async for cu in client.iter_customers(c.campaign_id, page_size=20_000)
            ]
            summary = await client.approve(
                c.campaign_id, [(i, True) for i in ids] + [("ghost", True)], concurrency=3
            )
            return sizes, ids, summary

    sizes, ids, summary = asyncio.run(run())
    assert sizes == [10_000, 10_000, 5_050]
    assert len(ids) == len(set(ids)) == 25_050
    assert summary.applied == 25_050 and summary.not_in_target_group == ["ghost"]
    assert store.counts(c.campaign_id)["approved"] == 25_050


def test_client_errors_are_typed(api, engine, worker, clock, admin_key):
    c = new_campaign(engine, 2)
    worker.drain()
    clock.advance(hours=1, minutes=31)

    async def run():
        async with Client(str(api.base_url), api_key=admin_key) as client:
            with pytest.raises(ClearanceDeadlinePassed) as late:
                await client.approve(c.campaign_id, [("c0", True)])
            assert late.value.clearance_required_by == "2026-01-01 13:30:00"
            with pytest.raises(ApiError) as missing:
                await client.approve(424242, [("c0", True)])
            assert missing.value.status == 404
        async with Client(str(api.base_url), api_key="wrong") as client:
            with pytest.raises(AuthError):
                await client.listeners()

    asyncio.run(run())


def test_client_retries_safe_failures_within_the_deadline():
    """A real server that answers 503 twice, then 200; and one that always answers 503."""
    from http.server import BaseHTTPRequestHandler

    hits = []

    class Flaky(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            always = "always" in self.path
            status = 503 if always or len(hits) <= 2 else 200
            body = b"[]"
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = Server(("127.0.0.1", 0), Flaky)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    async def run():
        async with Client(url, api_key="k", deadline=3) as client:
            assert await client.listeners() == []
            assert len(hits) == 3
        async with Client(url + "/always", api_key="k", deadline=1) as client:
            t = time.monotonic()
            with pytest.raises(TransportError):
                await client.listeners()
            assert time.monotonic() - t < 2

    try:
        asyncio.run(run())
    finally:
        server.shutdown()
        server.server_close()
