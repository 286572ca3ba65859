"""Races a hostile review found between workers that lose a lease mid-delivery and the ones that
take it over: a late failure must not unmark a delivered batch, heartbeat threads must not leak
SQLite connections, and two deliveries of one batch at once must not share a temp file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import clearance.scheduled.executor as ex_mod
from clearance.channels import ChannelError
from clearance.channels.base import BatchName
from clearance.channels.file import FileDelivery
from clearance.clock import FakeClock, to_ms
from clearance.config import Settings
from clearance.domain import State
from clearance.heartbeat import Heartbeat
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import Store, open_store
from tests.helpers import new_campaign


def test_a_late_failure_by_a_worker_that_lost_its_lease_never_unmarks_a_delivered_batch(
    engine: ScheduledService, store: Store, settings: Settings, clock: FakeClock, monkeypatch
) -> None:
    """w1's slow delivery fails after w2 took the lapsed lease and delivered the batch."""
    settings = settings.with_(execution_chunk=100)
    c = new_campaign(engine, 5, conditional=False, channels=(504,))
    Worker(store, settings, clock, worker_id="w0").drain()  # -> CLEARED
    clock.advance(hours=2)
    in_flight, release = threading.Event(), threading.Event()
    real = ex_mod.delivery_for

    class SlowThenFail:
        def deliver(self, name, sends):
            in_flight.set()
            release.wait(10)
            raise ChannelError("POST timed out (w1, stale)")

    monkeypatch.setattr(ex_mod, "delivery_for", lambda *a: SlowThenFail())
    w1 = Worker(store, settings, clock, worker_id="w1")
    t = threading.Thread(target=w1.run_once)
    t.start()
    assert in_flight.wait(5)
    monkeypatch.setattr(ex_mod, "delivery_for", real)
    clock.advance(
        seconds=settings.lease_seconds + 1
    )  # w1's lease lapsed (its heartbeat is 10 s away)
    w2 = Worker(store, settings, clock, worker_id="w2")
    w2.drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTED
    assert store.counts(c.campaign_id)["sent"] == 5
    release.set()
    t.join(10)
    files = list(Path(settings.file_channel_dir).rglob("*.ndjson"))
    counts = store.counts(c.campaign_id)
    und = store.undelivered_batches(c.campaign_id)
    print("\nfiles", len(files), "counts", counts, "undelivered", und)
    assert files and counts["sent"] == 5, counts  # FAILS: the stale worker's error clobbered it


def test_a_worker_whose_heartbeat_saw_the_loss_records_nothing(
    engine, store, settings, clock, monkeypatch
):
    settings = settings.with_(execution_chunk=100, lease_seconds=0.3)
    c = new_campaign(engine, 5, conditional=False, channels=(504,))
    Worker(store, settings, clock, worker_id="w0").drain()
    clock.advance(hours=2)
    in_flight, release = threading.Event(), threading.Event()
    real = ex_mod.delivery_for

    class SlowThenFail:
        def deliver(self, name, sends):
            in_flight.set()
            release.wait(10)
            raise ChannelError("stale timeout")

    monkeypatch.setattr(ex_mod, "delivery_for", lambda *a: SlowThenFail())
    w1 = Worker(store, settings, clock, worker_id="w1")
    raised = []

    def run():
        try:
            w1.run_once()
            raised.append("returned")
        except Exception as e:
            raised.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert in_flight.wait(5)
    monkeypatch.setattr(ex_mod, "delivery_for", real)
    clock.advance(seconds=1)
    Worker(store, settings, clock, worker_id="w2").drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTED
    time.sleep(0.5)  # w1's heartbeat beats, sees w2 (or NULL) as owner: lost
    release.set()
    t.join(10)
    print("\nraised", raised, "counts", store.counts(c.campaign_id))
    assert store.counts(c.campaign_id)["sent"] == 5


def test_heartbeat_threads_give_their_sqlite_connections_back(
    tmp_path: Path, settings: Settings, clock: FakeClock
) -> None:
    # SQLite keeps a connection per thread (a PostgreSQL pool has nothing to give back)
    store = open_store(f"sqlite:///{tmp_path / 'heartbeats.db'}")
    engine = ScheduledService(store, settings, clock)
    c = new_campaign(engine, 1, conditional=False)
    now = to_ms(clock.now())
    store.claim_due_campaign(now, "w1", now + 1000)
    before = len(store.db._all)
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(100):
        with Heartbeat(
            lambda: store.extend_lease(c.campaign_id, "w1", now + 5000),
            0.005,
            5,
            release=store.db.release_thread,  # as the executor and notifier build it
        ):
            time.sleep(0.03)
    after = len(store.db._all)
    fds_after = len(os.listdir("/proc/self/fd"))
    print(f"\nsqlite conns {before} -> {after}, fds {fds_before} -> {fds_after}")
    store.close()
    assert after - before < 5 and fds_after - fds_before < 10


def test_two_deliveries_of_one_batch_at_once_do_not_share_a_temp_file(
    tmp_path: Path, monkeypatch
) -> None:
    import clearance.channels.file as fmod

    d = FileDelivery(str(tmp_path))
    name = BatchName("campaign-1", "1", 504, "000000000001", "000000000003")
    sends = [{"SendID": f"1-504-{i}", "CustomerID": f"c{i}"} for i in range(1, 4)]
    b_opened, a_done = threading.Event(), threading.Event()
    real_open, real_fsync = open, os.fsync

    def fake_open(p, mode="r", *a, **k):
        fh = real_open(p, mode, *a, **k)
        if threading.current_thread().name == "B":
            b_opened.set()
            a_done.wait(5)
        return fh

    def fake_fsync(fd):
        if threading.current_thread().name == "A":
            b_opened.wait(5)
        return real_fsync(fd)

    monkeypatch.setattr(fmod, "open", fake_open, raising=False)
    monkeypatch.setattr(fmod.os, "fsync", fake_fsync)
    errs: dict[str, Exception] = {}

    def run(n):
        try:
            d.deliver(name, sends)
        except Exception as e:
            errs[n] = e

    A = threading.Thread(target=run, args=("A",), name="A")
    B = threading.Thread(target=run, args=("B",), name="B")
    A.start()
    time.sleep(0.1)
    B.start()
    A.join(5)
    path = d.path_for(name)
    seen_after_A = path.read_bytes()
    a_done.set()
    B.join(5)
    print(
        f"\nA ok={'A' not in errs} path after A returned: {len(seen_after_A)} bytes; "
        f"B error={errs.get('B')!r}; final {len(path.read_bytes())} bytes"
    )
    assert seen_after_A, "A reported delivered while the file it published was empty"
