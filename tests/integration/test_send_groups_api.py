"""Send groups over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL: the native API
places customers in groups and shows them; the wire pages by group and refuses per entry."""

from __future__ import annotations

APPROVE = "/current/integrations/UpdateCustomerPromotionStatus"
PROCESSED = "/current/customers/GetProcessedCampaignCustomers"
SENDS = "/current/customers/GetCustomerSendDetailsByCampaign"
# the fake clock starts at 2026-01-01 12:00:00 UTC
BODY = {
    "campaign_id": 800,
    "name": "Two send times",
    "execute_at": "2026-01-01 15:00:00",
    "conditional": True,
    "action": {"id": 77, "name": "Reload", "promo_codes": ["R10", "R20"]},
    "channels": [
        {"id": 504, "name": "Email", "templates": [{"id": 9}, {"id": 10}]},
        {"id": 505, "name": "SMS", "templates": [{"id": 20}]},
    ],
    "target_group": [
        {"customer_id": "a"},  # the campaign's time and first template
        {"customer_id": "b", "send_at": "2026-01-01 16:00:00", "template_id": 10},
        {"customer_id": "c", "send_at": "2026-01-01 16:00:00", "template_id": 10},
    ],
}
EARLY, LATE = "9@20260101T150000Z", "10@20260101T160000Z"


def approve(api, entries):
    return api.post(
        APPROVE,
        json={
            "TimeStamp": "2026-01-01 12:00:00",
            "CampaignID": 800,
            "PromosUpdated": [{"CustomerID": c, "Status": s} for c, s in entries],
        },
    )


def test_two_send_groups_over_the_wire(api, worker, clock, store):
    r = api.post("/api/v1/campaigns", json=BODY)
    assert r.status_code == 201, r.text
    bad = {**BODY, "campaign_id": 801, "target_group": [{"customer_id": "x", "template_id": 99}]}
    assert api.post("/api/v1/campaigns", json=bad).status_code == 400
    worker.drain()
    rows = api.get(PROCESSED, params={"CampaignID": 800}).json()
    assert rows == [
        {
            "CustomerID": "a",
            "ActionID": 77,
            "PromoCode": "R10",
            "SendGroupID": EARLY,
            "ScheduledTime": "2026-01-01 15:00:00",
        },
        {
            "CustomerID": "b",
            "ActionID": 77,
            "PromoCode": "R20",
            "SendGroupID": LATE,
            "ScheduledTime": "2026-01-01 16:00:00",
        },
        {
            "CustomerID": "c",
            "ActionID": 77,
            "PromoCode": "R10",
            "SendGroupID": LATE,
            "ScheduledTime": "2026-01-01 16:00:00",
        },
    ]
    late = api.get(PROCESSED, params={"CampaignID": 800, "SendGroupID": LATE, "$skip": 1}).json()
    assert [x["CustomerID"] for x in late] == ["c"]
    r = api.get(PROCESSED, params={"CampaignID": 800, "SendGroupID": "1@20260101T150000Z"})
    assert r.status_code == 404
    groups = api.get("/api/v1/campaigns/800/send-groups").json()
    assert [
        (g["send_group_id"], g["clearance_required_by"], g["seconds_left"]) for g in groups
    ] == [
        (EARLY, "2026-01-01 14:30:00", 9000),
        (LATE, "2026-01-01 15:30:00", 12600),
    ]

    assert approve(api, [("a", True), ("b", True)]).json() == {
        "Applied": 2,
        "NotInTargetGroup": [],
        "DeadlinePassed": [],
    }
    clock.advance(minutes=150)  # 14:30: the early group's deadline
    worker.drain()
    r = approve(api, [("a", False), ("c", True)])
    assert r.status_code == 200
    assert r.json() == {"Applied": 1, "NotInTargetGroup": [], "DeadlinePassed": ["a"]}
    r = approve(api, [("a", False)])
    assert r.status_code == 409
    assert r.json()["ClearanceRequiredBy"] == "2026-01-01 14:30:00"

    clock.advance(minutes=150)  # 17:00: both groups executed
    worker.drain()
    assert api.get("/api/v1/campaigns/800").json()["state"] == "executed"
    sends = api.get(SENDS, params={"CampaignID": 800, "IncludeTemplateIDs": "true"}).json()
    assert sorted(
        (s["CustomerID"], s["ChannelID"], s["TemplateID"], s["ScheduledTime"]) for s in sends
    ) == [
        ("a", 504, 9, "2026-01-01 15:00:00"),
        ("a", 505, 20, "2026-01-01 15:00:00"),
        ("b", 504, 10, "2026-01-01 16:00:00"),
        ("b", 505, 20, "2026-01-01 16:00:00"),
        ("c", 504, 10, "2026-01-01 16:00:00"),
        ("c", 505, 20, "2026-01-01 16:00:00"),
    ]
    assert [s["SendID"] for s in sends[:2]] == ["800-504-1", "800-505-1"]


def test_an_approval_naming_another_send_group_is_refused(api, worker, clock):
    """An entry approved for one send group (its SendGroupID) never applies to a customer of
    another: it is refused and named; the call's other entries apply."""
    assert api.post("/api/v1/campaigns", json=BODY).status_code == 201
    worker.drain()
    r = api.post(
        APPROVE,
        json={
            "TimeStamp": "2026-01-01 12:00:00",
            "CampaignID": 800,
            "PromosUpdated": [
                {"CustomerID": "a", "Status": True, "SendGroupID": LATE},  # a is EARLY's
                {"CustomerID": "b", "Status": True, "SendGroupID": LATE},
                {"CustomerID": "c", "Status": True},
            ],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "Applied": 2,
        "NotInTargetGroup": [],
        "DeadlinePassed": [],
        "SendGroupMismatch": ["a"],
    }
    whole = {"TimeStamp": "2026-01-01 12:00:00", "CampaignID": 800, "SendGroupID": EARLY}
    r = api.post(APPROVE, json={**whole, "PromosUpdated": [{"CustomerID": "b", "Status": True}]})
    assert r.json()["SendGroupMismatch"] == ["b"]
    groups = {
        g["send_group_id"]: g["approved"]
        for g in api.get("/api/v1/campaigns/800/send-groups").json()
    }
    assert groups == {EARLY: 0, LATE: 2}


def test_a_v1_campaign_refuses_an_approval_for_another_send_group(api, worker):
    v1 = {**BODY, "target_group": [{"customer_id": "a"}, {"customer_id": "b"}]}
    assert api.post("/api/v1/campaigns", json=v1).status_code == 201
    worker.drain()
    call = {"TimeStamp": "2026-01-01 12:00:00", "CampaignID": 800}
    entry = {"CustomerID": "a", "Status": True}
    r = api.post(APPROVE, json={**call, "PromosUpdated": [{**entry, "SendGroupID": LATE}]})
    assert r.status_code == 400, r.text
    r = api.post(APPROVE, json={**call, "PromosUpdated": [{**entry, "SendGroupID": EARLY}]})
    assert r.json() == {"Applied": 1, "NotInTargetGroup": []}


def test_a_send_at_after_the_campaigns_life_is_refused_saving_nothing(api):
    """A 1-day campaign at 15:00 cannot send a customer's promotion a year (or 8,000) later."""
    for k, when in enumerate(["2026-01-02 15:00:00", "2027-06-01 12:00:00", "9999-12-31 23:59:59"]):
        rows = [{"customer_id": "a"}, {"customer_id": "x", "send_at": when}]
        for conditional in (True, False):
            body = {
                **BODY,
                "campaign_id": 810 + k,
                "conditional": conditional,
                "target_group": rows,
            }
            r = api.post("/api/v1/campaigns", json=body)
            assert r.status_code == 400, r.text
            assert r.json()["field"] == "send_at"
            assert api.get(f"/api/v1/campaigns/{810 + k}").status_code == 404
    draft = {**BODY, "draft": True, "target_group": [{"customer_id": "a"}]}
    assert api.post("/api/v1/campaigns", json=draft).status_code == 201
    late = [{"customer_id": "q"}, {"customer_id": "z", "send_at": "2026-01-05 15:00:00"}]
    assert api.post("/api/v1/campaigns/800/target-group", json=late).status_code == 400
    assert api.get("/api/v1/campaigns/800").json()["counts"]["target"] == 1
    last = [{"customer_id": "z", "send_at": "2026-01-02 14:59:59"}]  # the life's last second
    assert api.post("/api/v1/campaigns/800/target-group", json=last).status_code == 200


def test_a_send_group_whose_deadline_passes_before_processing_is_refused(api, worker):
    """process_at 14:00 notifies the groups then: a group sent at 14:15 (deadline 13:45) would
    be processed past its deadline, its EventTypeID 5 already expired, its customers nobody."""
    rows = [{"customer_id": "a"}, {"customer_id": "x", "send_at": "2026-01-01 14:15:00"}]
    body = {**BODY, "process_at": "2026-01-01 14:00:00", "target_group": rows}
    r = api.post("/api/v1/campaigns", json=body)
    assert r.status_code == 400, r.text
    assert "before process_at" in r.json()["message"]
    assert api.get("/api/v1/campaigns/800").status_code == 404
    draft = {**body, "draft": True, "target_group": rows[:1]}
    assert api.post("/api/v1/campaigns", json=draft).status_code == 201
    assert api.post("/api/v1/campaigns/800/target-group", json=rows[1:]).status_code == 200
    assert api.post("/api/v1/campaigns/800/schedule").status_code == 400
    assert api.get("/api/v1/campaigns/800").json()["state"] == "draft"
    ok = [{"customer_id": "y", "send_at": "2026-01-01 14:30:01"}]  # deadline 14:00:01
    good = {**body, "campaign_id": 801, "target_group": ok}
    assert api.post("/api/v1/campaigns", json=good).status_code == 201


def test_a_v1_campaign_pages_by_its_one_send_group_byte_for_byte(api, worker):
    """The native API shows a V1 campaign as one group; the wire pages by that group's id
    exactly as without it, and refuses any other."""
    v1 = {**BODY, "target_group": [{"customer_id": "a"}, {"customer_id": "b"}]}
    assert api.post("/api/v1/campaigns", json=v1).status_code == 201
    worker.drain()
    [group] = api.get("/api/v1/campaigns/800/send-groups").json()
    assert group["send_group_id"] == EARLY
    plain = api.get(PROCESSED, params={"CampaignID": 800})
    by_group = api.get(PROCESSED, params={"CampaignID": 800, "SendGroupID": EARLY})
    assert by_group.status_code == 200, by_group.text
    assert by_group.content == plain.content
    assert b"SendGroupID" not in plain.content
    assert api.get(PROCESSED, params={"CampaignID": 800, "SendGroupID": LATE}).status_code == 404


def test_a_csv_upload_places_customers_by_its_send_at_and_template_id_columns(api, worker):
    """send_at and template_id columns are the customer's send group, not attributes."""
    draft = {**BODY, "draft": True, "target_group": [{"customer_id": "a"}]}
    assert api.post("/api/v1/campaigns", json=draft).status_code == 201
    csv_headers = {"content-type": "text/csv"}
    url = "/api/v1/campaigns/800/target-group"
    bad = "customer_id,send_at,template_id,tier\nq,,9,gold\nz,2026-01-01 16:00:00,99,gold\n"
    assert api.post(url, content=bad, headers=csv_headers).status_code == 400
    nan = "customer_id,template_id\nq,ten\n"
    assert api.post(url, content=nan, headers=csv_headers).status_code == 400
    assert api.get("/api/v1/campaigns/800").json()["counts"]["target"] == 1
    good = "customer_id,send_at,template_id,tier\nb,2026-01-01 16:00:00,10,gold\nc,,,silver\n"
    r = api.post(url, content=good, headers=csv_headers)
    assert r.status_code == 200, r.text
    assert api.post("/api/v1/campaigns/800/schedule").status_code == 200
    worker.drain()
    rows = api.get(PROCESSED, params={"CampaignID": 800, "CustomerAttributes": "tier"})
    assert [(x["CustomerID"], x["SendGroupID"], x["CustomerAttributes"]) for x in rows.json()] == [
        ("a", EARLY, [None]),
        ("b", LATE, ["gold"]),  # send_at and template_id are not attributes
        ("c", EARLY, ["silver"]),
    ]
