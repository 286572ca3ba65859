"""Bulk reads of the target group (a listener's page, the membership index) on both databases:
every row, in key order, values exactly as stored, whatever the ids and attributes hold."""

from __future__ import annotations

import random
import string
from datetime import timedelta

import orjson

from clearance.domain import Campaign, ChannelRef, State, Template


def _campaign(engine, rows):
    c = Campaign(
        campaign_id=0,
        name="bulk",
        execute_at=engine.clock.now() + timedelta(hours=2),
        duration_days=1,
        conditional=True,
        action_id=7,
        action_name="bonus",
        promo_codes=["P1"],
        channels=[ChannelRef(504, "ch", (Template(5040, "t"),))],
        state=State.SCHEDULED,
    )
    return engine.create_campaign(c, rows)


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
    pages = list(store.iter_target_ids(c.campaign_id, page=1000))
    assert [len(p) for p in pages] == [1000, 1000, len(ids) - 2000]
    assert [cid for page in pages for cid in page] == ids
