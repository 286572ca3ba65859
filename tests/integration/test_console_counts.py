"""The console's counts of an executed campaign (from the executor's ledger, no counting of the
target group) equal the store's counts, on SQLite and PostgreSQL: conditional with two channels,
approvals, refusals, late approvals and nobody's word; not conditional; undelivered batches."""

from __future__ import annotations

from clearance.clock import FakeClock
from clearance.domain import State
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import ChannelConfig, Store
from tests.conftest import Listener
from tests.helpers import new_campaign


def test_executed_counts_equal_the_counted_ones(
    engine: ScheduledService, store: Store, worker: Worker, clock: FakeClock, listener: Listener
) -> None:
    listener.status = 500
    store.put_channel(ChannelConfig(506, "hook", None, "webhook", listener.url), 0)
    cond = new_campaign(engine, 12, channels=(504, 505), lead=1800)
    plain = new_campaign(engine, 5, conditional=False, channels=(504,))
    failing = new_campaign(engine, 4, conditional=False, channels=(504, 506))
    worker.drain()
    assert store.executed_counts(cond.campaign_id) is None  # not executed: count the sure way
    engine.approve(cond.campaign_id, [(f"c{i}", True) for i in range(7)])
    engine.approve(cond.campaign_id, [("c7", False), ("c8", False)])
    clock.advance(minutes=91)  # past ClearanceRequiredBy: frozen
    worker.drain()
    clock.advance(minutes=30)  # execute
    worker.drain()
    clock.advance(days=2)  # the failing webhook's batch is abandoned past the campaign's life
    worker.drain()
    for c, expected_sent in ((cond, 7), (plain, 5), (failing, 0)):
        assert store.get_campaign(c.campaign_id).state == State.EXECUTED
        fast = store.executed_counts(c.campaign_id)
        assert fast == store.counts(c.campaign_id)
        assert fast is not None and fast["sent"] == expected_sent
    assert store.counts(failing.campaign_id)["undelivered"] == 4
    assert store.counts(cond.campaign_id)["excluded"] == 5
