"""Customer data the rules are evaluated against: a CSV file, a SQL query, or a Python callable."""

from __future__ import annotations

import csv
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

Record = dict[str, Any]


class CustomerData(Protocol):
    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]: ...


class UnusableRecord(dict[str, Any]):
    """A customer's data that cannot be trusted (two records for one customer, say): an empty
    record carrying the `reason` the rules refuse with. Never approved."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def conflicting(customer_id: str, count: int) -> UnusableRecord:
    return UnusableRecord(f"conflicting customer data: {count} records for {customer_id}")


def coerce(value: str) -> Any:
    """CSV and text columns: numbers become numbers, true/false become booleans."""
    text = value.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return value


_SQLITE_RENAMED = re.compile(r"^(.*):\d+$")


def _check_columns(names: Sequence[Any], where: str, sqlite: bool = False) -> None:
    """Refuse repeated column names (compared trimmed): which of the two a rule reads would be
    an accident of order. SQLite renames the repeats of a subquery's columns `x:1`, `X:2` (its
    names are case-insensitive): those count as repeats of `x`."""
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        key = str(name).strip()
        if sqlite:
            key = key.casefold()
            renamed = _SQLITE_RENAMED.match(key)
            if renamed and renamed.group(1) in seen:
                key = renamed.group(1)
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    if repeated:
        raise ValueError(f"{where} repeats column names {repeated}: each column must be unique")


def _collect(rows: Iterable[tuple[str, Record]]) -> dict[str, Record]:
    """Records by customer id; an id with more than one record gets an UnusableRecord."""
    out: dict[str, Record] = {}
    counts: dict[str, int] = {}
    for customer_id, record in rows:
        counts[customer_id] = counts.get(customer_id, 0) + 1
        out[customer_id] = record
    for customer_id, count in counts.items():
        if count > 1:
            out[customer_id] = conflicting(customer_id, count)
    return out


class CsvCustomers:
    """A CSV file with a header row; reloaded when the file changes.

    Fails closed: a header that repeats a column name does not load (ValueError); a customer id on
    more than one row is refused as conflicting; a row with too few cells lacks the missing
    fields (the rules refuse for them), and a row with too many cells is refused as malformed."""

    def __init__(self, path: str | os.PathLike[str], id_column: str = "customer_id") -> None:
        self.path = Path(path)
        self.id_column = id_column
        self._mtime = -1.0
        self._records: dict[str, Record] = {}

    def _load(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return
        with open(self.path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or self.id_column not in reader.fieldnames:
                raise ValueError(f"{self.path} has no {self.id_column!r} column")
            _check_columns(reader.fieldnames, f"{self.path}: the header")
            self._records = _collect(
                (row[self.id_column], self._record(row, reader.line_num))
                for row in reader
                if row.get(self.id_column) is not None
            )
        self._mtime = mtime

    def _record(self, row: dict[Any, Any], line: int) -> Record:
        if row.get(None):  # DictReader puts the cells beyond the header under None
            return UnusableRecord(
                f"malformed customer data: line {line} of {self.path.name} has more cells "
                "than the header"
            )
        # a cell the row does not have (DictReader gives None) is a missing field
        return {k: coerce(v) for k, v in row.items() if k and v is not None}

    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        self._load()
        return {cid: self._records[cid] for cid in customer_ids if cid in self._records}


class SqlCustomers:
    """Rows from the operator's own database. `query` selects customers, one row each, with
    `id_column`; it is run for each batch with the ids appended as `WHERE <id_column> IN (…)`
    around it. `url` is `sqlite:///path` or `postgresql://…`.

    Fails closed: a customer with more than one row is refused as conflicting, and a query that
    returns a column name twice refuses every customer it returns (naming the columns)."""

    def __init__(self, url: str, query: str, id_column: str = "customer_id") -> None:
        self.url = url
        self.query = query
        self.id_column = id_column

    def _rows(
        self, names: list[str], rows: Iterable[Sequence[Any]], sqlite: bool = False
    ) -> Iterable[tuple[str, Record]]:
        try:
            _check_columns(names, "the customer query", sqlite)
        except ValueError as exc:
            problem: str | None = str(exc)
        else:
            problem = None
        key = names.index(self.id_column)
        for row in rows:
            customer_id = str(row[key])
            if problem is not None:
                yield customer_id, UnusableRecord(f"unusable customer data: {problem}")
            else:
                yield customer_id, dict(zip(names, row, strict=True))

    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        if not customer_ids:
            return {}
        wrapped = f"SELECT * FROM ({self.query}) AS c WHERE c.{self.id_column} IN ({{marks}})"
        if self.url.startswith("sqlite:"):
            path = self.url.removeprefix("sqlite:").removeprefix("//")
            with sqlite3.connect(path) as conn:
                found: list[tuple[str, Record]] = []
                for i in range(0, len(customer_ids), 500):
                    part = list(customer_ids[i : i + 500])
                    cur = conn.execute(wrapped.format(marks=", ".join("?" for _ in part)), part)
                    names = [d[0] for d in cur.description]
                    found.extend(self._rows(names, cur, sqlite=True))
                return _collect(found)
        return self._postgres(customer_ids)

    def _postgres(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        import psycopg

        with psycopg.connect(self.url) as pg, pg.cursor() as pcur:
            pcur.execute(
                f"SELECT * FROM ({self.query}) AS c WHERE c.{self.id_column} = ANY(%s)",
                (list(customer_ids),),
            )
            names = [d.name for d in pcur.description or ()]
            return _collect(self._rows(names, pcur.fetchall()))


class CallableCustomers:
    def __init__(self, fn: Callable[[Sequence[str]], Mapping[str, Record]]) -> None:
        self.fn = fn

    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        return self.fn(customer_ids)
