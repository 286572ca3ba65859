"""Drill 1b — crash during a send group's execution (Conditional Execution V2).

A 60,000-customer conditional campaign in three send groups (10 minutes apart, all in the real
past by the time the worker runs), two thirds approved, two channels. The real `clearance worker`
process is SIGKILLed at random points while the groups execute and restarted each time.
Afterwards every approved customer has exactly one send per channel, with its own group's
template and send time; no unapproved customer has one; every group and the campaign are
executed, and the batch files hold every SendID exactly once.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clearance.clock import FakeClock, to_ms
from clearance.config import Settings
from clearance.domain import State
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import open_store
from tests.drills.support import WorkerProcess, campaign_row, file_channel_send_ids, worker_env
from tests.helpers import new_grouped_campaign

PER_GROUP = 20_000
OFFSETS = (timedelta(minutes=60), timedelta(minutes=70), timedelta(minutes=80))
TEMPLATES = (901, 902, 903)
CHANNELS = (504, 505)


def test_worker_sigkilled_mid_group_resumes_with_nothing_sent_twice(
    database_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("DRILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    print(f"\n[drill group crash] seed={seed} (rerun with DRILL_SEED={seed})")
    started = time.monotonic()
    out = tmp_path / "out"
    store = open_store(database_url)
    try:
        clock = FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))
        settings = Settings(file_channel_dir=str(out))
        engine = ScheduledService(store, settings, clock)
        c = new_grouped_campaign(
            engine, [(o, PER_GROUP) for o in OFFSETS], templates=TEMPLATES, channels=CHANNELS
        )
        cid = c.campaign_id
        setup = Worker(store, settings, clock, worker_id="setup")
        setup.drain()
        ids = [f"g{k}c{i}" for k in range(len(OFFSETS)) for i in range(PER_GROUP)]
        approved = [x for n, x in enumerate(ids) if n % 3 != 0]
        for i in range(0, len(approved), 10_000):
            engine.approve(cid, [(x, True) for x in approved[i : i + 10_000]])
        clock.advance(minutes=51)  # every group frozen; all due (in the real past)
        setup.drain()
        setup.notifier.close()
        assert [g.state for g in store.send_groups(cid)] == ["cleared"] * 3

        total = len(approved) * len(CHANNELS)
        kills_planned = rng.randint(3, 5)
        env = worker_env(
            database_url, out, CLEARANCE_EXECUTION_CHUNK="1000", CLEARANCE_LEASE_SECONDS="2"
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
                if len(kill_points) < kills_planned and int(row["sends_count"]) >= threshold:
                    time.sleep(rng.uniform(0, 0.05))
                    worker.kill()
                    kill_points.append(int(campaign_row(store, cid)["sends_count"]))
                    worker = WorkerProcess(env, log)
                    left = kills_planned - len(kill_points)
                    if left:
                        done = kill_points[-1]
                        threshold = done + rng.randint(1, max(1, (total - done) // (left + 1)))
                time.sleep(0.005)
            else:
                raise AssertionError(f"campaign not executed in time: {campaign_row(store, cid)}")
        finally:
            worker.stop()
        assert len(kill_points) == kills_planned, log.read_text()[-2000:]

        with store.db.reader() as tx:
            sends = tx.fetchall(
                "SELECT customer_id, channel_id, template_id, scheduled_at, seq FROM sends "
                "WHERE campaign_id = ?",
                (cid,),
            )
        per_pair = Counter((r[0], int(r[1])) for r in sends)
        duplicates = sum(n - 1 for n in per_pair.values() if n > 1)
        expected = {(x, ch) for x in approved for ch in CHANNELS}
        assert duplicates == 0
        assert set(per_pair) == expected
        start = clock.now() - timedelta(minutes=51)
        for customer, channel, template, scheduled, _ in sends:  # each its own group's
            k = int(customer[1])
            assert int(scheduled) == to_ms(start + OFFSETS[k])
            assert int(template) == (TEMPLATES[k] if int(channel) == CHANNELS[0] else 5050)
        assert [g.state for g in store.send_groups(cid)] == ["executed"] * 3
        assert store.get_campaign(cid).state == State.EXECUTED
        ids_in_files = file_channel_send_ids(out)
        assert len(ids_in_files) == len(set(ids_in_files))
        assert set(ids_in_files) == {f"{cid}-{int(r[1])}-{int(r[4])}" for r in sends}
        print(
            f"[drill group crash] db={store.dialect} groups={len(OFFSETS)} "
            f"customers={len(ids)} approved={len(approved)} kills={len(kill_points)} "
            f"at_sends={kill_points} sends={len(sends)} duplicates={duplicates} "
            f"file_lines={len(ids_in_files)} total={time.monotonic() - started:.1f}s seed={seed}"
        )
    finally:
        store.close()
