"""The campaign page's send groups: each group's countdown and counts, and the heads-up banner
once a group is within the heads-up lead of its ClearanceRequiredBy."""

from __future__ import annotations

from dataclasses import dataclass

from clearance.clock import to_ms
from clearance.domain import Campaign, GroupState, State
from clearance.runtime import Runtime


@dataclass(frozen=True)
class GroupRow:
    send_group_id: str
    template_id: int | None
    scheduled_ms: int
    clearance_required_by_ms: int | None
    state: str
    target: int
    approved: int | None  # None: not counted (the group can no longer change)
    rate: float | None
    at_risk: bool
    heads_up: bool  # within the heads-up lead of its deadline and still open


def group_rows(runtime: Runtime, c: Campaign) -> list[GroupRow]:
    """Every send group of a processed campaign (a V1 campaign: none, its facts say it all).
    Approvals are counted only while a group is still open, so a big executed campaign's page
    costs one small read."""
    groups = runtime.store.send_groups(c.campaign_id)
    if not groups:
        return []
    open_groups = any(g.state == GroupState.AWAITING for g in groups)
    status = (
        {s.send_group_id: s for s in runtime.scheduled.send_groups(c.campaign_id)}
        if open_groups and c.state != State.CANCELED
        else {}
    )
    now = runtime.now_ms()
    lead_ms = runtime.settings.heads_up_lead_seconds * 1000
    rows = []
    for g in groups:
        crb = None if g.clearance_required_by is None else to_ms(g.clearance_required_by)
        s = status.get(g.send_group_id)
        awaiting = c.conditional and g.state == GroupState.AWAITING and crb is not None
        rows.append(
            GroupRow(
                send_group_id=g.send_group_id,
                template_id=g.template_id,
                scheduled_ms=to_ms(g.scheduled_at),
                clearance_required_by_ms=crb,
                state=g.state.value,
                target=g.target_count,
                approved=None if s is None else s.approved,
                rate=None if s is None else s.approval_rate,
                at_risk=bool(s and s.at_risk),
                heads_up=bool(awaiting and crb is not None and now < crb <= now + lead_ms),
            )
        )
    return rows
