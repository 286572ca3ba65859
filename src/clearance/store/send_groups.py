"""Send groups (Conditional Execution V2): each group's own deadline, freeze and execution, under
a lease of its own. A campaign without groups (V1) never touches these tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from clearance.clock import from_ms, to_ms
from clearance.domain import GroupState, SendGroup, State, parse_send_group_id
from clearance.store.campaigns import LATEST_AT, LATEST_STATUS
from clearance.store.db import Tx
from clearance.store.queries import query
from clearance.store.work import Batch, LeaseLost, Notification, WorkStore

FREEZE_GROUP_APPROVALS = query(
    "freeze_group_approvals", latest_status=LATEST_STATUS, latest_at=LATEST_AT
)
_GROUP_COLUMNS = (
    "campaign_id, send_group_id, template_id, scheduled_at, clearance_required_by, state, "
    "target_count, exec_cursor, last_error"
)


def _group(row: Sequence[Any]) -> SendGroup:
    return SendGroup(
        campaign_id=int(row[0]),
        send_group_id=row[1],
        template_id=None if row[2] is None else int(row[2]),
        scheduled_at=from_ms(int(row[3])),
        clearance_required_by=None if row[4] is None else from_ms(int(row[4])),
        state=GroupState(row[5]),
        target_count=int(row[6]),
        exec_cursor=int(row[7]),
        last_error=row[8],
    )


class SendGroupStore(WorkStore):
    # --- definition and processing --------------------------------------------------------------
    def has_placed_rows(self, campaign_id: int) -> bool:
        """Whether any target row names a send group (the campaign is V2)."""
        with self.db.reader() as tx:
            return bool(
                tx.fetchone(
                    "SELECT 1 FROM target_customers WHERE campaign_id = ? "
                    "AND send_group_id IS NOT NULL LIMIT 1",
                    (campaign_id,),
                )
            )

    def placed_send_times(self, campaign_id: int) -> list[datetime]:
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT DISTINCT send_group_id FROM target_customers WHERE campaign_id = ? "
                "AND send_group_id IS NOT NULL",
                (campaign_id,),
            )
        return sorted(parse_send_group_id(r[0])[1] for r in rows)

    def place_ungrouped(self, campaign_id: int, default_group: str) -> dict[str, int]:
        """Put the rows without a group into `default_group`; return each group's size."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE target_customers SET send_group_id = ? "
                "WHERE campaign_id = ? AND send_group_id IS NULL",
                (default_group, campaign_id),
            )
            rows = tx.fetchall(
                "SELECT send_group_id, COUNT(*) FROM target_customers WHERE campaign_id = ? "
                "GROUP BY send_group_id",
                (campaign_id,),
            )
        return {r[0]: int(r[1]) for r in rows}

    def process_groups(
        self,
        campaign_id: int,
        owner: str,
        groups: Sequence[SendGroup],
        now_ms: int,
        notifications: Sequence[Notification],
    ) -> bool:
        """Record the groups with their deadlines, queue their notifications and move the
        campaign on (awaiting clearance, or cleared without Conditional Execution), at once."""
        conditional = any(g.state == GroupState.AWAITING for g in groups)
        deadlines = [g.clearance_required_by for g in groups if g.clearance_required_by]
        first = min(deadlines) if deadlines else None
        with self.db.transaction() as tx:
            if not tx.execute(
                "UPDATE campaigns SET state = ?, next_step_at = NULL, processed_at = ?, "
                "clearance_required_by = ?, last_error = NULL, lease_owner = NULL, "
                "lease_until = NULL WHERE campaign_id = ? AND state = ? AND lease_owner = ?",
                (
                    (State.AWAITING_CLEARANCE if conditional else State.CLEARED).value,
                    now_ms,
                    None if first is None else to_ms(first),
                    campaign_id,
                    State.SCHEDULED.value,
                    owner,
                ),
            ):
                return False
            tx.executemany(
                "INSERT INTO send_groups (campaign_id, send_group_id, template_id, scheduled_at, "
                "clearance_required_by, state, target_count, next_step_at, notified_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        campaign_id,
                        g.send_group_id,
                        g.template_id,
                        to_ms(g.scheduled_at),
                        None if g.clearance_required_by is None else to_ms(g.clearance_required_by),
                        g.state.value,
                        g.target_count,
                        to_ms(g.clearance_required_by or g.scheduled_at),
                        now_ms,
                    )
                    for g in groups
                ],
            )
            self._enqueue(tx, notifications)
        return True

    def send_groups(self, campaign_id: int) -> list[SendGroup]:
        """The campaign's groups by send time (none: a V1 campaign, or not processed yet)."""
        with self.db.reader() as tx:
            rows = tx.fetchall(
                f"SELECT {_GROUP_COLUMNS} FROM send_groups WHERE campaign_id = ? "
                "ORDER BY scheduled_at, send_group_id",
                (campaign_id,),
            )
        return [_group(r) for r in rows]

    def get_send_group(self, campaign_id: int, group_id: str) -> SendGroup | None:
        with self.db.reader() as tx:
            row = tx.fetchone(
                f"SELECT {_GROUP_COLUMNS} FROM send_groups "
                "WHERE campaign_id = ? AND send_group_id = ?",
                (campaign_id, group_id),
            )
        return None if row is None else _group(row)

    # --- steps under a lease --------------------------------------------------------------------
    def claim_due_group(self, now_ms: int, owner: str, lease_until: int) -> tuple[int, str] | None:
        # a plain read first: with no group due (every V1 deployment) the worker's loop takes no
        # write transaction for groups (on SQLite, the one writer's lock approvals wait for)
        with self.db.reader() as tx:
            if not tx.fetchone(
                "SELECT 1 FROM send_groups g WHERE g.next_step_at <= ? AND EXISTS (SELECT 1 "
                "FROM campaigns c WHERE c.campaign_id = g.campaign_id AND c.state IN (?, ?)) "
                "LIMIT 1",
                (now_ms, State.AWAITING_CLEARANCE.value, State.CLEARED.value),
            ):
                return None
        with self.db.transaction() as tx:
            row = tx.fetchone(
                query("claim_due_group", skip_locked=self.db.skip_locked),
                (owner, lease_until, now_ms, now_ms, owner),
            )
        return None if row is None else (int(row[0]), row[1])

    def release_group(
        self,
        campaign_id: int,
        group_id: str,
        owner: str,
        next_step_at: int | None = None,
        error: str | None = None,
    ) -> None:
        sets = "lease_owner = NULL, lease_until = NULL"
        params: tuple[Any, ...] = ()
        if next_step_at is not None:
            sets += ", next_step_at = ?, last_error = ?"
            params = (next_step_at, error)
        with self.db.transaction() as tx:
            tx.execute(
                f"UPDATE send_groups SET {sets} "
                "WHERE campaign_id = ? AND send_group_id = ? AND lease_owner = ?",
                (*params, campaign_id, group_id, owner),
            )

    def extend_group_lease(
        self, campaign_id: int, group_id: str, owner: str, lease_until: int
    ) -> bool:
        with self.db.transaction() as tx:
            return bool(
                tx.execute(
                    "UPDATE send_groups SET lease_until = ? "
                    "WHERE campaign_id = ? AND send_group_id = ? AND lease_owner = ?",
                    (lease_until, campaign_id, group_id, owner),
                )
            )

    def _lock_campaign(self, tx: Tx, campaign_id: int) -> str:
        row = tx.fetchone(
            f"SELECT state FROM campaigns WHERE campaign_id = ?{self.db.lock_update}",
            (campaign_id,),
        )
        if row is None:
            raise LeaseLost(f"campaign {campaign_id} is gone")
        return str(row[0])

    def freeze_group(self, campaign_id: int, group_id: str, owner: str, now_ms: int) -> bool:
        """At the group's ClearanceRequiredBy its approvals are written onto its rows; later ones
        are refused. The last group frozen clears the campaign. (On PostgreSQL the group's UPDATE
        waits for the approvals holding its share lock.)"""
        with self.db.transaction() as tx:
            self._lock_campaign(tx, campaign_id)
            if not tx.execute(
                "UPDATE send_groups SET state = ?, cleared_at = ?, next_step_at = scheduled_at, "
                "lease_owner = NULL, lease_until = NULL, last_error = NULL "
                "WHERE campaign_id = ? AND send_group_id = ? AND state = ? AND lease_owner = ?",
                (
                    GroupState.CLEARED.value,
                    now_ms,
                    campaign_id,
                    group_id,
                    GroupState.AWAITING.value,
                    owner,
                ),
            ):
                return False
            tx.execute(FREEZE_GROUP_APPROVALS, (campaign_id, group_id))
            if not tx.fetchone(
                "SELECT 1 FROM send_groups WHERE campaign_id = ? AND state = ? LIMIT 1",
                (campaign_id, GroupState.AWAITING.value),
            ):
                tx.execute(
                    "UPDATE campaigns SET state = ?, cleared_at = ? "
                    "WHERE campaign_id = ? AND state = ?",
                    (State.CLEARED.value, now_ms, campaign_id, State.AWAITING_CLEARANCE.value),
                )
        return True

    def start_group(self, campaign_id: int, group_id: str, owner: str) -> bool:
        with self.db.transaction() as tx:
            return bool(
                tx.execute(
                    "UPDATE send_groups SET state = ?, last_error = NULL WHERE campaign_id = ? "
                    "AND send_group_id = ? AND state = ? AND lease_owner = ?",
                    (
                        GroupState.EXECUTING.value,
                        campaign_id,
                        group_id,
                        GroupState.CLEARED.value,
                        owner,
                    ),
                )
            )

    def next_group_chunk(
        self,
        group: SendGroup,
        owner: str,
        channels: Sequence[tuple[int, int | None]],
        limit: int,
        lease_until: int,
        only_approved: bool = True,
    ) -> list[Batch] | None:
        """`next_send_chunk` for one send group: its next `limit` approved customers become
        sends (one per channel) with the group's template and send time, exactly once; the
        sends, their batches and the group's cursor commit together. None when done."""
        cid, gid = group.campaign_id, group.send_group_id
        with self.db.transaction() as tx:
            state = self._lock_campaign(tx, cid)
            row = tx.fetchone(
                "SELECT exec_cursor FROM send_groups WHERE campaign_id = ? AND send_group_id = ? "
                "AND lease_owner = ? AND state = ?",
                (cid, gid, owner, GroupState.EXECUTING.value),
            )
            if row is None or state not in (State.AWAITING_CLEARANCE, State.CLEARED):
                raise LeaseLost(f"lost the lease on send group {gid} of campaign {cid}")
            approved = " AND approval = ?" if only_approved else ""
            flag = (True,) if only_approved else ()
            rows = tx.fetchall(
                "SELECT seq, customer_id FROM target_customers WHERE campaign_id = ? "
                f"AND send_group_id = ? AND seq > ?{approved} ORDER BY seq LIMIT ?",
                (cid, gid, int(row[0]), *flag, limit),
            )
            if not rows:
                return None
            sends_row = tx.fetchone(
                "SELECT sends_count FROM campaigns WHERE campaign_id = ?", (cid,)
            )
            sends_count = int(sends_row[0]) if sends_row else 0
            first, last = int(rows[0][0]), int(rows[-1][0])
            width = len(channels)
            for k, (channel_id, template_id) in enumerate(channels):
                tx.execute(
                    query("insert_group_sends", approved=approved),
                    (
                        channel_id,
                        template_id,
                        to_ms(group.scheduled_at),
                        sends_count + k + 1,
                        width,
                        cid,
                        gid,
                        first,
                        last,
                        *flag,
                    ),
                )
            chunk = tuple((int(r[0]), r[1]) for r in rows)
            batches = [Batch(cid, ch, first, last, len(rows), 0, chunk, gid) for ch, _ in channels]
            tx.copy_rows(
                "send_batches",
                (
                    "campaign_id",
                    "channel_id",
                    "first_seq",
                    "last_seq",
                    "sends",
                    "attempts",
                    "send_group_id",
                ),
                [(cid, b.channel_id, first, last, b.sends, 0, gid) for b in batches],
            )
            tx.execute(
                "UPDATE send_groups SET exec_cursor = ?, lease_until = ? "
                "WHERE campaign_id = ? AND send_group_id = ?",
                (last, lease_until, cid, gid),
            )
            tx.execute(
                "UPDATE campaigns SET sends_count = ? WHERE campaign_id = ?",
                (sends_count + width * len(rows), cid),
            )
            return batches

    def group_undelivered_batches(self, campaign_id: int, group_id: str) -> list[Batch]:
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT campaign_id, channel_id, first_seq, last_seq, sends, attempts "
                "FROM send_batches WHERE campaign_id = ? AND send_group_id = ? "
                "AND delivered_at IS NULL ORDER BY first_seq, channel_id",
                (campaign_id, group_id),
            )
        return [
            Batch(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), (), group_id)
            for r in rows
        ]

    def finish_group(
        self,
        campaign_id: int,
        group_id: str,
        owner: str,
        now_ms: int,
        notifications: Sequence[Notification],
    ) -> bool:
        """The group is executed; the last one to finish executes the campaign (and queues its
        notifications). The campaign row is locked first, so two groups finishing at once cannot
        both think the other still runs."""
        with self.db.transaction() as tx:
            self._lock_campaign(tx, campaign_id)
            if not tx.execute(
                "UPDATE send_groups SET state = ?, executed_at = ?, next_step_at = NULL, "
                "lease_owner = NULL, lease_until = NULL, last_error = NULL "
                "WHERE campaign_id = ? AND send_group_id = ? AND state = ? AND lease_owner = ?",
                (
                    GroupState.EXECUTED.value,
                    now_ms,
                    campaign_id,
                    group_id,
                    GroupState.EXECUTING.value,
                    owner,
                ),
            ):
                return False
            if tx.fetchone(
                "SELECT 1 FROM send_groups WHERE campaign_id = ? AND state <> ? LIMIT 1",
                (campaign_id, GroupState.EXECUTED.value),
            ):
                return True
            if tx.execute(
                "UPDATE campaigns SET state = ?, executed_at = ?, next_step_at = NULL, "
                "last_error = NULL WHERE campaign_id = ? AND state IN (?, ?)",
                (
                    State.EXECUTED.value,
                    now_ms,
                    campaign_id,
                    State.AWAITING_CLEARANCE.value,
                    State.CLEARED.value,
                ),
            ):
                self._enqueue(tx, notifications)
        return True
