"""Drill: PostgreSQL "restarts" while approvals, events and an execution are in flight.

The real CLI serves through a loopback TCP proxy to the real PostgreSQL; the proxy cuts every
connection and refuses new ones for a few seconds (what clients see during a restart), then lets
them through again. Clients must get 200 or a clear 503 (409 only for approvals after the
deadline), never another 5xx; afterwards, read directly from PostgreSQL, nothing acknowledged is
missing and every campaign executed exactly once per customer and channel.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from bench.pgproxy import TcpProxy
from bench.serveproc import ServeProcess

from tests.conftest import FakeGateway
from tests.helpers import wait_until

pytestmark = pytest.mark.postgres

OUTAGE_SECONDS = 12.0  # longer than the pool's 10 s wait for a connection: writes must fail
APPROVED = 1  # campaign whose approvals are in flight (conditional)
BULK = 2  # campaign executing when the database goes away (not conditional, two channels)
BULK_CUSTOMERS = 4000
A_CUSTOMERS = 300


def wire_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


class Recorder:
    """Every reply the clients got, with what was sent and when."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: list[dict[str, Any]] = []

    def add(self, kind: str, started: float, status: int | str, sent: Any, body: Any) -> None:
        with self.lock:
            self.replies.append(
                {"kind": kind, "t": started, "status": status, "sent": sent, "body": body}
            )

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.replies if r["kind"] == kind]


def _call(c: httpx.Client, rec: Recorder, kind: str, path: str, body: Any) -> None:
    started = time.monotonic()
    try:
        r = c.post(path, json=body)
    except httpx.HTTPError as exc:  # counted as a failure below
        rec.add(kind, started, f"{type(exc).__name__}: {exc}", body, None)
        return
    try:
        parsed = r.json()
    except ValueError:
        parsed = r.text
    rec.add(kind, started, r.status_code, body, parsed)


def fire_approvals(c: httpx.Client, rec: Recorder, stop: threading.Event, worker: int) -> None:
    i = worker
    while not stop.is_set():
        ids = [f"a-{(i * 7 + k) % A_CUSTOMERS}" for k in range(10)]
        body = {
            "CampaignID": APPROVED,
            "PromosUpdated": [{"CustomerID": cid, "Status": True} for cid in ids],
        }
        _call(c, rec, "approval", "/current/integrations/UpdateCustomerPromotionStatus", body)
        i += 4


def fire_events(c: httpx.Client, rec: Recorder, stop: threading.Event, worker: int) -> None:
    n = 0
    while not stop.is_set():
        body = {
            "customer_id": f"ev-{worker}-{n}",
            "event": "deposit",
            "params": {"amount": 150},
            "attributes": {"country": "UK"},
        }
        _call(c, rec, "event", "/api/v1/events", body)
        n += 1


def sends_in_files(root: Path, folder: str, key: str = "CustomerID") -> Counter[tuple[str, int]]:
    """(customer or decision, channel) → how many send lines the file channel holds for it."""
    got: Counter[tuple[str, int]] = Counter()
    for f in (root / folder).rglob("*.ndjson"):
        for line in f.read_bytes().splitlines():
            s = orjson.loads(line)
            got[(s[key], s["ChannelID"])] += 1
    return got


def test_postgres_restart_loses_nothing_acknowledged(postgres_url: str, tmp_path: Path) -> None:
    proxy = TcpProxy("127.0.0.1", int(postgres_url.rsplit(":", 1)[1].split("/")[0])).start()
    gateway = FakeGateway()
    served = ServeProcess(
        proxy.url_for(postgres_url),
        tmp_path,
        CLEARANCE_EXECUTION_CHUNK="50",
        CLEARANCE_DECISION_FLUSH_SECONDS="0.05",
    )
    rec = Recorder()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    clients: list[httpx.Client] = []
    try:
        http = served.client()
        clients.append(http)
        http.put(
            "/triggered_conditional_execution_gateway",
            json={"url": gateway.url, "timeout_ms": 2000},
        ).raise_for_status()
        http.post(
            "/api/v1/triggered-campaigns",
            json={
                "id": "T-1",
                "conditional": True,
                "action": {"id": 5, "promo_codes": ["DEP"], "channels": [{"id": 506}]},
                "trigger": {"event": "deposit", "condition": "amount >= 100 && country == 'UK'"},
            },
        ).raise_for_status()
        t0 = datetime.now(UTC)
        http.post(
            "/api/v1/campaigns",
            json={
                "campaign_id": APPROVED,
                "name": "approvals in flight",
                "execute_at": wire_time(t0 + timedelta(seconds=44)),  # after the 12 s cut
                "conditional": True,
                "clearance_lead_seconds": 10,
                "action": {"id": 1, "promo_codes": ["P1"]},
                "channels": [{"id": 504}],
                "target_group": [{"customer_id": f"a-{i}"} for i in range(A_CUSTOMERS)],
            },
        ).raise_for_status()
        http.post(
            "/api/v1/campaigns",
            json={
                "campaign_id": BULK,
                "name": "executing during the outage",
                "execute_at": wire_time(t0 + timedelta(seconds=4)),
                "conditional": False,
                "action": {"id": 2},
                "channels": [{"id": 504}, {"id": 505}],
                "target_group": [{"customer_id": f"b-{i}"} for i in range(BULK_CUSTOMERS)],
            },
        ).raise_for_status()
        wait_until(
            "campaign 1 awaiting clearance",
            10,
            lambda: (
                http.get(f"/api/v1/campaigns/{APPROVED}").json()["state"] == "awaiting_clearance"
            ),
        )
        for n, fire in enumerate([fire_approvals] * 4 + [fire_events] * 2):
            c = served.client()
            clients.append(c)
            t = threading.Thread(target=fire, args=(c, rec, stop, n), daemon=True)
            t.start()
            threads.append(t)

        # Cut as soon as the bulk campaign's first batch is on disk (mid-execution), or at the
        # latest 8 s in.
        bulk_dir = served.sends_dir / f"campaign-{BULK}"
        latest = time.monotonic() + 8
        while time.monotonic() < latest and not any(bulk_dir.rglob("*.ndjson")):
            time.sleep(0.01)
        batches_before_cut = len(list(bulk_dir.rglob("*.ndjson")))
        down_at = time.monotonic()
        cut = proxy.cut()
        time.sleep(OUTAGE_SECONDS)
        proxy.restore()
        up_at = time.monotonic()
        time.sleep(2.0)  # keep firing while the engine reconnects
        stop.set()
        for t in threads:
            t.join(timeout=60)

        wait_until(
            "campaign 2 executed",
            30,
            lambda: http.get(f"/api/v1/campaigns/{BULK}").json()["state"] == "executed",
        )
        # A client that got a 503 retries (approvals are idempotent); all before the deadline.
        failed = {
            e["CustomerID"]
            for r in rec.of("approval")
            if r["status"] != 200
            for e in r["sent"]["PromosUpdated"]
        }
        retried = http.post(
            "/current/integrations/UpdateCustomerPromotionStatus",
            json={
                "CampaignID": APPROVED,
                "PromosUpdated": [{"CustomerID": c, "Status": True} for c in sorted(failed)],
            },
        )
        wait_until(
            "campaign 1 executed",
            40,
            lambda: http.get(f"/api/v1/campaigns/{APPROVED}").json()["state"] == "executed",
        )
        acked = {
            m["decision_id"]: m
            for r in rec.of("event")
            if r["status"] == 200
            for m in r["body"]["matched"]
        }

        def decisions_logged() -> set[str]:
            with psycopg.connect(postgres_url) as conn:
                got = {
                    r[0]
                    for r in conn.execute(
                        "SELECT decision_id FROM decisions WHERE decision_id = ANY(%s)",
                        (list(acked),),
                    )
                }
            return got if got == set(acked) else set()

        # The writer recovers by itself: every acknowledged decision is logged before shutdown.
        wait_until("acknowledged decisions in the log", 20, decisions_logged)

        def sends_delivered() -> bool:
            with psycopg.connect(postgres_url) as conn:
                row = conn.execute(
                    "SELECT COUNT(*) FROM triggered_sends WHERE state <> 'delivered'"
                ).fetchone()
            return row is not None and row[0] == 0

        # and the worker delivers every committed send (the outbox) after the outage
        wait_until("committed triggered sends delivered", 30, sends_delivered)
        code = served.stop()
        # the cut must have hit the decision writer itself, not only the requests around it
        writer_failures = served.log().count("decision log write failed")
        assert writer_failures > 0, "the decision log writer never failed during the cut"
        assert code in (0, -15), f"serve exited {code}: {served.log()[-3000:]}"

        # --- what must hold, read straight from PostgreSQL -----------------------------------
        replies = rec.replies
        statuses = Counter(str(r["status"]) for r in replies)
        bad = [r for r in replies if r["status"] not in (200, 503, 409)]
        assert not bad, f"replies other than 200/503/409: {bad[:3]} ({statuses})"
        late = [r for r in rec.of("event") if r["status"] == 409]
        assert not late, "events are never a conflict"
        for r in replies:
            if r["status"] in (503, 409):
                assert r["body"]["status"] == r["status"] and r["body"]["message"], r
        during = [r for r in replies if down_at <= r["t"] < up_at]
        assert cut > 0 and during, "the outage was not exercised"

        with psycopg.connect(postgres_url) as conn:
            stored = Counter(
                r[0]
                for r in conn.execute(
                    "SELECT customer_id FROM approvals WHERE campaign_id = %s AND status",
                    (APPROVED,),
                )
            )
            acked_approvals = Counter(
                e["CustomerID"]
                for r in rec.of("approval")
                if r["status"] == 200
                for e in r["sent"]["PromosUpdated"]
            )
            missing = {c: n for c, n in acked_approvals.items() if stored[c] < n}
            assert not missing, f"approvals acknowledged with 200 but not stored: {missing}"
            sends = {
                cid: Counter(
                    (r[0], r[1])
                    for r in conn.execute(
                        "SELECT customer_id, channel_id FROM sends WHERE campaign_id = %s",
                        (cid,),
                    )
                )
                for cid in (APPROVED, BULK)
            }
            approved = {
                r[0]
                for r in conn.execute(
                    "SELECT customer_id FROM target_customers WHERE campaign_id = %s AND approval",
                    (APPROVED,),
                )
            }
            sent_decisions = {
                r[0]
                for r in conn.execute(
                    "SELECT decision_id FROM decisions WHERE sent AND decision_id = ANY(%s)",
                    (list(acked),),
                )
            }
            # a 503 after the commit wait means "not known yet": those decisions may still have
            # been committed (and then they are sent, once); every committed send is delivered
            all_sent = {r[0] for r in conn.execute("SELECT decision_id FROM decisions WHERE sent")}
            outbox = Counter(r[0] for r in conn.execute("SELECT decision_id FROM triggered_sends"))
        assert retried.status_code == 200, retried.text
        # all approvals say true and none is revoked: the frozen set is exactly what is stored
        assert approved == set(stored) and approved >= set(acked_approvals)
        expected_a = {(c, 504) for c in approved}
        expected_b = {(f"b-{i}", ch) for i in range(BULK_CUSTOMERS) for ch in (504, 505)}
        for cid, expected in ((APPROVED, expected_a), (BULK, expected_b)):
            assert set(sends[cid]) == expected and max(sends[cid].values()) == 1
            in_files = sends_in_files(served.sends_dir, f"campaign-{cid}")
            assert set(in_files) == expected, f"campaign {cid}: files differ from the sends"
            assert max(in_files.values()) == 1, f"campaign {cid}: a customer sent twice"
        allowed = {d for d, m in acked.items() if m["sent"]}
        assert allowed == sent_decisions and allowed <= all_sent
        assert set(outbox) == all_sent and max(outbox.values(), default=1) == 1
        triggered_files = sends_in_files(served.sends_dir, "triggered-T-1", "DecisionID")
        assert set(triggered_files) == {(d, 506) for d in all_sent}
        assert max(triggered_files.values(), default=1) == 1

        acked_down = sum(
            len(r["body"]["matched"])
            for r in rec.of("event")
            if r["status"] == 200 and down_at <= r["t"] < up_at
        )
        unavailable = Counter(r["kind"] for r in replies if r["status"] == 503)
        print(
            f"\nDRILL db-outage: outage {OUTAGE_SECONDS:.0f}s cut {cut} connections with "
            f"{batches_before_cut} of {BULK_CUSTOMERS * 2 // 50} bulk batches on disk; "
            f"{len(replies)} replies {dict(statuses)}, {len(during)} started while down; "
            f"{sum(acked_approvals.values())} approval entries acked, all stored; "
            f"{len(acked)} decisions acked ({acked_down} while down), all logged; "
            f"503s by kind {dict(unavailable)}; decision writer failed {writer_failures}x "
            "during the cut; sends exactly once: "
            f"{len(expected_a)} + {len(expected_b)} scheduled, {len(all_sent)} triggered "
            f"({len(all_sent) - len(allowed)} of them from requests answered 503)"
        )
    finally:
        stop.set()
        for c in clients:
            c.close()
        served.stop()
        proxy.stop()
        gateway.stop()
