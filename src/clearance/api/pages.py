"""The body of a GetProcessedCampaignCustomers page, rendered straight to JSON bytes.

A page holds up to 100,000 customers, and building one dict per customer for the JSON encoder was
most of the page's cost in the API process (bench/README.md). The parts every row shares (the
ActionID and the round-robin PromoCode) are encoded once; each row adds its encoded id (and
attribute values). The bytes are the same JSON the dicts gave: keys in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson


def row_tails(action_id: int | None, promo_codes: Sequence[str]) -> list[bytes]:
    """What follows a row's CustomerID, per promo code: row r (key seq) takes
    tails[(seq - 1) % len(tails)] (one tail, PromoCode "", without codes)."""
    action = orjson.dumps(action_id)
    return [
        b',"ActionID":%s,"PromoCode":%s' % (action, orjson.dumps(code))
        for code in (promo_codes or [""])
    ]


def processed_page(
    rows: Sequence[Sequence[Any]],
    action_id: int | None,
    promo_codes: Sequence[str],
    names: Sequence[str] = (),
) -> bytes:
    """`rows` are (seq, customer_id) or, with attribute `names`, (seq, customer_id, attributes
    JSON text or None); PromoCode is promo_codes[(seq - 1) % len], "" without codes. The
    reference for the page the database renders (`Store.render_page`)."""
    tails = row_tails(action_id, promo_codes)
    k = len(tails)
    dumps = orjson.dumps
    if not names:
        return b"[%s]" % b",".join(
            [b'{"CustomerID":%s%s}' % (dumps(cid), tails[(seq - 1) % k]) for seq, cid in rows]
        )
    out = []
    for seq, cid, attrs in rows:
        values = orjson.loads(attrs) if attrs else {}
        out.append(
            b'{"CustomerID":%s%s,"CustomerAttributes":%s}'
            % (dumps(cid), tails[(seq - 1) % k], dumps([values.get(n) for n in names]))
        )
    return b"[%s]" % b",".join(out)
