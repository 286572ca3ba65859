"""Customer data the rules are evaluated against: a CSV file, a SQL query, or a Python callable."""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

Record = dict[str, Any]


class CustomerData(Protocol):
    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]: ...


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


class CsvCustomers:
    """A CSV file with a header row; reloaded when the file changes."""

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
            self._records = {
                row[self.id_column]: {k: coerce(v) for k, v in row.items() if k} for row in reader
            }
        self._mtime = mtime

    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        self._load()
        return {cid: self._records[cid] for cid in customer_ids if cid in self._records}


class SqlCustomers:
    """Rows from the operator's own database. `query` selects customers, one row each, with
    `id_column`; it is run for each batch with the ids appended as `WHERE <id_column> IN (…)`
    around it. `url` is `sqlite:///path` or `postgresql://…`."""

    def __init__(self, url: str, query: str, id_column: str = "customer_id") -> None:
        self.url = url
        self.query = query
        self.id_column = id_column

    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        if not customer_ids:
            return {}
        wrapped = f"SELECT * FROM ({self.query}) AS c WHERE c.{self.id_column} IN ({{marks}})"
        if self.url.startswith("sqlite:"):
            path = self.url.removeprefix("sqlite:").removeprefix("//")
            with sqlite3.connect(path) as conn:
                out: dict[str, Record] = {}
                for i in range(0, len(customer_ids), 500):
                    part = list(customer_ids[i : i + 500])
                    cur = conn.execute(wrapped.format(marks=", ".join("?" for _ in part)), part)
                    names = [d[0] for d in cur.description]
                    for row in cur:
                        record = dict(zip(names, row, strict=True))
                        out[str(record[self.id_column])] = record
                return out
        return self._postgres(customer_ids)

    def _postgres(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        import psycopg

        with psycopg.connect(self.url) as pg, pg.cursor() as pcur:
            pcur.execute(
                f"SELECT * FROM ({self.query}) AS c WHERE c.{self.id_column} = ANY(%s)",
                (list(customer_ids),),
            )
            names = [d.name for d in pcur.description or ()]
            key = names.index(self.id_column)
            return {str(r[key]): dict(zip(names, r, strict=True)) for r in pcur.fetchall()}


class CallableCustomers:
    def __init__(self, fn: Callable[[Sequence[str]], Mapping[str, Record]]) -> None:
        self.fn = fn

    def lookup(self, customer_ids: Sequence[str]) -> Mapping[str, Record]:
        return self.fn(customer_ids)
