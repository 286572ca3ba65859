"""The README's console screenshots, from the real app: the engine (SQLite, in process), the
integrator kit's listener (reviewing slowly, so the campaign page is caught during clearance) and
gateway on loopback, real Chromium (Debian's `chromium`) through Playwright.

Writes docs/console-campaign.png (a campaign page while approvals arrive) and
docs/console-decisions.png (the decision explorer after a few hundred triggered events).

Usage: .venv/bin/python scripts/console_screenshots.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from clearance.api import create_app
from clearance.clock import SystemClock
from clearance.config import Settings
from clearance.domain import format_wire_time
from clearance.integrator import Client, GatewayApp, Listener
from clearance.integrator.customers import CsvCustomers
from clearance.integrator.promo import rules_decide, rules_review
from clearance.integrator.rules import Rules, sample_rules_text
from clearance.loopback import free_port
from clearance.runtime import Runtime

DOCS = Path(__file__).resolve().parent.parent / "docs"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
COUNTRIES = ["UK", "IE", "UK", "IE", "DE"]


def serve(app: Any) -> str:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="clearance-shots-"))
    rnd = random.Random(7)
    customers = {
        f"C-{i:04d}": (rnd.choice(COUNTRIES), rnd.choice([5, 40, 80, 150, 300])) for i in range(600)
    }
    (work / "customers.csv").write_text(
        "customer_id,country,deposit,status,self_excluded\n"
        + "".join(f"{c},{k},{d},active,false\n" for c, (k, d) in customers.items())
    )
    (work / "rules.toml").write_text(sample_rules_text())
    rules, data = Rules.from_toml(work / "rules.toml"), CsvCustomers(work / "customers.csv")
    key = "clr_shots_" + secrets.token_urlsafe(16)
    settings = Settings.from_env(
        database_url=f"sqlite:///{work / 'clearance.db'}",
        worker_poll_seconds=0.1,
        file_channel_dir=str(work / "sends"),
        outbound_allow="127.0.0.1",
    )
    runtime = Runtime.open(settings, SystemClock(), worker=True)
    runtime.store.create_api_key("admin", "screenshots", runtime.now_ms(), key=key)
    engine = serve(create_app(runtime))
    review = rules_review(rules, data)

    async def slow_review(page: list[Any]) -> Sequence[Any]:
        await asyncio.sleep(0.8)  # a compliance system that takes its time
        return await review(page)

    listener = serve(Listener(Client(engine, api_key=key), slow_review, page_size=25).app)
    gateway = serve(GatewayApp(rules_decide(rules, data)).app)
    http = httpx.Client(base_url=engine, headers={"X-API-KEY": key}, timeout=10)
    http.post(
        "/current/general/RegisterEventListener",
        json={"EventTypeID": 5, "ListenerURL": listener + "/"},
    ).raise_for_status()
    http.put(
        "/triggered_conditional_execution_gateway",
        json={"url": gateway + "/", "timeout_ms": 1500},
    ).raise_for_status()
    http.post(
        "/api/v1/triggered-campaigns",
        json={
            "id": "T-500",
            "conditional": True,
            "action": {"id": 5, "name": "Deposit bonus", "channels": [{"id": 506}]},
            "trigger": {"event": "deposit", "condition": "deposit_amount >= 50"},
        },
    ).raise_for_status()
    for c in list(customers)[:400]:
        http.post(
            "/api/v1/events",
            json={"customer_id": c, "event": "deposit", "params": {"deposit_amount": 100}},
        ).raise_for_status()
    execute_at = runtime.clock.now() + timedelta(minutes=3)
    made = http.post(
        "/api/v1/campaigns",
        json={
            "name": "Weekend 10% reload bonus",
            "execute_at": format_wire_time(execute_at, settings.tz),
            "conditional": True,
            "clearance_lead_seconds": 150,
            "action": {"id": 77, "name": "Reload", "promo_codes": ["RELOAD10"]},
            "channels": [{"id": 504, "name": "Email", "templates": [{"id": 9001}]}],
            "target_group": [{"customer_id": c} for c in customers],
        },
    )
    made.raise_for_status()
    campaign_id = made.json()["campaign_id"]

    from playwright.sync_api import sync_playwright

    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(engine + "/")
        page.get_by_label("Password").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.goto(f"{engine}/console/campaigns/{campaign_id}")
        page.wait_for_timeout(6000)  # approvals arrive while the page watches
        page.screenshot(path=str(DOCS / "console-campaign.png"), full_page=True)
        page.goto(engine + "/console/decisions?campaign=T-500")
        page.screenshot(path=str(DOCS / "console-decisions.png"))  # the charts and the top rows
        browser.close()
    http.close()
    print(f"wrote {DOCS / 'console-campaign.png'} and {DOCS / 'console-decisions.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
