"""Soak: steady mixed load against a real `clearance serve` for N minutes, then reconcile.

    .venv/bin/python -m bench.soak                      # 10 minutes on SQLite, 100 requests/s
    .venv/bin/python -m bench.soak --database postgres  # fresh db on CLEARANCE_TEST_POSTGRES_URL
    .venv/bin/python -m bench.soak --seconds 30 --interval 5   # the CI version

The load is open-loop (requests start on schedule whether or not earlier ones have answered), in
this mix: 3/5 triggered events through the gate to a real loopback gateway (bench/gateway_server.py)
for a conditional triggered campaign, 1/5 approvals (UpdateCustomerPromotionStatus, 100 entries)
to a conditional scheduled campaign, 1/5 paging (GetProcessedCampaignCustomers, $top 1000).

Printed per interval: requests, errors, error rate, p50/p99 latency, server RSS. Checks (exit 1
if any fails): no error replies; RSS shows no growth trend (the last interval's RSS is within
--rss-growth-mib or --rss-growth-ratio, whichever is larger, of the second interval's); approval
entries acknowledged == approval rows stored; decisions acknowledged == decisions logged (while
running, and after a clean shutdown); every acknowledged decision is an allow (the soak gateway
allows everyone) and allows acknowledged == allows logged == sends committed == sends delivered;
the server logged no warnings or errors (each line read as JSON by bench/serverlog.py; a line
that is not JSON, such as a traceback, counts as an error).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from bench import serverlog
from bench.gate import free_port_pair, pct, wait_port
from bench.serveproc import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN = 501
CUSTOMERS = 50_000
APPROVALS_PER_CALL = 100
PAGE = 1000
MIB = 1024 * 1024


@dataclass
class Interval:
    started: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rss: int = 0
    by_kind: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Tally:
    approvals_acked: int = 0  # entries applied, per 200 replies
    approvals_unsure: int = 0  # entries in calls that failed (may or may not have landed)
    decisions_acked: int = 0
    allowed_acked: int = 0  # decisions the gateway allowed and whose send was committed
    errors: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace, served: ServeProcess) -> None:
        self.args = args
        self.served = served
        self.tally = Tally()
        self.intervals: list[Interval] = []
        self.next_customer = 0

    async def one(self, http: httpx.AsyncClient, i: int) -> None:
        kind = ("event", "event", "event", "approval", "page")[i % 5]
        started = time.monotonic()
        entries = 0
        detail = ""
        try:
            if kind == "event":
                r = await http.post(
                    "/api/v1/events",
                    json={
                        "customer_id": f"u-{i}",
                        "event": "deposit",
                        "params": {"amount": 100 + i % 50},
                        "attributes": {"country": "UK"},
                    },
                )
            elif kind == "approval":
                first = self.next_customer
                self.next_customer = (first + APPROVALS_PER_CALL) % CUSTOMERS
                entries = APPROVALS_PER_CALL
                r = await http.post(
                    "/current/integrations/UpdateCustomerPromotionStatus",
                    json={
                        "CampaignID": CAMPAIGN,
                        "PromosUpdated": [
                            {"CustomerID": f"c-{(first + k) % CUSTOMERS}", "Status": True}
                            for k in range(APPROVALS_PER_CALL)
                        ],
                    },
                )
            else:
                r = await http.get(
                    "/current/customers/GetProcessedCampaignCustomers",
                    params={
                        "CampaignID": CAMPAIGN,
                        "$top": PAGE,
                        "$skip": (i * PAGE) % CUSTOMERS,
                    },
                )
            ok = r.status_code == 200
            body = r.json() if ok else None
        except (httpx.HTTPError, ValueError) as exc:
            ok, body, r = False, None, None
            detail = f"{kind}: {type(exc).__name__}: {exc}"
        elapsed = (time.monotonic() - started) * 1000
        bucket = self.intervals[-1]
        bucket.latencies.append(elapsed)
        bucket.by_kind.setdefault(kind, []).append(elapsed)
        if not ok:
            bucket.errors += 1
            self.tally.approvals_unsure += entries
            if r is not None:
                detail = f"{kind}: HTTP {r.status_code} {r.text[:200]}"
            if len(self.tally.errors) < 20:
                self.tally.errors.append(detail)
            return
        if kind == "approval":
            self.tally.approvals_acked += body["Applied"]
        elif kind == "event":
            self.tally.decisions_acked += len(body["matched"])
            self.tally.allowed_acked += sum(
                1 for m in body["matched"] if m["outcome"] == "allowed" and m["sent"] is True
            )

    async def run(self) -> None:
        args = self.args
        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=self.served.url, headers=self.served.headers, timeout=30, limits=limits
        ) as http:
            t0 = time.monotonic()
            end = t0 + args.duration
            self.intervals.append(Interval(t0))
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            next_cut = t0 + args.interval
            while True:
                now = time.monotonic()
                if now >= next_cut:
                    self.intervals[-1].rss = self.served.rss_bytes()
                    self.report(self.intervals[-1], len(self.intervals))
                    if now >= end:
                        break
                    self.intervals.append(Interval(now))
                    next_cut += args.interval
                due = t0 + i / args.rate
                if due > now:
                    await asyncio.sleep(min(due, next_cut) - now)
                    continue
                task = asyncio.create_task(self.one(http, i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(tasks, timeout=60)

    def report(self, b: Interval, n: int) -> None:
        lat = b.latencies
        rate = b.errors / len(lat) if lat else 0.0
        print(
            f"| {n} | {len(lat)} | {b.errors} | {rate:.2%} | {pct(lat, 50):.1f} | "
            f"{pct(lat, 99):.1f} | {b.rss / MIB:.1f} |",
            flush=True,
        )


def setup(served: ServeProcess, gateway_url: str) -> None:
    with served.client() as http:
        gateway = {"url": gateway_url, "timeout_ms": 2000}
        http.put("/triggered_conditional_execution_gateway", json=gateway).raise_for_status()
        http.post(
            "/api/v1/triggered-campaigns",
            json={
                "id": "SOAK-T",
                "conditional": True,
                "action": {"id": 9, "promo_codes": ["SOAK"], "channels": [{"id": 506}]},
                "trigger": {"event": "deposit", "condition": "amount >= 100 && country == 'UK'"},
            },
        ).raise_for_status()
        execute_at = datetime.now(UTC) + timedelta(days=2)
        http.post(
            "/api/v1/campaigns",
            json={
                "campaign_id": CAMPAIGN,
                "name": "soak",
                "draft": True,
                "execute_at": execute_at.strftime("%Y-%m-%d %H:%M:%S"),
                "conditional": True,
                "clearance_lead_seconds": 86400,
                "action": {"id": 1, "promo_codes": ["P"]},
                "channels": [{"id": 504}],
            },
        ).raise_for_status()
        body = b"\n".join(orjson.dumps({"customer_id": f"c-{i}"}) for i in range(CUSTOMERS))
        http.post(
            f"/api/v1/campaigns/{CAMPAIGN}/target-group",
            content=body,
            headers={"content-type": "application/x-ndjson"},
        ).raise_for_status()
        http.post(f"/api/v1/campaigns/{CAMPAIGN}/schedule").raise_for_status()
        deadline = time.monotonic() + 30
        while http.get(f"/api/v1/campaigns/{CAMPAIGN}").json()["state"] != "awaiting_clearance":
            if time.monotonic() > deadline:
                raise RuntimeError("soak campaign was not processed")
            time.sleep(0.1)


def count(database_url: str, sql: str) -> int:
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute(sql).fetchone()[0])
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def fresh_postgres(base: str) -> tuple[str, str]:
    import psycopg

    name = f"clearance_soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base.rpartition('/')[0]}/{name}", name


def drop_postgres(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seconds", type=float, help="overrides --minutes")
    p.add_argument("--interval", type=float, default=60.0, help="seconds per report line")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second, all kinds")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "CLEARANCE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    p.add_argument("--rss-growth-mib", type=float, default=24.0)
    p.add_argument("--rss-growth-ratio", type=float, default=0.10)
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, database)")
    args = p.parse_args(argv)
    args.duration = args.seconds if args.seconds is not None else args.minutes * 60
    if args.duration < 2 * args.interval:
        p.error("run for at least two intervals (the RSS check compares the second and the last)")

    work = Path(tempfile.mkdtemp(prefix="clearance-soak-"))
    pg_name = None
    if args.database == "postgres":
        database_url, pg_name = fresh_postgres(args.postgres_url)
    else:
        database_url = f"sqlite:///{work / 'soak.db'}"
    port = free_port_pair()
    gateway = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "gateway_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
    )
    served = None
    failures: list[str] = []
    try:
        wait_port(port)
        served = ServeProcess(database_url, work)
        setup(served, f"http://127.0.0.1:{port}/gate")
        print(
            f"soak: {args.duration:.0f} s at {args.rate:.0f} requests/s on {args.database} "
            f"(server pid {served.proc.pid}, log {served.log_path})\n"
        )
        print("| interval | requests | errors | error rate | p50 ms | p99 ms | server RSS MiB |")
        print("|---|---|---|---|---|---|---|")
        soak = Soak(args, served)
        asyncio.run(soak.run())
        t = soak.tally

        # --- checks ---------------------------------------------------------------------------
        total = sum(len(b.latencies) for b in soak.intervals)
        errors = sum(b.errors for b in soak.intervals)
        if errors:
            failures.append(f"{errors} error replies, e.g. {t.errors[:3]}")
        second, last = soak.intervals[1].rss, soak.intervals[-1].rss
        bound = max(args.rss_growth_mib * MIB, args.rss_growth_ratio * second)
        if last - second > bound:
            failures.append(
                f"RSS grew {(last - second) / MIB:.1f} MiB from the second interval to the last "
                f"(bound {bound / MIB:.1f} MiB)"
            )
        stored = count(
            database_url, f"SELECT COUNT(*) FROM approvals WHERE campaign_id = {CAMPAIGN}"
        )
        if not (t.approvals_acked <= stored <= t.approvals_acked + t.approvals_unsure):
            failures.append(f"approvals acknowledged {t.approvals_acked} but {stored} stored")
        deadline = time.monotonic() + 30
        while (logged := count(database_url, "SELECT COUNT(*) FROM decisions")) < (
            t.decisions_acked
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        if logged != t.decisions_acked:
            failures.append(f"decisions acknowledged {t.decisions_acked} but {logged} logged")
        # Decisions of any outcome would count a gateway failing every call: the soak gateway
        # allows everyone, so every decision must be an allow, logged as sent, with its send
        # committed in the outbox and delivered by the worker.
        if t.allowed_acked == 0 or t.allowed_acked != t.decisions_acked:
            failures.append(
                f"only {t.allowed_acked} of {t.decisions_acked} acknowledged decisions were allows"
            )
        allowed_logged = count(
            database_url, "SELECT COUNT(*) FROM decisions WHERE outcome = 'allowed' AND sent"
        )
        if allowed_logged != t.allowed_acked:
            failures.append(f"allows acknowledged {t.allowed_acked} but {allowed_logged} logged")
        outbox = count(database_url, "SELECT COUNT(*) FROM triggered_sends")
        if outbox != t.allowed_acked:
            failures.append(f"allows acknowledged {t.allowed_acked} but {outbox} sends committed")
        deadline = time.monotonic() + 30
        while (
            delivered := count(
                database_url, "SELECT COUNT(*) FROM triggered_sends WHERE state = 'delivered'"
            )
        ) < outbox and time.monotonic() < deadline:
            time.sleep(0.2)
        if delivered != outbox:
            failures.append(f"{outbox} triggered sends committed but {delivered} delivered")
        served.stop()
        logged_after = count(database_url, "SELECT COUNT(*) FROM decisions")
        if logged_after != t.decisions_acked:
            failures.append(
                f"after shutdown: decisions acknowledged {t.decisions_acked}, {logged_after} logged"
            )
        # a healthy run logs nothing above INFO (a pool warning per call once hid a real bug)
        server_errors = serverlog.trouble(served.log(), at_least=logging.WARNING)
        if server_errors:
            failures.append(
                f"server logged {len(server_errors)} warnings/errors: {server_errors[:3]}"
            )
        lat = [x for b in soak.intervals for x in b.latencies]
        print(
            f"\nSOAK {'OK' if not failures else 'FAILED'}: {args.duration:.0f} s on "
            f"{args.database}, {total} requests ({total / args.duration:.0f}/s), {errors} errors, "
            f"p50 {pct(lat, 50):.1f} ms p99 {pct(lat, 99):.1f} ms; RSS second/last interval "
            f"{second / MIB:.1f}/{last / MIB:.1f} MiB (bound +{bound / MIB:.1f}); approvals "
            f"acked {t.approvals_acked} stored {stored}; decisions acked {t.decisions_acked} "
            f"logged {logged} (after shutdown {logged_after}); allows acked {t.allowed_acked}, "
            f"sends committed {outbox}, delivered {delivered}"
        )
        for kind in ("event", "approval", "page"):
            lk = [x for b in soak.intervals for x in b.by_kind.get(kind, [])]
            print(
                f"  {kind}: {len(lk)} requests, p50 {pct(lk, 50):.1f} ms, p99 {pct(lk, 99):.1f} ms"
            )
        for f in failures:
            print(f"  FAILED: {f}")
        return 1 if failures else 0
    finally:
        if served is not None:
            served.stop()
        gateway.terminate()
        gateway.wait(timeout=10)
        if pg_name is not None:
            drop_postgres(args.postgres_url, pg_name)
        if failures or args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
