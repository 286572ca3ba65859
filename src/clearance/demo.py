"""`clearance demo`: the whole scheduled flow on one machine, over real HTTP, in about 15 seconds.

An engine on SQLite, a listener (the operator's side) that applies a small compliance rule, a
conditional campaign, execution, and a summary of who got it and who did not, and why.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import uvicorn

from clearance.api import create_app
from clearance.clock import SystemClock
from clearance.config import Settings
from clearance.domain import format_wire_time, parse_time
from clearance.engine import Engine
from clearance.scheduler import Worker
from clearance.store import open_store

CUSTOMERS = [
    ("C-1001", "UK", 150, "active"),
    ("C-1002", "IE", 40, "active"),
    ("C-1003", "DE", 500, "active"),
    ("C-1004", "UK", 5, "active"),
    ("C-1005", "UK", 90, "self_excluded"),
    ("C-1006", "IE", 220, "active"),
    ("C-1007", "UK", 75, "active"),
    ("C-1008", "FR", 60, "active"),
    ("C-1009", "IE", 30, "active"),
    ("C-1010", "UK", 310, "active"),
]
LATE = "C-1009"  # the listener's "slow" customer: its approval arrives after the deadline


def review(country: str, deposit: float, status: str) -> tuple[bool, str]:
    """The operator's compliance rule, as the demo listener applies it."""
    if status != "active":
        return False, f"account {status}"
    if country not in ("UK", "IE"):
        return False, f"country {country} not allowed"
    if deposit < 20:
        return False, f"deposit {deposit} below 20"
    return True, "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoListener:
    """A real HTTP listener on loopback playing the operator's promotion/compliance system."""

    def __init__(self, engine_url: str, key: str, tz: ZoneInfo) -> None:
        self.engine_url = engine_url
        self.tz = tz
        self.key = key
        self.log: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
                self.send_response(200)
                self.end_headers()
                if body.get("EventTypeID") == 5:
                    threading.Thread(
                        target=listener.on_clearance_required, args=(body,), daemon=True
                    ).start()
                else:
                    listener.say(
                        f"listener: event {body['EventTypeID']} for campaign "
                        f"{body['CampaignID']}"
                        + (f" channel {body['ChannelID']}" if "ChannelID" in body else "")
                    )

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def say(self, line: str) -> None:
        print(f"  {line}", flush=True)

    def on_clearance_required(self, note: dict[str, Any]) -> None:
        cid, deadline = note["CampaignID"], note["ClearanceRequiredBy"]
        self.say(f"listener: EventTypeID 5 for campaign {cid}, clearance required by {deadline}")
        headers = {"X-API-KEY": self.key}
        with httpx.Client(base_url=self.engine_url, headers=headers, timeout=5) as http:
            customers = http.get(
                "/current/customers/GetProcessedCampaignCustomers",
                params={
                    "CampaignID": cid,
                    "$top": 100,
                    "CustomerAttributes": "Country;Deposit;Status",
                },
            ).json()
            self.say(f"listener: pulled {len(customers)} customers; reviewing")
            decisions, late = [], []
            for c in customers:
                country, deposit, status = c["CustomerAttributes"]
                ok, why = review(country, float(deposit), status)
                if c["CustomerID"] == LATE and ok:
                    late.append(c["CustomerID"])
                    continue
                decisions.append({"CustomerID": c["CustomerID"], "Status": ok})
                if not ok:
                    self.say(f"listener: refuse {c['CustomerID']}: {why}")
            r = http.post(
                "/current/integrations/UpdateCustomerPromotionStatus",
                json={"CampaignID": cid, "PromosUpdated": decisions},
            )
            approved = sum(d["Status"] for d in decisions)
            self.say(
                f"listener: sent {len(decisions)} decisions ({approved} approvals) -> "
                f"HTTP {r.status_code}"
            )
            wait = parse_time(deadline, self.tz, "ClearanceRequiredBy").timestamp() - time.time()
            time.sleep(max(0.0, wait + 0.6))
            for customer in late:
                r = http.post(
                    "/current/integrations/UpdateCustomerPromotionStatus",
                    json={
                        "CampaignID": cid,
                        "PromosUpdated": [{"CustomerID": customer, "Status": True}],
                    },
                )
                self.say(
                    f"listener: late approval for {customer} -> HTTP {r.status_code}: "
                    f"{r.json()['message']}"
                )

    def close(self) -> None:
        self.server.shutdown()


def run_demo(database_url: str | None = None) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="clearance-demo-"))
    url = database_url or f"sqlite:///{workdir / 'clearance.db'}"
    key = "clr_demo_" + secrets.token_urlsafe(16)
    port = _free_port()
    settings = Settings.from_env(
        database_url=url,
        port=port,
        worker_poll_seconds=0.1,
        file_channel_dir=str(workdir / "sends"),
        bootstrap_api_key=key,
    )
    print(f"clearance demo — working in {workdir}")
    store = open_store(settings.database_url)
    clock = SystemClock()
    store.create_api_key("admin", "demo", 0, key=key)
    app = create_app(Engine(store, settings, clock), Worker(store, settings, clock))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    engine_url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=engine_url, headers={"X-API-KEY": key}, timeout=10)
    for _ in range(100):
        try:
            if http.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    print(f"1. engine up at {engine_url} (SQLite: {url})")

    listener = DemoListener(engine_url, key, settings.tz)
    http.post(
        "/current/general/RegisterEventListener",
        json={"EventTypeID": 5, "ListenerURL": listener.url},
    ).raise_for_status()
    http.post(
        "/current/general/RegisterEventListener",
        json={"EventTypeID": 13, "ListenerURL": listener.url, "ChannelID": 504},
    )
    print(f"2. listener registered for EventTypeID 5 at {listener.url}")

    execute_at = clock.now() + timedelta(seconds=9)
    tz = settings.tz
    r = http.post(
        "/api/v1/campaigns",
        json={
            "campaign_id": 1001,
            "name": "Weekend 10% reload bonus",
            "execute_at": format_wire_time(execute_at, tz),
            "duration_days": 2,
            "conditional": True,
            "clearance_lead_seconds": 5,
            "action": {"id": 77, "name": "Reload bonus", "promo_codes": ["RELOAD10"]},
            "channels": [
                {"id": 504, "name": "Email", "templates": [{"id": 9001, "name": "reload"}]}
            ],
            "target_group": [
                {"customer_id": c, "attributes": {"Country": country, "Deposit": dep, "Status": st}}
                for c, country, dep, st in CUSTOMERS
            ],
        },
    )
    r.raise_for_status()
    campaign = r.json()
    print(
        f"3. conditional campaign 1001 created: {len(CUSTOMERS)} customers, executes at "
        f"{campaign['execute_at']}"
    )
    last_state = None
    deadline = time.time() + 45
    while time.time() < deadline:
        campaign = http.get("/api/v1/campaigns/1001").json()
        if campaign["state"] != last_state:
            last_state = campaign["state"]
            print(
                f"   state: {last_state}"
                + (
                    f" (clearance required by {campaign['clearance_required_by']})"
                    if last_state == "awaiting_clearance"
                    else ""
                )
            )
        if last_state == "executed":
            break
        time.sleep(0.1)
    time.sleep(0.5)
    sent = http.get("/api/v1/campaigns/1001/customers", params={"outcome": "sent"}).json()
    excluded = http.get("/api/v1/campaigns/1001/customers", params={"outcome": "excluded"}).json()
    counts = campaign["counts"]
    print("\n4. summary")
    print(
        f"   target {counts['target']}  approved {counts['approved']}  sent {counts['sent']}"
        f"  excluded {counts['excluded']}"
    )
    for row in sent["customers"]:
        print(f"   SENT      {row['customer_id']}  (approved at {row['approved_at']})")
    for row in excluded["customers"]:
        print(f"   EXCLUDED  {row['customer_id']}  reason: {row['reason']}")
    files = sorted((workdir / "sends").rglob("*.ndjson"))
    print(f"\n   email channel deliveries: {', '.join(str(f) for f in files) or 'none'}")
    listener.close()
    server.should_exit = True
    time.sleep(0.3)
    ok = last_state == "executed"
    print("\ndemo " + ("finished." if ok else "did not finish in time."))
    return 0 if ok else 1
