"""A GetProcessedCampaignCustomers page rendered by the database: the JSON text of the whole page
in one value, so Python neither builds a row nor encodes one (bench/README.md: paging).

The reference renderer is `clearance.api.pages.processed_page`; this one must give the same bytes
(tests/integration/test_page_json.py compares them on hostile ids and attributes). The parts every
row shares (`tails`: the encoded ActionID and PromoCode, one per promo code) are encoded by the
caller and passed as parameters. Where SQL cannot say the same thing in the same bytes (many promo
codes, many attribute names, names a SQLite JSON path cannot spell) `render_page` answers None and
the caller renders the rows itself.

Customer ids hold no control characters (the API refuses them); either way both databases escape
strings as orjson does (`"`, `\\`, the short escapes, `\\u00xx` for the other control characters,
everything else as UTF-8). Attributes are stored as orjson wrote them (compact, no duplicate keys),
and both databases return a value of such a document as the text it holds (but PostgreSQL
refuses one holding `\u0000`: None).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from clearance.errors import InvalidInput
from clearance.store.campaign_rows import check_seq_order
from clearance.store.db import Database

MAX_SQL_CODES = 16  # a CASE branch per promo code; beyond this the caller renders the rows
# An argument of SQLite's json_extract per name (127 arguments at most by default), a `||` chain
# per name on PostgreSQL (thousands overflow its parser's stack): beyond this the caller renders.
MAX_SQL_NAMES = 100
_SQLITE_PATH_SAFE = re.compile(r'[^"\\\x00-\x1f\x7f]+')  # spelled as `$."name"` unescaped
_FROM = "FROM target_customers WHERE campaign_id = ? AND seq > ? ORDER BY seq LIMIT ?"  # by key


def _tail_case(modulo: str, tails: Sequence[str], mark: str = "?") -> tuple[str, list[object]]:
    """SQL for the row's tail: tails[(seq - 1) % len(tails)], one parameter a tail."""
    if len(tails) == 1:
        return mark, [tails[0]]
    whens = " ".join(f"WHEN {i} THEN {mark}" for i in range(len(tails)))
    return f"CASE {modulo} {whens} END", [*tails]


def _sqlite(tails: Sequence[str], names: Sequence[str]) -> tuple[str, list[object]] | None:
    if names and not all(_SQLITE_PATH_SAFE.fullmatch(n) for n in names):
        return None
    case, params = _tail_case(f"(seq - 1) % {len(tails)}", tails)
    cell = "'{\"CustomerID\":' || json_quote(customer_id) || " + case
    paths = [f'$."{n}"' for n in names]
    if len(names) == 1:
        cell += " || ',\"CustomerAttributes\":' || json_array(attributes -> ?)"
    elif names:  # one parse of the document for all the names; NULL: no attributes
        marks = ", ".join("?" for _ in names)
        cell += f" || ',\"CustomerAttributes\":' || coalesce(json_extract(attributes, {marks}), ?)"
        paths.append("[" + ",".join("null" for _ in names) + "]")
    params += paths
    columns = "seq, customer_id, attributes" if names else "seq, customer_id"
    # Every aggregate of the statement is fed the rows in the same order: the key array shows the
    # order the page text was built in, and is checked.
    sql = (
        "SELECT count(*), json_group_array(seq), "
        f"CAST('[' || coalesce(group_concat({cell} || '}}', ','), '') || ']' AS BLOB) "
        f"FROM (SELECT {columns} {_FROM})"
    )
    return sql, params


def _postgres(tails: Sequence[str], names: Sequence[str]) -> tuple[str, list[object]]:
    case, params = _tail_case(f"mod(seq - 1, {len(tails)})", tails, "?::text")
    cell = "'{\"CustomerID\":' || to_json(customer_id)::text || " + case
    if names:
        value = "coalesce((attributes -> ?::text)::text, 'null')"
        values = " || ',' || ".join(value for _ in names)
        cell += f" || ',\"CustomerAttributes\":[' || {values} || ']'"
        params += names
    columns = "seq, customer_id, attributes::json AS attributes" if names else "seq, customer_id"
    sql = (  # the aggregate's ORDER BY is SQL's promise of key order
        f"SELECT '[' || coalesce(string_agg({cell} || '}}', ',' ORDER BY seq), '') "
        f"|| ']' FROM (SELECT {columns} {_FROM}) t"
    )
    return sql, params


class PageStore:
    db: Database

    def render_page(
        self,
        campaign_id: int,
        after_seq: int,
        limit: int,
        tails: Sequence[str],
        names: Sequence[str] = (),
    ) -> bytes | None:
        """The page's JSON bytes: rows by key after `after_seq`, each
        `{"CustomerID":…` + tails[(seq - 1) % len(tails)] (+ `,"CustomerAttributes":[…]`) + `}`;
        None when this route cannot render it (the caller then renders the rows)."""
        if not tails or len(tails) > MAX_SQL_CODES or len(names) > MAX_SQL_NAMES:
            return None
        built = _sqlite(tails, names) if self.db.dialect == "sqlite" else _postgres(tails, names)
        if built is None:
            return None
        sql, params = built
        try:
            with self.db.reader() as tx:
                row = tx.fetchone(sql, (*params, campaign_id, after_seq, limit))
        except InvalidInput:
            # PostgreSQL's json refuses a document holding \u0000 (which orjson writes for NUL):
            # the caller renders that page from the stored text
            if self.db.dialect == "sqlite":
                raise
            return None
        if row is None:
            raise RuntimeError("page read returned no row: refused")
        body = row[-1]
        if self.db.dialect == "sqlite":
            seqs = orjson.loads(row[1])
            if len(seqs) != row[0]:
                raise RuntimeError(f"page read {len(seqs)} keys of {row[0]}: refused")
            check_seq_order(seqs, after_seq)
        return body.encode() if isinstance(body, str) else bytes(body)
