"""The page renderer writes the same JSON, byte for byte, as encoding one dict per customer."""

from __future__ import annotations

import random

import orjson
import pytest

from clearance.api.pages import processed_page

IDS = ['q"uote', "back\\slash", "ünï©ødé", "00042", "[1,2]", "tab\there", "emoji😀", "plain"]


def by_dicts(rows, action_id, codes, names):
    def promo(seq):
        return codes[(seq - 1) % len(codes)] if codes else ""

    out = []
    for row in rows:
        item = {"CustomerID": row[1], "ActionID": action_id, "PromoCode": promo(row[0])}
        if names:
            values = orjson.loads(row[2]) if row[2] else {}
            item["CustomerAttributes"] = [values.get(n) for n in names]
        out.append(item)
    return orjson.dumps(out)


@pytest.mark.parametrize("codes", [[], ["ONE"], ["P-A", 'P"B', "P\\C"]])
@pytest.mark.parametrize("action_id", [7, None])
def test_same_bytes_as_one_dict_per_customer(codes, action_id):
    rows = [(seq, cid) for seq, cid in enumerate(IDS, start=3)]
    assert processed_page(rows, action_id, codes) == by_dicts(rows, action_id, codes, [])
    attrs = [None, '{"tier":"gold","n":1}', '{"tier":"a\\"b","x":[1,{"y":null}]}', "{}"]
    rows3 = [(seq, cid, attrs[seq % 4]) for seq, cid in enumerate(IDS, start=1)]
    names = ["tier", "x", "missing"]
    assert processed_page(rows3, action_id, codes, names) == by_dicts(
        rows3, action_id, codes, names
    )
    assert orjson.loads(processed_page(rows, action_id, codes))[0]["CustomerID"] == IDS[0]


def test_an_empty_page_is_an_empty_list():
    assert processed_page([], 7, ["P"]) == b"[]"
    assert processed_page([], 7, ["P"], ["tier"]) == b"[]"


HOSTILE = [
    '"',
    "\\",
    '\\"',
    "\\u0041",
    "\x00",
    "\x01\x1f",
    "\x7f\x80\x9f",
    "\u2028\u2029",
    "\ufeff",
    "\U0010ffff",
    "😀👍🏽",
    "</script>",
    "é",
    "'",
    "{}",
    "[",
    "null",
]


def test_hostile_ids_codes_and_attributes_give_the_same_bytes_many_codes_and_wraps():
    rng = random.Random(13)

    def hostile() -> str:
        return "".join(rng.choice([*HOSTILE, "a", "Z9"]) for _ in range(rng.randint(1, 8)))

    for codes in ([], [hostile()], [hostile() for _ in range(7)]):
        for action_id in (0, 7, 2**53, None):
            seqs = sorted(rng.sample(range(1, 10_000), 200))  # gaps; every code's turn wraps
            rows = [(seq, hostile()) for seq in seqs]
            assert processed_page(rows, action_id, codes) == by_dicts(rows, action_id, codes, [])
            names = [hostile(), "tier", hostile()]
            rows3 = []
            for seq, cid in rows:
                values = {names[0]: hostile(), "tier": [hostile(), None, 1.5], "x": {"y": True}}
                rows3.append((seq, cid, orjson.dumps(values).decode() if seq % 3 else None))
            page = processed_page(rows3, action_id, codes, names)
            assert page == by_dicts(rows3, action_id, codes, names)
            # and it is JSON a listener reads back to the same values
            assert [r["CustomerID"] for r in orjson.loads(page)] == [r[1] for r in rows]


def test_a_lone_surrogate_is_refused_as_the_dict_route_refuses_it():
    # impossible in valid input (ids arrive as UTF-8 JSON); neither route may emit invalid UTF-8
    rows = [(1, "ok"), (2, "bad\ud800")]
    with pytest.raises(TypeError):
        by_dicts(rows, 7, ["P"], [])
    with pytest.raises(TypeError):
        processed_page(rows, 7, ["P"])
    with pytest.raises(TypeError):
        processed_page([(1, "ok")], 7, ["P\udfff"])
