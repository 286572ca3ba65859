"""A GetProcessedCampaignCustomers page rendered by the database is the page the Python renderer
writes, byte for byte, on both databases: hostile ids, attributes and names, every promo-code
count, pages that cross the end."""

from __future__ import annotations

import random

import orjson
import pytest

from clearance.api.pages import processed_page, row_tails
from clearance.store.page_json import MAX_SQL_CODES, MAX_SQL_NAMES
from tests.helpers import new_campaign

HOSTILE_IDS = [
    'q"uote',
    "back\\slash",
    '\\"',
    "\\u0041",
    "ünï©ødé",
    "00042",
    "[1,2]",
    "c1\x80\x9f\x7f",
    "line\u2028sep\u2029",
    "\ufeffbom",
    "😀👍🏽",
    "</script>",
    "{}",
    "null",
    "'",
    "x" * 200,
    "c0\x01\x1f\t\n",  # refused by the API; the store still renders it the same
]
HOSTILE_VALUES = [
    'a"b',
    "\\",
    "\x01\x1f\n\t\r\b\f",
    "\u2028",
    "é😀",
    "",
    1.5,
    1e-7,
    1e16,
    -0.0,
    2**63 - 1,
    -(2**63),
    0,
    True,
    False,
    None,
    [],
    {},
    [1, {"y": None, "z": [True, 'q"\\']}],
    {"nested": {"deep": ["\u0001"]}},
]
NAMES = ["tier", "a.b", "with space", "[0]", "$", "ü", "it's", "x*", "missing"]


def _campaign(engine, rows, codes):
    return new_campaign(engine, targets=rows, promo_codes=tuple(codes))


def _rows(rng: random.Random, n: int) -> list[tuple[str, str | None]]:
    ids = list(dict.fromkeys([*HOSTILE_IDS, *(f"id{rng.randrange(10**9)}" for _ in range(n))]))
    out = []
    for i, cid in enumerate(ids):
        if i % 5 == 0:
            out.append((cid, None))
            continue
        keys = rng.sample([*NAMES[:-1], "other"], rng.randint(1, 5))
        values = {k: rng.choice(HOSTILE_VALUES) for k in keys}
        out.append((cid, orjson.dumps(values).decode()))
    return out


def _reference(store, c, after, limit, names):
    rows = store.page_target(c.campaign_id, after, limit, attributes=bool(names))
    return processed_page(rows, c.action_id, c.promo_codes, names)


def _render(store, c, after, limit, names):
    tails = [t.decode() for t in row_tails(c.action_id, c.promo_codes)]
    return store.render_page(c.campaign_id, after, limit, tails, names)


@pytest.mark.parametrize(
    "codes",
    [[], ["ONE"], ["P-A", 'P"B', "P\\C"], [f"c{i}\u00e9" for i in range(MAX_SQL_CODES)]],
)
def test_the_database_renders_the_same_bytes_as_the_python_renderer(engine, store, codes):
    rng = random.Random(len(codes))
    target = _rows(rng, 300)
    c = _campaign(engine, target, codes)
    name_sets = [[], ["tier"], ["missing"], NAMES, ["tier", "tier"], ["a.b", "ü"]]
    for names in name_sets:
        for after, limit in [(0, 7), (0, len(target)), (5, 101), (len(target) - 3, 10)]:
            page = _render(store, c, after, limit, names)
            assert page is not None, names
            assert page == _reference(store, c, after, limit, names), (names, after, limit)
        assert _render(store, c, len(target), 10, names) == b"[]"
    whole = orjson.loads(_render(store, c, 0, 10_000, ["tier"]))
    assert [r["CustomerID"] for r in whole] == [cid for cid, _ in target]


def test_what_sql_cannot_say_the_same_way_is_left_to_the_caller(engine, store):
    c = _campaign(engine, _rows(random.Random(1), 20), [f"c{i}" for i in range(MAX_SQL_CODES + 1)])
    assert _render(store, c, 0, 10, []) is None  # a CASE branch per code: too many
    c = _campaign(engine, _rows(random.Random(2), 20), ["P"])
    for name in ['q"uote', "back\\slash", "ctl\x01"]:
        page = _render(store, c, 0, 50, ["tier", name])
        if store.dialect == "sqlite":  # a JSON path cannot spell it unescaped
            assert page is None
        else:
            assert page == _reference(store, c, 0, 50, ["tier", name])


def test_a_nul_in_an_attribute_is_rendered_by_the_caller_on_postgres(engine, store):
    # orjson stores NUL as \u0000, which PostgreSQL's json refuses to read: that page is left
    # to the caller (the Python renderer), never refused, never different
    target = [("a", orjson.dumps({"tier": "x\x00y"}).decode()), ("b", None)]
    c = _campaign(engine, target, ["P"])
    page = _render(store, c, 0, 10, ["tier"])
    if store.dialect == "sqlite":
        assert page == _reference(store, c, 0, 10, ["tier"])
    else:
        assert page is None
    assert _render(store, c, 0, 10, []) == _reference(store, c, 0, 10, [])


def test_a_page_asking_for_many_attributes_is_still_served(engine, worker, store, api):
    """SQLite's json_extract takes at most 127 arguments and PostgreSQL's parser overflows on a
    `||` chain of thousands: a listener asking for that many attribute names gets the page the
    Python renderer writes (once a 500 on SQLite from 127 names, a 503 on PostgreSQL)."""
    target = [("a", orjson.dumps({"n1": 1, "n126": "x"}).decode()), ("b", None)]
    c = _campaign(engine, target, ["P"])
    worker.drain()
    for n in (MAX_SQL_NAMES, MAX_SQL_NAMES + 1, 127, 200, 5_000):
        names = [f"n{i}" for i in range(n)]
        r = api.get(
            "/current/customers/GetProcessedCampaignCustomers",
            params={"CampaignID": c.campaign_id, "CustomerAttributes": ";".join(names)},
        )
        assert r.status_code == 200, (n, r.text[:300])
        assert r.content == _reference(store, c, 0, 10_000, names), n
        assert r.json()[0]["CustomerAttributes"][126 if n > 126 else 1] == ("x" if n > 126 else 1)
