"""Drill 4b — the deadlines under pressure, with send groups (Conditional Execution V2).

Three send groups whose ClearanceRequiredBy fall 1 s apart. Threads fire
`UpdateCustomerPromotionStatus` calls over real HTTP, each mixing customers of every group,
through the second before the first deadline until a second after the last, while another thread
moves the one clock across the deadlines and freezes each group as its deadline comes. Every entry
acknowledged as applied (a 200, not named in `DeadlinePassed`) must be honoured; every entry
refused (named in `DeadlinePassed`, or in a 409) must not be; nothing else may be answered.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from datetime import timedelta
from itertools import pairwise

import httpx

from clearance.clock import FakeClock
from clearance.domain import GroupState, State
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import Store
from tests.helpers import new_grouped_campaign

ROUNDS = 2
PER_GROUP = 1000
GROUPS = 3
PER_CALL = 10
THREADS = 8
SECOND = timedelta(seconds=1)


def _round(
    rng: random.Random,
    engine: ScheduledService,
    store: Store,
    worker: Worker,
    clock: FakeClock,
    base_url: str,
    key: str,
) -> dict[str, int]:
    c = new_grouped_campaign(
        engine,
        [(timedelta(hours=2) + k * SECOND, PER_GROUP) for k in range(GROUPS)],
        channels=(504, 505),
    )
    cid = c.campaign_id
    worker.drain()
    groups = store.send_groups(cid)
    deadlines = [g.clearance_required_by for g in groups]
    assert all(d is not None for d in deadlines)
    assert [b - a for a, b in pairwise(deadlines)] == [SECOND] * 2  # type: ignore[operator]
    first, last = deadlines[0], deadlines[-1]
    assert first is not None and last is not None
    clock.set(first - SECOND)

    ids = [f"g{k}c{i}" for k in range(GROUPS) for i in range(PER_GROUP)]
    rng.shuffle(ids)  # each call mixes customers of every group
    todo = [ids[i : i + PER_CALL] for i in range(0, len(ids), PER_CALL)]
    calls = len(todo)
    answered: list[list[str]] = []
    verdict: dict[str, str] = {}  # customer → "applied" | "refused"
    codes = Counter[int]()
    lock = threading.Condition()
    failures: list[BaseException] = []
    freeze_late_ms: list[int] = []

    def approver() -> None:
        try:
            with httpx.Client(base_url=base_url, headers={"X-API-KEY": key}, timeout=30) as http:
                while True:
                    with lock:
                        if not todo:
                            return
                        call = todo.pop()
                    r = http.post(
                        "/current/integrations/UpdateCustomerPromotionStatus",
                        json={
                            "CampaignID": cid,
                            "PromosUpdated": [{"CustomerID": x, "Status": True} for x in call],
                        },
                    )
                    body = r.json()
                    with lock:
                        codes[r.status_code] += 1
                        if r.status_code == 200:
                            late = set(body["DeadlinePassed"])
                            assert body["Applied"] == len(call) - len(late), body
                            for x in call:
                                verdict[x] = "refused" if x in late else "applied"
                        elif r.status_code == 409:
                            assert "ClearanceRequiredBy" in body, body
                            for x in call:
                                verdict[x] = "refused"
                        answered.append(call)
                        lock.notify_all()
        except BaseException as exc:
            failures.append(exc)

    def clock_mover() -> None:
        try:
            next_tick = rng.randint(calls // 10, calls // 6)
            frozen = 0
            while clock.now() < last + SECOND:
                with lock:
                    while len(answered) < next_tick and todo:
                        lock.wait(1)
                    if not todo and len(answered) < next_tick:
                        next_tick = len(answered)
                step = timedelta(milliseconds=rng.choice([1, 7, 40, 90, 150, 250]))
                now = clock.now()
                upcoming = [d for d in deadlines[frozen:] if d is not None and d > now]
                if upcoming:
                    step = min(step, upcoming[0] - now)  # land exactly on each deadline
                clock.advance(step.total_seconds())
                while frozen < GROUPS and clock.now() >= deadlines[frozen]:  # type: ignore[operator]
                    began = time.monotonic()
                    gid = groups[frozen].send_group_id
                    while True:
                        g = store.get_send_group(cid, gid)
                        if g is None or g.state != GroupState.AWAITING:
                            break
                        worker.run_once()
                    freeze_late_ms.append(int((time.monotonic() - began) * 1000))
                    frozen += 1
                next_tick += rng.randint(2, 12)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=approver) for _ in range(THREADS)]
    threads.append(threading.Thread(target=clock_mover))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a drill thread hung"
    assert not failures, failures
    assert store.get_campaign(cid).state == State.CLEARED

    clock.set(groups[-1].scheduled_at)
    worker.drain()
    assert store.get_campaign(cid).state == State.EXECUTED
    with store.db.reader() as tx:
        sends = tx.fetchall("SELECT customer_id FROM sends WHERE campaign_id = ?", (cid,))
    sent = {r[0] for r in sends}
    ok = {x for x, v in verdict.items() if v == "applied"}
    refused = {x for x, v in verdict.items() if v == "refused"}
    assert set(codes) <= {200, 409}, codes
    assert len(verdict) == len(ids)
    assert ok and refused, "the round did not straddle the deadlines"
    assert not ok - sent, f"acknowledged approvals not honoured: {sorted(ok - sent)[:5]}"
    assert not refused & sent, f"refused approvals were sent: {sorted(refused & sent)[:5]}"
    assert len(sends) == 2 * len(ok)
    per_group_ok = Counter(x.split("c")[0] for x in ok)
    return {
        "ok": len(ok),
        "refused": len(refused),
        "http_409": codes[409],
        "freeze_late_ms_max": max(freeze_late_ms),
        **{f"ok_{g}": n for g, n in sorted(per_group_ok.items())},
    }


def test_approvals_racing_three_group_freezes_a_second_apart(
    engine: ScheduledService,
    store: Store,
    worker: Worker,
    clock: FakeClock,
    api: httpx.Client,
    admin_key: str,
) -> None:
    seed = int(os.environ.get("DRILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    print(f"\n[drill deadline groups] seed={seed} (rerun with DRILL_SEED={seed})")
    started = time.monotonic()
    rounds = [
        _round(rng, engine, store, worker, clock, str(api.base_url), admin_key)
        for _ in range(ROUNDS)
    ]
    assert max(r["freeze_late_ms_max"] for r in rounds) <= 1000, rounds
    print(
        f"[drill deadline groups] db={store.dialect} rounds={ROUNDS} groups={GROUPS} "
        f"approvals={ROUNDS * GROUPS * PER_GROUP} per_round={rounds} "
        f"time={time.monotonic() - started:.1f}s seed={seed}"
    )
