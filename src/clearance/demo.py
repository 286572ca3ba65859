"""`clearance demo`: the whole story on one machine, over real HTTP, in about 15 seconds.

The engine on SQLite; the integrator kit (the operator's side) with a small rules file and sample
customers, serving a listener and a gateway; one scheduled and one triggered conditional campaign;
and a summary of who got what and why.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from clearance.api import create_app
from clearance.clock import Clock, SystemClock
from clearance.config import Settings
from clearance.domain import format_wire_time
from clearance.integrator.customers import CsvCustomers
from clearance.integrator.rules import Rules, sample_rules_text
from clearance.integrator.service import KitConfig, build
from clearance.loopback import free_port
from clearance.runtime import Runtime

CUSTOMERS = """\
customer_id,country,deposit,status,self_excluded
C-1001,UK,150,active,false
C-1002,IE,40,active,false
C-1003,DE,500,active,false
C-1004,UK,5,active,false
C-1005,UK,90,active,true
C-1006,IE,220,active,false
C-1007,UK,75,suspended,false
C-1008,FR,60,active,false
C-1009,IE,30,active,false
C-1010,UK,310,active,false
"""
PROMO_FAILS = {"C-1009"}  # the bonus system cannot activate this customer's promotion


def _serve(app: Any, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def run_demo(database_url: str | None = None, keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="clearance-demo-"))
    (workdir / "rules.toml").write_text(sample_rules_text())
    (workdir / "customers.csv").write_text(CUSTOMERS)
    url = database_url or f"sqlite:///{workdir / 'clearance.db'}"
    key = "clr_demo_" + secrets.token_urlsafe(16)
    engine_port, kit_port = free_port(), free_port()
    settings = Settings.from_env(
        database_url=url,
        port=engine_port,
        worker_poll_seconds=0.1,
        file_channel_dir=str(workdir / "sends"),
        # the demo's listener and gateway run on this machine: let the engine call loopback
        outbound_allow="127.0.0.1",
    )
    print(f"clearance demo — working in {workdir}")
    runtime = Runtime.open(settings, SystemClock(), worker=True)
    runtime.store.create_api_key("admin", "demo", 0, key=key)
    servers = [_serve(create_app(runtime), engine_port)]
    engine_url = f"http://127.0.0.1:{engine_port}"
    print(f"1. engine up at {engine_url} (SQLite {url})")

    def activate(customer_id: str, promo_code: str) -> None:
        if customer_id in PROMO_FAILS:
            raise RuntimeError("bonus wallet is locked")

    kit_app, listener, _ = build(
        KitConfig(
            engine_url,
            key,
            Rules.from_toml(workdir / "rules.toml"),
            CsvCustomers(workdir / "customers.csv"),
            public_url=f"http://127.0.0.1:{kit_port}",
            register=True,
            engine_gateway_timeout_ms=1500,
            gateway_budget_ms=1000,
        ),
        activate,
    )
    servers.append(_serve(kit_app, kit_port))
    print(
        f"2. integrator kit up at http://127.0.0.1:{kit_port}: listener registered for "
        "EventTypeID 5, gateway set;\n   rules: minimum deposit 20, active account, UK/IE, "
        "not self-excluded; promo activation"
    )
    http = httpx.Client(base_url=engine_url, headers={"X-API-KEY": key}, timeout=10)
    try:
        code = _story(http, settings, runtime.clock, listener)
        if keep:
            keep_running(runtime, engine_url, key)
        return code
    finally:
        http.close()
        for server in reversed(servers):
            server.should_exit = True
        time.sleep(0.3)


def _story(http: httpx.Client, settings: Settings, clock: Clock, listener: Any) -> int:
    execute_at = clock.now() + timedelta(seconds=8)
    later = format_wire_time(execute_at + timedelta(seconds=4), settings.tz)
    ids = [line.split(",")[0] for line in CUSTOMERS.splitlines()[1:]]
    http.post(
        "/api/v1/campaigns",
        json={
            "campaign_id": 1001,
            "name": "Weekend 10% reload bonus",
            "execute_at": format_wire_time(execute_at, settings.tz),
            "duration_days": 2,
            "conditional": True,
            "clearance_lead_seconds": 4,
            "action": {"id": 77, "name": "Reload bonus", "promo_codes": ["RELOAD10"]},
            "channels": [
                {
                    "id": 504,
                    "name": "Email",
                    "templates": [
                        {"id": 9001, "name": "reload"},
                        {"id": 9002, "name": "reload, evening"},
                    ],
                }
            ],
            # two send groups (Conditional Execution V2): half at the campaign's time with its
            # first template, half 4 s later with the second, each with its own deadline
            "target_group": [{"customer_id": c} for c in ids[:5]]
            + [{"customer_id": c, "send_at": later, "template_id": 9002} for c in ids[5:]],
        },
    ).raise_for_status()
    print(
        f"3. scheduled conditional campaign 1001: {len(ids)} customers in two send groups, "
        f"executing at {format_wire_time(execute_at, settings.tz)} and {later}"
    )
    shown = False
    last = None
    deadline = time.time() + 45
    campaign: dict[str, Any] = {}
    while time.time() < deadline:
        campaign = http.get("/api/v1/campaigns/1001").json()
        if campaign["state"] != last:
            last = campaign["state"]
            extra = (
                f" (clearance required by {campaign['clearance_required_by']})"
                if last == "awaiting_clearance"
                else ""
            )
            print(f"   state: {last}{extra}")
        if last == "awaiting_clearance" and not shown:
            shown = True
            for g in http.get("/api/v1/campaigns/1001/send-groups").json():
                print(
                    f"   send group {g['send_group_id']}: {g['target']} customers, template "
                    f"{g['template_id']}, at {g['scheduled_time']}, clearance required by "
                    f"{g['clearance_required_by']}"
                )
        if last == "executed":
            break
        time.sleep(0.1)
    report = listener.reports.get(1001)
    if report is not None:
        print(
            f"   kit review: {report.reviewed} reviewed, {report.approved} approved, "
            f"{report.refused} refused, {report.missed} missed"
        )
    sent = http.get("/api/v1/campaigns/1001/customers", params={"outcome": "sent"}).json()
    excluded = http.get("/api/v1/campaigns/1001/customers", params={"outcome": "excluded"}).json()
    why = {r["customer_id"]: r["reason"] for r in (report.refusals if report else [])}
    print("\n4. who got the scheduled campaign")
    for row in sent["customers"]:
        print(f"   SENT      {row['customer_id']}")
    for row in excluded["customers"]:
        detail = why.get(row["customer_id"])
        print(
            f"   EXCLUDED  {row['customer_id']}  {row['reason']}"
            + (f" — {detail}" if detail else "")
        )

    http.put(
        "/api/v1/triggered-campaigns/T-500",
        json={
            "id": "T-500",
            "series_id": 500,
            "notes": "first deposit bonus",
            "tags": ["deposit"],
            "action": {
                "id": 88,
                "name": "Deposit match",
                "promo_codes": ["MATCH100"],
                "channels": [{"id": 506, "name": "Push", "brand_id": None, "templates": None}],
            },
            "conditional": True,
            "trigger": {"event": "deposit", "condition": "deposit_amount >= 50"},
        },
    ).raise_for_status()
    print("\n5. triggered conditional campaign T-500 (event deposit, deposit_amount >= 50)")
    deposits = [("C-1001", 100), ("C-1005", 80), ("C-1003", 75), ("C-1006", 20), ("V-77", 60)]
    events: list[dict[str, Any]] = [
        {
            "visitor_id" if who.startswith("V-") else "customer_id": who,
            "event": "deposit",
            "params": {"deposit_amount": amount},
        }
        for who, amount in deposits
    ]
    results = http.post("/api/v1/events", json=events).json()["results"]
    for (who, amount), result in zip(deposits, results, strict=True):
        if not result["matched"]:
            print(f"   {who}: deposit {amount} does not meet the trigger")
            continue
        m = result["matched"][0]
        verdict = "SENT" if m["sent"] else "not sent"
        print(
            f"   {who}: {verdict:8} gateway said {m['outcome']} in {m['latency_ms']:.1f} ms"
            + (f" ({m['reason']})" if m["reason"] else "")
        )
    time.sleep(0.3)  # the decision log hands sends to channels a moment after logging them
    files = sorted(Path(settings.file_channel_dir).rglob("*.ndjson"))
    print(
        f"\n   channel deliveries written: {len(files)} file(s) under {settings.file_channel_dir}"
    )
    ok = last == "executed"
    print("\ndemo " + ("finished." if ok else "did not finish in time."))
    return 0 if ok else 1


def keep_running(runtime: Runtime, engine_url: str, key: str) -> None:
    """`demo --keep`: the engine and the kit stay up so a new user can click through the story
    in the console; Ctrl-C ends it."""
    password = secrets.token_urlsafe(12)
    runtime.store.upsert_user("demo", password, "admin", runtime.now_ms())
    print(
        f"\nconsole: {engine_url}/\n   sign in with User demo and Password {password}\n"
        f"   (or leave User empty and use the admin key {key})\n"
        "the engine and the integrator kit keep running; Ctrl-C stops them",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped")
