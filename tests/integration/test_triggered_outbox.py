"""Triggered decisions that are truthful and durable (issue 11, items 1 to 5), on SQLite and
PostgreSQL, against the real app on loopback and a real gateway."""

from __future__ import annotations

import time

import pytest

from clearance.store import GatewayConfig
from tests.helpers import wait_until
from tests.integration.test_triggered import CAMPAIGN, event

# A secret that passed no check (written straight to the store): signing with it raises after
# the breaker has let the call through, which is the unexpected failure these tests need.
BROKEN_SECRET = "whsec_not-base64!"


def decisions(api, **params):
    return api.get("/api/v1/decisions", params=params).json()["decisions"]


@pytest.fixture
def gated_api(api, gateway):
    assert api.post("/api/v1/triggered-campaigns", json=CAMPAIGN).status_code == 201
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    return api


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
    rows = wait_until(
        "four logged decisions", 10.0, lambda: len(decisions(api)) == 4 and decisions(api)
    )
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


# --- item 1: the outbox -----------------------------------------------------------------------
def outbox_rows(store):
    with store.db.reader() as tx:
        return tx.fetchall(
            "SELECT decision_id, channel_id, state FROM triggered_sends ORDER BY decision_id"
        )


def files(tmp_path):
    return sorted((tmp_path / "sends").rglob("*.ndjson"))


def sent_lines(tmp_path):
    import orjson

    return [orjson.loads(line) for f in files(tmp_path) for line in f.read_bytes().splitlines()]


@pytest.fixture
def two_channels(api, gateway):
    body = {**CAMPAIGN, "action": {**CAMPAIGN["action"], "channels": [{"id": 506}, {"id": 507}]}}
    assert api.post("/api/v1/triggered-campaigns", json=body).status_code == 201
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    return api


def test_a_send_is_committed_with_its_decision_and_delivered_once(
    two_channels, store, worker, tmp_path
):
    api = two_channels
    r = api.post("/api/v1/events", json=[event("ok-1"), event("no-1"), event("ok-2")]).json()
    ids = [res["matched"][0]["decision_id"] for res in r["results"]]
    # in the store the moment the reply is out: the decision and one send per channel
    assert sorted(outbox_rows(store)) == sorted(
        [
            (ids[0], 506, "pending"),
            (ids[0], 507, "pending"),
            (ids[2], 506, "pending"),
            (ids[2], 507, "pending"),
        ]
    )
    assert files(tmp_path) == []  # nothing delivered from memory: the worker delivers
    worker.drain()
    worker.drain()
    lines = sent_lines(tmp_path)
    assert sorted((s["DecisionID"], s["ChannelID"]) for s in lines) == sorted(
        [(ids[0], 506), (ids[0], 507), (ids[2], 506), (ids[2], 507)]
    )
    one = api.get(f"/api/v1/decisions/{ids[0]}").json()
    assert one["delivery"] == "delivered"
    assert [(d["channel_id"], d["state"], d["attempts"]) for d in one["deliveries"]] == [
        (506, "delivered", 1),
        (507, "delivered", 1),
    ]
    assert api.get(f"/api/v1/decisions/{ids[1]}").json()["delivery"] == "none"
    assert api.get("/api/v1/decisions/nope").status_code == 404


def test_a_channel_that_is_down_is_retried_then_delivered_once(
    api, gateway, worker, clock, listener
):
    listener.status = 503
    api.put("/api/v1/channels/506", json={"delivery": {"type": "webhook", "url": listener.url}})
    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    [m] = api.post("/api/v1/events", json=event("ok-1")).json()["matched"]
    assert m["sent"] is True
    worker.drain()
    got = api.get(f"/api/v1/decisions/{m['decision_id']}").json()
    assert got["delivery"] == "pending"
    assert "503" in got["deliveries"][0]["reason"] and got["deliveries"][0]["attempts"] == 1
    worker.drain()  # not due yet: no second attempt without time passing
    assert len(listener.received) == 1
    listener.status = 200
    clock.advance(seconds=5)
    worker.drain()
    got = api.get(f"/api/v1/decisions/{m['decision_id']}").json()
    assert got["delivery"] == "delivered"
    ids = {r["headers"]["webhook-id"] for r in listener.received}
    assert len(listener.received) == 2 and len(ids) == 1  # the same batch, the same webhook-id
    assert [s["DecisionID"] for s in listener.received[-1]["body"]["Sends"]] == [m["decision_id"]]


def test_a_channel_down_past_the_deadline_fails_with_its_reason(
    api, gateway, worker, clock, listener
):
    listener.status = 500
    api.put("/api/v1/channels/506", json={"delivery": {"type": "webhook", "url": listener.url}})
    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    [m] = api.post("/api/v1/events", json=event("ok-1")).json()["matched"]
    for _ in range(200):  # every retry loop has a deadline: an hour after the decision
        worker.drain()
        clock.advance(seconds=60)
        got = api.get(f"/api/v1/decisions/{m['decision_id']}").json()
        if got["delivery"] != "pending":
            break
    assert got["delivery"] == "failed"
    assert "HTTP 500" in got["deliveries"][0]["reason"]
    attempts = len(listener.received)
    assert 5 <= attempts <= 80
    clock.advance(hours=2)
    worker.drain()
    assert len(listener.received) == attempts  # given up: never tried again


def test_a_worker_abandoned_mid_delivery_does_not_cause_a_second_send(
    api, gateway, store, settings, clock, worker, tmp_path
):
    """Two workers: one claims the batch and is abandoned mid-delivery (it never records the
    delivery); the other waits out its lease, then delivers the same batch under the same name."""
    from clearance.channels.outbox import TriggeredOutbox

    api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    ms = [api.post("/api/v1/events", json=event(f"ok-{i}")).json()["matched"][0] for i in range(5)]
    stuck = TriggeredOutbox(store, settings, clock, "worker-stuck")
    [batch] = stuck.claim()
    configs = store.get_channels([506])
    # it even got as far as writing the file, then died before recording the delivery
    from clearance.channels import BatchName, delivery_for

    name = BatchName.triggered(batch.campaign_key, 506, batch.first_decision, batch.last_decision)
    delivery_for(configs.get(506), settings, clock).deliver(
        name, store.triggered_batch_records(batch)
    )
    more = api.post("/api/v1/events", json=event("ok-late")).json()["matched"][0]
    worker.drain()  # the lease holds: only the new decision is delivered
    assert {s["DecisionID"] for s in sent_lines(tmp_path)} == {
        *(m["decision_id"] for m in ms),
        more["decision_id"],
    }
    clock.advance(seconds=settings.lease_seconds + 1)
    worker.drain()  # the lease lapsed: redelivered, replacing the same file
    lines = sent_lines(tmp_path)
    assert sorted(s["DecisionID"] for s in lines) == sorted(
        [*(m["decision_id"] for m in ms), more["decision_id"]]
    )
    assert all(
        api.get(f"/api/v1/decisions/{m['decision_id']}").json()["delivery"] == "delivered"
        for m in ms
    )
    # the abandoned worker coming back cannot record anything
    assert store.finish_triggered_batch(batch, "worker-stuck", 0, None, None) is None


class SlowChannel:
    """A webhook channel on loopback that holds every request until released."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler

        from tests.conftest import Server

        self.release = threading.Event()
        self.received: list[bytes] = []
        channel = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                channel.received.append(self.rfile.read(int(self.headers["content-length"])))
                channel.release.wait(20)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_channel_does_not_stall_decisions(api, gateway, store, settings, clock):
    """A webhook that takes its time holds up only its own delivery (in the worker), never the
    decision log: decisions keep being committed and answered meanwhile."""
    import threading

    from clearance.scheduled.worker import Worker

    slow = SlowChannel()
    try:
        api.put("/api/v1/channels/506", json={"delivery": {"type": "webhook", "url": slow.url}})
        api.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
        api.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
        api.post("/api/v1/events", json=event("ok-0"))
        w = Worker(store, settings, clock, worker_id="slow-worker")
        t = threading.Thread(target=w.run_once, daemon=True)
        t.start()
        wait_until("the channel holding a delivery", 10.0, lambda: slow.received)
        started = time.monotonic()
        for i in range(20):
            [m] = api.post("/api/v1/events", json=event(f"ok-{i + 1}")).json()["matched"]
            assert m["sent"] is True
        assert time.monotonic() - started < 5
        assert len(decisions(api)) == 21  # all committed while the channel still holds one
        assert len(slow.received) == 1
        slow.release.set()
        t.join(10)
    finally:
        slow.stop()


# --- item 2: event ids --------------------------------------------------------------------------
def gateway_calls_for(gateway, user):
    return sum(1 for c in gateway.calls if c["body"]["user"]["user_id"] == user)


def test_a_repeated_event_id_gets_the_first_decision(gated_api, gateway, store, worker, tmp_path):
    api = gated_api
    first = api.post("/api/v1/events", json=event("ok-1", event_id="ev-1")).json()
    [m] = first["matched"]
    assert (m["outcome"], m["sent"], m["repeat"], m["event_id"]) == ("allowed", True, False, "ev-1")
    again = api.post("/api/v1/events", json=event("ok-1", event_id="ev-1")).json()
    [r] = again["matched"]
    assert r["repeat"] is True
    assert {k: r[k] for k in ("decision_id", "outcome", "sent")} == {
        k: m[k] for k in ("decision_id", "outcome", "sent")
    }
    assert gateway_calls_for(gateway, "ok-1") == 1
    worker.drain()
    assert len(decisions(api)) == 1 and len(sent_lines(tmp_path)) == 1
    assert decisions(api)[0]["event_id"] == "ev-1"
    assert decisions(api)[0]["delivery"] == "delivered"
    # another event id, or another campaign, is another event
    [m2] = api.post("/api/v1/events", json=event("ok-1", event_id="ev-2")).json()["matched"]
    assert m2["repeat"] is False and m2["decision_id"] != m["decision_id"]
    both = api.post("/api/v1/events", json=[event("ok-3", event_id="d")] * 2).json()["results"]
    [a], [b] = both[0]["matched"], both[1]["matched"]
    assert (a["repeat"], b["repeat"]) == (False, True) and a["decision_id"] == b["decision_id"]


def test_event_ids_are_remembered_for_the_retention_window(gated_api, gateway, clock, worker):
    api = gated_api
    [m] = api.post("/api/v1/events", json=event("ok-1", event_id="ev-r")).json()["matched"]
    clock.advance(days=6)
    worker.drain()
    [r] = api.post("/api/v1/events", json=event("ok-1", event_id="ev-r")).json()["matched"]
    assert r["repeat"] is True and r["decision_id"] == m["decision_id"]
    clock.advance(days=1, seconds=1)  # past the default 7 days: a new event
    worker.drain()
    [n] = api.post("/api/v1/events", json=event("ok-1", event_id="ev-r")).json()["matched"]
    assert n["repeat"] is False and n["decision_id"] != m["decision_id"]


def test_concurrent_duplicates_on_two_replicas_are_decided_once(
    gated_api, gateway, engine, admin_key, worker, tmp_path
):
    """The same event ids, fired at once at two API servers over one database: each is decided
    and sent once; every reply carries the first decision."""
    import httpx

    from tests.conftest import serve_api

    other = serve_api(engine)
    try:
        second = httpx.Client(base_url=other.url, headers={"X-API-KEY": admin_key}, timeout=10)
        clients = [gated_api, second]
        from concurrent.futures import ThreadPoolExecutor

        # slow- answers after 300 ms: the duplicates arrive while the first is being decided
        events = [event(f"slow-{k}", event_id=f"ev-{k}") for k in range(5)]
        with ThreadPoolExecutor(40) as pool:
            futures = [
                pool.submit(clients[n % 2].post, "/api/v1/events", json=events[n % 5])
                for n in range(40)
            ]
            replies = [f.result() for f in futures]
        assert {r.status_code for r in replies} == {200}, [
            r.text for r in replies if r.status_code != 200
        ][:2]
        by_event: dict[str, set[str]] = {}
        firsts = 0
        for r in replies:
            [m] = r.json()["matched"]
            assert m["outcome"] == "allowed" and m["sent"] is True, m
            by_event.setdefault(m["event_id"], set()).add(m["decision_id"])
            firsts += not m["repeat"]
        assert firsts == 5 and all(len(ids) == 1 for ids in by_event.values())
        assert all(gateway_calls_for(gateway, f"slow-{k}") == 1 for k in range(5))
        worker.drain()
        assert len(decisions(gated_api)) == 5
        assert sorted(s["CustomerID"] for s in sent_lines(tmp_path)) == [
            f"slow-{k}" for k in range(5)
        ]
        clients[1].close()
    finally:
        other.stop()


def test_a_repeat_after_a_restart_gets_the_first_decision(
    engine, admin_key, gateway, worker, tmp_path
):
    import httpx

    from tests.conftest import serve_api

    def up():
        server = serve_api(engine)
        return server, httpx.Client(
            base_url=server.url, headers={"X-API-KEY": admin_key}, timeout=10
        )

    server, c = up()
    c.post("/api/v1/triggered-campaigns", json=CAMPAIGN)
    c.put("/triggered_conditional_execution_gateway", json={"url": gateway.url})
    [m] = c.post("/api/v1/events", json=event("ok-1", event_id="ev-x")).json()["matched"]
    c.close()
    server.stop()
    server, c = up()
    try:
        [r] = c.post("/api/v1/events", json=event("ok-1", event_id="ev-x")).json()["matched"]
        assert r["repeat"] is True and r["decision_id"] == m["decision_id"]
        assert gateway_calls_for(gateway, "ok-1") == 1
        worker.drain()
        assert len(sent_lines(tmp_path)) == 1
    finally:
        c.close()
        server.stop()


def test_an_idempotency_key_makes_a_repeated_batch_a_repeat(gated_api, gateway, worker, tmp_path):
    api = gated_api
    batch = [event("ok-1"), event("no-1"), event("ok-2", event_id="own")]
    headers = {"Idempotency-Key": "batch-42"}
    first = api.post("/api/v1/events", json=batch, headers=headers).json()["results"]
    again = api.post("/api/v1/events", json=batch, headers=headers).json()["results"]
    for a, b in zip(first, again, strict=True):
        [ma], [mb] = a["matched"], b["matched"]
        assert (ma["repeat"], mb["repeat"]) == (False, True)
        assert ma["decision_id"] == mb["decision_id"] and ma["sent"] == mb["sent"]
    ids = [r["matched"][0]["event_id"] for r in first]
    assert ids[0].startswith("batch-42#") and ids[1].startswith("batch-42#") and ids[2] == "own"
    assert ids[0] != ids[1]
    # reordered and trimmed on retry (only what the producer thinks failed): still repeats, each
    # of its own first decision
    retried = api.post("/api/v1/events", json=[batch[1]], headers=headers).json()["results"]
    assert retried[0]["matched"][0]["repeat"] is True
    assert retried[0]["matched"][0]["decision_id"] == first[1]["matched"][0]["decision_id"]
    worker.drain()
    assert len(decisions(api)) == 3 and len(sent_lines(tmp_path)) == 2
    bad = api.post("/api/v1/events", json=batch, headers={"Idempotency-Key": "x" * 201})
    assert bad.status_code == 400


# --- item 5: paging in commit order -------------------------------------------------------------
def late_row(n: int, at: int = 1):
    from clearance.store import DecisionRow

    # an id (and time) before every decision already handed out: decided during an outage, or on
    # another replica, and committed only now
    return DecisionRow(
        f"{at:013d}{n:010d}late00", at, "T-1", f"late-{n}", False, "denied", None, 1.0, False, False
    )


def test_a_decision_committed_late_is_not_skipped_by_a_cursor(gated_api, store):
    api = gated_api
    for user in ("ok-1", "no-1"):
        api.post("/api/v1/events", json=event(user))
    page = api.get("/api/v1/decisions", params={"limit": 2}).json()
    assert len(page["decisions"]) == 2 and page["next_after"]
    store.write_decisions([late_row(1)])
    api.post("/api/v1/events", json=event("ok-2"))
    nxt = api.get("/api/v1/decisions", params={"after": page["next_after"]}).json()
    assert [d["user_id"] for d in nxt["decisions"]] == ["late-1", "ok-2"]
    # a decision id as `after` (a cursor as they were before) still works
    first_id = page["decisions"][0]["decision_id"]
    assert [d["user_id"] for d in decisions(api, after=first_id)] == ["no-1", "late-1", "ok-2"]
    assert api.get("/api/v1/decisions", params={"after": "p.x"}).status_code == 400


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_concurrent_writers_never_commit_behind_a_cursor(gated_api, store, postgres_url):
    """PostgreSQL: a replica's writer that is inside its transaction (it has written an early
    decision and not yet committed) while another replica commits: no reader may be handed a
    cursor past the first one's row before it is visible."""
    import threading

    import psycopg

    api = gated_api
    stalled = psycopg.connect(postgres_url)
    stalled.execute("SELECT pg_advisory_xact_lock(7265121)")  # as every decision write does
    r = late_row(1)
    stalled.execute(
        "INSERT INTO decisions (decision_id, at, campaign_key, user_id, is_visitor, outcome, "
        "reason, latency_ms, sent, shadow) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (r.decision_id, r.at, r.campaign_key, r.user_id, False, "denied", None, 1.0, False, False),
    )
    other = threading.Thread(target=store.write_decisions, args=([late_row(2, at=2)],))
    other.start()
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = api.get("/api/v1/decisions", params={"after": cursor} if cursor else {}).json()
        seen += [d["user_id"] for d in page["decisions"]]
        cursor = page["cursor"]
        time.sleep(0.02)
    stalled.commit()
    stalled.close()
    other.join(10)
    page = api.get("/api/v1/decisions", params={"after": cursor} if cursor else {}).json()
    seen += [d["user_id"] for d in page["decisions"]]
    assert sorted(seen) == ["late-1", "late-2"], seen


# --- found by a hostile review ------------------------------------------------------------------
def test_a_shadow_campaign_never_sends_after_its_own_failure(api, store, monkeypatch):
    from clearance.triggered import runtime as rt

    shadow = {
        "id": "S-1",
        "action": {"id": 1, "channels": [{"id": 506}]},
        "conditional": False,
        "shadow": True,
        "trigger": {"event": "deposit"},
    }
    assert api.post("/api/v1/triggered-campaigns", json=shadow).status_code == 201

    def broken(self, *args, **kwargs):
        raise RuntimeError("sends could not be built")

    monkeypatch.setattr(rt.RealTime, "_sends", broken)
    [m] = api.post("/api/v1/events", json={"customer_id": "C-1", "event": "deposit"}).json()[
        "matched"
    ]
    assert (m["outcome"], m["sent"]) == ("error", False)


def test_a_batch_whose_lease_lapsed_before_its_turn_is_not_delivered_twice(
    api, store, settings, clock, tmp_path
):
    from clearance.channels.outbox import TriggeredOutbox

    campaign = {
        "id": "L-1",
        "action": {"id": 1, "channels": [{"id": 506}]},
        "conditional": False,
        "trigger": {"event": "deposit"},
    }
    assert api.post("/api/v1/triggered-campaigns", json=campaign).status_code == 201
    r = api.post("/api/v1/events", json={"customer_id": "C-1", "event": "deposit"})
    assert r.json()["matched"][0]["sent"] is True
    a = TriggeredOutbox(store, settings, clock, "worker-a")
    b = TriggeredOutbox(store, settings, clock, "worker-b")
    [batch] = a.claim()  # a claims, then is slow with the batches before this one
    clock.advance(settings.lease_seconds + 1)
    [taken] = b.claim()  # the lease lapsed: b takes the batch over
    assert a.deliver(batch, None) is None  # a's turn comes: it is not a's any more
    assert list((tmp_path / "sends").rglob("*.ndjson")) == []
    assert b.deliver(taken, None) == "delivered"
    assert len(list((tmp_path / "sends").rglob("*.ndjson"))) == 1


def test_a_writer_stuck_in_its_turn_makes_the_others_fail_not_wait(postgres_url):
    """PostgreSQL: decision writers take turns under an advisory lock; one stuck inside it must
    make the others' writes fail (so the events API fails closed) rather than queue for ever."""
    import time

    import psycopg

    from clearance.errors import ClearanceError
    from clearance.store import open_store
    from clearance.store.triggered import DECISION_WRITE_LOCK

    store = open_store(postgres_url)
    try:
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (DECISION_WRITE_LOCK,))
            started = time.monotonic()
            with pytest.raises((ClearanceError, psycopg.Error)):
                store.write_decisions([late_row(1)])
            assert time.monotonic() - started < 10
            holder.rollback()
        store.write_decisions([late_row(2)])  # the turn is free again
    finally:
        store.close()
