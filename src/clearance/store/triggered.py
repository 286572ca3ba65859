"""Triggered campaigns, the single gateway, and the decision log."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from clearance.errors import InvalidInput, NotFound
from clearance.store.db import Database, Tx
from clearance.store.outbox import SEND_COLUMNS, OutboxSend, send_rows


@dataclass(frozen=True)
class GatewayConfig:
    url: str
    timeout_ms: int
    secret: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class DecisionRow:
    decision_id: str
    at: int
    campaign_key: str
    user_id: str
    is_visitor: bool
    outcome: str
    reason: str | None
    latency_ms: float
    sent: bool
    shadow: bool
    event_id: str | None = None


# The decisions table's columns, in DecisionRow's order (the bulk writer and the reader use it).
DECISION_COLUMNS = tuple(f.name for f in fields(DecisionRow))
_CURSOR = re.compile(r"p\.(\d{1,20})")
# Decision writes hold this for their transaction on PostgreSQL, so seq is taken in commit order.
DECISION_WRITE_LOCK = 7265121


def page_cursor(seq: int) -> str:
    """An opaque position in the decision log (never a decision id: those hold no dot)."""
    return f"p.{seq}"


def _decision(r: Sequence[Any]) -> DecisionRow:
    return DecisionRow(
        r[0],
        int(r[1]),
        r[2],
        r[3],
        bool(r[4]),
        r[5],
        r[6],
        float(r[7]),
        bool(r[8]),
        bool(r[9]),
        r[10],
    )


class TriggeredStore:
    db: Database

    def _bump(self, tx: Tx) -> None:
        tx.execute("UPDATE config_versions SET version = version + 1 WHERE name = 'triggered'")

    def triggered_version(self) -> int:
        with self.db.reader() as tx:
            row = tx.fetchone("SELECT version FROM config_versions WHERE name = 'triggered'")
        return int(row[0]) if row else 0

    def put_triggered(
        self, key: str, body: dict[str, Any], event: str, active: bool, now_ms: int
    ) -> bool:
        """Create or replace; return True if it was created."""
        with self.db.transaction() as tx:
            existed = tx.execute("DELETE FROM triggered_campaigns WHERE campaign_key = ?", (key,))
            tx.execute(
                "INSERT INTO triggered_campaigns (campaign_key, body, trigger_event, active, "
                "updated_at) VALUES (?, ?, ?, ?, ?)",
                (key, orjson.dumps(body).decode(), event, active, now_ms),
            )
            self._bump(tx)
        return not existed

    def get_triggered(self, key: str) -> dict[str, Any]:
        with self.db.reader() as tx:
            row = tx.fetchone("SELECT body FROM triggered_campaigns WHERE campaign_key = ?", (key,))
        if row is None:
            raise NotFound(f"triggered campaign {key} does not exist", field="id")
        body: dict[str, Any] = orjson.loads(row[0])
        return body

    def list_triggered(self) -> list[dict[str, Any]]:
        with self.db.reader() as tx:
            rows = tx.fetchall("SELECT body FROM triggered_campaigns ORDER BY campaign_key")
        return [orjson.loads(r[0]) for r in rows]

    def delete_triggered(self, key: str) -> None:
        with self.db.transaction() as tx:
            if not tx.execute("DELETE FROM triggered_campaigns WHERE campaign_key = ?", (key,)):
                raise NotFound(f"triggered campaign {key} does not exist", field="id")
            self._bump(tx)

    # --- the gateway ----------------------------------------------------------------------------
    def put_gateway(self, config: GatewayConfig, now_ms: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM gateway")
            tx.execute(
                "INSERT INTO gateway (singleton, url, timeout_ms, secret, headers, updated_at) "
                "VALUES (1, ?, ?, ?, ?, ?)",
                (
                    config.url,
                    config.timeout_ms,
                    config.secret,
                    orjson.dumps(config.headers).decode(),
                    now_ms,
                ),
            )
            self._bump(tx)

    def get_gateway(self) -> GatewayConfig | None:
        with self.db.reader() as tx:
            row = tx.fetchone("SELECT url, timeout_ms, secret, headers FROM gateway")
        if row is None:
            return None
        return GatewayConfig(row[0], int(row[1]), row[2], orjson.loads(row[3]))

    def delete_gateway(self) -> bool:
        with self.db.transaction() as tx:
            deleted = tx.execute("DELETE FROM gateway")
            self._bump(tx)
        return bool(deleted)

    # --- decisions ------------------------------------------------------------------------------
    def present_decision_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these decisions are already in the log (a write whose commit went unanswered
        may have landed)."""
        with self.db.reader() as tx:
            return tx.present("decisions", "decision_id", ids)

    def write_decisions(
        self, rows: Sequence[DecisionRow], sends: Sequence[OutboxSend] = ()
    ) -> None:
        """Decisions and their sends (the outbox), in one transaction: a send exists exactly when
        its decision does."""
        if not rows:
            return
        values = [
            (
                r.decision_id,
                r.at,
                r.campaign_key,
                r.user_id,
                r.is_visitor,
                r.outcome,
                r.reason,
                r.latency_ms,
                r.sent,
                r.shadow,
                r.event_id,
            )
            for r in rows
        ]
        with self.db.transaction() as tx:
            if self.db.dialect == "sqlite":
                # One writer at a time: numbering inside the transaction is commit order.
                top = tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM decisions")
                base = int(top[0]) if top else 0
                tx.copy_rows(
                    "decisions",
                    (*DECISION_COLUMNS, "seq"),
                    [(*v, base + i) for i, v in enumerate(values, 1)],
                )
            else:
                # A sequence alone is not commit order (a transaction can take a number and
                # commit after one that took a larger number); decision writers take turns, and
                # seq comes from the column default inside the turn.
                # bounded: a writer stuck in its turn must make the others fail (and the events
                # API fail closed), not wait behind it for ever
                tx.execute("SET LOCAL lock_timeout = '2s'")
                tx.execute("SELECT pg_advisory_xact_lock(?)", (DECISION_WRITE_LOCK,))
                tx.copy_rows("decisions", DECISION_COLUMNS, values)
            if sends:
                tx.copy_rows("triggered_sends", SEND_COLUMNS, send_rows(sends))

    def get_decision(self, decision_id: str) -> DecisionRow | None:
        with self.db.reader() as tx:
            row = tx.fetchone(
                f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE decision_id = ?",
                (decision_id,),
            )
        return _decision(row) if row else None

    def query_decisions(
        self,
        *,
        campaign_key: str | None = None,
        user_id: str | None = None,
        outcome: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> tuple[list[DecisionRow], str | None]:
        """Decisions in commit order, and the cursor after the last one (pass it as `after`).

        The order is seq, which decision writes take in commit order (see `write_decisions`):
        a row committed late, after an outage or by another replica, comes after every row
        already visible, so it never falls behind a cursor already handed out.
        """
        position = None if after is None else self._position(after)
        filters = [
            ("campaign_key = ?", campaign_key),
            ("user_id = ?", user_id),
            ("outcome = ?", outcome),
            ("at >= ?", from_ms),
            ("at < ?", to_ms),
        ]
        where = ["1 = 1", *(sql for sql, value in filters if value is not None)]
        params: list[Any] = [value for _, value in filters if value is not None]
        if position is not None:
            where.append("seq > ?")
            params.append(position)
        with self.db.reader() as tx:
            rows = tx.fetchall(
                f"SELECT {', '.join(DECISION_COLUMNS)}, seq FROM decisions "
                f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
                (*params, limit),
            )
        cursor = page_cursor(int(rows[-1][-1])) if rows else after
        return [_decision(r) for r in rows], cursor

    def _position(self, after: str) -> int:
        match = _CURSOR.fullmatch(after)
        if match:
            return int(match[1])
        # a decision id, as cursors were before: the position of that decision
        with self.db.reader() as tx:
            row = tx.fetchone("SELECT seq FROM decisions WHERE decision_id = ?", (after,))
        if row is None or row[0] is None:
            raise InvalidInput("after is not a cursor this log handed out", field="after")
        return int(row[0])
