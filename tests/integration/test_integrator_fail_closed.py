"""The kit's fail-closed rules end to end: the real engine notifies the kit's listener, which
refuses customers whose data is missing or odd, and only explicit values are sent."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from clearance.integrator import (
    CallableCustomers,
    Client,
    GatewayApp,
    Listener,
    Rules,
    rules_decide,
    rules_review,
)
from clearance.integrator.service import KitConfig, build
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


# --- review fixes: the kit's gateway demands the engine's signature ------------------------------

GW_SECRET = "whsec_" + base64.b64encode(b"kit-gateway-secret-0123456789ab").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"kit-gateway-old-secret-01234567").decode()


def _gateway_body(user_id: str) -> bytes:
    return orjson.dumps({"user": {"user_id": user_id, "is_visitor": False}, "campaign": {}})


def _signed(secret: str, body: bytes, msg_id: str, when: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
    }


def test_kit_gateway_refuses_unsigned_forged_and_stale_requests(api, store, clock):
    data = CallableCustomers(lambda ids: {"ok-1": {"self_excluded": False}})
    rules = Rules.from_dict({"rule": [{"name": "self-exclusion", "type": "not_self_excluded"}]})
    gateway = GatewayApp(rules_decide(rules, data), secret=f"{GW_SECRET} {OLD_SECRET}", clock=clock)
    server = AsgiServer(gateway.app)
    try:
        body = _gateway_body("ok-1")
        unsigned = httpx.post(server.url + "/", content=body)
        assert unsigned.status_code == 401 and unsigned.json()["allowed"] is False
        forged = _signed("whsec_" + base64.b64encode(b"x" * 32).decode(), body, "m1", clock.now())
        answer = httpx.post(server.url + "/", content=body, headers=forged)
        assert answer.status_code == 401 and answer.json()["allowed"] is False
        stale = _signed(GW_SECRET, body, "m2", clock.now() - timedelta(minutes=10))
        answer = httpx.post(server.url + "/", content=body, headers=stale)
        assert answer.status_code == 401 and answer.json()["allowed"] is False
        tampered = _signed(GW_SECRET, body, "m3", clock.now())
        answer = httpx.post(server.url + "/", content=_gateway_body("ok-2"), headers=tampered)
        assert answer.status_code == 401 and answer.json()["allowed"] is False
        for n, secret in enumerate((GW_SECRET, OLD_SECRET)):  # either secret while rotating
            good = _signed(secret, body, f"m-good-{n}", clock.now())
            answer = httpx.post(server.url + "/", content=body, headers=good)
            assert answer.status_code == 200 and answer.json() == {
                "user_id": "ok-1",
                "allowed": True,
            }
        assert httpx.get(server.url + "/stats").json()["unauthenticated"] == 4

        # the engine itself, given the secret, is answered: its signature is what the kit checks
        api.post(
            "/api/v1/triggered-campaigns",
            json={
                "id": "K-SIG",
                "action": {"id": 1, "channels": [{"id": 506}]},
                "trigger": {"event": "deposit"},
            },
        )
        api.put(
            "/triggered_conditional_execution_gateway",
            json={"url": server.url + "/", "timeout_ms": 1000, "secret": GW_SECRET},
        ).raise_for_status()
        outcomes = {}
        for user in ("ok-1", "no-record"):
            [m] = api.post("/api/v1/events", json={"customer_id": user, "event": "deposit"}).json()[
                "matched"
            ]
            outcomes[user] = (m["outcome"], m["sent"])
        assert outcomes == {"ok-1": ("allowed", True), "no-record": ("denied", False)}
    finally:
        server.stop()


def test_kit_service_wires_the_secret_into_its_gateway():
    rules = Rules.from_dict({"rule": [{"name": "self-exclusion", "type": "not_self_excluded"}]})
    data = CallableCustomers(lambda ids: {"C-2": {"self_excluded": False}})
    app, _listener, gateway = build(
        KitConfig("http://engine.invalid", "key", rules, data, GW_SECRET)
    )
    assert gateway.verifier is not None

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as c:
            body = _gateway_body("C-2")
            unsigned = await c.post("/gateway/", content=body)
            good = await c.post(
                "/gateway/", content=body, headers=_signed(GW_SECRET, body, "m", datetime.now(UTC))
            )
        return unsigned, good

    unsigned, good = asyncio.run(run())
    assert unsigned.status_code == 401 and unsigned.json()["allowed"] is False
    assert good.status_code == 200 and good.json()["allowed"] is True


def test_client_sends_a_rotation_as_secret_and_previous_secret(api, admin_key, store):
    async def run():
        async with Client(str(api.base_url), api_key=admin_key) as client:
            return await client.set_gateway(
                "http://127.0.0.1:9/", 1000, secret=f"{GW_SECRET} {OLD_SECRET}"
            )

    result = asyncio.run(run())  # the engine refused the whole "new old" string as one secret
    assert result["secret"] and result["previous_secret"]
    saved = store.get_gateway()
    assert saved is not None and saved.secret == f"{GW_SECRET} {OLD_SECRET}"  # new first
