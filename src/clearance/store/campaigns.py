"""Campaigns, their frozen target groups, approvals and per-customer outcomes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson

from clearance.clock import from_ms, to_ms
from clearance.domain import Campaign, Reason, State
from clearance.errors import Conflict, DeadlinePassed, InvalidInput, NotFound
from clearance.store.approval_calls import record_approval_call
from clearance.store.campaign_rows import (
    SAME_GROUP,
    TargetRows,
    campaign_from_row,
    channels_json,
    check_key_order,
    check_seq_order,
    exclusion_reason,
    refuse_unless_processed,
    undelivered_seqs,
)
from clearance.store.db import Database, Placed, Tx
from clearance.store.queries import query

# The approvals that count: per customer, the latest status (a tie in time goes to "false").
LATEST_STATUS = query("latest_approval_column", column="status")
LATEST_AT = query("latest_approval_column", column="at")
LATEST_APPROVALS = query("latest_approvals")
FREEZE_APPROVALS = query("freeze_approvals", latest_approvals=LATEST_APPROVALS)


APPROVAL_CHUNK = 2_000  # approvals split and streamed to the database at a time
SplitMembers = Callable[[Sequence[tuple[str, bool]]], tuple[Sequence[Placed], list[str]]]


@dataclass
class ApprovalResult:
    applied: int
    not_in_target_group: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CustomerOutcome:
    seq: int
    customer_id: str
    outcome: str
    reason: str | None
    approved_at: Any
    error: str | None = None  # undelivered: the channel and the last delivery error


OUTCOMES = ("sent", "undelivered", "excluded", "approved")
# A customer's send lies in a batch that was never delivered (abandoned past the campaign's life,
# or still pending while the campaign executes).
_IN_UNDELIVERED_BATCH = (
    "EXISTS (SELECT 1 FROM sends s JOIN send_batches b ON b.campaign_id = s.campaign_id "
    "AND b.channel_id = s.channel_id AND b.first_seq <= s.seq AND b.last_seq >= s.seq "
    f"AND {SAME_GROUP} WHERE s.campaign_id = t.campaign_id AND s.seq = t.seq "
    "AND b.delivered_at IS NULL)"
)
_HAS_SEND = "EXISTS (SELECT 1 FROM sends s WHERE s.campaign_id = t.campaign_id AND s.seq = t.seq)"


class CampaignStore:
    db: Database

    def _get_row(self, tx: Tx, campaign_id: int, lock: str = "") -> dict[str, Any]:
        rows = tx.fetchdicts(query("campaign", lock=lock), (campaign_id,))
        if not rows:
            raise NotFound(f"campaign {campaign_id} does not exist", field="CampaignID")
        return rows[0]

    def get_campaign(self, campaign_id: int) -> Campaign:
        with self.db.reader() as tx:
            return campaign_from_row(self._get_row(tx, campaign_id))

    def create_campaign(self, c: Campaign, target: TargetRows, now_ms: int) -> Campaign:
        """Insert a campaign (draft or scheduled) and its inline target group atomically."""
        with self.db.transaction() as tx:
            campaign_id = c.campaign_id
            if campaign_id <= 0:
                row = tx.fetchone("SELECT MAX(campaign_id) FROM campaigns")
                campaign_id = int(row[0] or 0) + 1 if row else 1
            elif tx.fetchone("SELECT 1 FROM campaigns WHERE campaign_id = ?", (campaign_id,)):
                raise Conflict(f"campaign {campaign_id} already exists", field="campaign_id")
            tx.execute(
                query("insert_campaign"),
                (
                    campaign_id,
                    c.name,
                    c.state.value,
                    c.conditional,
                    to_ms(c.execute_at),
                    None if c.process_at is None else to_ms(c.process_at),
                    c.duration_days,
                    c.clearance_lead_seconds,
                    c.action_id,
                    c.action_name,
                    orjson.dumps(c.promo_codes).decode(),
                    channels_json(c.channels),
                    self._next_step_for_schedule(c, now_ms) if c.state == State.SCHEDULED else None,
                    now_ms,
                ),
            )
            if target:
                self._append_target(tx, campaign_id, 0, target)
            return campaign_from_row(self._get_row(tx, campaign_id))

    @staticmethod
    def _next_step_for_schedule(c: Campaign, now_ms: int) -> int:
        return max(now_ms, to_ms(c.process_at)) if c.process_at else now_ms

    def _append_target(self, tx: Tx, campaign_id: int, start: int, rows: TargetRows) -> None:
        grouped = ("send_group_id",) if any(len(r) > 2 for r in rows) else ()  # V2: row's group
        try:
            tx.copy_rows(
                "target_customers",
                ("campaign_id", "seq", "customer_id", "attributes", *grouped),
                [
                    (campaign_id, start + i, *(*r, None)[: 2 + len(grouped)])
                    for i, r in enumerate(rows, 1)
                ],
            )
        except Conflict as exc:
            raise InvalidInput(
                "target group contains a customer already in it; nothing was added",
                field="customer_id",
            ) from exc
        tx.execute(
            "UPDATE campaigns SET target_count = ? WHERE campaign_id = ?",
            (start + len(rows), campaign_id),
        )

    def add_target(self, campaign_id: int, rows: TargetRows) -> int:
        """Append customers to a draft campaign's target group; return the new size."""
        with self.db.transaction() as tx:
            row = self._get_row(tx, campaign_id, self.db.lock_update)
            if row["state"] != State.DRAFT:
                raise Conflict(
                    f"campaign {campaign_id} is {row['state']}; its target group is frozen",
                    field="campaign_id",
                )
            self._append_target(tx, campaign_id, int(row["target_count"]), rows)
            return int(row["target_count"]) + len(rows)

    def schedule(
        self, campaign_id: int, now_ms: int, check: Callable[[Campaign], None]
    ) -> Campaign:
        with self.db.transaction() as tx:
            c = campaign_from_row(self._get_row(tx, campaign_id, self.db.lock_update))
            if c.state != State.DRAFT:
                raise Conflict(f"campaign {campaign_id} is {c.state}, not draft", field="state")
            check(c)
            c.state = State.SCHEDULED
            tx.execute(
                "UPDATE campaigns SET state = ?, next_step_at = ? WHERE campaign_id = ?",
                (State.SCHEDULED.value, self._next_step_for_schedule(c, now_ms), campaign_id),
            )
            return campaign_from_row(self._get_row(tx, campaign_id))

    # --- approvals ------------------------------------------------------------------------------
    def apply_approvals(
        self,
        campaign_id: int,
        entries: Sequence[tuple[str, bool]],
        now_ms: Callable[[], int],
        split_members: SplitMembers | None = None,
        refuse_early: Callable[[], int] | None = None,
        by: str | None = None,
    ) -> ApprovalResult:
        """Apply approvals atomically against the deadline.

        The campaign row is locked first and the clock read after, so the freeze (which takes the
        same lock) and an approval can never interleave: an approval is either wholly before the
        freeze or refused.

        With `refuse_early` (a clock), an approval that is late already is refused from a plain
        read, before it takes any lock: once ClearanceRequiredBy has passed, a stream of (refused)
        approvals then holds nothing the freeze waits for, so it cannot starve the freeze (on
        PostgreSQL the worker's claim skips a share-locked row). Refusing late needs no lock: the
        deadline has passed whatever the freeze is doing.
        """
        if refuse_early is not None:
            with self.db.reader() as tx:
                row = self._get_row(tx, campaign_id)
            early, state = refuse_early(), row["state"]
            deadline = row["clearance_required_by"]
            if row["conditional"] and (
                state in (State.CLEARED, State.EXECUTING, State.EXECUTED)
                or (
                    state == State.AWAITING_CLEARANCE and deadline is not None and early >= deadline
                )
            ):
                self._refuse_late(campaign_id, entries, early, deadline)
        with self.db.transaction() as tx:
            row = self._get_row(tx, campaign_id, self.db.lock_share)
            now = now_ms()
            state = row["state"]
            refuse_unless_processed(campaign_id, row["conditional"], state)
            deadline = row["clearance_required_by"]
            if state == State.AWAITING_CLEARANCE and (deadline is None or now < deadline):
                if split_members is not None:  # membership known in memory: a plain bulk insert
                    missing: list[str] = []

                    def members() -> Iterator[Sequence[Placed]]:
                        # a chunk at a time, so the database stores one while the next is split
                        for lo in range(0, len(entries), APPROVAL_CHUNK):
                            chunk, outside = split_members(entries[lo : lo + APPROVAL_CHUNK])
                            missing.extend(outside)
                            yield chunk

                    applied = tx.append_approvals(campaign_id, members(), now)
                else:
                    applied = tx.insert_approvals(campaign_id, entries, now)
                    if applied < len(entries):
                        missing = tx.missing_customers(campaign_id, [cid for cid, _ in entries])
                    else:
                        missing = []
                if by is not None and applied:
                    record_approval_call(tx, campaign_id, now, by, applied)
                return ApprovalResult(applied=applied, not_in_target_group=missing)
        self._refuse_late(campaign_id, entries, now, deadline)

    def _refuse_late(
        self,
        campaign_id: int,
        entries: Sequence[tuple[str, bool]],
        now: int,
        deadline: int | None,
    ) -> NoReturn:
        """Record the late approvals (for the `approved_late` reason) and refuse the call."""
        late = [cid for cid, status in entries if status]
        if late:
            with self.db.transaction() as tx:
                tx.mark_late(campaign_id, late, now)
        raise DeadlinePassed(
            f"ClearanceRequiredBy for campaign {campaign_id} has passed; approvals are frozen "
            "and nothing was applied",
            clearance_required_by=deadline,
        )

    # --- reading the target group ---------------------------------------------------------------
    def iter_target_rows(
        self, campaign_id: int, page: int = 100_000
    ) -> Iterator[tuple[list[int], list[str]]]:
        """Every (seqs, customer_ids) of the target group, a page at a time, by key."""
        after = 0
        while True:
            with self.db.reader() as tx:
                seqs, ids = tx.fetch_columns(
                    ("seq", "customer_id"),
                    "FROM target_customers WHERE campaign_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (campaign_id, after, page),
                )
            if not seqs:
                return
            check_seq_order(seqs, after)
            yield seqs, ids
            after = int(seqs[-1])

    def page_target(
        self, campaign_id: int, after_seq: int, limit: int, attributes: bool = True
    ) -> list[Sequence[Any]]:
        """(seq, customer_id[, attributes]) rows by key; both drivers return seq as an int."""
        with self.db.reader() as tx:
            rows = tx.fetch_rows(
                f"seq, customer_id{', attributes' if attributes else ''}",
                "FROM target_customers WHERE campaign_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (campaign_id, after_seq, limit),
            )
        check_key_order(rows, after_seq)
        return rows

    def counts(self, campaign_id: int) -> dict[str, int]:
        with self.db.reader() as tx:
            row = self._get_row(tx, campaign_id)
            if row["cleared_at"] is not None:  # frozen: the approval set is materialized
                approved = tx.fetchone(
                    "SELECT COUNT(*) FROM target_customers WHERE campaign_id = ? AND approval = ?",
                    (campaign_id, True),
                )
            else:
                approved = tx.fetchone(
                    f"SELECT COUNT(*) FROM ({LATEST_APPROVALS}) x WHERE rn = 1 AND status = ?",
                    (campaign_id, True),
                )
            with_sends = tx.fetchone(
                "SELECT COUNT(*) FROM (SELECT DISTINCT seq FROM sends WHERE campaign_id = ?) s",
                (campaign_id,),
            )
            pending = undelivered_seqs(tx, campaign_id)
        target = int(row["target_count"])
        n_with_sends = int(with_sends[0]) if with_sends else 0
        n_undelivered = len(pending)
        done = row["state"] in (State.EXECUTED, State.CANCELED)
        return {
            "target": target,
            "approved": int(approved[0]) if approved else 0,
            # delivered on every channel; while executing, a batch not yet delivered is neither
            "sent": n_with_sends - n_undelivered,
            "undelivered": n_undelivered if done else 0,
            "excluded": target - n_with_sends if done else 0,
        }

    def customer_outcomes(
        self, campaign_id: int, outcome: str, after_seq: int, limit: int
    ) -> list[CustomerOutcome]:
        with self.db.reader() as tx:
            campaign = self._get_row(tx, campaign_id)
            state = campaign["state"]
            if campaign["cleared_at"] is not None:
                approval, approval_at = "t.approval", "t.approval_at"
            else:
                approval, approval_at = LATEST_STATUS, LATEST_AT
            base = (
                f"SELECT t.seq, t.customer_id, {approval}, {approval_at}, t.late_attempt_at "
                "FROM target_customers t WHERE t.campaign_id = ? AND t.seq > ? "
            )
            done = state in (State.EXECUTED, State.CANCELED)
            failed: list[tuple[int, int, int, str | None]] = []
            if outcome == "approved":
                sql = base + f"AND {approval} = ? ORDER BY t.seq LIMIT ?"
                params: tuple[Any, ...] = (campaign_id, after_seq, True, limit)
            elif outcome == "sent":  # every send of the customer delivered
                sql = (
                    base + f"AND {_HAS_SEND} AND NOT {_IN_UNDELIVERED_BATCH} ORDER BY t.seq LIMIT ?"
                )
                params = (campaign_id, after_seq, limit)
            elif outcome == "undelivered":  # sends recorded, a batch never delivered
                if not done:
                    return []
                sql = base + f"AND {_IN_UNDELIVERED_BATCH} ORDER BY t.seq LIMIT ?"
                params = (campaign_id, after_seq, limit)
                failed = [
                    (int(r[0]), int(r[1]), int(r[2]), r[3])
                    for r in tx.fetchall(
                        "SELECT channel_id, first_seq, last_seq, last_error FROM send_batches "
                        "WHERE campaign_id = ? AND delivered_at IS NULL ORDER BY channel_id",
                        (campaign_id,),
                    )
                ]
            elif outcome == "excluded":
                if not done:
                    return []
                sql = base + f"AND NOT {_HAS_SEND} ORDER BY t.seq LIMIT ?"
                params = (campaign_id, after_seq, limit)
            else:
                raise InvalidInput(
                    "outcome must be sent, undelivered, excluded or approved", field="outcome"
                )
            rows = tx.fetchall(sql, params)
        out = []
        for seq, cid, approval, approval_at, late_at in rows:
            reason = error = None
            if outcome == "excluded":
                reason = exclusion_reason(State(state), approval, late_at is not None)
            elif outcome == "undelivered":
                reason = Reason.DELIVERY_FAILED
                error = "; ".join(
                    f"channel {ch}: {last_error or 'not delivered'}"
                    for ch, first, last, last_error in failed
                    if first <= int(seq) <= last
                )
            out.append(
                CustomerOutcome(
                    int(seq),
                    cid,
                    outcome,
                    reason,
                    None if approval_at is None else from_ms(int(approval_at)),
                    error,
                )
            )
        return out

    def canceled_customers(
        self, campaign_id: int, limit: int, offset: int
    ) -> list[tuple[int, str]]:
        with self.db.reader() as tx:
            row = self._get_row(tx, campaign_id)
            if row["state"] != State.CANCELED:
                raise Conflict(f"campaign {campaign_id} is {row['state']}, not canceled")
            rows = tx.fetchall(
                "SELECT seq, customer_id FROM target_customers WHERE campaign_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (campaign_id, offset, limit),
            )
        return [(int(r[0]), r[1]) for r in rows]
