"""Leases: a worker that lost one stops working on the step (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from clearance.clock import FakeClock, to_ms
from clearance.config import Settings
from clearance.domain import State
from clearance.scheduled.executor import Executor
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import Batch, Notification, Store
from tests.helpers import new_campaign


def _steal(store: Store, campaign_id: int, thief: str) -> None:
    with store.db.transaction() as tx:
        tx.execute(
            "UPDATE campaigns SET lease_owner = ? WHERE campaign_id = ?", (thief, campaign_id)
        )


def test_a_worker_whose_lease_was_taken_delivers_no_further_batch(
    engine: ScheduledService, store: Store, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.with_(execution_chunk=5)
    c = new_campaign(engine, 20, conditional=False, channels=(504,))
    worker = Worker(store, settings, clock, worker_id="w1")
    worker.drain()
    clock.advance(hours=2)

    def taken_over(campaign: object, batch: Batch) -> None:
        _steal(store, c.campaign_id, "w2")  # w1 paused past its lease; w2 claimed the step

    worker.executor = Executor(store, settings, clock, on_chunk=taken_over)
    worker.drain()
    files = list(Path(settings.file_channel_dir).rglob("*.ndjson"))
    row = store.get_campaign(c.campaign_id)
    assert files == []  # the chunk is recorded, but delivering it is w2's job now
    assert row.state == State.EXECUTING and row.last_error is None
    assert len(store.undelivered_batches(c.campaign_id)) == 1
    with store.db.reader() as tx:
        owner = tx.fetchone(
            "SELECT lease_owner FROM campaigns WHERE campaign_id = ?", (c.campaign_id,)
        )
    assert owner is not None and owner[0] == "w2"


def test_extend_lease_answers_whether_the_owner_still_holds_it(
    engine: ScheduledService, store: Store, clock: FakeClock
) -> None:
    c = new_campaign(engine, 1, conditional=False)
    now = to_ms(clock.now())
    assert store.claim_due_campaign(now, "w1", now + 1000) == c.campaign_id
    assert store.extend_lease(c.campaign_id, "w1", now + 5000)
    assert store.claim_due_campaign(now + 2000, "w2", now + 9000) is None  # extended: still w1's
    assert store.claim_due_campaign(now + 6000, "w2", now + 9000) == c.campaign_id
    assert not store.extend_lease(c.campaign_id, "w1", now + 12000)


def test_a_notification_attempt_by_a_worker_that_lost_the_lease_is_not_recorded(
    store: Store, clock: FakeClock
) -> None:
    now = to_ms(clock.now())
    n = Notification("msg_x", None, 1, 0, "http://127.0.0.1:9/x", "{}", now, now + 60_000)
    with store.db.transaction() as tx:
        store._enqueue(tx, [n])
    [mine] = store.claim_notifications(now, "w1", now + 1000, 10)
    assert store.claim_notifications(now, "w2", now + 1000, 10) == []  # one lease per attempt
    assert store.extend_notification_lease("msg_x", "w1", now + 3000)
    assert store.claim_notifications(now + 2000, "w2", now + 5000, 10) == []
    [theirs] = store.claim_notifications(now + 4000, "w2", now + 9000, 10)
    assert not store.extend_notification_lease("msg_x", "w1", now + 9000)
    assert store.record_attempt(mine, "w1", now + 4100, 200, None, 5, None) == "lease_lost"
    assert store.record_attempt(theirs, "w2", now + 4200, 200, None, 5, None) == "delivered"
    with store.db.reader() as tx:
        attempts = tx.fetchall("SELECT attempt, at FROM notification_attempts")
    assert [(int(a), int(t)) for a, t in attempts] == [(1, now + 4200)]
