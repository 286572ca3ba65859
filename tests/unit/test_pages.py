"""The page renderer writes the same JSON, byte for byte, as encoding one dict per customer."""

from __future__ import annotations

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
