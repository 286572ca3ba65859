"""Riding out a database outage: the pool, the decision writer, the worker's lease, SQLite locks.

PostgreSQL outages are played by a real loopback TCP proxy (bench/pgproxy.py) that cuts every
connection and refuses new ones; the real PostgreSQL is never restarted.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.pgproxy import TcpProxy

from clearance.errors import InvalidInput, StoreUnavailable
from clearance.metrics import Metrics
from clearance.scheduled.service import ScheduledService
from clearance.store import DecisionRow, Store, open_store
from clearance.store.postgres import PostgresDatabase
from clearance.store.sqlite import SQLiteDatabase
from clearance.triggered.decision_log import DecisionLog
from clearance.triggered.matching import TriggerIndex
from tests.conftest import serve_api


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    p = TcpProxy("127.0.0.1", int(postgres_url.rsplit(":", 1)[1].split("/")[0])).start()
    yield p
    p.stop()


@pytest.fixture
def proxied(postgres_url: str, proxy: TcpProxy) -> Iterator[Store]:
    """A store that reaches PostgreSQL only through the proxy, with a short pool wait."""
    store = Store(PostgresDatabase(proxy.url_for(postgres_url), max_size=4, timeout=1.0))
    yield store
    store.close()


def row(n: int) -> DecisionRow:
    return DecisionRow(f"d{n:05d}", n, "T-1", f"u{n}", False, "allowed", None, 1.0, False, False)


def logged(store: Store) -> set[str]:
    with store.db.reader() as tx:
        return {r[0] for r in tx.fetchall("SELECT decision_id FROM decisions")}


def test_pool_hands_out_live_connections_after_a_restart(proxied, proxy):
    # fill the pool with several idle connections, then "restart" the database under them
    barrier = threading.Barrier(4)

    def hold() -> None:
        with proxied.db.reader() as tx:
            barrier.wait(timeout=10)
            tx.fetchall("SELECT 1")

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proxy.cut() >= 4
    proxy.restore()
    # back: every call succeeds at once; none is handed a connection that died in the restart
    for _ in range(10):
        assert proxied.list_listeners() == []
    proxy.cut()
    with pytest.raises(StoreUnavailable):
        proxied.list_listeners()  # down: a clear "unavailable", after the pool's short wait
    proxy.restore()
    wait_until_reachable(proxied)  # the pool refills by itself (with its reconnect backoff)


def wait_until_reachable(store: Store, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            store.list_listeners()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise


def test_decision_writer_retries_through_an_outage(proxied, proxy):
    async def run() -> int:
        log = DecisionLog(proxied, Metrics(), interval=0.01, retry_seconds=30)
        log.start()
        proxy.cut()
        for n in range(50):
            log.append(row(n))
        log.flush()
        await asyncio.sleep(0.5)  # the writer is failing and retrying now
        proxy.restore()
        await log.close()
        return log._queued

    assert asyncio.run(run()) == 0
    assert logged(proxied) == {row(n).decision_id for n in range(50)}


def test_the_log_refuses_new_decisions_while_it_cannot_write_and_resumes_after(proxied, proxy):
    """Fail closed: once writes have failed for `refuse_after`, the log says so (the events API
    then answers 503 instead of acknowledging decisions it cannot keep)."""

    async def run() -> list[str | None]:
        log = DecisionLog(proxied, Metrics(), interval=0.01, retry_seconds=30)
        log.refuse_after = 0.2
        log.start()
        seen = [log.refusing()]
        proxy.cut()
        log.append(row(1))
        log.flush()
        deadline = time.monotonic() + 10
        while log.refusing() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen.append(log.refusing())
        proxy.restore()
        while log.refusing() is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen.append(log.refusing())
        await log.close()
        return seen

    before, during, after = asyncio.run(run())
    assert before is None and after is None
    assert during is not None and "cannot be written" in during
    assert logged(proxied) == {row(1).decision_id}


def test_events_answer_503_while_the_decision_log_cannot_write(proxied, proxy, settings, clock):
    engine = ScheduledService(proxied, settings, clock)
    server = serve_api(engine)
    key = proxied.create_api_key("admin", "t", 0)[1]
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-KEY": key}, timeout=10) as c:
            c.post(
                "/api/v1/triggered-campaigns",
                json={
                    "id": "T-1",
                    "action": {"id": 1, "channels": [{"id": 506}]},
                    "conditional": False,
                    "trigger": {"event": "deposit"},
                },
            ).raise_for_status()
            event = {"customer_id": "c1", "event": "deposit"}
            assert c.post("/api/v1/events", json=event).status_code == 200
            realtime = server.app.state.runtime.realtime
            realtime.log.refuse_after = 0.0
            proxy.cut()
            c.post("/api/v1/events", json={"customer_id": "c2", "event": "deposit"})
            deadline = time.monotonic() + 10
            while realtime.log.refusing() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            r = c.post("/api/v1/events", json={"customer_id": "c3", "event": "deposit"})
            assert r.status_code == 503, r.text
            assert "nothing was decided or sent" in r.json()["message"]
            proxy.restore()
            while realtime.log.refusing() is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert c.post("/api/v1/events", json={"customer_id": "c4", "event": "deposit"}).json()
    finally:
        server.stop()
    wait_until_reachable(proxied)
    users = {r for r in logged_users(proxied)}
    assert users == {"c1", "c2", "c4"}  # c3 was refused, not decided


def logged_users(store: Store) -> list[str]:
    with store.db.reader() as tx:
        return [r[0] for r in tx.fetchall("SELECT user_id FROM decisions")]


def test_decision_writer_drops_after_its_deadline_and_counts_the_loss(proxied, proxy):
    metrics = Metrics()

    async def run() -> None:
        log = DecisionLog(proxied, metrics, interval=0.01, retry_seconds=0.3)
        log.start()
        proxy.cut()
        for n in range(7):
            log.append(row(n))
        await log.close()

    asyncio.run(run())
    proxy.restore()
    wait_until_reachable(proxied)
    assert logged(proxied) == set()
    assert metrics.decisions_lost._value.get() == 7


def test_a_retry_skips_what_an_unanswered_commit_already_wrote(store):
    # The first attempt's commit landed but its answer was lost: the rows are in the log
    # already, so writing the batch again is a duplicate. The writer must skip those rows, write
    # the rest, and keep going for later batches.
    store.write_decisions([row(1), row(2)])

    async def run() -> None:
        log = DecisionLog(store, Metrics(), interval=0.01, retry_seconds=30)
        log.start()
        for n in (1, 2, 3):
            log.append(row(n))
        log.flush()
        await asyncio.sleep(0.2)
        log.append(row(4))
        await log.close()

    asyncio.run(run())
    assert logged(store) == {row(n).decision_id for n in (1, 2, 3, 4)}


def test_trigger_index_keeps_the_loaded_campaigns_while_the_database_is_away(proxied, proxy):
    index = TriggerIndex(proxied, refresh_seconds=0)
    with pytest.raises(StoreUnavailable):  # nothing loaded yet: nothing to fall back on
        proxy.cut()
        index.refresh_or_keep()
    proxy.restore()
    wait_until_reachable(proxied)
    index.refresh_or_keep()
    assert not index.must_wait()
    proxy.cut()
    index.refresh_or_keep()  # no error: the loaded set stays
    index.invalidate()
    assert index.must_wait()  # a change made here is waited for, not matched stale


def test_a_worker_reclaims_its_own_lease_at_once(store, engine):
    from tests.integration.test_lifecycle import new_campaign

    c = new_campaign(engine, 5)
    assert store.claim_due_campaign(2**62, "w1", 2**62) == c.campaign_id
    # w1's step was cut short (the database went away) before it could release the lease
    assert store.claim_due_campaign(2**62 - 1, "w2", 2**62) is None  # another worker waits
    assert store.claim_due_campaign(2**62 - 1, "w1", 2**62) == c.campaign_id  # w1 resumes


def test_sqlite_locked_past_the_busy_timeout_is_a_503_and_applies_nothing(
    tmp_path, settings, clock
):
    path = tmp_path / "locked.db"
    open_store(f"sqlite:///{path}").close()
    store = Store(SQLiteDatabase(str(path), busy_timeout=0.2))
    key = store.create_api_key("admin", "t", 0)[1]
    server = serve_api(ScheduledService(store, settings, clock))
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-KEY": key}, timeout=10) as c:
            body = {"EventTypeID": 5, "ListenerURL": "http://127.0.0.1:9/hook"}
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            r = c.post("/current/general/RegisterEventListener", json=body)
            assert r.status_code == 503
            assert r.json()["error"] == "Service Unavailable" and "database" in r.json()["message"]
            blocker.execute("ROLLBACK")
            assert store.list_listeners() == []
            assert c.post("/current/general/RegisterEventListener", json=body).status_code == 200
            assert len(store.list_listeners()) == 1
    finally:
        blocker.close()
        server.stop()
        store.close()


def test_sqlite_operational_errors_that_are_not_availability_stay_errors(tmp_path: Path):
    store = Store(SQLiteDatabase(str(tmp_path / "x.db")))
    with pytest.raises(sqlite3.OperationalError), store.db.transaction() as tx:
        tx.execute("SELECT * FROM no_such_table")
    store.close()


def test_connections_go_back_to_the_pool_idle(proxied, caplog):
    # each read and write ends its transaction before the connection is returned (the pool
    # would otherwise roll it back and warn about it on every call)
    with caplog.at_level("WARNING", logger="psycopg.pool"):
        for _ in range(5):
            proxied.list_listeners()
        proxied.register_listener(5, None, "http://127.0.0.1:9/x", 0)
        with pytest.raises(InvalidInput), proxied.db.transaction() as tx:
            tx.execute("SELECT ?::int", (2**40,))
        assert proxied.list_listeners() == [(5, "http://127.0.0.1:9/x", None)]
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]


def test_sqlite_writers_in_one_process_take_turns_and_a_long_wait_is_a_503(tmp_path: Path):
    """Writers of one process queue for their turn (no busy-handler polling between them); one
    that cannot get a turn within the busy timeout is told the database is unavailable."""
    import threading
    import time

    from clearance.errors import StoreUnavailable

    path = tmp_path / "turns.db"
    open_store(f"sqlite:///{path}").close()
    db = SQLiteDatabase(str(path), busy_timeout=0.3)
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:
        with db.transaction() as tx:
            tx.execute(_PROMO, ("a",))
            holding.set()
            release.wait(5)
            order.append("first")

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="busy"), db.transaction():
        pass
    assert 0.25 <= time.monotonic() - started < 2
    waiter = threading.Thread(target=lambda: _second(db, order))
    waiter.start()
    time.sleep(0.05)
    release.set()
    t.join(5)
    waiter.join(5)
    assert order == ["first", "second"]
    with db.reader() as tx:
        assert tx.fetchall("SELECT promo_code FROM promotions ORDER BY promo_code") == [
            ("a",),
            ("b",),
        ]
    db.close()


_PROMO = "INSERT INTO promotions (promo_code, promotion_name, created_at) VALUES (?, '', 0)"


def _second(db: SQLiteDatabase, order: list[str]) -> None:
    with db.transaction() as tx:
        tx.execute(_PROMO, ("b",))
        order.append("second")
