"""The heads-up: a configurable time before each send group's ClearanceRequiredBy, the
campaign's owners hear how clearance stands (approved / target, the rate, whether the deadline
is at risk) through a JSON webhook chat tools accept.

It is queued in the notification outbox when the campaign is processed, one per group (so a
restart never sends it twice, and it is signed, timed out and retried like every other
notification), due `heads_up_lead_seconds` before the group's deadline on the one clock; its
body is written when it goes, so the counts are those of that moment."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from clearance.clock import Clock, to_ms
from clearance.config import Settings
from clearance.domain import (
    Campaign,
    GroupState,
    SendGroup,
    State,
    first_template,
    format_wire_time,
    send_group_id,
)
from clearance.metrics import Metrics
from clearance.store import Notification, Store

HEADS_UP_EVENT = 0  # not a listener event: the outbox's marker for a heads-up


@dataclass(frozen=True)
class GroupStatus:
    """How clearance stands for one send group (what a heads-up and a banner show)."""

    send_group_id: str
    template_id: int | None
    scheduled_time: str
    clearance_required_by: str | None
    state: str
    target: int
    approved: int
    approval_rate: float
    seconds_left: int | None  # until ClearanceRequiredBy; None once frozen or unconditional
    at_risk: bool


def v1_group(c: Campaign) -> SendGroup:
    """A campaign without send groups, seen as its one group."""
    state = {
        State.AWAITING_CLEARANCE: GroupState.AWAITING,
        State.CLEARED: GroupState.CLEARED,
        State.EXECUTING: GroupState.EXECUTING,
        State.EXECUTED: GroupState.EXECUTED,
    }.get(c.state, GroupState.AWAITING)
    template = first_template(c.channels)
    return SendGroup(
        c.campaign_id,
        send_group_id(template, c.execute_at),
        template,
        c.execute_at,
        c.clearance_required_by,
        state,
        c.target_count,
    )


def clearance_status(
    store: Store, campaign_id: int, now: datetime, settings: Settings
) -> list[GroupStatus]:
    """Per send group (one for a V1 campaign): approved / target, rate, countdown, at risk."""
    c = store.get_campaign(campaign_id)
    groups = store.send_groups(campaign_id)
    if groups:
        approved = store.group_approved_counts(campaign_id)
    else:
        groups = [v1_group(c)]
        approved = {groups[0].send_group_id: store.counts(campaign_id)["approved"]}
    out = []
    for g in groups:
        n = approved.get(g.send_group_id, 0)
        rate = n / g.target_count if g.target_count else 0.0
        crb = g.clearance_required_by
        awaiting = c.conditional and g.state == GroupState.AWAITING and crb is not None
        left = max(0, int((crb - now).total_seconds())) if awaiting and crb else None
        out.append(
            GroupStatus(
                send_group_id=g.send_group_id,
                template_id=g.template_id,
                scheduled_time=format_wire_time(g.scheduled_at, settings.tz),
                clearance_required_by=None if crb is None else format_wire_time(crb, settings.tz),
                state=g.state.value,
                target=g.target_count,
                approved=n,
                approval_rate=round(rate, 4),
                seconds_left=left,
                at_risk=bool(awaiting and rate < settings.heads_up_at_risk_below),
            )
        )
    return out


def heads_up_notes(
    settings: Settings, campaign_id: int, group_id: str, deadline: datetime, now: datetime
) -> list[Notification]:
    """The one heads-up for a group, due its lead before the deadline (at once when that has
    passed already), useless after the deadline; none without CLEARANCE_HEADS_UP_URL."""
    if not settings.heads_up_url or deadline <= now:
        return []
    due = max(now, deadline - timedelta(seconds=settings.heads_up_lead_seconds))
    body = orjson.dumps({"CampaignID": campaign_id, "SendGroupID": group_id}).decode()
    return [
        Notification(
            notification_id=f"msg_{uuid.uuid4().hex}",
            campaign_id=campaign_id,
            event_type_id=HEADS_UP_EVENT,
            channel_id=0,
            listener_url=settings.heads_up_url,
            body=body,
            next_attempt_at=to_ms(due),
            expires_at=to_ms(deadline),
        )
    ]


class HeadsUp:
    """Writes a heads-up's body when it goes (the notifier calls `render`)."""

    def __init__(
        self, store: Store, settings: Settings, clock: Clock, metrics: Metrics | None
    ) -> None:
        self.store, self.settings, self.clock, self.metrics = store, settings, clock, metrics

    def render(self, n: Notification) -> bytes | None:
        """The chat-ready body for heads-up `n`; None when there is nothing to say any more
        (the campaign was canceled, or the group is no longer awaiting clearance)."""
        ref = orjson.loads(n.body)
        campaign_id, group_id = int(ref["CampaignID"]), str(ref["SendGroupID"])
        c = self.store.get_campaign(campaign_id)
        if c.state != State.AWAITING_CLEARANCE:
            return None
        status = next(
            (
                s
                for s in clearance_status(self.store, campaign_id, self.clock.now(), self.settings)
                if s.send_group_id == group_id
            ),
            None,
        )
        if status is None or status.state != GroupState.AWAITING:
            return None
        risk = "AT RISK" if status.at_risk else "on track"
        minutes = (status.seconds_left or 0) // 60
        text = (
            f"Clearance for campaign {campaign_id} ({c.name}), send group {group_id}: "
            f"{status.approved}/{status.target} approved ({status.approval_rate:.0%}), "
            f"ClearanceRequiredBy {status.clearance_required_by} ({self.settings.timezone}), "
            f"{minutes} min left: {risk}"
        )
        body: dict[str, Any] = {"text": text, "CampaignID": campaign_id, **asdict(status)}
        if self.metrics is not None:
            self.metrics.heads_ups.labels(str(status.at_risk).lower()).inc()
        return orjson.dumps(body)
