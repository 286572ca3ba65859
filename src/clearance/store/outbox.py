"""The triggered outbox: sends committed with their decisions, delivered by the worker in batches
claimed under a lease; and the event-id reservations that make a repeated event a repeat.

A send joins exactly one batch (per campaign and channel) the first time a worker claims it, and
keeps it: a batch redelivered after a crash or a lapsed lease is the same batch under the same
name, so the file channel replaces it and a webhook receiver sees the same `webhook-id`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from clearance.store.db import Database, Tx

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class OutboxSend:
    """One send of one decision on one channel, as the channel will get it (`record`)."""

    decision_id: str
    channel_id: int
    campaign_key: str
    record: dict[str, Any]
    at: int


SEND_COLUMNS = ("decision_id", "channel_id", "campaign_key", "record", "at", "state")


@dataclass(frozen=True)
class TriggeredBatch:
    batch_id: str
    campaign_key: str
    channel_id: int
    first_decision: str
    last_decision: str
    sends: int
    attempts: int
    expires_at: int


_BATCH_COLUMNS = (
    "batch_id, campaign_key, channel_id, first_decision, last_decision, sends, attempts, expires_at"
)


def _batch(r: Sequence[Any]) -> TriggeredBatch:
    return TriggeredBatch(r[0], r[1], int(r[2]), r[3], r[4], int(r[5]), int(r[6]), int(r[7]))


def send_rows(sends: Sequence[OutboxSend]) -> list[tuple[Any, ...]]:
    return [
        (
            s.decision_id,
            s.channel_id,
            s.campaign_key,
            orjson.dumps(s.record).decode(),
            s.at,
            PENDING,
        )
        for s in sends
    ]


class OutboxStore:
    db: Database

    def _ids_in(self, column: str) -> str:
        """`column` is one of a list of ids passed as one parameter."""
        if self.db.dialect == "postgresql":
            return f"{column} = ANY(?)"
        return f"{column} IN (SELECT value FROM json_each(?))"

    def _ids_param(self, ids: Sequence[str]) -> Any:
        return list(ids) if self.db.dialect == "postgresql" else orjson.dumps(list(ids)).decode()

    # --- the worker's side ----------------------------------------------------------------------
    def claim_triggered_batches(
        self, now_ms: int, owner: str, lease_until: int, ttl_ms: int, limit: int = 5000
    ) -> list[TriggeredBatch]:
        """Batches due for delivery, leased to `owner`: those whose retry is due (or whose lease
        lapsed), then new ones made of sends no batch holds yet (at most `limit` sends)."""
        with self.db.transaction() as tx:
            due = [
                _batch(r)
                for r in tx.fetchall(
                    "UPDATE triggered_batches SET lease_owner = ?, lease_until = ? "
                    "WHERE batch_id IN (SELECT batch_id FROM triggered_batches "
                    "WHERE state = 'pending' AND next_attempt_at <= ? "
                    "AND (lease_until IS NULL OR lease_until < ?) "
                    f"ORDER BY next_attempt_at LIMIT 100{self.db.skip_locked}) "
                    f"RETURNING {_BATCH_COLUMNS}",
                    (owner, lease_until, now_ms, now_ms),
                )
            ]
            return due + self._new_batches(tx, now_ms, owner, lease_until, ttl_ms, limit)

    def _new_batches(
        self, tx: Tx, now_ms: int, owner: str, lease_until: int, ttl_ms: int, limit: int
    ) -> list[TriggeredBatch]:
        rows = tx.fetchall(
            "SELECT decision_id, channel_id, campaign_key, at FROM triggered_sends "
            f"WHERE batch_id IS NULL ORDER BY decision_id LIMIT ?{self.db.skip_locked}",
            (limit,),
        )
        groups: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
        for decision_id, channel_id, key, at in rows:
            groups[(key, int(channel_id))].append((decision_id, int(at)))
        batches = []
        for (key, channel_id), items in groups.items():
            ids = sorted(d for d, _ in items)
            batch = TriggeredBatch(
                f"{ids[0]}-{channel_id}",
                key,
                channel_id,
                ids[0],
                ids[-1],
                len(ids),
                0,
                min(at for _, at in items) + ttl_ms,
            )
            tx.execute(
                "INSERT INTO triggered_batches (batch_id, campaign_key, channel_id, "
                "first_decision, last_decision, sends, state, attempts, next_attempt_at, "
                "expires_at, lease_owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, "
                "?, ?, ?)",
                (
                    batch.batch_id,
                    key,
                    channel_id,
                    batch.first_decision,
                    batch.last_decision,
                    batch.sends,
                    now_ms,
                    batch.expires_at,
                    owner,
                    lease_until,
                ),
            )
            tx.execute(
                "UPDATE triggered_sends SET batch_id = ? "
                f"WHERE channel_id = ? AND {self._ids_in('decision_id')}",
                (batch.batch_id, channel_id, self._ids_param(ids)),
            )
            batches.append(batch)
        return batches

    def triggered_batch_records(self, batch: TriggeredBatch) -> list[dict[str, Any]]:
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT record FROM triggered_sends WHERE batch_id = ? ORDER BY decision_id",
                (batch.batch_id,),
            )
        return [orjson.loads(r[0]) for r in rows]

    def extend_triggered_batch_lease(self, batch_id: str, owner: str, lease_until: int) -> bool:
        """Keep a claimed batch while it is being delivered; False if it is no longer ours."""
        with self.db.transaction() as tx:
            return bool(
                tx.execute(
                    "UPDATE triggered_batches SET lease_until = ? "
                    "WHERE batch_id = ? AND lease_owner = ? AND state = 'pending'",
                    (lease_until, batch_id, owner),
                )
            )

    def finish_triggered_batch(
        self,
        batch: TriggeredBatch,
        owner: str,
        at_ms: int,
        error: str | None,
        next_attempt_at: int | None,
    ) -> str | None:
        """Record one delivery attempt: delivered (no error), retried at `next_attempt_at`, or
        failed for good (an error and no next attempt). Only the lease holder may record; None if
        the lease was lost meanwhile."""
        state = DELIVERED if error is None else (PENDING if next_attempt_at is not None else FAILED)
        with self.db.transaction() as tx:
            if not tx.execute(
                "UPDATE triggered_batches SET state = ?, attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ?, delivered_at = ?, lease_owner = NULL, lease_until = NULL "
                "WHERE batch_id = ? AND lease_owner = ? AND state = 'pending'",
                (
                    state,
                    error,
                    next_attempt_at if next_attempt_at is not None else at_ms,
                    at_ms if state == DELIVERED else None,
                    batch.batch_id,
                    owner,
                ),
            ):
                return None
            tx.execute(
                "UPDATE triggered_sends SET state = ?, last_error = ?, delivered_at = ? "
                "WHERE batch_id = ?",
                (state, error, at_ms if state == DELIVERED else None, batch.batch_id),
            )
        return state

    # --- what the API shows -------------------------------------------------------------------
    def delivery_states(self, decision_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Per decision, the delivery state of each of its sends (one per channel)."""
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if not decision_ids:
            return out
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT s.decision_id, s.channel_id, s.state, s.last_error, s.delivered_at, "
                "COALESCE(b.attempts, 0) FROM triggered_sends s "
                "LEFT JOIN triggered_batches b ON b.batch_id = s.batch_id "
                f"WHERE {self._ids_in('s.decision_id')} ORDER BY s.decision_id, s.channel_id",
                (self._ids_param(decision_ids),),
            )
        for decision_id, channel_id, state, error, delivered_at, attempts in rows:
            out[decision_id].append(
                {
                    "channel_id": int(channel_id),
                    "state": state,
                    "reason": error,
                    "delivered_at": delivered_at,
                    "attempts": int(attempts),
                }
            )
        return out

    def triggered_send_counts(self) -> dict[str, int]:
        with self.db.reader() as tx:
            rows = tx.fetchall("SELECT state, COUNT(*) FROM triggered_sends GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    # --- event ids ------------------------------------------------------------------------------
    def reserve_event_ids(
        self, wanted: Sequence[tuple[str, str, str, int, int]]
    ) -> dict[tuple[str, str], str]:
        """Reserve (campaign, event id, decision id, now, retained from) once, in one transaction:
        for each pair, the decision id that holds it, ours if the reservation is new (or the one
        held is older than `retained from`). Concurrent reservations of one pair, from any
        process, get one winner."""
        held: dict[tuple[str, str], str] = {}
        if self.db.dialect == "postgresql" and wanted:
            return self._reserve_bulk(wanted)
        with self.db.transaction() as tx:
            for key, event_id, decision_id, now_ms, retained_from_ms in wanted:
                row = tx.fetchone(
                    "INSERT INTO event_ids (campaign_key, event_id, decision_id, at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (campaign_key, event_id) DO UPDATE SET "
                    "decision_id = excluded.decision_id, at = excluded.at "
                    "WHERE event_ids.at < ? RETURNING decision_id",
                    (key, event_id, decision_id, now_ms, retained_from_ms),
                )
                if row is None:
                    row = tx.fetchone(
                        "SELECT decision_id FROM event_ids WHERE campaign_key = ? AND event_id = ?",
                        (key, event_id),
                    )
                held[(key, event_id)] = row[0] if row else decision_id
        return held

    def _reserve_bulk(
        self, wanted: Sequence[tuple[str, str, str, int, int]]
    ) -> dict[tuple[str, str], str]:
        """PostgreSQL: the whole group in two statements (not two round trips per event)."""
        first: dict[tuple[str, str], tuple[str, int]] = {}
        for key, event_id, decision_id, now_ms, _ in wanted:  # one row per pair: first wins
            first.setdefault((key, event_id), (decision_id, now_ms))
        retention_ms = max(0, wanted[0][3] - wanted[0][4])
        keys = sorted(first)  # one order for every process: no deadlock between two groups
        with self.db.transaction() as tx:
            rows = tx.fetchall(
                "INSERT INTO event_ids (campaign_key, event_id, decision_id, at) "
                "SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::bigint[]) "
                "ON CONFLICT (campaign_key, event_id) DO UPDATE SET "
                "decision_id = excluded.decision_id, at = excluded.at "
                "WHERE event_ids.at < excluded.at - ? "
                "RETURNING campaign_key, event_id, decision_id",
                (
                    [k for k, _ in keys],
                    [e for _, e in keys],
                    [first[k][0] for k in keys],
                    [first[k][1] for k in keys],
                    retention_ms,
                ),
            )
            held = {(r[0], r[1]): r[2] for r in rows}
            for k, e in keys:  # held by someone else already (a repeat): whose?
                if (k, e) not in held:
                    row = tx.fetchone(
                        "SELECT decision_id FROM event_ids WHERE campaign_key = ? AND event_id = ?",
                        (k, e),
                    )
                    if row is not None:
                        held[(k, e)] = row[0]
        return {(k, e): held.get((k, e), first[(k, e)][0]) for k, e, *_ in wanted}

    def release_event_ids(self, held: Sequence[tuple[tuple[str, str], str]]) -> None:
        """Free reservations ((campaign, event id), decision id) whose decisions were dropped
        unlogged: only if still held by that decision."""
        if not held:
            return
        with self.db.transaction() as tx:
            for (key, event_id), decision_id in held:
                tx.execute(
                    "DELETE FROM event_ids WHERE campaign_key = ? AND event_id = ? "
                    "AND decision_id = ?",
                    (key, event_id, decision_id),
                )

    def forget_event_ids(self, retained_from_ms: int) -> int:
        """Drop reservations older than the retention window."""
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM event_ids WHERE at < ?", (retained_from_ms,))
