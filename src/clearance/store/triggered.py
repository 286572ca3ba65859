"""Triggered campaigns, the single gateway, and the decision log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from clearance.errors import NotFound
from clearance.store.db import Database, Tx


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


# The decisions table's columns, in DecisionRow's order (the bulk writer and the reader use it).
DECISION_COLUMNS = tuple(f.name for f in fields(DecisionRow))


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

    def write_decisions(self, rows: Sequence[DecisionRow]) -> None:
        if not rows:
            return
        with self.db.transaction() as tx:
            tx.copy_rows(
                "decisions",
                DECISION_COLUMNS,
                [
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
                    )
                    for r in rows
                ],
            )

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
    ) -> list[DecisionRow]:
        """Decisions in id (= time) order, paged by key: pass the last id seen as `after`."""
        filters = [
            ("campaign_key = ?", campaign_key),
            ("user_id = ?", user_id),
            ("outcome = ?", outcome),
            ("at >= ?", from_ms),
            ("at < ?", to_ms),
            ("decision_id > ?", after),
        ]
        where = ["1 = 1", *(sql for sql, value in filters if value is not None)]
        params = [value for _, value in filters if value is not None]
        with self.db.reader() as tx:
            rows = tx.fetchall(
                f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE {' AND '.join(where)} "
                "ORDER BY decision_id LIMIT ?",
                (*params, limit),
            )
        return [
            DecisionRow(
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
            )
            for r in rows
        ]
