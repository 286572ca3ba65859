"""Work the scheduler claims: campaign steps under a lease, send chunks, the notification outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clearance.domain import ACTIVE_STATES, CANCELABLE_STATES, State
from clearance.errors import Conflict
from clearance.store.campaigns import FREEZE_APPROVALS
from clearance.store.db import Database, Tx
from clearance.store.queries import query


@dataclass(frozen=True)
class Notification:
    notification_id: str
    campaign_id: int | None
    event_type_id: int
    channel_id: int
    listener_url: str
    body: str
    next_attempt_at: int
    expires_at: int
    attempts: int = 0


@dataclass(frozen=True)
class Batch:
    campaign_id: int
    channel_id: int
    first_seq: int
    last_seq: int
    sends: int
    attempts: int
    # (seq, customer_id) of a chunk just created, so its first delivery needs no re-read
    rows: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)
    send_group_id: str | None = None  # a send group's batch: its sends only, in a shared range


class LeaseLost(Conflict):
    """Another worker holds the lease now: whoever lost it stops working on that step."""


_ACTIVE = tuple(s.value for s in ACTIVE_STATES)
_ACTIVE_MARKS = ", ".join("?" for _ in _ACTIVE)


class WorkStore:
    db: Database

    # --- campaign steps -------------------------------------------------------------------------
    def claim_due_campaign(self, now_ms: int, owner: str, lease_until: int) -> int | None:
        sql = query(
            "claim_due_campaign", active_states=_ACTIVE_MARKS, skip_locked=self.db.skip_locked
        )
        with self.db.transaction() as tx:
            row = tx.fetchone(sql, (owner, lease_until, now_ms, *_ACTIVE, now_ms, owner))
        return int(row[0]) if row else None

    def release(
        self,
        campaign_id: int,
        owner: str,
        next_step_at: int | None = None,
        error: str | None = None,
    ) -> None:
        with self.db.transaction() as tx:
            if next_step_at is None:
                tx.execute(
                    "UPDATE campaigns SET lease_owner = NULL, lease_until = NULL "
                    "WHERE campaign_id = ? AND lease_owner = ?",
                    (campaign_id, owner),
                )
            else:
                tx.execute(
                    "UPDATE campaigns SET lease_owner = NULL, lease_until = NULL, "
                    "next_step_at = ?, last_error = ? WHERE campaign_id = ? AND lease_owner = ?",
                    (next_step_at, error, campaign_id, owner),
                )

    def transition(
        self,
        campaign_id: int,
        owner: str | None,
        expect: Sequence[State],
        new_state: State,
        next_step_at: int | None,
        fields: dict[str, Any] | None = None,
        notifications: Sequence[Notification] = (),
        freeze_approvals: bool = False,
    ) -> bool:
        """Move a campaign between states and enqueue its notifications in one transaction.

        Guarded by the expected state (and lease owner, for worker steps); False if it no longer
        holds. On PostgreSQL the UPDATE waits for approvals holding the row's share lock.
        """
        fields = dict(fields or {})
        sets = ["state = ?", "next_step_at = ?", "last_error = NULL"]
        params: list[Any] = [new_state.value, next_step_at]
        for name, value in fields.items():
            sets.append(f"{name} = ?")
            params.append(value)
        if owner is not None:
            sets += ["lease_owner = NULL", "lease_until = NULL"]
        where = f"campaign_id = ? AND state IN ({', '.join('?' for _ in expect)})"
        params += [campaign_id, *(s.value for s in expect)]
        if owner is not None:
            where += " AND lease_owner = ?"
            params.append(owner)
        with self.db.transaction() as tx:
            if not tx.execute(f"UPDATE campaigns SET {', '.join(sets)} WHERE {where}", params):
                return False
            if freeze_approvals:
                tx.execute(FREEZE_APPROVALS, (campaign_id, campaign_id))
            self._enqueue(tx, notifications)
        return True

    def cancel(self, campaign_id: int, now_ms: int, notifications: Sequence[Notification]) -> bool:
        return self.transition(
            campaign_id,
            None,
            CANCELABLE_STATES,
            State.CANCELED,
            None,
            {"canceled_at": now_ms},
            notifications,
        )

    def extend_lease(self, campaign_id: int, owner: str, lease_until: int) -> bool:
        """Move `owner`'s lease on a campaign step to `lease_until`; False if `owner` no longer
        holds it (another worker claimed the step after the lease ran out)."""
        with self.db.transaction() as tx:
            return bool(
                tx.execute(
                    "UPDATE campaigns SET lease_until = ? "
                    "WHERE campaign_id = ? AND lease_owner = ?",
                    (lease_until, campaign_id, owner),
                )
            )

    # --- execution ------------------------------------------------------------------------------
    def next_send_chunk(
        self,
        campaign_id: int,
        owner: str,
        channels: Sequence[tuple[int, int | None]],
        scheduled_ms: int,
        limit: int,
        lease_until: int,
        only_approved: bool = True,
    ) -> list[Batch] | None:
        """Turn the next `limit` approved customers (every customer, for a campaign without
        Conditional Execution) into sends, one per channel, exactly once.

        The sends, their delivery batches and the cursor move in one transaction, and the primary
        key (campaign, customer position, channel) makes a second send impossible. None when done.
        """
        with self.db.transaction() as tx:
            row = tx.fetchone(
                "SELECT exec_cursor, target_count, sends_count FROM campaigns "
                "WHERE campaign_id = ? AND lease_owner = ? AND state = ?",
                (campaign_id, owner, State.EXECUTING.value),
            )
            if row is None:
                raise LeaseLost(f"lost the lease on campaign {campaign_id}")
            cursor, target_count, sends_count = int(row[0]), int(row[1]), int(row[2])
            # A bounded window of positions, not "the next `limit` approved ones": the scan stays
            # a short index range whatever plan the database picks (no statistics yet after the
            # freeze rewrote every row), instead of a walk over all remaining rows per chunk.
            approved = " AND approval = ?" if only_approved else ""
            rows: list[Any] = []
            upper = cursor
            while not rows and upper < target_count:
                lower, upper = upper, min(upper + limit, target_count)
                rows = tx.fetchall(
                    "SELECT seq, customer_id FROM target_customers WHERE campaign_id = ? "
                    f"AND seq > ? AND seq <= ?{approved} ORDER BY seq",
                    (campaign_id, lower, upper, *((True,) if only_approved else ())),
                )
            if not rows:
                if cursor < target_count:
                    tx.execute(
                        "UPDATE campaigns SET exec_cursor = ? WHERE campaign_id = ?",
                        (target_count, campaign_id),
                    )
                return None
            first, last = int(rows[0][0]), int(rows[-1][0])
            width = len(channels)
            for k, (channel_id, template_id) in enumerate(channels):
                tx.execute(
                    query("insert_sends", approved=approved),
                    (
                        channel_id,
                        template_id,
                        scheduled_ms,
                        sends_count + k + 1,
                        width,
                        campaign_id,
                        first,
                        last,
                        *((True,) if only_approved else ()),
                    ),
                )
            chunk = tuple((int(r[0]), r[1]) for r in rows)
            batches = [
                Batch(campaign_id, ch, first, last, len(rows), 0, chunk) for ch, _ in channels
            ]
            tx.copy_rows(
                "send_batches",
                ("campaign_id", "channel_id", "first_seq", "last_seq", "sends", "attempts"),
                [
                    (b.campaign_id, b.channel_id, b.first_seq, b.last_seq, b.sends, 0)
                    for b in batches
                ],
            )
            new_cursor = upper
            tx.execute(
                "UPDATE campaigns SET exec_cursor = ?, sends_count = ?, lease_until = ? "
                "WHERE campaign_id = ?",
                (new_cursor, sends_count + width * len(rows), lease_until, campaign_id),
            )
            return batches

    def undelivered_batches(self, campaign_id: int) -> list[Batch]:
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT campaign_id, channel_id, first_seq, last_seq, sends, attempts "
                "FROM send_batches WHERE campaign_id = ? AND delivered_at IS NULL "
                "ORDER BY first_seq, channel_id",
                (campaign_id,),
            )
        return [
            Batch(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows
        ]

    def batch_sends(self, batch: Batch) -> list[tuple[int, str, int | None, int]]:
        group = "" if batch.send_group_id is None else " AND send_group_id = ?"
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT seq, customer_id, template_id, scheduled_at FROM sends WHERE campaign_id "
                f"= ? AND seq >= ? AND seq <= ? AND channel_id = ?{group} ORDER BY seq",
                (batch.campaign_id, batch.first_seq, batch.last_seq, batch.channel_id)
                + (() if batch.send_group_id is None else (batch.send_group_id,)),
            )
        return [(int(r[0]), r[1], r[2], int(r[3])) for r in rows]

    def mark_batch(self, batch: Batch, delivered_at: int | None, error: str | None) -> None:
        """Record a delivery attempt. A batch once delivered stays delivered: a failure reported
        late (by a worker that lost its lease) never turns it back into undelivered."""
        key = (batch.campaign_id, batch.channel_id, batch.first_seq)
        with self.db.transaction() as tx:
            if delivered_at is None:
                tx.execute(
                    "UPDATE send_batches SET last_error = ?, attempts = attempts + 1 "
                    "WHERE campaign_id = ? AND channel_id = ? AND first_seq = ? "
                    "AND delivered_at IS NULL",
                    (error, *key),
                )
            else:
                tx.execute(
                    "UPDATE send_batches SET delivered_at = COALESCE(delivered_at, ?), "
                    "last_error = NULL, attempts = attempts + 1 "
                    "WHERE campaign_id = ? AND channel_id = ? AND first_seq = ?",
                    (delivered_at, *key),
                )

    def send_details(
        self, campaign_id: int, limit: int, offset: int
    ) -> list[tuple[int, str, int, int | None, int]]:
        """Sends in (customer position, channel) order; `offset` counts sends and is a key seek
        on the dense send number, not a scan."""
        with self.db.reader() as tx:
            return [
                (int(r[0]), r[1], int(r[2]), r[3], int(r[4]))
                for r in tx.fetchall(
                    "SELECT seq, customer_id, channel_id, template_id, scheduled_at FROM sends "
                    "WHERE campaign_id = ? AND send_no > ? ORDER BY send_no LIMIT ?",
                    (campaign_id, offset, limit),
                )
            ]

    # --- the notification outbox ----------------------------------------------------------------
    def _enqueue(self, tx: Tx, notifications: Sequence[Notification]) -> None:
        if notifications:
            tx.executemany(
                query("insert_notification"),
                [
                    (
                        n.notification_id,
                        n.campaign_id,
                        n.event_type_id,
                        n.channel_id,
                        n.listener_url,
                        n.body,
                        n.next_attempt_at,
                        n.expires_at,
                        n.next_attempt_at,
                    )
                    for n in notifications
                ],
            )

    def claim_notifications(
        self, now_ms: int, owner: str, lease_until: int, limit: int = 1
    ) -> list[Notification]:
        with self.db.transaction() as tx:
            rows = tx.fetchall(
                query("claim_notifications", skip_locked=self.db.skip_locked),
                (lease_until, owner, now_ms, now_ms, limit),
            )
        return [
            Notification(
                r[0], r[1], int(r[2]), int(r[3]), r[4], r[5], int(r[6]), int(r[7]), int(r[8])
            )
            for r in rows
        ]

    def extend_notification_lease(self, notification_id: str, owner: str, lease_until: int) -> bool:
        """Move `owner`'s lease on a notification; False if another worker has claimed it."""
        with self.db.transaction() as tx:
            return bool(
                tx.execute(
                    "UPDATE notifications SET lease_until = ? "
                    "WHERE notification_id = ? AND lease_owner = ? AND state = 'pending'",
                    (lease_until, notification_id, owner),
                )
            )

    def record_attempt(
        self,
        n: Notification,
        owner: str,
        at_ms: int,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        next_attempt_at: int | None,
    ) -> str:
        """Record one delivery attempt; return the notification's new state, or "lease_lost"
        (nothing recorded) when another worker claimed the notification meanwhile."""
        if error is None:
            state = "delivered"
        elif next_attempt_at is None:
            state = "expired"
        else:
            state = "pending"
        attempt = n.attempts + 1
        with self.db.transaction() as tx:
            if not tx.execute(
                "UPDATE notifications SET state = ?, attempts = ?, next_attempt_at = ?, "
                "lease_until = NULL, lease_owner = NULL, last_error = ?, delivered_at = ? "
                "WHERE notification_id = ? AND lease_owner = ? AND state = 'pending'",
                (
                    state,
                    attempt,
                    next_attempt_at or n.next_attempt_at,
                    error,
                    at_ms if state == "delivered" else None,
                    n.notification_id,
                    owner,
                ),
            ):
                return "lease_lost"
            tx.execute(
                "INSERT INTO notification_attempts (notification_id, attempt, at, status_code, "
                "error, duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (n.notification_id, attempt, at_ms, status_code, error, duration_ms),
            )
        return state

    def campaign_notifications(self, campaign_id: int) -> list[dict[str, Any]]:
        with self.db.reader() as tx:
            notes = tx.fetchdicts(query("campaign_notifications"), (campaign_id,))
            for note in notes:
                note["attempt_log"] = tx.fetchdicts(
                    "SELECT attempt, at, status_code, error, duration_ms FROM "
                    "notification_attempts WHERE notification_id = ? ORDER BY attempt",
                    (note["notification_id"],),
                )
        return notes

    def pending_notification_count(self) -> int:
        with self.db.reader() as tx:
            row = tx.fetchone("SELECT COUNT(*) FROM notifications WHERE state = 'pending'")
        return int(row[0]) if row else 0
