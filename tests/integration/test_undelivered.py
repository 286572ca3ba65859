"""A batch abandoned past the campaign's life is reported as undelivered, not sent
(SQLite and PostgreSQL, a real loopback webhook that keeps failing)."""

from __future__ import annotations

import httpx

from clearance.clock import FakeClock
from clearance.domain import State
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import ChannelConfig, Store
from tests.conftest import Listener
from tests.helpers import new_campaign


def test_a_batch_abandoned_past_the_campaigns_life_is_undelivered_with_its_reason(
    engine: ScheduledService,
    store: Store,
    worker: Worker,
    clock: FakeClock,
    listener: Listener,
    api: httpx.Client,
) -> None:
    listener.status = 500
    store.put_channel(ChannelConfig(506, "hook", None, "webhook", listener.url), 0)
    ok = new_campaign(engine, 3, conditional=False, channels=(504,))
    bad = new_campaign(engine, 4, conditional=False, channels=(504, 506))
    worker.drain()
    clock.advance(hours=2)
    worker.drain()
    assert store.get_campaign(bad.campaign_id).state == State.EXECUTING  # retrying the webhook
    # while it retries, the customers are not sent yet, nor reported undelivered
    assert store.counts(bad.campaign_id)["sent"] == 0
    assert store.counts(bad.campaign_id)["undelivered"] == 0
    clock.advance(days=2)  # past the campaign's one-day life: the batch is abandoned
    worker.drain()
    assert store.get_campaign(bad.campaign_id).state == State.EXECUTED
    assert len(listener.received) >= 2 and store.undelivered_batches(bad.campaign_id)

    assert store.counts(bad.campaign_id) == {
        "target": 4,
        "approved": 0,
        "sent": 0,
        "undelivered": 4,
        "excluded": 0,
    }
    assert store.customer_outcomes(bad.campaign_id, "sent", 0, 100) == []
    rows = store.customer_outcomes(bad.campaign_id, "undelivered", 0, 100)
    assert [r.customer_id for r in rows] == ["c0", "c1", "c2", "c3"]
    assert {r.reason for r in rows} == {"delivery_failed"}
    assert all(r.error and "channel 506" in r.error and "HTTP 500" in r.error for r in rows)
    assert all("504" not in (r.error or "") for r in rows)  # the file channel delivered

    got = api.get(f"/api/v1/campaigns/{bad.campaign_id}").json()
    assert got["counts"]["sent"] == 0 and got["counts"]["undelivered"] == 4
    page = api.get(
        f"/api/v1/campaigns/{bad.campaign_id}/customers", params={"outcome": "undelivered"}
    ).json()
    assert [c["customer_id"] for c in page["customers"]] == ["c0", "c1", "c2", "c3"]
    assert {c["reason"] for c in page["customers"]} == {"delivery_failed"}
    assert "HTTP 500" in page["customers"][0]["error"]
    sent_page = api.get(
        f"/api/v1/campaigns/{bad.campaign_id}/customers", params={"outcome": "sent"}
    ).json()
    assert sent_page["customers"] == []

    # the campaign whose only channel delivered is reported as before
    assert store.counts(ok.campaign_id) == {
        "target": 3,
        "approved": 0,
        "sent": 3,
        "undelivered": 0,
        "excluded": 0,
    }
    assert len(store.customer_outcomes(ok.campaign_id, "sent", 0, 100)) == 3
    assert store.customer_outcomes(ok.campaign_id, "undelivered", 0, 100) == []
