"""The native API (/api/v1) over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from clearance.domain import State

BODY = {
    "campaign_id": 700,
    "name": "Reload bonus",
    "execute_at": "2026-01-01 15:00:00",
    "duration_days": 2,
    "conditional": True,
    "action": {"id": 77, "name": "Reload", "promo_codes": ["R10"]},
    "channels": [{"id": 504, "name": "Email", "templates": [{"id": 9, "name": "t"}]}],
}


def test_create_inline_then_follow_it_to_execution(api, worker, clock, store):
    r = api.post(
        "/api/v1/campaigns",
        json={
            **BODY,
            "target_group": [
                {"customer_id": "a", "attributes": {"Country": "UK"}},
                {"customer_id": "b"},
                {"customer_id": "c"},
            ],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "scheduled"
    worker.drain()
    got = api.get("/api/v1/campaigns/700").json()
    assert got["state"] == "awaiting_clearance"
    assert got["clearance_required_by"] == "2026-01-01 14:30:00"
    assert got["counts"] == {"target": 3, "approved": 0, "sent": 0, "undelivered": 0, "excluded": 0}
    api.post(
        "/current/integrations/UpdateCustomerPromotionStatus",
        json={"CampaignID": 700, "PromosUpdated": [{"CustomerID": "a", "Status": True}]},
    )
    approved = api.get("/api/v1/campaigns/700/customers", params={"outcome": "approved"}).json()
    assert [c["customer_id"] for c in approved["customers"]] == ["a"]
    clock.advance(hours=3)
    worker.drain()
    got = api.get("/api/v1/campaigns/700").json()
    assert got["state"] == "executed"
    assert got["counts"] == {"target": 3, "approved": 1, "sent": 1, "undelivered": 0, "excluded": 2}
    sent = api.get("/api/v1/campaigns/700/customers", params={"outcome": "sent"}).json()
    assert [(c["customer_id"], c["reason"]) for c in sent["customers"]] == [("a", None)]
    excluded = api.get(
        "/api/v1/campaigns/700/customers", params={"outcome": "excluded", "limit": 1}
    ).json()
    assert excluded["customers"] == [
        {"customer_id": "b", "outcome": "excluded", "reason": "not_approved", "approved_at": None}
    ]
    rest = api.get(
        "/api/v1/campaigns/700/customers",
        params={"outcome": "excluded", "after": excluded["next_after"]},
    ).json()
    assert [c["customer_id"] for c in rest["customers"]] == ["c"]
    assert rest["next_after"] is None


def test_draft_uploads_in_three_formats_then_schedule(api, worker, store):
    r = api.post("/api/v1/campaigns", json={**BODY, "draft": True})
    assert r.status_code == 201 and r.json()["state"] == "draft"
    up = "/api/v1/campaigns/700/target-group"
    assert api.post(up, json=[{"customer_id": "j1", "attributes": {"Tier": "gold"}}]).json() == {
        "added": 1,
        "target_count": 1,
    }
    nd = b'{"customer_id": "n1"}\n{"customer_id": "n2", "attributes": {"Tier": "x"}}\n'
    assert (
        api.post(up, content=nd, headers={"content-type": "application/x-ndjson"}).json()[
            "target_count"
        ]
        == 3
    )
    csv = b"customer_id,Tier,Country\nv1,silver,UK\nv2,bronze,IE\n"
    assert (
        api.post(up, content=csv, headers={"content-type": "text/csv"}).json()["target_count"] == 5
    )
    dup = api.post(up, json=[{"customer_id": "z9"}, {"customer_id": "j1"}])
    assert dup.status_code == 400
    twice = api.post(up, json=[{"customer_id": "z8"}, {"customer_id": "z8"}])
    assert twice.status_code == 400
    bad_line = api.post(
        up,
        content=b'{"customer_id": "ok"}\n{broken\n',
        headers={"content-type": "application/x-ndjson"},
    )
    assert bad_line.status_code == 400 and bad_line.json()["field"] == "line 2"
    no_col = api.post(up, content=b"id\nx\n", headers={"content-type": "text/csv"})
    assert no_col.status_code == 400
    assert api.get("/api/v1/campaigns/700").json()["counts"]["target"] == 5  # nothing half-added
    assert api.post("/api/v1/campaigns/700/schedule").json()["state"] == "scheduled"
    assert api.post(up, json=[{"customer_id": "late"}]).status_code == 409
    assert api.post("/api/v1/campaigns/700/schedule").status_code == 409
    worker.drain()
    rows = api.get(
        "/current/customers/GetProcessedCampaignCustomers",
        params={"CampaignID": 700, "CustomerAttributes": "Tier;Country"},
    ).json()
    assert [r["CustomerAttributes"] for r in rows] == [
        ["gold", None],
        [None, None],
        ["x", None],
        ["silver", "UK"],
        ["bronze", "IE"],
    ]


def test_bad_campaign_bodies_are_400_naming_the_field(api, store):
    cases = [
        ({**BODY, "conditional": "yes"}, "conditional"),
        ({**BODY, "execute_at": "next tuesday", "target_group": []}, "execute_at"),
        ({k: v for k, v in BODY.items() if k != "name"}, "name"),
        ({**BODY, "channels": []}, "channels"),
        ({**BODY, "campaign_id": -3}, "campaign_id"),
        ({**BODY, "unknown": 1}, "unknown"),
        ({**BODY, "target_group": [{"customer_id": "x" * 201}]}, "target_group.0.customer_id"),
        ({**BODY, "target_group": [{"customer_id": "a"}, {"customer_id": "a"}]}, "customer_id"),
        (BODY, "target_group"),  # neither a target group nor draft
        ({**BODY, "execute_at": "2026-01-01 12:10:00", "target_group": []}, "execute_at"),
    ]
    for body, field in cases:
        r = api.post("/api/v1/campaigns", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["field"] == field, r.json()
    r = api.post(
        "/api/v1/campaigns", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert api.get("/api/v1/campaigns/700").status_code == 404  # nothing was stored
    ok = api.post("/api/v1/campaigns", json={**BODY, "target_group": []})
    assert ok.status_code == 201
    assert api.post("/api/v1/campaigns", json={**BODY, "target_group": []}).status_code == 409


def test_iso_times_with_offset_and_site_time_zone(api):
    r = api.post(
        "/api/v1/campaigns",
        json={**BODY, "execute_at": "2026-01-01T17:00:00+02:00", "target_group": []},
    )
    assert r.json()["execute_at"] == "2026-01-01 15:00:00"


def test_channel_lead_and_delivery(api, worker, store, tmp_path):
    r = api.put(
        "/api/v1/channels/504",
        json={
            "name": "Email",
            "clearance_lead_seconds": 3600,
            "delivery": {"type": "file", "directory": "mail"},
        },
    )
    assert r.status_code == 200
    for outside in (str(tmp_path / "mail"), "../mail", "a/../../b"):
        r = api.put("/api/v1/channels/504", json={"delivery": {"directory": outside}})
        assert r.status_code == 400, outside
        assert r.json()["field"] == "delivery.directory"
    assert (
        api.put("/api/v1/channels/505", json={"delivery": {"type": "webhook"}}).status_code == 400
    )
    assert (
        api.put(
            "/api/v1/channels/505",
            json={"delivery": {"type": "webhook", "url": "file:///etc/passwd"}},
        ).status_code
        == 400
    )
    assert api.put("/api/v1/channels/505", json={"clearance_lead_seconds": -1}).status_code == 400
    api.post("/api/v1/campaigns", json={**BODY, "target_group": [{"customer_id": "a"}]})
    worker.drain()
    assert api.get("/api/v1/campaigns/700").json()["clearance_required_by"] == "2026-01-01 14:00:00"


def test_webhook_channel_delivers_signed_batches(api, worker, clock, store, listener, engine):
    api.put(
        "/api/v1/channels/506",
        json={"name": "Push", "delivery": {"type": "webhook", "url": listener.url}},
    )
    api.post(
        "/api/v1/campaigns",
        json={
            **BODY,
            "conditional": False,
            "channels": [{"id": 506}],
            "target_group": [{"customer_id": "a"}, {"customer_id": "b"}],
        },
    )
    worker.drain()
    clock.advance(hours=3)
    worker.drain()
    [batch] = listener.received
    assert batch["body"]["ChannelID"] == 506
    assert [s["CustomerID"] for s in batch["body"]["Sends"]] == ["a", "b"]
    assert batch["headers"]["webhook-id"] == "batch_700_506_1"
    assert api.get("/api/v1/campaigns/700").json()["state"] == State.EXECUTED


def test_webhook_channel_down_retries_then_delivers_once(api, worker, clock, listener):
    listener.status = 503
    api.put("/api/v1/channels/506", json={"delivery": {"type": "webhook", "url": listener.url}})
    api.post(
        "/api/v1/campaigns",
        json={
            **BODY,
            "conditional": False,
            "channels": [{"id": 506}],
            "target_group": [{"customer_id": "a"}],
        },
    )
    worker.drain()
    clock.advance(hours=3)
    worker.drain()
    got = api.get("/api/v1/campaigns/700").json()
    assert got["state"] == "executing" and "503" in got["last_error"]
    listener.status = 200
    clock.advance(seconds=10)
    worker.drain()
    assert api.get("/api/v1/campaigns/700").json()["state"] == "executed"
    assert {r["headers"]["webhook-id"] for r in listener.received} == {"batch_700_506_1"}
    assert len([r for r in listener.received]) == 2


def test_notifications_and_attempts_are_visible(api, worker, listener, store):
    store.register_listener(5, None, listener.url, 0)
    api.post("/api/v1/campaigns", json={**BODY, "target_group": [{"customer_id": "a"}]})
    worker.drain()
    [note] = api.get("/api/v1/campaigns/700/notifications").json()
    assert note["state"] == "delivered" and note["event_type_id"] == 5
    assert note["attempt_log"][0]["status_code"] == 200


def test_openapi_document_lists_the_native_api(api, anon):
    assert anon.get("/openapi.json").status_code == 401
    doc = api.get("/openapi.json").json()
    for path in [
        "/api/v1/campaigns",
        "/api/v1/campaigns/{campaign_id}",
        "/api/v1/campaigns/{campaign_id}/customers",
        "/api/v1/channels/{channel_id}",
        "/api/v1/campaigns/{campaign_id}/cancel",
    ]:
        assert path in doc["paths"]
