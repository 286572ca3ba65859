"""Approvals, paging and counts for campaigns with send groups: each entry goes to its
customer's group, and a group past its ClearanceRequiredBy refuses its entries on its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clearance.domain import GroupState
from clearance.store.approval_calls import record_approval_call
from clearance.store.campaign_rows import refuse_unless_processed
from clearance.store.campaigns import LATEST_STATUS
from clearance.store.db import Database

_CHUNK = 500  # ids per IN (...) lookup


@dataclass
class GroupApprovalResult:
    applied: int
    not_in_target_group: list[str] = field(default_factory=list)
    deadline_passed: list[str] = field(default_factory=list)  # entries of frozen groups
    refused_groups: dict[str, int | None] = field(default_factory=dict)  # group → its deadline
    # entries that named a SendGroupID other than their customer's group: refused, never applied
    send_group_mismatch: list[str] = field(default_factory=list)
    # the groups past their deadline when the call was applied → their deadlines; with none open,
    # the call is refused whatever it names (as a V1 campaign's after its ClearanceRequiredBy)
    closed_groups: dict[str, int | None] = field(default_factory=dict)
    open_groups: int = 0


class GroupApprovalStore:
    db: Database

    def apply_group_approvals(
        self,
        campaign_id: int,
        entries: Sequence[tuple[str, bool]],
        now_ms: Callable[[], int],
        expected: Mapping[str, str] | None = None,
        by: str | None = None,
    ) -> GroupApprovalResult:
        """Apply each entry to its customer's group: entries for a group whose deadline has
        passed are refused (named in the result), the rest apply atomically against their
        groups' deadlines. Groups still open are share-locked while the clock is read, so a
        group's freeze (an UPDATE of its row) and an approval never interleave; a group that is
        late already is refused from a plain read and holds nothing its freeze waits for."""
        with self.db.reader() as tx:
            row = tx.fetchone(
                "SELECT state, conditional FROM campaigns WHERE campaign_id = ?", (campaign_id,)
            )
            groups = {
                r[0]: (r[1], r[2])
                for r in tx.fetchall(
                    "SELECT send_group_id, state, clearance_required_by FROM send_groups "
                    "WHERE campaign_id = ?",
                    (campaign_id,),
                )
            }
            ids = [cid for cid, _ in entries]
            group_of: dict[str, str] = {}
            for i in range(0, len(ids), _CHUNK):
                part = ids[i : i + _CHUNK]
                marks = ", ".join("?" for _ in part)
                group_of.update(
                    (r[0], r[1])
                    for r in tx.fetchall(
                        "SELECT customer_id, send_group_id FROM target_customers "
                        f"WHERE campaign_id = ? AND customer_id IN ({marks})",
                        (campaign_id, *part),
                    )
                )
        assert row is not None  # the caller read the campaign
        refuse_unless_processed(campaign_id, row[1], row[0])
        missing = [cid for cid in ids if cid not in group_of]
        mismatch = [
            cid
            for cid in ids
            if cid in group_of and group_of[cid] != (expected or {}).get(cid, group_of[cid])
        ]
        if mismatch:  # approved for another send time or template than the customer's: refuse
            wrong = set(mismatch)
            entries = [e for e in entries if e[0] not in wrong]
        early = now_ms()

        def is_open(gid: str, now: int) -> bool:
            g_state, deadline = groups[gid]
            return bool(g_state == GroupState.AWAITING and deadline is not None and now < deadline)

        candidates = {g for g in groups if is_open(g, early)}
        applied = 0
        now = early
        if candidates:
            with self.db.transaction() as tx:
                marks = ", ".join("?" for _ in candidates)
                locked = tx.fetchall(
                    "SELECT send_group_id, state, clearance_required_by FROM send_groups "
                    f"WHERE campaign_id = ? AND send_group_id IN ({marks}){self.db.lock_share}",
                    (campaign_id, *sorted(candidates)),
                )
                now = now_ms()
                groups.update({r[0]: (r[1], r[2]) for r in locked})
                still_open = {g for g in candidates if is_open(g, now)}
                apply = [e for e in entries if group_of.get(e[0]) in still_open]
                if apply:
                    applied = tx.insert_approvals(campaign_id, apply, now)
                if by is not None and applied:
                    record_approval_call(tx, campaign_id, now, by, applied)
        else:
            still_open = set()
        late = [e for e in entries if e[0] in group_of and group_of[e[0]] not in still_open]
        late_approved = [cid for cid, status in late if status]
        if late_approved:
            with self.db.transaction() as tx:
                tx.mark_late(campaign_id, late_approved, now)
        refused = {group_of[cid] for cid, _ in late}
        return GroupApprovalResult(
            applied=applied,
            not_in_target_group=missing,
            deadline_passed=[cid for cid, _ in late],
            refused_groups={g: groups[g][1] for g in sorted(refused)},
            send_group_mismatch=mismatch,
            closed_groups={g: v[1] for g, v in sorted(groups.items()) if g not in still_open},
            open_groups=len(still_open),
        )

    def page_group_target(
        self, campaign_id: int, group_id: str | None, skip: int, limit: int, attributes: bool
    ) -> list[tuple[Any, ...]]:
        """(seq, customer_id, send_group_id[, attributes]) by position; in one group, `skip`
        counts that group's customers."""
        cols = "seq, customer_id, send_group_id" + (", attributes" if attributes else "")
        with self.db.reader() as tx:
            if group_id is None:
                return tx.fetchall(
                    f"SELECT {cols} FROM target_customers WHERE campaign_id = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (campaign_id, skip, limit),
                )
            return tx.fetchall(
                f"SELECT {cols} FROM target_customers WHERE campaign_id = ? "
                "AND send_group_id = ? ORDER BY seq LIMIT ? OFFSET ?",
                (campaign_id, group_id, limit, skip),
            )

    def group_approved_counts(self, campaign_id: int) -> dict[str, int]:
        """Per send group, the customers whose approval that counts is true."""
        with self.db.reader() as tx:
            # driven from the target rows, one index probe each (as the group freeze), so no
            # plan can scan every approval per row
            rows = tx.fetchall(
                "SELECT t.send_group_id, COUNT(*) FROM target_customers t WHERE t.campaign_id = ? "
                f"AND {LATEST_STATUS} = ? GROUP BY t.send_group_id",
                (campaign_id, True),
            )
        return {r[0]: int(r[1]) for r in rows}
