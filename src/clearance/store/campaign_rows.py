"""A campaign as the campaigns table holds it: a row read back into a `Campaign` (the columns of
sql/campaign.sql), and its channels as the JSON column stores them."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import orjson

from clearance.clock import from_ms
from clearance.domain import Campaign, ChannelRef, Reason, State, Template
from clearance.errors import Conflict
from clearance.store.db import Tx

# (customer id, attributes JSON[, send group id]): a V1 row, or one placed in a send group
TargetRows = Sequence[tuple[str, str | None] | tuple[str, str | None, str | None]]
# a send group's batch covers a range of positions shared with other groups' customers, so a
# send lies in a batch only if the group matches too (V1 batches have none)
SAME_GROUP = "(b.send_group_id IS NULL OR b.send_group_id = s.send_group_id)"


def _opt_time(ms: Any) -> Any:
    return None if ms is None else from_ms(int(ms))


def campaign_from_row(row: dict[str, Any]) -> Campaign:
    channels = [
        ChannelRef(
            c["id"],
            c.get("name", ""),
            tuple(Template(t["id"], t.get("name", "")) for t in c.get("templates") or ()),
        )
        for c in orjson.loads(row["channels"])
    ]
    return Campaign(
        campaign_id=int(row["campaign_id"]),
        name=row["name"],
        execute_at=from_ms(int(row["execute_at"])),
        duration_days=int(row["duration_days"]),
        conditional=bool(row["conditional"]),
        action_id=int(row["action_id"]),
        action_name=row["action_name"],
        promo_codes=orjson.loads(row["promo_codes"]),
        channels=channels,
        state=State(row["state"]),
        clearance_lead_seconds=row["clearance_lead_seconds"],
        process_at=_opt_time(row["process_at"]),
        clearance_required_by=_opt_time(row["clearance_required_by"]),
        target_count=int(row["target_count"]),
        created_at=_opt_time(row["created_at"]),
        executed_at=_opt_time(row["executed_at"]),
        canceled_at=_opt_time(row["canceled_at"]),
        processed_at=_opt_time(row["processed_at"]),
        cleared_at=_opt_time(row["cleared_at"]),
        exec_cursor=int(row["exec_cursor"]),
        last_error=row["last_error"],
        next_step_at=_opt_time(row["next_step_at"]),
    )


def channels_json(channels: Sequence[ChannelRef]) -> str:
    return orjson.dumps(
        [
            {
                "id": c.id,
                "name": c.name,
                "templates": [{"id": t.id, "name": t.name} for t in c.templates],
            }
            for c in channels
        ]
    ).decode()


def undelivered_seqs(tx: Tx, campaign_id: int) -> set[int]:
    """The customers (seqs) with a send in a batch not delivered: the few such batches first,
    then each one's short range of sends. (One join let SQLite walk every send of the campaign,
    seconds for a million customers.)"""
    pending: set[int] = set()
    for channel_id, first_seq, last_seq, group in tx.fetchall(
        "SELECT channel_id, first_seq, last_seq, send_group_id FROM send_batches "
        "WHERE campaign_id = ? AND delivered_at IS NULL",
        (campaign_id,),
    ):
        # a V2 group's batch covers a range of positions that other groups' customers share
        same_group = "" if group is None else " AND send_group_id = ?"
        pending.update(
            int(r[0])
            for r in tx.fetchall(
                "SELECT seq FROM sends WHERE campaign_id = ? AND channel_id = ? "
                f"AND seq >= ? AND seq <= ?{same_group}",
                (campaign_id, channel_id, first_seq, last_seq)
                + (() if group is None else (group,)),
            )
        )
    return pending


def check_key_order(rows: Sequence[Sequence[Any]], after_seq: int) -> None:
    """A bulk read of the target group must come back in key order, every key past `after_seq`
    (a page is resumed from its last key, and PromoCodes follow the key): an aggregate's order is
    not something SQL promises, so a read out of order is refused rather than served."""
    check_seq_order(list(map(operator.itemgetter(0), rows)), after_seq)


def check_seq_order(seqs: Sequence[int], after_seq: int) -> None:
    """`check_key_order` for the keys alone."""
    if seqs and (seqs[0] <= after_seq or not all(map(operator.lt, seqs, seqs[1:]))):
        raise RuntimeError(f"bulk read of the target group out of key order after {after_seq}")


def refuse_unless_processed(campaign_id: int, conditional: Any, state: Any) -> None:
    """Approvals apply only to a conditional campaign whose listeners have been notified."""
    if not conditional:
        raise Conflict(f"campaign {campaign_id} is not a conditional campaign")
    if state == State.CANCELED:
        raise Conflict(f"campaign {campaign_id} is canceled")
    if state in (State.DRAFT, State.SCHEDULED):
        raise Conflict(
            f"campaign {campaign_id} is not processed yet; approvals open once its "
            "listeners are notified"
        )


def exclusion_reason(state: State, approval: Any, late: bool) -> str:
    """Why a customer got no send; the most specific reason wins."""
    if state == State.CANCELED:
        return Reason.CAMPAIGN_CANCELED
    if approval is not None and not approval:
        return Reason.REFUSED
    if late:
        return Reason.APPROVED_LATE
    return Reason.NOT_APPROVED
