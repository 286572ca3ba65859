"""The kit's fail-closed rules end to end: the real engine notifies the kit's listener, which
refuses customers whose data is missing or odd, and only explicit values are sent."""

from __future__ import annotations

import time

import httpx

from clearance.integrator import CallableCustomers, Client, Listener, Rules, rules_review
from tests.conftest import AsgiServer
from tests.helpers import new_campaign

RULES = {
    "rule": [
        {"name": "minimum deposit", "type": "min_deposit", "min": 20},
        {"name": "blocked countries", "type": "country_deny", "values": ["MT"]},
        {"name": "self-exclusion", "type": "not_self_excluded"},
    ]
}
OK = {"deposit": 50, "country": "UK", "self_excluded": "no"}
DATA = {
    "c0": OK,
    "c1": {**OK, "self_excluded": False},
    "c2": {**OK, "self_excluded": "Yes"},
    "c3": {**OK, "self_excluded": "on"},
    "c4": {**OK, "self_excluded": 2},
    "c5": {k: v for k, v in OK.items() if k != "self_excluded"},
    "c6": {k: v for k, v in OK.items() if k != "country"},
    "c7": {**OK, "country": " mt "},
    "c8": {**OK, "deposit": float("inf")},
    "c9": {**OK, "self_excluded": ""},
    # c10 and c11 have no record at all
}


def test_listener_sends_only_to_customers_whose_data_says_yes(api, engine, worker, clock, store):
    review = rules_review(
        Rules.from_dict(RULES),
        CallableCustomers(lambda ids: {i: DATA[i] for i in ids if i in DATA}),
    )
    listener = Listener(
        Client(str(api.base_url), api_key=api.headers["X-API-KEY"]), review, clock=clock
    )
    server = AsgiServer(listener.app)
    try:
        store.register_listener(5, None, server.url + "/", 0)
        c = new_campaign(engine, 12)
        worker.drain()
        deadline = time.monotonic() + 15
        report: dict = {}
        while time.monotonic() < deadline:
            r = httpx.get(f"{server.url}/reports/{c.campaign_id}")
            if r.status_code == 200 and (report := r.json())["state"] != "running":
                break
            time.sleep(0.05)
        assert report.get("state") == "done", report
        assert (report["approved"], report["refused"]) == (2, 10)
        reasons = {r["customer_id"]: r["reason"] for r in report["refusals"]}
        assert reasons["c5"] == "self-exclusion: field self_excluded is missing"
        assert reasons["c6"] == "blocked countries: field country is missing"
        assert reasons["c7"] == "blocked countries: field country is ' mt ', which is denied"
        assert reasons["c9"] == "self-exclusion: field self_excluded is empty"
        assert reasons["c10"] == reasons["c11"] == "no customer data"
        for cid in ("c2", "c3", "c4"):
            assert reasons[cid].startswith("self-exclusion: "), reasons[cid]
        clock.advance(hours=2)
        worker.drain()
        sent = {o.customer_id for o in store.customer_outcomes(c.campaign_id, "sent", 0, 100)}
        assert sent == {"c0", "c1"}
    finally:
        server.stop()
