"""Approvals keyed by the customer's position in the target group (migration 0010): the route
through the in-memory index and the route through the database store the same rows, a row can
only count for the customer whose id it carries, and the migration carries old rows over."""

from __future__ import annotations

import random
from datetime import timedelta

from clearance.domain import State
from clearance.scheduled.membership import MembershipCache, TargetIndex
from clearance.store import Store
from tests.helpers import new_campaign


def approval_rows(store: Store, campaign_id: int) -> list[tuple[int, str, bool]]:
    with store.db.reader() as tx:
        rows = tx.fetchall(
            "SELECT seq, customer_id, status FROM approvals WHERE campaign_id = ? "
            "ORDER BY seq, at, status",
            (campaign_id,),
        )
    return [(int(s), c, bool(v)) for s, c, v in rows]


def positions(store: Store, campaign_id: int) -> dict[str, int]:
    with store.db.reader() as tx:
        rows = tx.fetchall(
            "SELECT customer_id, seq FROM target_customers WHERE campaign_id = ?", (campaign_id,)
        )
    return {c: int(s) for c, s in rows}


def test_both_routes_store_each_approval_at_its_customers_position(engine, worker, store):
    rng = random.Random(7)
    ids = [f"id-{rng.getrandbits(40):x}" for _ in range(300)]
    rng.shuffle(ids)
    a = new_campaign(engine, customer_ids=ids)
    b = new_campaign(engine, customer_ids=ids[::-1])  # same ids, other positions
    worker.drain()
    entries = [(cid, rng.random() < 0.5) for cid in rng.sample(ids, 200)] + [("nobody", True)]
    index = MembershipCache(store).index_for(a.campaign_id)
    assert index is not None
    via_memory = store.apply_approvals(a.campaign_id, entries, engine.now_ms, index.split)
    via_db = store.apply_approvals(b.campaign_id, entries, engine.now_ms)
    assert via_memory == via_db and via_db.not_in_target_group == ["nobody"]
    for c in (a, b):
        where = positions(store, c.campaign_id)
        expected = sorted((where[cid], cid, status) for cid, status in entries if cid in where)
        assert approval_rows(store, c.campaign_id) == expected
    assert positions(store, a.campaign_id) != positions(store, b.campaign_id)


def test_a_row_counts_only_for_the_customer_whose_id_it_carries(engine, worker, store, clock):
    """What a hash collision in the in-memory index could at worst produce: an approval at a
    member's position carrying another id. It never approves that member."""
    c = new_campaign(engine, 5)
    worker.drain()
    where = positions(store, c.campaign_id)
    with store.db.transaction() as tx:
        tx.append_approvals(
            c.campaign_id, [[(where["c1"], "outsider", True), (where["c2"], "c2", True)]], 1
        )
    counts = store.counts(c.campaign_id)
    outcomes = store.customer_outcomes(c.campaign_id, "approved", 0, 100)
    assert [o.customer_id for o in outcomes] == ["c2"]
    assert counts["target"] == 5
    clock.advance(minutes=95)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.CLEARED
    clock.advance(minutes=30)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.EXECUTED
    sent = {cid for _, cid, _, _, _ in store.send_details(c.campaign_id, 1000, 0)}
    assert sent == {"c2"}
    assert store.counts(c.campaign_id)["approved"] == 1


def test_an_index_with_colliding_hashes_is_not_used():
    import numpy as np

    clean = TargetIndex(np.array([5, 1, 9], dtype=np.int64), np.array([1, 2, 3], dtype=np.int64))
    assert clean.unique()
    assert clean.seqs.tolist() == [2, 1, 3]  # positions follow their sorted hashes
    clashing = TargetIndex(np.array([5, 1, 5], dtype=np.int64), np.array([1, 2, 3], np.int64))
    assert not clashing.unique()


def test_migration_0010_places_old_rows_at_their_positions(engine, worker, store, clock):
    c = new_campaign(engine, 6, execute_in=timedelta(hours=3))
    worker.drain()
    where = positions(store, c.campaign_id)
    old = [("c4", True, 10), ("c1", False, 11), ("c4", False, 12), ("gone", True, 13)]
    with store.db.transaction() as tx:  # the table as migrations 0001-0009 left it
        tx.execute("DROP TABLE approvals")
        tx.execute(
            "CREATE TABLE approvals (campaign_id BIGINT NOT NULL, customer_id TEXT NOT NULL, "
            "status BOOLEAN NOT NULL, at BIGINT NOT NULL)"
        )
        tx.execute("CREATE INDEX approvals_latest ON approvals (campaign_id, customer_id, at)")
        for cid, status, at in old:
            tx.execute(
                "INSERT INTO approvals (campaign_id, customer_id, status, at) VALUES (?, ?, ?, ?)",
                (c.campaign_id, cid, status, at),
            )
        tx.execute("DELETE FROM schema_migrations WHERE version = 10")
    assert 10 in store.migrate()
    assert approval_rows(store, c.campaign_id) == [
        (where["c1"], "c1", False),
        (where["c4"], "c4", True),
        (where["c4"], "c4", False),
    ]
    assert store.counts(c.campaign_id)["approved"] == 0  # c4's latest word is "false"
