"""SQLite backend: the embedded default. WAL, one connection per thread, writers serialized."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from clearance.errors import Conflict, InvalidInput, StoreUnavailable
from clearance.store.db import Database, Params, Placed, Row, Tx
from clearance.store.queries import query

_APPEND_APPROVALS = (
    "INSERT INTO approvals (campaign_id, at, seq, customer_id, status) "
    "SELECT ?1, ?2, value ->> 0, value ->> 1, value ->> 2 FROM json_each(?3)"
)

_CHUNK = 500  # below SQLite's host-parameter limit
_JSON_BATCH = 20_000  # rows per bulk statement


class SQLiteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> int:
        return self.conn.executemany(sql, rows).rowcount

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def fetch_rows(self, columns: str, rest: str, params: Params = ()) -> list[Sequence[Any]]:
        # One JSON array for the whole read, not a row at a time: the driver releases and
        # re-takes the GIL for every row it steps, so two bulk reads at once (a listener's page
        # and the membership index being built) convoy on it; this takes it back once.
        (rows,) = self._json_arrays([f"json_array({columns})"], f"SELECT {columns} {rest}", params)
        return rows

    def fetch_columns(
        self, columns: Sequence[str], rest: str, params: Params = ()
    ) -> list[list[Any]]:
        # One JSON array a column (the aggregates of one statement see the rows in one order).
        return self._json_arrays(columns, f"SELECT {', '.join(columns)} {rest}", params)

    def _json_arrays(self, values: Sequence[str], inner: str, params: Params) -> list[list[Any]]:
        """`json_group_array` of each of `values` over the rows of `inner`, decoded. The
        statement counts the rows it aggregates, and an array of any other length is refused:
        never a read short of rows. (Key order is checked by the callers.)"""
        arrays = ", ".join(f"json_group_array({v})" for v in values)
        row = self.conn.execute(f"SELECT count(*), {arrays} FROM ({inner})", params).fetchone()
        if row is None:
            raise RuntimeError("bulk read returned no row: refused")
        out: list[list[Any]] = [orjson.loads(text) if text else [] for text in row[1:]]
        for decoded in out:
            if len(decoded) != row[0]:
                raise RuntimeError(f"bulk read decoded {len(decoded)} rows of {row[0]}: refused")
        return out

    def fetchdicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Params]) -> None:
        # One statement over a JSON array, not executemany: executemany releases and re-takes
        # the GIL for every row, which under a busy event loop turns into a convoy (thousands of
        # waits of up to the 5 ms switch interval); this takes it back once per batch.
        values = ", ".join(f"value ->> {i}" for i in range(len(columns)))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} FROM json_each(?)"
        try:
            for i in range(0, len(rows), _JSON_BATCH):
                self.conn.execute(sql, (orjson.dumps(rows[i : i + _JSON_BATCH]),))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"duplicate or conflicting row in {table}: {exc}") from exc

    def append_approvals(
        self, campaign_id: int, chunks: Iterable[Sequence[Placed]], at_ms: int
    ) -> int:
        # One json_each statement over (seq, customer_id, status) triples in position order (so
        # each index page is written once); the campaign and the time are parameters, not
        # fields every row repeats and SQLite extracts.
        rows = sorted(e for chunk in chunks for e in chunk)
        try:
            for i in range(0, len(rows), _JSON_BATCH):
                self.conn.execute(
                    _APPEND_APPROVALS,
                    (campaign_id, at_ms, orjson.dumps(rows[i : i + _JSON_BATCH])),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"conflicting row in approvals: {exc}") from exc
        return len(rows)

    def insert_approvals(
        self, campaign_id: int, entries: Sequence[tuple[str, bool]], at_ms: int
    ) -> int:
        return self.conn.executemany(
            query("insert_approvals.sqlite"),
            [(status, at_ms, campaign_id, cid) for cid, status in entries],
        ).rowcount

    def missing_customers(self, campaign_id: int, customer_ids: Sequence[str]) -> list[str]:
        found: set[str] = set()
        for i in range(0, len(customer_ids), _CHUNK):
            part = customer_ids[i : i + _CHUNK]
            marks = ", ".join("?" for _ in part)
            found.update(
                r[0]
                for r in self.conn.execute(
                    "SELECT customer_id FROM target_customers "
                    f"WHERE campaign_id = ? AND customer_id IN ({marks})",
                    (campaign_id, *part),
                )
            )
        return [c for c in customer_ids if c not in found]

    def mark_late(self, campaign_id: int, customer_ids: Sequence[str], at_ms: int) -> None:
        self.conn.executemany(
            "UPDATE target_customers SET late_attempt_at = ? "
            "WHERE campaign_id = ? AND customer_id = ? AND late_attempt_at IS NULL",
            [(at_ms, campaign_id, cid) for cid in customer_ids],
        )


def _unavailable(exc: sqlite3.OperationalError) -> bool:
    """Locked past the busy timeout, or the file cannot be read or written: worth retrying, so a
    503. Other operational errors (SQL the engine got wrong) stay errors."""
    text = str(exc).lower()
    return any(s in text for s in ("locked", "busy", "disk i/o", "unable to open", "disk is full"))


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: str, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Writers of this process wait here (not in arrival order: a lock is not a queue) and
        # one starts the moment the one before commits; left to SQLite's busy handler they would
        # poll with sleeps of up to 100 ms. Reentrant, so a nested transaction fails as SQLite
        # says, not by deadlock. Other processes' writers still meet SQLite's busy timeout, so
        # the longest wait is the busy timeout twice.
        self._writer = threading.RLock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=self.busy_timeout,
                )
                conn.execute("PRAGMA journal_mode = WAL")
                # FULL: an approval acknowledged with a 200 survives power loss, not only a crash.
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                conn.execute("PRAGMA cache_size = -2000")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable(f"database busy: no write turn within {self.busy_timeout} s")
        try:
            with self._write() as tx:
                yield tx
        finally:
            self._writer.release()

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"database busy: {exc}") from exc
        try:
            yield SQLiteTx(conn)
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise Conflict(f"duplicate or conflicting row: {exc}") from exc
        except OverflowError as exc:  # an integer wider than SQLite's 64 bits
            conn.execute("ROLLBACK")
            raise InvalidInput(f"a value cannot be stored: {exc}") from exc
        except sqlite3.OperationalError as exc:
            conn.execute("ROLLBACK")
            if _unavailable(exc):
                raise StoreUnavailable(f"database unavailable: {exc}") from exc
            raise
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreUnavailable(f"commit failed: {exc}") from exc

    @contextmanager
    def reader(self) -> Iterator[Tx]:
        try:
            yield SQLiteTx(self._conn())
        except OverflowError as exc:
            raise InvalidInput(f"a value cannot be looked up: {exc}") from exc
        except sqlite3.OperationalError as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"database unavailable: {exc}") from exc
            raise

    def release_thread(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def table_options(self) -> dict[str, str]:
        return {
            "table_options": "WITHOUT ROWID",
            "table_options_plain": "WITHOUT ROWID",
            "serial_key": "INTEGER PRIMARY KEY AUTOINCREMENT",
            "decision_order": "",
        }

    def migration_lock(self, tx: Tx) -> None:
        pass  # BEGIN IMMEDIATE already excludes every other writer
