"""Drill: the engine is killed (SIGKILL) while triggered sends wait for a channel that is down,
then restarted with the channel back; producers replay every event, concurrently, after the
restart.

The real CLI (API and worker in one process) on SQLite and PostgreSQL, a real gateway and a real
webhook channel on loopback. Must hold: every acknowledged allow is delivered exactly once
(none lost in the crash, none twice), each decision shows `delivered`, and every replayed event
id gets its first decision back as a repeat: no new decision, no new gateway call, no new send.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.serveproc import ServeProcess

from tests.conftest import FakeGateway, Listener
from tests.helpers import wait_until
from tests.integration.test_triggered import CAMPAIGN, event

BATCHES = 20
PER_BATCH = 10


def test_triggered_sends_survive_a_crash_with_the_channel_down(
    database_url: str, tmp_path: Path
) -> None:
    channel = Listener(status=503).start()
    gateway = FakeGateway()
    served = ServeProcess(database_url, tmp_path, CLEARANCE_LEASE_SECONDS="5")
    restarted = None
    try:
        with served.client() as c:
            c.put(
                "/api/v1/channels/506", json={"delivery": {"type": "webhook", "url": channel.url}}
            ).raise_for_status()
            c.post("/api/v1/triggered-campaigns", json=CAMPAIGN).raise_for_status()
            c.put(
                "/triggered_conditional_execution_gateway",
                json={"url": gateway.url, "timeout_ms": 2000},
            ).raise_for_status()
            batches = [
                [
                    event(f"{'no' if k % 5 == 0 else 'ok'}-{b}-{k}", event_id=f"e-{b}-{k}")
                    for k in range(PER_BATCH)
                ]
                for b in range(BATCHES)
            ]
            first: dict[str, dict] = {}
            for batch in batches:
                r = c.post("/api/v1/events", json=batch)
                assert r.status_code == 200, r.text
                for res in r.json()["results"]:
                    [m] = res["matched"]
                    first[m["event_id"]] = m
        allowed = {m["decision_id"] for m in first.values() if m["sent"]}
        assert len(allowed) == BATCHES * PER_BATCH * 4 // 5
        wait_until("the worker trying the channel", 20, lambda: channel.received)
        calls_before = len(gateway.calls)
        served.proc.kill()  # a crash: no drain, no clean shutdown
        served.proc.wait()
        served.stop()
        failed_attempts = len(channel.received)
        channel.status = 200
        down_at = time.monotonic()
        restarted = ServeProcess(database_url, tmp_path, CLEARANCE_LEASE_SECONDS="5")
        with restarted.client() as c:

            def all_delivered() -> bool:
                rows = c.get("/api/v1/decisions", params={"limit": 10_000}).json()["decisions"]
                return sum(1 for d in rows if d["delivery"] == "delivered") == len(allowed)

            wait_until("every allow delivered after the restart", 60, all_delivered)
            recovered_s = time.monotonic() - down_at

            # producers that never saw a reply retry: every batch, four times, concurrently
            def replay(batch: list[dict]) -> list[dict]:
                r = c.post("/api/v1/events", json=batch)
                assert r.status_code == 200, r.text
                return [res["matched"][0] for res in r.json()["results"]]

            with ThreadPoolExecutor(16) as pool:
                replies = [m for ms in pool.map(replay, batches * 4) for m in ms]
            rows = c.get("/api/v1/decisions", params={"limit": 10_000}).json()["decisions"]
        assert all(m["repeat"] for m in replies)
        assert all(
            (m["decision_id"], m["outcome"], m["sent"])
            == (
                first[m["event_id"]]["decision_id"],
                first[m["event_id"]]["outcome"],
                first[m["event_id"]]["sent"],
            )
            for m in replies
        )
        assert len(rows) == len(first)  # nothing decided again
        assert len(gateway.calls) == calls_before  # nobody asked again
        delivered = Counter(
            s["DecisionID"] for r in channel.received[failed_attempts:] for s in r["body"]["Sends"]
        )
        assert set(delivered) == allowed and max(delivered.values()) == 1
        time.sleep(1.0)  # the worker keeps polling: still nothing more arrives
        assert len(channel.received) - failed_attempts == len(
            {r["headers"]["webhook-id"] for r in channel.received[failed_attempts:]}
        )
        print(
            f"\nDRILL triggered-crash ({database_url.split(':')[0]}): {len(first)} decisions, "
            f"{len(allowed)} allows committed while the channel answered 503 "
            f"({failed_attempts} failed attempts), SIGKILL, restart: all {len(allowed)} "
            f"delivered once in {recovered_s:.1f} s; {len(replies)} replayed events (4x, 16 "
            "concurrent) all repeats with the first decision, 0 new decisions, 0 new gateway "
            "calls, 0 sends twice"
        )
    finally:
        if restarted is not None:
            restarted.stop()
        served.stop()
        channel.stop()
        gateway.stop()
