"""The wire-compatible calls over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from clearance.domain import Campaign, ChannelRef, State
from tests.helpers import new_campaign

APPROVE = "/current/integrations/UpdateCustomerPromotionStatus"
PROCESSED = "/current/customers/GetProcessedCampaignCustomers"


def approve(api, campaign_id, entries, **kw):
    return api.post(
        APPROVE,
        json={
            "TimeStamp": "2026-01-01 12:00:00",
            "CampaignID": campaign_id,
            "PromosUpdated": [{"CustomerID": c, "Status": s} for c, s in entries],
        },
        **kw,
    )


def test_every_call_needs_a_key(anon, integrations_key):
    anonymous = anon
    r = anonymous.get("/current/general/GetRegisteredEventListeners")
    assert r.status_code == 401 and r.json()["status"] == 401
    r = anonymous.get("/current/general/GetRegisteredEventListeners", headers={"X-API-KEY": "no"})
    assert r.status_code == 401
    r = anonymous.get("/api/v1/campaigns/1", headers={"X-API-KEY": integrations_key})
    assert r.status_code == 403
    r = anonymous.get(
        "/current/general/GetRegisteredEventListeners", headers={"X-API-KEY": integrations_key}
    )
    assert r.status_code == 200
    assert anonymous.get("/healthz").status_code == 200


def test_legacy_login_token_expires_after_twenty_idle_minutes(anon, store, clock):
    store.upsert_user("ops", "s3cret", "admin", 0)
    anonymous = anon
    assert (
        anonymous.post(
            "/current/general/login", json={"Username": "ops", "Password": "nope"}
        ).status_code
        == 401
    )
    r = anonymous.post("/current/general/login", json={"Username": "ops", "Password": "s3cret"})
    assert r.status_code == 200
    token = r.json()
    assert isinstance(token, str)
    h = {"Authorization-Token": token}
    assert anonymous.get("/current/general/GetRegisteredEventListeners", headers=h).is_success
    clock.advance(minutes=19)
    assert anonymous.get("/current/general/GetRegisteredEventListeners", headers=h).is_success
    clock.advance(minutes=19)  # 19 minutes after the last use: still valid
    assert anonymous.get("/current/general/GetRegisteredEventListeners", headers=h).is_success
    clock.advance(minutes=21)
    r = anonymous.get("/current/general/GetRegisteredEventListeners", headers=h)
    assert r.status_code == 403
    assert "Authorization-Token expired" in r.text


def test_listener_registration(api):
    r = api.post(
        "/current/general/RegisterEventListener",
        json={"EventTypeID": 5, "ListenerURL": "http%3A%2F%2F127.0.0.1%3A8000%2Fce"},
    )
    assert r.status_code == 200
    r = api.post(
        "/current/GENERAL/registerEVENTlistener",
        json={"EventTypeID": 13, "ListenerURL": "https://ops.example/13", "ChannelID": 504},
    )
    assert r.status_code == 200
    assert api.get("/current/general/GetRegisteredEventListeners").json() == [
        {"EventTypeID": 5, "ListenerURL": "http://127.0.0.1:8000/ce", "ChannelID": None},
        {"EventTypeID": 13, "ListenerURL": "https://ops.example/13", "ChannelID": 504},
    ]
    for bad, field in [
        ({"EventTypeID": 5, "ListenerURL": "ftp://x/y"}, "ListenerURL"),
        ({"EventTypeID": 5, "ListenerURL": "javascript:alert(1)"}, "ListenerURL"),
        ({"EventTypeID": 5, "ListenerURL": "http://x/y", "ChannelID": 504}, "ChannelID"),
        ({"EventTypeID": "five", "ListenerURL": "http://x/y"}, "EventTypeID"),
        ({"EventTypeID": 99, "ListenerURL": "http://x/y"}, "EventTypeID"),
        ({"ListenerURL": "http://x/y"}, "EventTypeID"),
    ]:
        r = api.post("/current/general/RegisterEventListener", json=bad)
        assert r.status_code == 400, bad
        assert r.json()["field"] == field
    assert (
        api.post(
            "/current/general/UnregisterEventListener", json={"EventTypeID": 13, "ChannelID": 504}
        ).status_code
        == 200
    )
    assert (
        api.post(
            "/current/general/UnregisterEventListener", json={"EventTypeID": 13, "ChannelID": 504}
        ).status_code
        == 404
    )
    assert len(api.get("/current/general/GetRegisteredEventListeners").json()) == 1


def test_processed_customers_paging_and_attributes(api, engine, worker, store):
    camp = Campaign(
        0,
        "attrs",
        engine.clock.now() + timedelta(hours=2),
        3,
        True,
        9,
        "a",
        ["A", "B"],
        [ChannelRef(504)],
        State.SCHEDULED,
    )
    target = [(f"c{i}", f'{{"Country": "UK", "Alias": "n{i}"}}') for i in range(25)]
    c = engine.create_campaign(camp, target)
    r = api.get(PROCESSED, params={"CampaignID": c.campaign_id})
    assert r.status_code == 409  # not processed yet
    worker.drain()
    rows = api.get(PROCESSED, params={"CampaignID": c.campaign_id}).json()
    assert [r["CustomerID"] for r in rows] == [f"c{i}" for i in range(25)]
    assert rows[0] == {"CustomerID": "c0", "ActionID": 9, "PromoCode": "A"}
    assert rows[1]["PromoCode"] == "B"
    page = api.get(
        PROCESSED,
        params={
            "CampaignID": c.campaign_id,
            "$top": 10,
            "$skip": 20,
            "CustomerAttributes": "Alias,Country,Missing",
            "CustomerAttributesDelimiter": ",",
        },
    ).json()
    assert [p["CustomerID"] for p in page] == ["c20", "c21", "c22", "c23", "c24"]
    assert page[0]["CustomerAttributes"] == ["n20", "UK", None]
    for params in [
        {"$top": 0},
        {"$top": 100_001},
        {"$top": -1},
        {"$skip": -5},
        {"$top": "ten"},
        {"CustomerAttributesDelimiter": "|", "CustomerAttributes": "a"},
    ]:
        r = api.get(PROCESSED, params={"CampaignID": c.campaign_id, **params})
        assert r.status_code == 400, params
    assert api.get(PROCESSED, params={"CampaignID": 424242}).status_code == 404
    assert api.get(PROCESSED).json()["field"] == "CampaignID"


def test_list_calls_return_ten_thousand_rows_without_top(api, engine, worker):
    c = new_campaign(engine, 10_005)
    worker.drain()
    assert len(api.get(PROCESSED, params={"CampaignID": c.campaign_id}).json()) == 10_000


def test_update_promotion_status_rules(api, engine, worker, store, clock):
    c = new_campaign(engine, 20)
    plain = new_campaign(engine, 2, conditional=False)
    worker.drain()
    too_many = approve(api, c.campaign_id, [(f"c{i % 20}", True) for i in range(10_001)])
    assert too_many.status_code == 400 and too_many.json()["field"] == "PromosUpdated"
    assert approve(api, 9999, [("c1", True)]).status_code == 404
    assert approve(api, plain.campaign_id, [("c1", True)]).status_code == 409
    bad_entry = api.post(
        APPROVE,
        json={
            "CampaignID": c.campaign_id,
            "PromosUpdated": [
                {"CustomerID": "c1", "Status": True},
                {"CustomerID": "c2", "Status": "true"},
            ],
        },
    )
    assert bad_entry.status_code == 400
    assert bad_entry.json()["field"] == "PromosUpdated[1].Status"
    long_id = approve(api, c.campaign_id, [("c1", True), ("x" * 500, True)])
    assert long_id.status_code == 400 and "CustomerID" in long_id.json()["field"]
    # control characters arrive escaped (\u0001, \n) or as a raw DEL, which JSON allows
    for control in ["c\x01x", "c\nx", "c\x7fx"]:
        r = approve(api, c.campaign_id, [("c1", True), (control, True)])
        assert r.status_code == 400, repr(control)
        assert r.json()["field"] == "PromosUpdated[1].CustomerID"
    raw_del = b'{"CampaignID": %d, "PromosUpdated": [{"CustomerID": "c\x7fx", "Status": true}]}'
    r = api.post(
        APPROVE, content=raw_del % c.campaign_id, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["field"] == "PromosUpdated[0].CustomerID"
    for raw in [
        b"{not json",
        b"[]",
        b'{"CampaignID": "abc", "PromosUpdated": []}',
        b'{"CampaignID": 1}',
        b"",
    ]:
        r = api.post(APPROVE, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, raw
        assert r.json()["status"] == 400
    huge = api.post(
        APPROVE, content=b'{"CampaignID": 1, "PromosUpdated": ["' + b"x" * (9 << 20) + b'"]}'
    )
    assert huge.status_code == 413
    assert store.counts(c.campaign_id)["approved"] == 0  # nothing above applied anything

    r = approve(api, c.campaign_id, [("c1", True), ("stranger", True), ("c2", True)])
    assert r.status_code == 200
    assert r.json() == {"Applied": 2, "NotInTargetGroup": ["stranger"]}
    assert approve(api, c.campaign_id, [("c1", True), ("c2", True)]).status_code == 200
    assert approve(api, c.campaign_id, [("c2", False)]).status_code == 200
    assert store.counts(c.campaign_id)["approved"] == 1

    clock.advance(minutes=90)
    late = approve(api, c.campaign_id, [("c3", True)])
    assert late.status_code == 409
    assert late.json()["ClearanceRequiredBy"] == "2026-01-01 13:30:00"
    assert "2026-01-01 13:30:00" in late.json()["message"]
    worker.drain()
    clock.advance(minutes=30)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTED

    details = api.get(
        "/current/customers/GetCustomerSendDetailsByCampaign",
        params={"CampaignID": c.campaign_id, "IncludeTemplateIDs": "true"},
    ).json()
    assert details == [
        {
            "CustomerID": "c1",
            "ChannelID": 504,
            "ScheduledTime": "2026-01-01 14:00:00",
            "SendID": f"{c.campaign_id}-504-2",
            "TemplateID": 5040,
        }
    ]
    no_templates = api.get(
        "/current/customers/GetCustomerSendDetailsByCampaign", params={"CampaignID": c.campaign_id}
    ).json()
    assert "TemplateID" not in no_templates[0]


def test_canceled_campaign_customers(api, engine, worker):
    c = new_campaign(engine, 3)
    worker.drain()
    r = api.get(
        "/current/customers/GetCanceledCampaignCustomers", params={"CampaignID": c.campaign_id}
    )
    assert r.status_code == 409
    assert api.post(f"/api/v1/campaigns/{c.campaign_id}/cancel").json()["state"] == "canceled"
    rows = api.get(
        "/current/customers/GetCanceledCampaignCustomers", params={"CampaignID": c.campaign_id}
    ).json()
    assert rows == [
        {"CustomerID": f"c{i}", "ActionID": 7, "PromoCode": ["P1", "P2"][i % 2]} for i in range(3)
    ]


def test_promotions_registry(api):
    assert (
        api.post(
            "/current/integrations/AddPromotions",
            json=[
                {"PromoCode": "WELCOME", "PromotionName": "Welcome bonus"},
                {"PromoCode": "RELOAD", "PromotionName": "Reload"},
            ],
        ).status_code
        == 200
    )
    assert (
        api.post(
            "/current/integrations/AddPromotions",
            json=[{"PromoCode": "WELCOME", "PromotionName": "again"}],
        ).status_code
        == 409
    )
    assert (
        api.post(
            "/current/integrations/AddPromotions", json=[{"PromotionName": "no code"}]
        ).status_code
        == 400
    )
    assert api.get("/current/integrations/GetPromotions").json() == [
        {"PromoCode": "RELOAD", "PromotionName": "Reload"},
        {"PromoCode": "WELCOME", "PromotionName": "Welcome bonus"},
    ]
    assert (
        api.post(
            "/current/integrations/DeletePromotions", json=[{"PromoCode": "RELOAD"}]
        ).status_code
        == 200
    )
    assert [p["PromoCode"] for p in api.get("/current/integrations/GetPromotions").json()] == [
        "WELCOME"
    ]


def test_unknown_calls_are_404_json(api):
    r = api.get("/current/general/NoSuchThing")
    assert r.status_code == 404 and r.json()["status"] == 404


def test_send_details_page_by_skip_across_chunks_and_channels(api, engine, store, clock, settings):
    from clearance.scheduled.worker import Worker

    worker = Worker(store, settings.with_(execution_chunk=4), clock)
    c = new_campaign(engine, 11, conditional=False, channels=(504, 505))
    worker.drain()
    clock.advance(hours=2)
    worker.drain()
    url = "/current/customers/GetCustomerSendDetailsByCampaign"
    everything = api.get(url, params={"CampaignID": c.campaign_id}).json()
    assert [(s["CustomerID"], s["ChannelID"]) for s in everything] == [
        (f"c{i}", ch) for i in range(11) for ch in (504, 505)
    ]
    pages = [
        api.get(url, params={"CampaignID": c.campaign_id, "$top": 5, "$skip": skip}).json()
        for skip in range(0, 22, 5)
    ]
    assert [s for page in pages for s in page] == everything
