"""The database seam: one small interface, one implementation per backend.

SQL is written once with `?` placeholders; each backend rewrites what differs. Bulk paths (target
group loads, approvals, sends) are methods here so each database can use its fastest native route.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any, cast

Row = tuple[Any, ...]
Params = Sequence[Any]
Placed = tuple[int, str, bool]  # an approval at its customer's position: (seq, id, status)


class Tx(abc.ABC):
    """An open transaction (or an autocommit connection for reads)."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Sequence[Params]) -> int: ...

    @abc.abstractmethod
    def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    def fetch_rows(self, columns: str, rest: str, params: Params = ()) -> list[Sequence[Any]]:
        """The rows of `SELECT {columns} {rest}` for a bulk read (a page of the target group); a
        backend may carry them in one piece. `columns` are plain column names."""
        return cast(list[Sequence[Any]], self.fetchall(f"SELECT {columns} {rest}", params))

    def fetch_columns(
        self, columns: Sequence[str], rest: str, params: Params = ()
    ) -> list[list[Any]]:
        """The columns of `SELECT {columns} {rest}`, each as one list, rows in the same order
        (a bulk read the caller turns into arrays). The first column is a key: a backend may
        order by it."""
        rows = self.fetchall(f"SELECT {', '.join(columns)} {rest}", params)
        return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in columns]

    def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    @abc.abstractmethod
    def fetchdicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]: ...

    def present(self, table: str, column: str, values: Sequence[Any]) -> set[Any]:
        """Which of `values` are in `table.column` (asked 500 at a time: SQLite's host-parameter
        limit)."""
        found: set[Any] = set()
        for i in range(0, len(values), 500):
            part = values[i : i + 500]
            marks = ", ".join("?" for _ in part)
            found.update(
                r[0]
                for r in self.fetchall(
                    f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", part
                )
            )
        return found

    @abc.abstractmethod
    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Params]) -> None:
        """Bulk insert through the backend's fastest route."""

    @abc.abstractmethod
    def append_approvals(
        self, campaign_id: int, chunks: Iterable[Sequence[Placed]], at_ms: int
    ) -> int:
        """Append approvals already placed at their customers' positions in the target group,
        arriving in chunks (a backend may store one while the next is prepared); return how
        many were appended."""

    @abc.abstractmethod
    def insert_approvals(
        self, campaign_id: int, entries: Sequence[tuple[str, bool]], at_ms: int
    ) -> int:
        """Append approvals for customers in the target group (others are skipped); return how
        many were appended."""

    @abc.abstractmethod
    def missing_customers(self, campaign_id: int, customer_ids: Sequence[str]) -> list[str]:
        """Which of these ids are not in the campaign's target group."""

    @abc.abstractmethod
    def mark_late(self, campaign_id: int, customer_ids: Sequence[str], at_ms: int) -> None: ...


class Database(abc.ABC):
    dialect: str
    # Appended to the subquery that picks due work, so two workers never claim the same row.
    skip_locked: str = ""
    # Appended to the campaign read that approvals and the freeze serialize on.
    lock_share: str = ""
    lock_update: str = ""

    @abc.abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction: commits on success, rolls back on any exception."""

    @abc.abstractmethod
    @contextmanager
    def reader(self) -> Iterator[Tx]:
        """A connection for reads."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def release_thread(self) -> None:
        """A short-lived thread is done with the database: free what it holds (SQLite keeps a
        connection per thread; a pool needs nothing)."""
        return None

    @abc.abstractmethod
    def table_options(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def migration_lock(self, tx: Tx) -> None: ...

    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied. Safe to run concurrently."""
        applied: list[int] = []
        files = sorted(
            (
                f
                for f in resources.files("clearance.store.migrations").iterdir()
                if f.name.endswith(".sql")
            ),
            key=lambda f: f.name,
        )
        with self.transaction() as tx:
            self.migration_lock(tx)
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            done = {r[0] for r in tx.fetchall("SELECT version FROM schema_migrations")}
            for f in files:
                version = int(f.name.split("_", 1)[0])
                if version in done:
                    continue
                sql = f.read_text().format(**self.table_options())
                for statement in _statements(sql):
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)",
                    (version, f.name),
                )
                applied.append(version)
        return applied

    def schema_version(self) -> int:
        with self.reader() as tx:
            row = tx.fetchone("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
