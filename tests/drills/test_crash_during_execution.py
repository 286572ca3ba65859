"""Drill 1 — crash during execution.

A 200,000-customer conditional campaign, two thirds approved, two channels (file delivery). The real
`clearance worker` process is SIGKILLed at several random points while it executes (when the sends
recorded in the database pass random thresholds) and restarted each time. Afterwards every approved
customer has exactly one send per channel, no unapproved customer has one, the campaign is executed
and the NDJSON batch files hold every SendID exactly once.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clearance.clock import FakeClock
from clearance.config import Settings
from clearance.domain import State
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import open_store
from tests.drills.support import WorkerProcess, campaign_row, file_channel_send_ids, worker_env
from tests.helpers import new_campaign

CUSTOMERS = 200_000
CHANNELS = (504, 505)


def test_worker_sigkilled_at_random_points_sends_each_approved_customer_once_per_channel(
    database_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("DRILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    print(f"\n[drill crash] seed={seed} (rerun with DRILL_SEED={seed})")
    started = time.monotonic()
    out = tmp_path / "out"
    store = open_store(database_url)
    try:
        # Set up in-process on a fake clock two hours in the past, so the campaign is cleared and
        # its execution time has already passed on the real clock the worker processes use.
        clock = FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))
        settings = Settings(file_channel_dir=str(out))
        engine = ScheduledService(store, settings, clock)
        c = new_campaign(engine, CUSTOMERS, execute_in=timedelta(hours=1), channels=CHANNELS)
        cid = c.campaign_id
        setup = Worker(store, settings, clock, worker_id="setup")
        setup.drain()  # processed: awaiting clearance
        approved = [f"c{i}" for i in range(CUSTOMERS) if i % 3 != 0]
        for i in range(0, len(approved), 10_000):
            engine.approve(cid, [(x, True) for x in approved[i : i + 10_000]])
        clock.advance(minutes=31)
        setup.drain()  # frozen; due for execution (in the real past)
        setup.notifier.close()
        assert store.get_campaign(cid).state == State.CLEARED
        set_up_in = time.monotonic() - started

        total = len(approved) * len(CHANNELS)
        kills_planned = rng.randint(3, 5)
        env = worker_env(
            database_url,
            out,
            CLEARANCE_EXECUTION_CHUNK="2000",
            CLEARANCE_LEASE_SECONDS="2",
        )
        log = tmp_path / "workers.log"
        worker = WorkerProcess(env, log)
        kill_points: list[int] = []
        threshold = rng.randint(1, total // (kills_planned + 1))
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                row = campaign_row(store, cid)
                if row["state"] == State.EXECUTED:
                    break
                sent = int(row["sends_count"])
                if len(kill_points) < kills_planned and sent >= threshold:
                    # a random moment after a chunk commits: mid-delivery, mid-next-chunk, ...
                    time.sleep(rng.uniform(0, 0.05))
                    worker.kill()
                    kill_points.append(int(campaign_row(store, cid)["sends_count"]))
                    worker = WorkerProcess(env, log)
                    left = kills_planned - len(kill_points)
                    if left:  # the next kill comes after the new worker makes progress
                        done = kill_points[-1]
                        threshold = done + rng.randint(1, max(1, (total - done) // (left + 1)))
                time.sleep(0.005)
            else:
                raise AssertionError(f"campaign not executed in time: {campaign_row(store, cid)}")
        finally:
            worker.stop()
        assert len(kill_points) == kills_planned, (
            f"only {len(kill_points)} of {kills_planned} kills landed before the end; "
            f"log: {log.read_text()[-2000:]}"
        )

        # Every approved customer exactly once per channel; no one else.
        with store.db.reader() as tx:
            pairs = tx.fetchall(
                "SELECT customer_id, channel_id FROM sends WHERE campaign_id = ?", (cid,)
            )
        per_pair = Counter((r[0], int(r[1])) for r in pairs)
        duplicates = sum(n - 1 for n in per_pair.values() if n > 1)
        approved_set = set(approved)
        expected = {(x, ch) for x in approved_set for ch in CHANNELS}
        missing = expected - set(per_pair)
        unapproved = {x for x, _ in per_pair if x not in approved_set}
        assert duplicates == 0
        assert not missing, f"{len(missing)} approved sends missing, e.g. {sorted(missing)[:5]}"
        assert not unapproved, f"unapproved customers got sends: {sorted(unapproved)[:5]}"
        assert store.get_campaign(cid).state == State.EXECUTED
        assert store.undelivered_batches(cid) == []

        # The file channel: each SendID once, and exactly the sends recorded.
        ids = file_channel_send_ids(out)
        file_duplicates = len(ids) - len(set(ids))
        with store.db.reader() as tx:
            seqs = tx.fetchall("SELECT seq, channel_id FROM sends WHERE campaign_id = ?", (cid,))
        assert file_duplicates == 0
        assert set(ids) == {f"{cid}-{int(ch)}-{int(seq)}" for seq, ch in seqs}
        print(
            f"[drill crash] db={store.dialect} customers={CUSTOMERS} approved={len(approved)} "
            f"channels={len(CHANNELS)} kills={len(kill_points)} at_sends={kill_points} "
            f"sends={len(pairs)} expected={len(expected)} duplicates={duplicates} "
            f"missing={len(missing)} unapproved={len(unapproved)} file_lines={len(ids)} "
            f"file_duplicates={file_duplicates} setup={set_up_in:.1f}s "
            f"total={time.monotonic() - started:.1f}s seed={seed}"
        )
    finally:
        store.close()
