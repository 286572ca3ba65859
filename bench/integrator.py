"""The integrator kit against the engine, over loopback, in one run.

    .venv/bin/python -m bench.integrator [--customers 1000000] [--gateway-requests 20000]

1. The engine (`clearance serve --no-worker`, SQLite) and the kit (`clearance integrator serve`
   with a rules file and a CSV of every customer, `--register`) run as subprocesses.
2. A 1,000,000-customer conditional campaign is uploaded and scheduled; an in-process worker
   processes it, which notifies the kit's listener (EventTypeID 5).
3. The kit pages the customers, applies the rules, and pushes approvals page by page.
   Reported: end-to-end time from notification to the last approval, and the engine's count.
4. The kit's gateway app under load: answers/s and p50/p99 at concurrency 64.
Figures go to stdout and bench/out/integrator.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from bench.gate import pct, wait_http
from clearance.integrator.rules import sample_rules_text
from clearance.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "clr_bench_" + secrets.token_hex(8)
# The sample rules' deposit and market checks: the customers written below have no status or
# self-exclusion column.
RULE_NAMES = ("minimum deposit", "licensed markets")


def bench_rules() -> str:
    """The rules file the kit runs with: the rules named in RULE_NAMES, from the package's sample
    rules file."""
    blocks = ["[[rule]]" + block for block in sample_rules_text().split("[[rule]]")[1:]]
    kept = [b for b in blocks if any(f'name = "{name}"\n' in b for name in RULE_NAMES)]
    if len(kept) != len(RULE_NAMES):
        raise RuntimeError(f"the sample rules file no longer holds each of {RULE_NAMES}")
    return "".join(kept)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def gateway_load(url: str, n: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    answers: dict[bool, int] = {True: 0, False: 0}
    campaign = {
        "id": 1,
        "series_id": 1,
        "notes": "",
        "tags": [],
        "action": {"id": 1, "name": "x", "promo_codes": None, "channels": []},
    }
    todo = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker() -> None:
            for i in todo:
                body = orjson.dumps(
                    {"user": {"user_id": f"c{i % 1000}", "is_visitor": False}, "campaign": campaign}
                )
                t = time.perf_counter()
                async with s.post(
                    url, data=body, headers={"content-type": "application/json"}
                ) as r:
                    answer = orjson.loads(await r.read())
                latencies.append(time.perf_counter() - t)
                answers[answer["allowed"]] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return {
        "requests": n,
        "concurrency": concurrency,
        "per_s": n / seconds,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "allowed": answers[True],
        "denied": answers[False],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--gateway-requests", type=int, default=20_000)
    args = parser.parse_args()
    n = args.customers
    work = Path(tempfile.mkdtemp(prefix="clearance-kit-bench-"))
    say(f"writing {n:,} customers to {work / 'customers.csv'}")
    with open(work / "customers.csv", "w") as fh:
        fh.write("customer_id,deposit,country\n")
        for i in range(n):
            fh.write(f"c{i},{(i * 7) % 100},{'UK' if i % 10 else 'DE'}\n")
    (work / "rules.toml").write_text(bench_rules())
    eport, kport = free_port(), free_port()
    env = {
        **os.environ,
        "CLEARANCE_BOOTSTRAP_API_KEY": KEY,
        "CLEARANCE_OUTBOUND_ALLOW": "127.0.0.0/8",
        "CLEARANCE_RATE_LIMIT_PER_SECOND": "0",
        "CLEARANCE_DATABASE_URL": f"sqlite:///{work / 'engine.db'}",
    }
    engine = subprocess.Popen(
        [sys.executable, "-m", "clearance.cli", "serve", "--no-worker", "--port", str(eport)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kit = None
    out: dict[str, Any] = {"customers": n}
    try:
        wait_http(f"http://127.0.0.1:{eport}/healthz")
        kit = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clearance.cli",
                "integrator",
                "serve",
                "--rules",
                str(work / "rules.toml"),
                "--customers",
                str(work / "customers.csv"),
                "--engine-url",
                f"http://127.0.0.1:{eport}",
                "--api-key",
                KEY,
                "--port",
                str(kport),
                "--public-url",
                f"http://127.0.0.1:{kport}",
                "--register",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{kport}/listener/reports")
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{eport}", headers={"X-API-KEY": KEY}, timeout=120
        )
        execute_at = datetime.now(UTC) + timedelta(hours=2)
        http.post(
            "/api/v1/campaigns",
            json={
                "campaign_id": 1,
                "name": "kit bench",
                "draft": True,
                "conditional": True,
                "execute_at": execute_at.strftime("%Y-%m-%d %H:%M:%S"),
                "action": {"id": 1, "name": "b", "promo_codes": ["P"]},
                "channels": [{"id": 504}],
            },
        ).raise_for_status()
        say("uploading the target group")
        for start in range(0, n, 100_000):
            body = b"\n".join(
                orjson.dumps({"customer_id": f"c{i}"})
                for i in range(start, min(n, start + 100_000))
            )
            http.post(
                "/api/v1/campaigns/1/target-group",
                content=body,
                headers={"content-type": "application/x-ndjson"},
            ).raise_for_status()
        http.post("/api/v1/campaigns/1/schedule").raise_for_status()

        from clearance.clock import SystemClock
        from clearance.config import Settings
        from clearance.scheduled.worker import Worker
        from clearance.store import open_store

        store = open_store(f"sqlite:///{work / 'engine.db'}")
        worker = Worker(
            store, Settings(database_url=f"sqlite:///{work / 'engine.db'}"), SystemClock()
        )
        say("processing: the worker notifies the kit's listener (EventTypeID 5)")
        t_notify = time.time()
        worker.drain()
        report: dict[str, Any] = {}
        while time.time() - t_notify < 900:
            r = httpx.get(f"http://127.0.0.1:{kport}/listener/reports/1")
            if r.status_code == 200:
                report = r.json()
                if report["state"] != "running":
                    break
                say(f"  reviewed {report['reviewed']:,}, approved {report['approved']:,}")
            time.sleep(1)
        last_push = datetime.fromisoformat(report["last_push_at"]).timestamp()
        counts = http.get("/api/v1/campaigns/1").json()["counts"]
        out["review"] = {
            "state": report["state"],
            "reviewed": report["reviewed"],
            "approved": report["approved"],
            "refused": report["refused"],
            "missed": report["missed"],
            "engine_approved": counts["approved"],
            "notification_to_last_approval_s": last_push - t_notify,
            "customers_per_s": n / (last_push - t_notify),
        }
        say(f"  {out['review']}")
        worker.notifier.close()
        store.close()

        say("gateway app under load")
        url = f"http://127.0.0.1:{kport}/gateway/"
        asyncio.run(gateway_load(url, 2000, 64))
        out["gateway"] = asyncio.run(gateway_load(url, args.gateway_requests, 64))
        say(f"  {out['gateway']}")
    finally:
        for p in (kit, engine):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)
    r = out["review"]
    g = out["gateway"]
    print(
        f"\nkit review of {n:,} customers: notification -> last approval "
        f"{r['notification_to_last_approval_s']:.1f} s ({r['customers_per_s']:,.0f} "
        f"customers/s); {r['approved']:,} approved, {r['refused']:,} refused, "
        f"{r['missed']:,} missed; engine counts {r['engine_approved']:,} approved"
    )
    print(
        f"kit gateway app: {g['per_s']:,.0f} answers/s at concurrency 64, p50 "
        f"{g['p50_ms']:.2f} ms, p99 {g['p99_ms']:.2f} ms"
    )
    target = ROOT / "bench" / "out" / "integrator.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2))
    print(f"(written to {target})")


if __name__ == "__main__":
    main()
