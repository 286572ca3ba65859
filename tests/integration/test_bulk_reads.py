"""Bulk reads of the target group (a listener's page, the membership index) on both databases:
every row, in key order, values exactly as stored, whatever the ids and attributes hold."""

from __future__ import annotations

import random
import string

import orjson
import pytest

from tests.helpers import new_campaign


def _campaign(engine, rows):
    return new_campaign(engine, targets=rows, promo_codes=("P1",))


def test_pages_and_ids_come_back_in_key_order_exactly_as_stored(engine, store):
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits
    ids = list(
        dict.fromkeys("".join(rng.choices(alphabet, k=rng.randint(8, 16))) for _ in range(2500))
    )
    # ids and attributes a JSON route must carry unchanged: quotes, backslashes, non-ASCII,
    # JSON text inside JSON, numbers that look like ids, a missing attribute set
    ids[:6] = ['q"uote', "back\\slash", "ünï©ødé", "00042", "[1,2]", "tab\there"]
    attributes = [
        None if i % 7 == 0 else orjson.dumps({"tier": f"t{i}", "s": 'x"\\y', "n": i}).decode()
        for i in range(len(ids))
    ]
    c = _campaign(engine, list(zip(ids, attributes, strict=True)))
    rows = store.page_target(c.campaign_id, 0, 1000)
    assert [tuple(r) for r in rows] == [(i + 1, ids[i], attributes[i]) for i in range(1000)]
    assert all(type(r[0]) is int for r in rows)
    rows = store.page_target(c.campaign_id, 2000, 1000, attributes=False)
    assert [tuple(r) for r in rows] == [(i + 1, ids[i]) for i in range(2000, len(ids))]
    assert store.page_target(c.campaign_id, len(ids), 1000) == []
    pages = list(store.iter_target_rows(c.campaign_id, page=1000))
    assert [len(ids_) for _, ids_ in pages] == [1000, 1000, len(ids) - 2000]
    assert [(s, c) for seqs, ids_ in pages for s, c in zip(seqs, ids_, strict=True)] == [
        (i + 1, cid) for i, cid in enumerate(ids)
    ]


def test_hostile_ids_and_attributes_round_trip_and_pages_cross_the_end(engine, store):
    # C1 controls (C0 ones are refused on upload), U+2028, a BOM, emoji, JSON-looking text: the
    # JSON route must hand back exactly what was stored; a page crossing the end holds the rest
    ids = ["c1\x80\x9f", "\\u0041", "line\u2028sep", "\ufeffbom", "😀" * 4, '{"a":1}', "null"]
    ids += [f"plain{i:04d}" for i in range(40)]
    attributes = [None, "", "null", '"str"', "[1,2]", '{"k":"\\u0000\\n"}', "not json"]
    attributes += [None] * 40
    c = _campaign(engine, list(zip(ids, attributes, strict=True)))
    other = _campaign(engine, [(f"other{i}", None) for i in range(50)])  # never in c's pages
    rows = store.page_target(c.campaign_id, 0, 5)
    assert [tuple(r) for r in rows] == [(i + 1, ids[i], attributes[i]) for i in range(5)]
    rows = store.page_target(c.campaign_id, 5, 1000)
    assert [tuple(r) for r in rows] == [(i + 1, ids[i], attributes[i]) for i in range(5, len(ids))]
    rows = store.page_target(c.campaign_id, len(ids) - 3, 10, attributes=False)
    assert [tuple(r) for r in rows] == [(i + 1, ids[i]) for i in range(len(ids) - 3, len(ids))]
    assert store.page_target(c.campaign_id, len(ids) + 5, 10) == []
    assert [cid for _, p in store.iter_target_rows(c.campaign_id, page=6) for cid in p] == ids
    assert len(store.page_target(other.campaign_id, 0, 1000)) == 50


def test_a_bulk_read_out_of_key_order_or_short_of_rows_is_refused(engine, store, monkeypatch):
    """Fail closed: a page that came back reordered, or repeating a key it was resumed after, is
    an error, never served (PromoCodes follow the key; the next page resumes from the last)."""
    c = _campaign(engine, [(f"c{i}", None) for i in range(10)])
    with store.db.reader() as tx:
        tx_type = type(tx)
    real = tx_type.fetch_rows

    def swapped(self, columns, rest, params=()):
        rows = real(self, columns, rest, params)
        return [rows[1], rows[0], *rows[2:]] if len(rows) > 1 else rows

    monkeypatch.setattr(tx_type, "fetch_rows", swapped)
    with pytest.raises(RuntimeError, match="key order"):
        store.page_target(c.campaign_id, 0, 5)
    real_columns = tx_type.fetch_columns

    def swapped_columns(self, columns, rest, params=()):
        return [[c[1], c[0], *c[2:]] for c in real_columns(self, columns, rest, params)]

    monkeypatch.setattr(tx_type, "fetch_columns", swapped_columns)
    with pytest.raises(RuntimeError, match="key order"):
        list(store.iter_target_rows(c.campaign_id, page=5))

    def repeated(self, columns, rest, params=()):  # one key before the one asked to resume at
        return real(self, columns, rest, (params[0], params[1] - 1, params[2]))

    monkeypatch.setattr(tx_type, "fetch_rows", repeated)
    with pytest.raises(RuntimeError, match="key order"):
        store.page_target(c.campaign_id, 3, 5)


def test_the_sqlite_json_read_refuses_a_decoded_array_of_the_wrong_length(monkeypatch):
    sqlite_mod = pytest.importorskip("clearance.store.sqlite")
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (seq INTEGER, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 6)])
    tx = sqlite_mod.SQLiteTx(conn)
    assert tx.fetch_rows("seq, v", "FROM t WHERE seq > ? ORDER BY seq LIMIT ?", (1, 3)) == [
        [2, "v2"],
        [3, "v3"],
        [4, "v4"],
    ]
    assert tx.fetch_rows("seq, v", "FROM t WHERE seq > ? ORDER BY seq LIMIT ?", (9, 3)) == []
    real_loads = sqlite_mod.orjson.loads
    monkeypatch.setattr(sqlite_mod.orjson, "loads", lambda text: real_loads(text)[:-1])
    with pytest.raises(RuntimeError, match="refused"):
        tx.fetch_rows("seq, v", "FROM t ORDER BY seq", ())


def test_the_sqlite_column_read_refuses_a_column_short_of_its_rows(monkeypatch):
    sqlite_mod = pytest.importorskip("clearance.store.sqlite")
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (seq INTEGER, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 6)])
    tx = sqlite_mod.SQLiteTx(conn)
    rest = "FROM t WHERE seq > ? ORDER BY seq LIMIT ?"
    assert tx.fetch_columns(("seq", "v"), rest, (1, 3)) == [[2, 3, 4], ["v2", "v3", "v4"]]
    assert tx.fetch_columns(("seq", "v"), rest, (9, 3)) == [[], []]
    real_loads = sqlite_mod.orjson.loads
    monkeypatch.setattr(sqlite_mod.orjson, "loads", lambda text: real_loads(text)[:-1])
    with pytest.raises(RuntimeError, match="refused"):
        tx.fetch_columns(("seq", "v"), rest, (0, 9))
