"""The scheduled lifecycle against the real store (SQLite file and PostgreSQL), driven by a fake
clock and the worker's drain mode."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clearance.domain import State
from clearance.errors import Conflict, DeadlinePassed, InvalidInput, NotFound
from clearance.scheduled.executor import Executor
from clearance.scheduled.worker import Worker
from tests.helpers import new_campaign


def sends_of(store, campaign_id):
    return store.send_details(campaign_id, 10_000_000, 0)


def test_conditional_campaign_reaches_exactly_the_approved(engine, worker, store, clock, listener):
    store.register_listener(5, None, listener.url, 0)
    c = new_campaign(engine, 10, channels=(504, 505))
    worker.drain()
    c = store.get_campaign(c.campaign_id)
    assert c.state == State.AWAITING_CLEARANCE
    assert c.clearance_required_by == c.execute_at - timedelta(minutes=30)
    [note] = listener.bodies(5)
    assert note == {
        "EventTypeID": 5,
        "TimeStamp": "2026-01-01 12:00:00",
        "CampaignID": c.campaign_id,
        "CampaignDuration": 1,
        "ClearanceRequiredBy": "2026-01-01 13:30:00",
    }
    engine.approve(c.campaign_id, [("c1", True), ("c3", True), ("c5", True)])
    clock.advance(minutes=90)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.CLEARED
    clock.advance(minutes=30)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTED
    sends = sends_of(store, c.campaign_id)
    assert sorted((cid, ch) for _, cid, ch, _, _ in sends) == sorted(
        (cid, ch) for cid in ("c1", "c3", "c5") for ch in (504, 505)
    )
    assert store.counts(c.campaign_id) == {
        "target": 10,
        "approved": 3,
        "sent": 3,
        "undelivered": 0,
        "excluded": 7,
    }


def test_non_conditional_campaign_skips_clearance(engine, worker, store, clock, listener):
    store.register_listener(5, None, listener.url, 0)
    c = new_campaign(engine, 4, conditional=False)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.CLEARED
    assert listener.bodies(5) == []
    with pytest.raises(Conflict):
        engine.approve(c.campaign_id, [("c1", True)])
    clock.advance(hours=2)
    worker.drain()
    assert store.counts(c.campaign_id)["sent"] == 4


def test_clearance_lead_is_the_longest_channel_lead(engine, worker, store):
    from clearance.store import ChannelConfig

    store.put_channel(ChannelConfig(505, "SMS", 3600, "file", None), 0)
    store.put_channel(ChannelConfig(504, "Email", 600, "file", None), 0)
    c = new_campaign(engine, 1, channels=(504, 505), execute_in=timedelta(hours=3))
    worker.drain()
    c = store.get_campaign(c.campaign_id)
    assert c.clearance_required_by == c.execute_at - timedelta(hours=1)


def test_approvals_after_the_deadline_are_refused_and_nothing_applies(engine, worker, store, clock):
    c = new_campaign(engine, 5)
    worker.drain()
    engine.approve(c.campaign_id, [("c0", True)])
    clock.advance(minutes=90)  # exactly ClearanceRequiredBy: the deadline is exclusive
    with pytest.raises(DeadlinePassed) as err:
        engine.approve(c.campaign_id, [("c1", True), ("c0", False)])
    assert "2026-01-01 13:30:00" in err.value.message
    worker.drain()
    clock.advance(minutes=30)
    worker.drain()
    assert [s[1] for s in sends_of(store, c.campaign_id)] == ["c0"]  # the revoke did not apply
    reasons = {
        o.customer_id: o.reason for o in store.customer_outcomes(c.campaign_id, "excluded", 0, 100)
    }
    assert reasons == {
        "c1": "approved_late",
        "c2": "not_approved",
        "c3": "not_approved",
        "c4": "not_approved",
    }


def test_revoke_before_deadline_and_idempotent_repeats(engine, worker, store, clock):
    c = new_campaign(engine, 3)
    worker.drain()
    for _ in range(3):
        assert engine.approve(c.campaign_id, [("c0", True), ("c1", True)]).applied == 2
    engine.approve(c.campaign_id, [("c1", False)])
    clock.advance(hours=2)
    worker.drain()
    assert [s[1] for s in sends_of(store, c.campaign_id)] == ["c0"]
    reasons = {
        o.customer_id: o.reason for o in store.customer_outcomes(c.campaign_id, "excluded", 0, 100)
    }
    assert reasons == {"c1": "refused", "c2": "not_approved"}


def test_customers_outside_the_target_group_are_named_and_the_rest_apply(engine, worker, store):
    c = new_campaign(engine, 3)
    worker.drain()
    result = engine.approve(c.campaign_id, [("c0", True), ("ghost", True), ("c2", True)])
    assert result.applied == 2
    assert result.not_in_target_group == ["ghost"]
    assert store.counts(c.campaign_id)["approved"] == 2


def test_a_large_call_keeps_every_word_and_names_every_stranger_in_order(engine, worker, store):
    """A call bigger than the chunks the store streams approvals in: each customer's word lands,
    strangers from every part of the call are named in call order, and the last word wins."""
    c = new_campaign(engine, 4_500)
    worker.drain()
    entries = [(f"c{i}", i % 7 != 0) for i in range(4_500)]
    strangers = ["ghost-a", "ghost-b", "ghost-c"]
    entries.insert(10, (strangers[0], True))
    entries.insert(2_500, (strangers[1], False))
    entries.append((strangers[2], True))
    entries.append(("c1", False))  # a second word on c1 in the same call: this one counts
    result = engine.approve(c.campaign_id, entries)
    assert result.applied == 4_500
    assert result.not_in_target_group == strangers
    approved = {o.customer_id for o in store.customer_outcomes(c.campaign_id, "approved", 0, 10**6)}
    assert approved == {f"c{i}" for i in range(4_500) if i % 7 != 0 and i != 1}


def test_customer_ids_with_copy_syntax_characters_are_stored_as_sent(engine, worker, store, clock):
    """Backslashes mean something to PostgreSQL's COPY text format (`\\N` is its NULL); such ids
    must reach the approvals log, and the sends, exactly as the listener sent them."""
    odd = ["a\\b", "\\N", "tail\\", "\\t not a tab", "plain"]
    c = new_campaign(engine, customer_ids=odd)
    worker.drain()
    result = engine.approve(c.campaign_id, [(cid, cid != "plain") for cid in odd])
    assert result.applied == len(odd) and result.not_in_target_group == []
    clock.advance(hours=2)
    worker.drain()
    assert sorted(s[1] for s in sends_of(store, c.campaign_id)) == sorted(odd[:-1])


def test_approval_rules(engine, worker, store):
    with pytest.raises(NotFound):
        engine.approve(999, [("c0", True)])
    c = new_campaign(engine, 3)
    with pytest.raises(Conflict):  # not processed yet
        engine.approve(c.campaign_id, [("c0", True)])
    worker.drain()
    with pytest.raises(InvalidInput):
        engine.approve(c.campaign_id, [(f"c{i}", True) for i in range(10_001)])
    assert store.counts(c.campaign_id)["approved"] == 0
    engine.cancel(c.campaign_id)
    with pytest.raises(Conflict):
        engine.approve(c.campaign_id, [("c0", True)])


def test_cancel_notifies_and_excludes_everyone(engine, worker, store, clock, listener):
    store.register_listener(5, None, listener.url, 0)
    store.register_listener(4, None, listener.url, 0)
    c = new_campaign(engine, 3)
    worker.drain()
    engine.approve(c.campaign_id, [("c0", True)])
    engine.cancel(c.campaign_id)
    worker.drain()
    clock.advance(hours=3)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.CANCELED
    assert [b["CampaignID"] for b in listener.bodies(4)] == [c.campaign_id]
    assert sends_of(store, c.campaign_id) == []
    assert {o.reason for o in store.customer_outcomes(c.campaign_id, "excluded", 0, 10)} == {
        "campaign_canceled"
    }
    assert [cid for _, cid in store.canceled_customers(c.campaign_id, 10, 0)] == ["c0", "c1", "c2"]
    with pytest.raises(Conflict):
        engine.cancel(c.campaign_id)


def test_execution_notifies_per_channel_and_processed(engine, worker, store, clock, listener):
    store.register_listener(13, 505, listener.url, 0)
    store.register_listener(1, None, listener.url, 0)
    new_campaign(engine, 2, conditional=False, channels=(504, 505))
    worker.drain()
    clock.advance(hours=2)
    worker.drain()
    got = sorted((b["EventTypeID"], b.get("ChannelID") or 0) for b in listener.bodies())
    assert got == [(1, 0), (13, 505)]  # none for channel 504: nobody registered for it


def test_a_listener_that_is_down_does_not_stop_the_campaign(engine, worker, store, clock):
    store.register_listener(5, None, "http://127.0.0.1:9/nobody-home", 0)
    c = new_campaign(engine, 3)
    worker.drain()
    clock.advance(minutes=91)
    worker.drain()
    clock.advance(minutes=30)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTED
    assert store.counts(c.campaign_id) == {
        "target": 3,
        "approved": 0,
        "sent": 0,
        "undelivered": 0,
        "excluded": 3,
    }
    [note] = store.campaign_notifications(c.campaign_id)
    assert note["state"] == "expired"
    assert note["attempts"] >= 1
    assert "ConnectError" in note["attempt_log"][0]["error"]


def test_notification_retries_keep_the_webhook_id_and_stop_at_the_deadline(
    engine, worker, store, clock, listener
):
    listener.status = 500
    store.register_listener(5, None, listener.url, 0)
    c = new_campaign(engine, 1, lead=5, execute_in=timedelta(seconds=65))
    for _ in range(100):
        worker.drain()
        clock.advance(seconds=1)
    [note] = store.campaign_notifications(c.campaign_id)
    assert note["state"] == "expired"
    ids = {r["headers"]["webhook-id"] for r in listener.received}
    assert ids == {note["notification_id"]}
    assert len(listener.received) >= 4  # retried with backoff inside the minute
    deadline = store.get_campaign(c.campaign_id).clearance_required_by
    assert all(
        a["at"] < deadline.timestamp() * 1000
        for a in note["attempt_log"]
        if a["status_code"] is not None
    )


def test_a_worker_killed_mid_execution_resumes_without_duplicates_or_losses(
    engine, store, settings, clock
):
    settings = settings.with_(execution_chunk=7)
    c = new_campaign(engine, 100, channels=(504, 505))
    first = Worker(store, settings, clock, worker_id="w1")
    first.drain()
    approved = [f"c{i}" for i in range(100) if i % 3 != 0]
    engine.approve(c.campaign_id, [(cid, True) for cid in approved])
    clock.advance(hours=2)
    chunks = []

    def die_after_three(campaign, batch):
        chunks.append(batch)
        if len(chunks) == 3:
            raise KeyboardInterrupt("worker killed")  # not caught by the worker loop

    first.executor = Executor(store, settings, clock, on_chunk=die_after_three)
    with pytest.raises(KeyboardInterrupt):
        first.drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTING
    second = Worker(store, settings, clock, worker_id="w2")
    second.drain()  # lease still held by the dead worker: nothing happens yet
    assert store.get_campaign(c.campaign_id).state == State.EXECUTING
    clock.advance(seconds=settings.lease_seconds + 1)
    second.drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTED
    sends = sends_of(store, c.campaign_id)
    assert len(sends) == len(set((s[1], s[2]) for s in sends)) == 2 * len(approved)
    assert {s[1] for s in sends} == set(approved)
    assert store.undelivered_batches(c.campaign_id) == []
    # the file channel holds each send exactly once too
    from pathlib import Path

    import orjson

    lines = [
        orjson.loads(line)
        for f in Path(settings.file_channel_dir).rglob("*.ndjson")
        for line in f.read_bytes().splitlines()
    ]
    assert len(lines) == 2 * len(approved)
    assert len({row["SendID"] for row in lines}) == len(lines)


def test_two_workers_never_run_the_same_step(engine, store, settings, clock):
    ids = [new_campaign(engine, 20, conditional=False).campaign_id for _ in range(5)]
    w1 = Worker(store, settings, clock, worker_id="w1")
    w2 = Worker(store, settings, clock, worker_id="w2")
    w1.drain()
    w2.drain()
    clock.advance(hours=2)
    import threading

    threads = [threading.Thread(target=w.drain) for w in (w1, w2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for cid in ids:
        assert store.get_campaign(cid).state == State.EXECUTED
        assert len(sends_of(store, cid)) == 20


def test_schedule_refuses_a_deadline_already_past(engine):
    with pytest.raises(InvalidInput) as err:
        new_campaign(engine, 1, execute_in=timedelta(minutes=10))
    assert err.value.field == "execute_at"


def test_membership_from_memory_and_from_the_database_agree(engine, worker, store):
    from clearance.scheduled.membership import MembershipCache

    c = new_campaign(engine, 50)
    worker.drain()
    entries = [(f"c{i}", i % 2 == 0) for i in range(0, 60, 3)] + [("nobody", True)]
    index = MembershipCache(store).index_for(c.campaign_id)
    assert index is not None and len(index) == 50
    members, missing = index.split(entries)
    assert missing == ["c51", "c54", "c57", "nobody"]
    # each member placed at its position in the target group (uploaded c0, c1, ... as seq 1, 2, ...)
    assert members == [(i + 1, f"c{i}", i % 2 == 0) for i in range(0, 50, 3)]
    via_db = store.apply_approvals(c.campaign_id, entries, engine.now_ms)
    via_memory = store.apply_approvals(c.campaign_id, entries, engine.now_ms, index.split)
    assert via_db == via_memory
    assert via_db.applied == 17 and via_db.not_in_target_group == missing


def test_membership_cache_holds_only_campaigns_awaiting_clearance(engine, worker, store):
    from clearance.scheduled.membership import MembershipCache

    cache = MembershipCache(store, max_customers=25)
    draft_like = new_campaign(engine, 5)
    assert cache.index_for(draft_like.campaign_id) is None  # not processed yet
    worker.drain()
    too_big = new_campaign(engine, 30)
    small = [new_campaign(engine, 10) for _ in range(3)]
    worker.drain()
    assert cache.index_for(too_big.campaign_id) is None
    for c in small:
        assert cache.index_for(c.campaign_id) is not None
    assert cache._held <= 25  # the least recently used one was evicted
