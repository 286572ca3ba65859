"""Who approved: each accepted approval call is recorded with its key and the time its entries
were stored with, so "Why not?" names the key behind a customer's answer (V1 and V2 campaigns,
SQLite and PostgreSQL, over real HTTP). A refused call records nothing."""

from __future__ import annotations

from tests.integration.test_send_groups_api import APPROVE, BODY, approve


def test_the_key_behind_each_answer_is_recorded(api, worker, clock, store):
    v1 = {**BODY, "campaign_id": 810, "target_group": [{"customer_id": "a"}, {"customer_id": "b"}]}
    assert api.post("/api/v1/campaigns", json=v1).status_code == 201
    assert api.post("/api/v1/campaigns", json=BODY).status_code == 201  # two send groups
    worker.drain()
    other_id, other = store.create_api_key("integrations", "promo-system", 0)
    for campaign_id, key in ((810, None), (800, other)):
        headers = {} if key is None else {"X-API-KEY": key}
        r = api.post(
            APPROVE,
            headers=headers,
            json={
                "TimeStamp": "2026-01-01 12:00:00",
                "CampaignID": campaign_id,
                "PromosUpdated": [{"CustomerID": "a", "Status": True}],
            },
        )
        assert r.status_code == 200, r.text
        clock.advance(seconds=1)
    found = {}
    for campaign_id in (810, 800):
        (m,) = [m for m in store.customer_memberships("a") if m.campaign_id == campaign_id]
        assert m.approved_at_ms is not None
        found[campaign_id] = store.approvers(campaign_id, m.approved_at_ms)
    assert found[800] == [other_id]  # the key id: names may repeat, ids do not
    assert len(found[810]) == 1 and found[810] != [other_id]  # the admin key of the fixture
    # a call refused for the deadline stores no answer and records no approver
    clock.advance(minutes=150)
    worker.drain()
    before = store.approvers(800, 0)
    assert approve(api, [("a", False)]).status_code == 409
    assert store.approvers(800, 0) == before == []
