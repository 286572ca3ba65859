"""PostgreSQL backend: a connection pool, COPY for bulk loads, SKIP LOCKED for claims."""

from __future__ import annotations

import select
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from clearance.errors import Conflict, InvalidInput, StoreUnavailable
from clearance.store.db import Database, Params, Placed, Row, Tx
from clearance.store.queries import query

_SQL_CACHE: dict[str, str] = {}
# Characters COPY's text format gives a meaning to: the escape, the delimiter, line ends.
_COPY_APPROVALS = "COPY approvals (seq, customer_id, status, campaign_id, at) FROM STDIN"
_COPY_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def _copy_text(value: str) -> str:
    """A value as one field of COPY's text format."""
    return value.translate(_COPY_ESCAPES)


def _approvals_text(entries: Sequence[Placed], tail: str) -> str:
    """Rows `seq, customer_id, status` + `tail` (the fields common to all) in COPY's text
    format."""
    text = "".join(
        [f"{int(seq)}\t{cid}\t{'t' if status else 'f'}{tail}" for seq, cid, status in entries]
    )
    # Ids hold no control characters (the API refuses them), so no field needs escaping;
    # should one hold a character COPY's text format reads as syntax, escape every field.
    n = len(entries)
    if text.count("\n") != n or text.count("\t") != 4 * n or "\\" in text or "\r" in text:
        text = "".join(
            f"{int(seq)}\t{_copy_text(cid)}\t{'t' if status else 'f'}{tail}"
            for seq, cid, status in entries
        )
    return text


def _pg(sql: str) -> str:
    """Rewrite `?` placeholders to psycopg's `%s` (our SQL never holds a literal `?` or `%`)."""
    out = _SQL_CACHE.get(sql)
    if out is None:
        out = _SQL_CACHE[sql] = sql.replace("?", "%s")
    return out


class PostgresTx(Tx):
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        with self.conn.cursor() as cur:
            cur.execute(_pg(sql), params)
            return cur.rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> int:
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)
            return cur.rowcount

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        with self.conn.cursor() as cur:
            cur.execute(_pg(sql), params)
            return cur.fetchall()

    def fetch_columns(
        self, columns: Sequence[str], rest: str, params: Params = ()
    ) -> list[list[Any]]:
        # One array a column, in one row, in binary: the driver builds each list in C instead of
        # a tuple a row. Every array is ordered by the first column (the key), so they align.
        names = ", ".join(columns)
        arrays = ", ".join(f"array_agg(q.{c} ORDER BY q.{columns[0]})" for c in columns)
        sql = f"SELECT count(*), {arrays} FROM (SELECT {names} {rest}) AS q"
        with self.conn.cursor(binary=True) as cur:
            cur.execute(_pg(sql), params)
            row = cur.fetchone()
        if row is None or not row[0]:
            return [[] for _ in columns]
        out: list[list[Any]] = list(row[1:])
        if any(len(c) != row[0] for c in out):
            raise RuntimeError(f"bulk read decoded columns short of its {row[0]} rows: refused")
        return out

    def fetchdicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute(_pg(sql), params)
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Params]) -> None:
        try:
            with (
                self.conn.cursor() as cur,
                cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        except psycopg.IntegrityError as exc:
            raise Conflict(f"duplicate or conflicting row in {table}: {exc}") from exc

    def append_approvals(
        self, campaign_id: int, chunks: Iterable[Sequence[Placed]], at_ms: int
    ) -> int:
        # COPY text built a chunk at a time and written in one piece: psycopg's write_row costs
        # more per row than the server does to store it, and the server stores each chunk while
        # the next is prepared.
        tail = f"\t{int(campaign_id)}\t{int(at_ms)}\n"
        appended = 0
        try:
            with self.conn.cursor() as cur, cur.copy(_COPY_APPROVALS) as copy:
                for entries in chunks:
                    if entries:
                        copy.write(_approvals_text(entries, tail))  # in the connection's encoding
                        appended += len(entries)
        except psycopg.IntegrityError as exc:
            raise Conflict(f"conflicting row in approvals: {exc}") from exc
        return appended

    def insert_approvals(
        self, campaign_id: int, entries: Sequence[tuple[str, bool]], at_ms: int
    ) -> int:
        ids = [cid for cid, _ in entries]
        statuses = [status for _, status in entries]
        with self.conn.cursor() as cur:
            cur.execute(
                query("insert_approvals.postgres"),
                (campaign_id, at_ms, ids, statuses, campaign_id),
            )
            return cur.rowcount

    def missing_customers(self, campaign_id: int, customer_ids: Sequence[str]) -> list[str]:
        with self.conn.cursor() as cur:
            cur.execute(query("missing_customers.postgres"), (list(customer_ids), campaign_id))
            return [r[0] for r in cur.fetchall()]

    def mark_late(self, campaign_id: int, customer_ids: Sequence[str], at_ms: int) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                "UPDATE target_customers SET late_attempt_at = %s "
                "WHERE campaign_id = %s AND customer_id = ANY(%s::text[]) "
                "AND late_attempt_at IS NULL",
                (at_ms, campaign_id, list(customer_ids)),
            )


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class PostgresDatabase(Database):
    dialect = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    lock_share = " FOR SHARE"
    lock_update = " FOR UPDATE"

    def __init__(self, url: str, max_size: int = 16, timeout: float = 10.0) -> None:
        """`timeout`: how long a caller waits for a connection (riding out a short restart)
        before it is told the database is unavailable (a 503)."""
        self.url = url
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout,
            kwargs={"connect_timeout": 5},
        )
        try:
            self.pool.open(wait=True, timeout=10)
        except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        try:
            with self._connection() as conn, conn.transaction():
                yield PostgresTx(conn)
        except psycopg.IntegrityError as exc:
            raise Conflict(f"duplicate or conflicting row: {exc}") from exc
        except psycopg.DataError as exc:  # a value the column cannot hold (NUL in text, range)
            raise InvalidInput(f"a value cannot be stored: {exc}") from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    @contextmanager
    def reader(self) -> Iterator[Tx]:
        try:
            with self._connection() as conn:
                yield PostgresTx(conn)
        except psycopg.DataError as exc:
            raise InvalidInput(f"a value cannot be looked up: {exc}") from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that is still alive. After a database restart every idle
        connection in the pool is dead; each one handed out is tested first, by a zero-timeout
        poll of its socket (an idle connection has nothing to read unless the server closed it),
        and a dead one is closed, which makes the pool replace it. Cheaper than the pool's
        `check` (a round trip per checkout), and without its backoff sleep after each dead one."""
        conn = self.pool.getconn()
        for _ in range(self.pool.max_size):
            if not _closed_by_server(conn):
                break
            conn.close()
            self.pool.putconn(conn)  # a closed connection is discarded and replaced
            conn = self.pool.getconn()
        try:
            with conn:  # commit on success, roll back on error (as the pool's own `connection()`)
                yield conn
        finally:
            self.pool.putconn(conn)

    def close(self) -> None:
        self.pool.close()

    def table_options(self) -> dict[str, str]:
        # Room on each page lets approval updates stay HOT (no index churn).
        return {
            "table_options": "WITH (fillfactor = 45)",
            "table_options_plain": "",
            "serial_key": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            # decisions get their paging key as they are inserted (COPY fills defaults)
            "decision_order": "CREATE SEQUENCE decisions_seq; "
            "SELECT setval('decisions_seq', (SELECT COALESCE(MAX(seq), 0) + 1 FROM decisions), "
            "false); "
            "ALTER TABLE decisions ALTER COLUMN seq SET DEFAULT nextval('decisions_seq')",
        }

    def migration_lock(self, tx: Tx) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(7265120)")
